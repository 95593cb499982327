"""The viewer's pixel series: a window of the committed raw cube smoothed with the run's
parameters gives exactly the run's features at that pixel (cloud buffer included)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.stac]


def test_pixel_series_equals_the_whole_tile_preprocessed(run_world, tmp_path):
    from geoxai import mapping
    from geoxai.io import store
    from geoxai.io.config_file import save_config
    from geoxai.mapping.series import pixel_series
    from geoxai.temporal.smoothing import preprocess

    cfg = run_world.config(tmp_path / "store")
    layout = mapping.run_layout(cfg)
    save_config(cfg, layout.loc("config.json"))
    tile = run_world.world.tiles[0].with_halo(cfg.processing.halo_px)
    cube = mapping.stage_cube(tile, cfg)
    assert cube.url is not None, cube
    config_doc = store.read_json(layout.loc("config.json"))
    raw = store.read_cube(cube.url).load()
    ds = preprocess(raw, mapping.preprocess_params(cfg))
    h = cfg.processing.halo_px
    feats = [str(b) for b in ds["features"]["band"].values]
    for r, c in [(h + 1, h + 2), (h + 120, h + 77), (h + 199, h + 150)]:
        x, y = float(raw["x"].values[c]), float(raw["y"].values[r])
        got = pixel_series(layout, config_doc, tile.id, x, y)
        assert got["kept"], got
        assert got["n_obs"] == int(ds["n_obs"].values[r, c]) > 0
        assert got["valid"] == bool(ds["valid"].values[r, c])
        assert set(got["series"]) == set(feats[len(mapping.preprocess_params(cfg).bands) :])
        for name, values in got["series"].items():
            want = ds["features"].sel(band=name).values[:, r, c]
            np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6, err_msg=name)
    # a tile whose cube is not kept: said so, not an error
    other = run_world.world.tiles[1]
    gone = pixel_series(layout, config_doc, other.id, *other.core_bounds[:2])
    assert gone["kept"] is False and "not kept" in gone["message"]
