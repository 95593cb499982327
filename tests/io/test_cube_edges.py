"""Real data's rough edges at the cube stage: rasters that miss their footprint, inputs without
SCL from the command line, the cube command's default halo, and the items' sun angles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from typer.testing import CliRunner

from geoxai.config import ProcessingConfig
from geoxai.errors import ConfigError, DataAccessError, NoDataError
from geoxai.geo.bands import CUBE_BANDS, S2_BANDS, SUN_AZIMUTH, SUN_ELEVATION
from geoxai.io import store
from geoxai.io.cube import build_cube
from geoxai.io.tile_cube import build_tile_cube
from pipelines.cli import app
from tests.io.test_cube import SCENE_ORIGIN, SYN_TILES, TILE, WHEN, _scene, clean_world  # noqa: F401


def _misplaced(tmp_path, item_id: str, days: int) -> dict:
    """An item whose footprint covers TILE but whose rasters lie 50 km east of it."""
    good = _scene(tmp_path, f"{item_id}_REF", WHEN)
    away = (SCENE_ORIGIN[0] + 50_000.0, SCENE_ORIGIN[1])
    bad = _scene(tmp_path, item_id, WHEN + dt.timedelta(days=days), origin=away)
    bad["geometry"], bad["bbox"] = good["geometry"], good["bbox"]
    return bad


def test_raster_outside_the_footprint_is_a_typed_no_data_error(tmp_path):
    """Was a raw xarray AlignmentError ('conflicting dimension sizes') from `geoxai cube`."""
    bad = _misplaced(tmp_path, "S2A_MISPLACED", 5)
    with pytest.raises(NoDataError, match="S2A_MISPLACED") as err:
        build_cube([bad], TILE)
    assert "proj:transform" in str(err.value) and TILE.id in str(err.value)
    # with a good item beside it: the misplaced one is left out with a warning naming it
    good = _scene(tmp_path, "S2A_GOOD", WHEN)
    with pytest.warns(UserWarning, match="S2A_MISPLACED"):
        cube = build_cube([good, bad], TILE)
    assert list(cube["id"].values) == ["S2A_GOOD"] and cube.attrs["item_ids"] == ["S2A_GOOD"]
    assert np.isfinite(cube.isel(time=0).values).any()
    # through build_tile_cube (what `geoxai cube` calls) the same typed error
    with pytest.raises(NoDataError, match="S2A_MISPLACED"):
        build_tile_cube([bad], TILE, str(tmp_path / "c.zarr"), start="2023-01-01", end="2023-12-31")


def test_items_without_scl_name_the_switches(tmp_path):
    item = _scene(tmp_path, "S2A_NOSCL", WHEN, drop="SCL")
    with pytest.raises(DataAccessError, match="S2A_NOSCL") as err:
        build_cube([item], TILE)
    msg = str(err.value)
    assert "--no-scl" in msg and "--cloud-mask spectral" in msg and "cloud_mask: spectral" in msg
    cube = build_cube([item], TILE, bands=S2_BANDS)
    assert "SCL" not in list(cube.band.values)


def test_cube_carries_the_items_sun_angles(tmp_path):
    a = _scene(tmp_path, "S2A_VIEW", WHEN)
    a["properties"] |= {"view:sun_azimuth": 151.5, "view:sun_elevation": 58.25}
    b = _scene(tmp_path, "S2B_S2EXT", WHEN + dt.timedelta(days=3))
    b["properties"] |= {"s2:mean_solar_azimuth": 160.0, "s2:mean_solar_zenith": 40.0}
    c = _scene(tmp_path, "S2A_NONE", WHEN + dt.timedelta(days=6))
    url = str(tmp_path / "sun.zarr")
    build_tile_cube([a, b, c], TILE, url, start="2023-01-01", end="2023-12-31")
    back = store.read_cube(url)
    np.testing.assert_array_equal(back[SUN_AZIMUTH].values, [151.5, 160.0, np.nan])
    np.testing.assert_array_equal(back[SUN_ELEVATION].values, [58.25, 50.0, np.nan])


def test_cli_cube_no_scl_and_default_halo(clean_world, tmp_path):  # noqa: F811
    from geoxai.inference.windows import required_halo
    from pipelines.commands.cube import default_halo
    from pipelines.demo import HALO_PX, WINDOW

    assert default_halo(False) == 64 == HALO_PX >= required_halo(**WINDOW)
    assert default_halo(True) == 125  # the mask's projection reach + buffer, + lambda pooling
    _, archive = clean_world
    tile = SYN_TILES[0]
    base = ["cube", "--stac", str(archive.ndjson), "--tile", tile.id, "--start", "2023-06-01"]
    base += ["--end", "2023-06-30", "--tile-size", "600"]
    out = tmp_path / "default.zarr"
    result = CliRunner().invoke(app, [*base, "--out", str(out), "--bands", "red,nir,scl"])
    assert result.exit_code == 0, result.output
    assert store.read_cube(str(out)).attrs["halo_px"] == 64
    out2 = tmp_path / "noscl.zarr"
    result = CliRunner().invoke(app, [*base, "--out", str(out2), "--no-scl"])
    assert result.exit_code == 0, result.output
    cube = store.read_cube(str(out2))
    assert list(cube.band.values) == list(S2_BANDS) and cube.attrs["halo_px"] == 125
    bad = CliRunner().invoke(app, [*base, "--out", str(out2), "--no-scl", "--bands", "red,scl"])
    assert isinstance(bad.exception, ConfigError)


def test_run_config_cloud_mask_switch(monkeypatch):
    from geoxai.config import RunConfig
    from geoxai.mapping.cube_stage import _query_signature
    from geoxai.mapping.plan import _check_halo
    from geoxai.mapping.settings import cube_bands, preprocess_params
    from pipelines.commands.run import with_cloud_mask

    cfg = RunConfig.model_validate(
        {
            "name": "t",
            "year": 2023,
            "aoi": "bbox:5.0,50.0,5.05,50.05",
            "stac": {"url": "items.ndjson"},
            "store": {"root": "/tmp/x"},
            "models": {"prediction": "bundle"},
        }
    )
    assert cfg.processing.cloud_mask == "scl" and "SCL" in cube_bands(cfg)
    assert preprocess_params(cfg).clouds.method == "scl"
    _check_halo(cfg, 64)  # the default halo fits SCL and the demo bundles
    spec = cfg.model_copy(update={"processing": with_cloud_mask(cfg.processing, "spectral")})
    assert cube_bands(spec) == S2_BANDS and preprocess_params(spec).clouds.method == "spectral"
    tile = SYN_TILES[0]
    assert "bands" not in _query_signature(cfg, tile) and "bands" in _query_signature(spec, tile)
    with pytest.raises(ConfigError, match="cloud_mask: spectral.*smoothing 125 px.*halo_px: 125"):
        _check_halo(spec, 64)
    # the default keeps the output hash runs had before the switch; another value changes it
    import geoxai.config
    from geoxai.provenance import PIXEL_VERSION, config_hash

    before = cfg.model_dump(mode="json", include={"year", "stac", "models", "processing"})
    for key in ("cloud_mask", "super_resolution"):  # the hash before cloud_mask existed
        del before["processing"][key]
    del before["stac"]["signing"]  # how assets are signed never changes pixels
    assert cfg.output_hash() == config_hash({"pixels": PIXEL_VERSION, **before})
    # code that makes other pixels from the same config gets another hash: no tile is skipped
    # on a rerun because older code made it
    monkeypatch.setattr(geoxai.config, "PIXEL_VERSION", PIXEL_VERSION + 1)
    assert cfg.output_hash() != config_hash({"pixels": PIXEL_VERSION, **before})
    monkeypatch.undo()
    assert spec.output_hash() != cfg.output_hash()
    with pytest.raises(ConfigError, match="Did you mean 'spectral'"):
        with_cloud_mask(cfg.processing, "spectal")
    with pytest.raises(ValueError, match="cloud_mask"):
        ProcessingConfig(cloud_mask="fmask")


def test_assets_on_the_tile_grid_are_read_without_a_warp_to_the_same_values(tmp_path, monkeypatch):
    """10 m assets on the tile's own grid, SCL (20 m, nearest) and the 20 m bands (bilinear on
    the 2 x 2 lattice) are read directly (no
    WarpedVRT): the same float32 cube as the warped path, a nodata hole and rasters that end
    inside the tile (at a 10 m and at a 20 m pixel boundary) included."""
    from geoxai.io import cube as cube_mod

    x0 = TILE.bounds[0] + 70.0  # the rasters start 7 px (10 m) / 3.5 px (20 m) inside the tile
    y1 = TILE.bounds[3] + 200.0
    items = [
        _scene(tmp_path, "S2A_A", WHEN, origin=(x0, y1), hole=(slice(5, 9), slice(3, 11))),
        _scene(tmp_path, "S2B_B", WHEN + dt.timedelta(days=5), origin=(x0 - 10.0, y1)),
    ]
    direct: list[str] = []
    orig = cube_mod._CheckedReader._read_direct

    def spy(self, window):
        got = orig(self, window)
        if got is not None:
            direct.append(self.url)
        return got

    monkeypatch.setattr(cube_mod._CheckedReader, "_read_direct", spy)
    fast = build_cube(items, TILE).values
    names = sorted({u.rsplit("/", 1)[-1] for u in direct})
    # SCL: 2 x 2 nearest; the 20 m bands: bilinear 2 x 2 (geoxai.geo.resample)
    assert names == sorted(f"{b}.tif" for b in CUBE_BANDS)
    monkeypatch.setattr(cube_mod._CheckedReader, "_aligned", None)  # every asset warped
    warped = build_cube(items, TILE).values
    np.testing.assert_array_equal(fast, warped)
    assert np.isnan(fast[0, :4, :, :7]).all() and np.isfinite(fast[0, :4, 20:, 7:]).all()
    assert np.isnan(fast[1, :4, :, :6]).all() and np.isfinite(fast[1, :4, :, 6:]).all()
