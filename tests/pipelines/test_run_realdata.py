"""`geoxai run` on real Sentinel-2 data: the worldcereal patch as a user's archive, end to end.

The test builds the archive from ../shared/realdata at run time (per-date COGs of the original
digital numbers with their real nodata, STAC items with scale/offset; see
tests/fixtures/realdata_archive.py), serves the items with a local rustac STAC API on loopback,
and maps the four 600 m tiles that share the patch (the tile id allows 4-digit rows, so
tiles are >= ~570 m at this northing) with the ``geoxai run`` command (a subprocess, its own
local Ray) and a tiny seeded TemporalUNet bundle (wiring, not skill). Outputs are checked for
NaN leaks, quality flags, the held-out smoothing score and provenance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.realdata, pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]

TILE_M = 600
HALO = 68  # what the bundle's 64 px window lattice needs around a 60 px core
PATCH = (501360.0, 5629040.0, 502000.0, 5629680.0)


def _tiles():
    from geoxai.geo.grid import TileSpec

    # the 2 x 2 tiles of 600 m over the patch (x 501360..502000, y 5629040..5629680)
    return [TileSpec(32631, 835 + dc, 9381 + dr, 0, TILE_M) for dr in (0, 1) for dc in (0, 1)]


def _in_patch(tile) -> np.ndarray:
    """``(60, 60)`` bool: core pixels of ``tile`` inside the real patch."""
    x = tile.col * TILE_M + 5.0 + 10.0 * np.arange(TILE_M // 10)
    y = (tile.row + 1) * TILE_M - 5.0 - 10.0 * np.arange(TILE_M // 10)
    inx = (x > PATCH[0]) & (x < PATCH[2])
    iny = (y > PATCH[1]) & (y < PATCH[3])
    return iny[:, None] & inx[None, :]


def _bundle(path: Path, year: int) -> None:
    import torch

    from geoxai.models.unet import TemporalUNet
    from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams, feature_names
    from geoxai.train.temporal import save_temporal_bundle

    torch.manual_seed(0)
    feats = feature_names(PreprocessParams(smoothing=SmoothingParams(year=year)))
    net = TemporalUNet(in_features=len(feats), time_steps=24, embed=4, base=4, depth=1)
    save_temporal_bundle(
        path,
        net,
        list(feats),
        ([0.1] * len(feats), [0.2] * len(feats)),
        name="tiny",
        window=64,
        stride=32,
        context=8,
    )


def test_geoxai_run_maps_the_real_patch(realdata, tmp_path):
    from pyproj import Transformer

    from geoxai.config import load_run_config
    from geoxai.geo.bands import S2_BANDS
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore
    from geoxai.mapping.records import read_records
    from pipelines.services import local_stac_api
    from tests.fixtures.realdata_archive import COLLECTION, write_worldcereal_archive

    archive = write_worldcereal_archive(realdata, tmp_path / "archive")
    assert len(archive.item_ids) == 118
    _bundle(tmp_path / "model", 2018)
    tiles = _tiles()
    tr = Transformer.from_crs(32631, 4326, always_xy=True)
    lon0, lat0 = tr.transform(PATCH[0] + 20, PATCH[1] + 20)
    lon1, lat1 = tr.transform(PATCH[2] - 20, PATCH[3] - 20)
    with local_stac_api(archive.ndjson) as url:
        cfg = load_run_config(
            {
                "name": "realdata",
                "aoi": f"{lon0:.6f},{lat0:.6f},{lon1:.6f},{lat1:.6f}",
                "year": 2018,
                "stac": {"url": url, "collection": COLLECTION},
                "store": {"root": str(tmp_path / "store")},
                "models": {"prediction": str(tmp_path / "model")},
                "processing": {"halo_px": HALO, "tile_size_m": TILE_M},
                "resources": {"num_workers": 1, "cube_tasks_in_flight": 1},
                "tiles": [t.id for t in tiles],
            }
        )
        cfg_file = tmp_path / "run.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        ray_tmp = f"/tmp/gxr-{os.getpid()}"
        env = {**os.environ, "GEOXAI_RAY_TMPDIR": ray_tmp}
        try:
            res = subprocess.run(
                [sys.executable, "-m", "pipelines.cli", "run", str(cfg_file), "--no-progress"],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
        finally:
            subprocess.run(["pkill", "-9", "-f", ray_tmp], capture_output=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    layout = RunLayout(cfg.run_root())
    records = {r["tile_id"]: r for r in read_records(layout)}
    assert set(records) == {t.id for t in tiles}
    zone = ZoneStore.open(layout, 32631)
    for t in tiles:
        rec = records[t.id]
        assert rec["status"] == "done", rec
        # provenance: every input is a real acquisition of the archive, config and code known
        assert set(rec["input_items"]) <= set(archive.item_ids)
        assert len(rec["input_items"]) > 60  # 2018 plus margins
        assert rec["config_hash"] == cfg.output_hash()
        assert rec["code_version"].startswith("geoxai")
        pred = zone.read_tile(t, "prediction")
        quality = zone.read_tile(t, "quality")
        assert pred.shape[-2:] == quality.shape == (60, 60)
        assert set(np.unique(quality)) <= {0, 1, 2}
        # no NaN leak: a prediction wherever quality says there is data, NaN only where not
        p = pred if pred.ndim == 2 else pred[0]
        assert np.isfinite(p[quality > 0]).all()
        assert np.isnan(p[quality == 0]).all()
        inside = _in_patch(t)
        assert (quality[~inside] == 0).all()  # no data outside the patch: nodata, not values
        assert (quality[inside] > 0).mean() > 0.95
        h = rec["info"]["heldout"]
        assert h["n_held"] > 20 and h["channels"] == list(S2_BANDS)
        assert np.isfinite(h["mean_rmse"]["smooth"]) and h["mean_rmse"]["smooth"] < 0.1
    report = (Path(cfg.run_root()) / "report.html").read_text()
    assert "id='smoothing'" in report and tiles[0].id in report
    assert json.loads((Path(cfg.run_root()) / "config.json").read_text())["year"] == 2018
