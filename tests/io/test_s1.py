"""Sentinel-1: dB conversion, aggregation on the optical axis, orbit rule, bad input, real data.

Real series (../shared/realdata via the ``realdata`` fixture) are read with GDAL's netCDF
driver (rasterio), as in tests/temporal/test_temporal_realdata.py.
"""

from __future__ import annotations

import json
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine

from geoxai.errors import ConfigError, DataAccessError, NoDataError
from geoxai.geo.grid import TileSpec, tile_at
from geoxai.io.s1 import (
    backscatter_encoding,
    build_s1_cube,
    choose_orbit,
    item_polarizations,
    orbit_direction,
    search_s1,
)
from geoxai.io.stac import read_items
from geoxai.io.stac_items import normalize_item
from geoxai.mapping.ancillary_s1 import s1_steps
from geoxai.synthetic.files import write_cog
from geoxai.synthetic.params import WorldParams
from geoxai.synthetic.world import SyntheticWorld
from geoxai.temporal.fuse import fuse
from geoxai.temporal.indices import IndexParams
from geoxai.temporal.s1 import (
    FLAG_GAP_FILLED,
    FLAG_MISSING_POL,
    FLAG_MIXED_ORBIT,
    FLAG_NO_COVERAGE,
    FLAG_NONPOSITIVE,
    S1Params,
    aggregate_s1,
    db_to_unit,
    to_db,
)
from geoxai.temporal.smoothing import (
    REFERENCE_FEATURES,
    PreprocessParams,
    SmoothingParams,
    preprocess,
    time_axis,
)

DAY = np.timedelta64(86_400_000_000_000, "ns")


# ---- dB -------------------------------------------------------------------------------------


def test_db_floor_nonpositive_and_unit_scaling():
    p = np.array([1.0, 0.1, 1e-3, 0.0, -0.01, np.nan], np.float32)
    db, nonpos = to_db(p, -22.0)
    np.testing.assert_allclose(db[:3], [0.0, -10.0, -22.0], atol=1e-5)  # -30 dB floored
    assert db[3] == db[4] == -22.0 and nonpos.tolist() == [0, 0, 0, 1, 1, 0]
    assert np.isnan(db[5])
    np.testing.assert_allclose(
        db_to_unit(np.array([-30.0, -22.0, -11.0, 0.0, 3.0])), [0, 0, 0.5, 1, 1]
    )


def _cube(db: np.ndarray, times: np.ndarray, bands=("VV", "VH")) -> xr.DataArray:
    t, _, h, w = db.shape
    return xr.DataArray(
        (10.0 ** (db / 10.0)).astype(np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": list(bands),
            "y": -np.arange(h) * 10.0,
            "x": np.arange(w) * 10.0,
        },
        attrs={"units": "linear", "tile_id": "test"},
    )


def _direct_medians(db: np.ndarray, times: np.ndarray, sp: SmoothingParams, floor=-22.0):
    """Per-step nanmedian of floored dB in [centre - step/2, centre + step/2), by plain numpy."""
    out = np.full((sp.n_steps, *db.shape[1:]), np.nan, np.float32)
    d = np.where(np.isfinite(db), np.maximum(db, floor), np.nan)
    for k, c in enumerate(time_axis(sp)):
        sel = (times >= c - sp.step_days / 2 * DAY) & (times < c + sp.step_days / 2 * DAY)
        if sel.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[k] = np.nanmedian(d[sel], axis=0)
    return out


def test_aggregation_is_the_per_step_median_and_gaps_are_filled_in_time():
    rng = np.random.default_rng(0)
    times = np.datetime64("2023-01-03", "ns") + np.arange(0, 360, 12) * DAY
    times = np.delete(times, [5, 6, 7])  # a 48-day gap: steps without acquisitions
    db = rng.normal(-12, 3, (times.size, 2, 3, 4)).astype(np.float32)
    db[0, 0, 0, 0] = np.nan
    sp = SmoothingParams(year=2023)
    raw = aggregate_s1(_cube(db, times), sp, S1Params(fill_gaps=False))
    expect = _direct_medians(db, times, sp)
    np.testing.assert_allclose(raw["backscatter"].values, expect, atol=1e-4, equal_nan=True)
    empty = np.isnan(expect).all(axis=(1, 2, 3))
    assert empty.sum() >= 2
    filled = aggregate_s1(_cube(db, times), sp)
    v = filled["backscatter"].values
    assert np.isfinite(v).all() and (filled["s1_flags"].values & FLAG_GAP_FILLED).all()
    k = int(np.nonzero(empty)[0][0])  # an inner gap: linear between its neighbours
    lo = max(i for i in range(k) if not empty[i])
    hi = min(i for i in range(k, sp.n_steps) if not empty[i])
    frac = (k - lo) / (hi - lo)
    np.testing.assert_allclose(v[k], v[lo] + frac * (v[hi] - v[lo]), atol=1e-4)
    np.testing.assert_array_equal(filled["time"].values, time_axis(sp))


def test_nonpositive_power_is_floored_and_flagged():
    times = np.datetime64("2023-01-05", "ns") + np.arange(0, 360, 6) * DAY
    db = np.full((times.size, 2, 2, 2), -10.0, np.float32)
    cube = _cube(db, times)
    cube.values[3, 0, 1, 1] = 0.0
    cube.values[4, 1, 1, 1] = -0.002
    ds = aggregate_s1(cube, SmoothingParams(year=2023))
    flags = ds["s1_flags"].values
    assert flags[1, 1] & FLAG_NONPOSITIVE and not flags[0, 0] & FLAG_NONPOSITIVE
    assert np.nanmin(ds["backscatter"].values) >= -22.0


# ---- real series ----------------------------------------------------------------------------


def _read_nc(path: Path, var: str) -> tuple[np.ndarray, dict, list[str]]:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no geotransform in the worldcereal files
        with rasterio.open(f"netcdf:{path}:{var}") as src:
            dims = [
                next((v for k, v in src.tags(i).items() if k.startswith("NETCDF_DIM_")), "")
                for i in range(1, src.count + 1)
            ]
            return src.read(), src.tags(), dims


@pytest.mark.realdata
def test_real_worldcereal_s1_values_and_aggregation(realdata):
    """159 ascending dates of a Belgian crop patch, stored as dB x 1e4 (int32)."""
    path = next((realdata / "worldcereal_ts_patch").glob("S1_GRD-ASCENDING_20m_*.nc"))
    vv, tags, secs = _read_nc(path, "VV")
    vh, _, _ = _read_nc(path, "VH")
    assert vv.shape == vh.shape == (159, 32, 32)
    origin = np.datetime64(tags["timestamp#units"].split("since ")[1].replace(" ", "T"))
    times = (origin + np.array([int(s) for s in secs]).astype("timedelta64[s]")).astype(
        "datetime64[ns]"
    )
    db = np.stack([vv, vh], axis=1).astype(np.float32) * np.float32(1e-4)
    db[np.stack([vv, vh], axis=1) == 0] = np.nan  # _FillValue 0
    med_vv, med_vh = np.nanmedian(db[:, 0]), np.nanmedian(db[:, 1])
    print(f"worldcereal medians: VV {med_vv:.2f} dB, VH {med_vh:.2f} dB")
    assert -13.0 < med_vv < -6.0 and -21.0 < med_vh < -13.0 and med_vh < med_vv - 4.0
    cube = _cube(db, times)
    back, nonpos = to_db(cube.values, -22.0)
    assert not nonpos.any()
    np.testing.assert_allclose(back, np.maximum(db, -22.0), atol=1e-3, equal_nan=True)
    sp = SmoothingParams(year=2018)
    ds = aggregate_s1(cube, sp, S1Params(fill_gaps=False))
    expect = _direct_medians(db, times, sp)
    np.testing.assert_allclose(ds["backscatter"].values, expect, atol=1e-4, equal_nan=True)
    assert np.isfinite(expect).all(axis=(1, 2, 3)).mean() > 0.9  # ~every 15-day step of 2018
    assert ds["s1_n_obs"].values.min() > 60


@pytest.mark.realdata
def test_real_openeo_sigma0_values_and_aggregation(realdata):
    """openEO GFMap compression: dB = 20 log10(DN) - 83 (uint16); 10 dates of April 2023."""
    path = realdata / "openeo_gfmap_cubes" / "cdse_sentinel1_grd.nc"
    vv, tags, days = _read_nc(path, "S1-SIGMA0-VV")
    vh, _, _ = _read_nc(path, "S1-SIGMA0-VH")
    dn = np.stack([vv, vh], axis=1).astype(np.float32)
    bad = (dn == 0) | (dn >= 65535)
    with np.errstate(divide="ignore"):
        db = np.where(bad, np.nan, 20.0 * np.log10(dn) - 83.0).astype(np.float32)
    med_vv, med_vh = np.nanmedian(db[:, 0]), np.nanmedian(db[:, 1])
    print(f"openEO medians: VV {med_vv:.2f} dB, VH {med_vh:.2f} dB")
    assert -16.0 < med_vv < -8.0 and -24.0 < med_vh < -14.0 and med_vh < med_vv
    times = np.datetime64("1990-01-01", "ns") + np.array([int(d) for d in days]) * DAY
    sp = SmoothingParams(start="2023-04-01", n_steps=2)
    ds = aggregate_s1(_cube(db, times), sp, S1Params(fill_gaps=False))
    np.testing.assert_allclose(
        ds["backscatter"].values, _direct_medians(db, times, sp), atol=1e-4, equal_nan=True
    )


@pytest.mark.realdata
def test_real_earthsearch_grd_items_parse(realdata):
    doc = json.loads(
        (realdata / "stac_items" / "earthsearch_v1" / "search_20250731_s1grd_s2.json").read_text()
    )
    s1 = [f for f in doc["features"] if f["collection"] == "sentinel-1-grd"]
    assert len(s1) == 3
    items = [normalize_item(f) for f in s1]
    for it in items:
        assert "hh" in it.assets and item_polarizations(it) == ("HH",)
        assert orbit_direction(it) == "ascending" and backscatter_encoding(it, "HH") == "amplitude"
    lon, lat = (
        items[0].properties["proj:centroid"]["lon"],
        items[0].properties["proj:centroid"]["lat"],
    )
    tile = tile_at(lon, lat, halo_px=4)
    with pytest.raises(NoDataError, match="no Sentinel-1 item with"):  # HH-only: dropped
        build_s1_cube(items, tile)
    with pytest.raises(DataAccessError, match=r"lacks \['VV', 'VH'\].*on_missing_polarization"):
        build_s1_cube(items, tile, S1Params(on_missing_polarization="raise"))
    with pytest.raises(ConfigError, match="GRD amplitude DN.*grd_calibration"):
        build_s1_cube(items, tile, S1Params(polarizations=("HH",)))
    cube = build_s1_cube(items, tile, S1Params(polarizations=("HH",), grd_calibration=500.0))
    assert cube.shape == (3, 1, *tile.shape) and cube.attrs["units"] == "linear"  # lazy: no read
    assert choose_orbit(items, S1Params(min_acquisitions=1)).direction == "ascending"


# ---- grids and encodings --------------------------------------------------------------------

TILE = TileSpec(32631, 960, 9380, halo_px=4, tile_size_m=600)


def _s1_item(
    i: int,
    hrefs: dict[str, Path],
    epsg: int,
    transform,
    shape,
    dtype="float32",
    orbit="ascending",
    collection="sentinel-1-rtc",
) -> dict:
    when = pd.Timestamp("2023-03-01T06:00:00Z") + pd.Timedelta(days=6 * i)
    lon0, lat0, lon1, lat1 = TILE.footprint(halo=True).buffer(0.01).bounds
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"S1A_TEST_{i:03d}",
        "collection": collection,
        "bbox": [lon0, lat0, lon1, lat1],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
        },
        "properties": {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "constellation": "sentinel-1",
            "sar:polarizations": [p.upper() for p in hrefs],
            "sat:orbit_state": orbit,
            "proj:epsg": epsg,
        },
        "links": [],
        "assets": {
            p: {
                "href": str(h),
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
                "proj:shape": list(shape),
                "proj:transform": list(transform)[:6],
                "raster:bands": [
                    {"data_type": dtype, "nodata": 0 if dtype == "uint16" else -32768}
                ],
            }
            for p, h in hrefs.items()
        },
    }


def test_s1_in_another_crs_and_resolution_lands_on_the_tile_grid(tmp_path):
    """Constant power in EPSG:4326 at ~20 m and GRD DN in UTM at 20 m: the same on the grid."""
    lon0, lat0, lon1, lat1 = TILE.footprint(halo=True).buffer(0.005).bounds
    res = 0.0002
    shape = (int((lat1 - lat0) / res) + 1, int((lon1 - lon0) / res) + 1)
    geo = Affine(res, 0, lon0, 0, -res, lat1)
    for pol, v in (("vv", 0.05), ("vh", 0.01)):
        write_cog(tmp_path / f"{pol}.tif", np.full(shape, v, np.float32), geo, "EPSG:4326", None)
    rtc = _s1_item(0, {p: tmp_path / f"{p}.tif" for p in ("vv", "vh")}, 4326, geo, shape)
    x0, _, _, y1 = TILE.with_halo(10).bounds
    n = TILE.with_halo(10).shape[0] // 2
    utm20 = Affine(20, 0, x0, 0, -20, y1)
    for pol, dn in (("vv", 400), ("vh", 200)):
        write_cog(tmp_path / f"{pol}_dn.tif", np.full((n, n), dn, np.uint16), utm20, TILE.crs, 0)
    grd = _s1_item(
        1,
        {p: tmp_path / f"{p}_dn.tif" for p in ("vv", "vh")},
        TILE.epsg,
        utm20,
        (n, n),
        dtype="uint16",
        collection="sentinel-1-grd",
    )
    cube = build_s1_cube([rtc, grd], TILE, S1Params(grd_calibration=1000.0)).compute()
    np.testing.assert_array_equal(cube["y"].values, TILE.coords()[0])
    np.testing.assert_allclose(cube.values[0, 0], 0.05, rtol=1e-6)
    np.testing.assert_allclose(cube.values[0, 1], 0.01, rtol=1e-6)
    np.testing.assert_allclose(cube.values[1, 0], (400 / 1000) ** 2, rtol=1e-5)  # DN^2 / A^2
    np.testing.assert_allclose(cube.values[1, 1], (200 / 1000) ** 2, rtol=1e-5)


# ---- synthetic world ------------------------------------------------------------------------

SP = SmoothingParams(start="2023-05-01", n_steps=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tiles = tuple(TileSpec(32631, 960 + c, 9380, tile_size_m=600) for c in range(2))
    w = SyntheticWorld(
        WorldParams(
            tiles=tiles,
            margin_px=16,
            start=date(2023, 4, 20),
            end=date(2023, 9, 10),
            with_s1=True,
            with_dem=True,
            overcast_tiles=(tiles[1].id,),
            overcast_prob=1.0,
        )
    )
    return w, w.write(tmp_path_factory.mktemp("s1_world"))


def _s1_source(archive) -> Path:
    return archive.root / "s1" / "items.ndjson"


def test_synthetic_backscatter_follows_land_cover_and_ignores_clouds(world):
    w, archive = world
    tile = w.tiles[1].with_halo(4)  # under thick cloud on every date
    ds = s1_steps(_s1_source(archive), tile, SP, S1Params(min_acquisitions=3))
    assert ds["s1_valid"].values.all() and ds.attrs["orbit"] == "ascending"
    lc = w.landcover()[w.block_slices(tile)]
    vv = ds["backscatter"].sel(band="VV").values.mean(axis=0)
    vh = ds["backscatter"].sel(band="VH").values.mean(axis=0)
    med = {c: (float(np.median(vv[lc == c])), float(np.median(vh[lc == c]))) for c in np.unique(lc)}
    print(
        "VV/VH medians per class (dB):", {c: tuple(round(v, 1) for v in m) for c, m in med.items()}
    )
    assert -9.0 < med[1][0] < -6.5 and -15.0 < med[1][1] < -12.0  # forest
    if 5 in med:
        assert med[5][0] > med[1][0]  # built-up brighter than forest
    assert med[2][1] < med[1][1] - 3  # crops darker than forest in VH
    cc = [it.properties["eo:cloud_cover"] for it in read_items(archive.ndjson)]
    assert min(cc) > 20  # every optical date is cloudy over the block


def test_orbit_rule_is_the_same_for_every_tile_of_a_superblock(world):
    w, archive = world
    src = _s1_source(archive)
    choices = [
        search_s1(
            src,
            t.with_halo(4),
            start="2023-04-20",
            end="2023-09-10",
            params=S1Params(min_acquisitions=3),
        )
        for t in w.tiles
    ]
    assert {c.direction for _, c in choices} == {"ascending"}
    assert choices[0][1].days == choices[1][1].days
    for items, _ in choices:
        assert {orbit_direction(it) for it in items} == {"ascending"}
    desc, _ = search_s1(
        src,
        w.tiles[0],
        start="2023-04-20",
        end="2023-09-10",
        params=S1Params(orbit="descending", min_acquisitions=3),
    )
    assert {orbit_direction(it) for it in desc} == {"descending"}
    _, fb = search_s1(
        src,
        w.tiles[0],
        start="2023-04-20",
        end="2023-09-10",
        params=S1Params(min_acquisitions=1000),
    )
    assert fb.direction == "both" and fb.fallback
    ds = s1_steps(src, w.tiles[0], SP, S1Params(min_acquisitions=1000))
    assert (ds["s1_flags"].values & FLAG_MIXED_ORBIT).all()
    days = ds.attrs["orbit_days"]  # over the axis +- half a window, both directions used
    assert days["ascending"] >= 5 and days["descending"] >= 5 and ds.attrs["orbit"] == "both"


def test_adjacent_tiles_agree_in_their_overlap(world):
    w, archive = world
    a, b = (s1_steps(_s1_source(archive), t.with_halo(8), SP) for t in w.tiles)
    xs = np.intersect1d(a["x"].values, b["x"].values)
    assert xs.size == 16
    np.testing.assert_array_equal(
        a["backscatter"].sel(x=xs).values, b["backscatter"].sel(x=xs).values
    )


def test_no_coverage_gives_a_flagged_nodata_layer(world):
    w, archive = world
    ds = s1_steps(_s1_source(archive), w.outside_tile(halo_px=2), SP)
    assert ds["backscatter"].shape == (8, 2, *w.outside_tile(halo_px=2).shape)
    assert np.isnan(ds["backscatter"].values).all() and not ds["s1_valid"].values.any()
    assert (ds["s1_flags"].values == FLAG_NO_COVERAGE).all()


def test_missing_vh_is_dropped_kept_as_nan_or_raised(world):
    w, archive = world
    docs = [json.loads(line) for line in _s1_source(archive).read_text().splitlines()]
    for d in docs[::2]:
        del d["assets"]["vh"]
    tile = w.tiles[0].with_halo(2)
    kept = build_s1_cube(docs, tile)
    assert len(kept.attrs["item_ids"]) == len(docs) // 2
    nan = build_s1_cube(docs, tile, S1Params(on_missing_polarization="nan"))
    assert nan.sizes["time"] == len(docs) and nan.attrs["flags"] & FLAG_MISSING_POL
    vh = nan.sel(band="VH").isel(x=0, y=0).values
    assert np.isnan(vh[::2]).all() and np.isfinite(vh[1::2]).all()
    with pytest.raises(DataAccessError, match=f"{docs[0]['id']}.*lacks \\['VH'\\]"):
        build_s1_cube(docs, tile, S1Params(on_missing_polarization="raise"))


def test_fused_cube_has_the_reference_17_features(world):
    from geoxai.io.cube import build_cube
    from geoxai.mapping.ancillary_dem import terrain

    w, archive = world
    tile = w.tiles[0].with_halo(4)
    pp = PreprocessParams(smoothing=SP, indices=IndexParams(("EVI", "BI", "MSAVI2", "GRNDVI")))
    opt = preprocess(build_cube(read_items(archive.ndjson), tile).compute(), pp)
    s1 = s1_steps(_s1_source(archive), tile, SP, S1Params(min_acquisitions=3))
    te = terrain(archive.root / "dem" / "items.ndjson", tile)
    fz = fuse(opt, s1, te)
    assert tuple(fz["band"].values) == REFERENCE_FEATURES and len(REFERENCE_FEATURES) == 17
    f = fz["features"].values
    assert f.shape == (8, 17, *tile.shape) and np.isfinite(f).all()
    np.testing.assert_array_equal(f[:, 11], s1["backscatter"].sel(band="VV").values)
    np.testing.assert_array_equal(f[3, 10], te["slope"].values)  # repeated every step
    unit = fuse(opt, s1, te, s1_scale="unit")["features"].sel(band="VH").values
    assert 0.0 <= unit.min() and unit.max() <= 1.0
    with pytest.raises(Exception, match="another grid"):
        fuse(opt, s1_steps(_s1_source(archive), w.tiles[1].with_halo(4), SP), te)
    with pytest.raises(Exception, match="another time axis"):
        fuse(
            opt, s1_steps(_s1_source(archive), tile, SmoothingParams(start="2023-05-01", n_steps=4))
        )
