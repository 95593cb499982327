"""``geoxai assess`` end to end on real data: WorldCereal's Belgian patch and its LPIS labels.

The map: a crop / non-crop map of the 640 x 640 m patch (``worldcereal_ts_patch``: 118 real,
cloudy L2A dates, EPSG:32631) made the simple way: the Whittaker-smoothed 2018 NDVI's seasonal
amplitude (summer maximum - spring minimum; annual crops are bare in spring, grass is not),
written as the ``prediction`` of a run over the 6 km tile that holds the patch (the rest of the
tile is nodata, quality 0), with ``quality`` from the same rules as ``geoxai run``.

The reference: the interpreters are the real LPIS Flanders 2018 land-cover labels of the patch
(``LC`` = 11 annual cropland -> class 1, anything else -> 0). The sampled points are labelled
and saved in the Belgian Lambert 72 CRS (EPSG:31370), then assessed against the run in UTM.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.temporal.test_temporal_realdata import STEM, TS, _read, worldcereal_ts_cube

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

PATCH_X0, PATCH_Y1 = 501_360.0, 5_629_680.0  # patch origin (EPSG:32631)
THRESHOLD = 0.15


@pytest.fixture(scope="module")
def real_run(realdata, tmp_path_factory):
    from geoxai.geo.grid import TileSpec
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
    from geoxai.mapping.records import write_tile
    from geoxai.mapping.stages import SPARSE_MAX_GAP_DAYS, SPARSE_MIN_OBS
    from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams, preprocess

    raw, _ = worldcereal_ts_cube(realdata)
    lc = _read(realdata / TS / f"OUTPUT_POLY-110_10m_{STEM}", "LC")[0][0]
    ds = preprocess(raw, PreprocessParams(smoothing=SmoothingParams(year=2018, lambda_=10.0)))
    ndvi = ds["features"].sel(band="NDVI").values  # (24, 64, 64), 15-day steps of 2018
    amplitude = ndvi[11:17].max(axis=0) - ndvi[6:11].min(axis=0)  # Jun-Aug max - Apr-May min
    tile = TileSpec(32631, int(PATCH_X0 // 6000), int(PATCH_Y1 // 6000))
    i0 = int(((tile.row + 1) * 6000 - PATCH_Y1) // 10)
    j0 = int((PATCH_X0 - tile.col * 6000) // 10)
    pred = np.full((600, 600), np.nan, np.float32)
    qual = np.zeros((600, 600), np.uint8)
    valid = ds["valid"].values
    sparse = (ds["n_obs"].values < SPARSE_MIN_OBS) | (
        ds["max_gap_days"].values > SPARSE_MAX_GAP_DAYS
    )
    pred[i0 : i0 + 64, j0 : j0 + 64] = np.where(valid, amplitude, np.nan)
    qual[i0 : i0 + 64, j0 : j0 + 64] = np.where(valid, np.where(sparse, 2, 1), 0)
    root = tmp_path_factory.mktemp("real") / "store" / "be-patch" / "2018"
    layout = RunLayout(str(root))
    (grid,) = ZoneGrid.from_tiles([tile]).values()
    zone = ZoneStore.create(layout, grid, default_layers())
    write_tile(zone, tile, {"prediction": pred, "quality": qual}, {"config_hash": "real-patch"})
    return root, lc, amplitude


def test_real_lpis_points_in_lambert72_assess_end_to_end(real_run, tmp_path):
    import pyogrio
    import shapely
    from pyproj import Transformer

    root, lc, amplitude = real_run
    pts = tmp_path / "sample.gpkg"
    res = CliRunner().invoke(
        app,
        ["assess", "sample", str(root), "--n", "150", "--strata", f"prediction:{THRESHOLD}",
         "--out", str(pts), "--seed", "2018"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    # interpreters: the LPIS label of the pixel under each point; saved in Belgian Lambert 72
    meta, _, wkb, fields = pyogrio.raw.read(str(pts))
    assert "32631" in meta["crs"]
    cols = dict(zip(list(meta["fields"]), fields, strict=True))
    g = shapely.from_wkb(wkb)
    x, y = shapely.get_x(g), shapely.get_y(g)
    r = np.floor((PATCH_Y1 - y) / 10).astype(int)
    c = np.floor((x - PATCH_X0) / 10).astype(int)
    assert r.min() >= 0 and r.max() < 64 and c.min() >= 0 and c.max() < 64
    cols["lpis"] = np.where(lc[r, c] == 11, "1", "0").astype(object)
    lx, ly = Transformer.from_crs(32631, 31370, always_xy=True).transform(x, y)
    labelled = tmp_path / "lpis_points_lambert72.gpkg"
    pyogrio.raw.write(
        str(labelled), geometry=shapely.to_wkb(shapely.points(lx, ly)),
        field_data=list(cols.values()), fields=list(cols), crs="EPSG:31370", driver="GPKG",
        geometry_type="Point",
    )  # fmt: skip
    out = tmp_path / "assessment.json"
    res = CliRunner().invoke(
        app,
        ["assess", str(root), "--reference", str(labelled), "--label-column", "lpis",
         "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["points"]["used"] == 150 and not doc["points"]["excluded"]
    crop = next(k for k in doc["overall"]["per_class"] if k["code"] == 1)
    # the census of the patch: LPIS cropland area and the map's true accuracy
    mapped = amplitude >= THRESHOLD
    truth = lc == 11
    true_ha, true_oa = truth.sum() / 100, float((mapped == truth).mean())
    lo, hi = crop["area_ha"]["ci95"]
    oa = doc["overall"]["overall_accuracy"]
    print(
        f"\nLPIS cropland {true_ha:.2f} ha; mapped {crop['mapped_ha']:.2f} ha; estimated "
        f"{crop['area_ha']['value']:.2f} ha (95 % CI {lo:.2f}..{hi:.2f}); overall accuracy "
        f"true {true_oa:.3f}, estimated {oa['value']:.3f} (CI {oa['ci95'][0]:.3f}.."
        f"{oa['ci95'][1]:.3f}); user's {crop['users_accuracy']['value']:.3f}, producer's "
        f"{crop['producers_accuracy']['value']:.3f}"
    )
    assert crop["mapped_ha"] == pytest.approx(mapped.sum() / 100)
    assert lo <= true_ha <= hi
    assert oa["ci95"][0] <= true_oa <= oa["ci95"][1]
    assert "<section id='accuracy'>" in (root / "report.html").read_text()
