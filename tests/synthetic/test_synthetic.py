"""Synthetic world: determinism, realistic values, clouds vs SCL, shadows, phenology, STAC, COGs."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.aoi import cover_aoi
from geoxai.geo.bands import S2_BANDS, canonical_band_name
from geoxai.geo.grid import TileSpec
from geoxai.synthetic.fields import block_tiles
from geoxai.synthetic.params import WorldParams
from geoxai.synthetic.spectra import CLOUD_FLAG, CROPLAND, FOREST, NATURAL_CLASSES, WATER
from geoxai.synthetic.world import SyntheticWorld, load_world

# 2 x 2 tiles of 600 m (60 px) + 16 px margin: a 152 x 152 px block, fast to make.
SMALL_TILES = tuple(
    TileSpec(32631, 960 + c, 9380 + r, tile_size_m=600) for r in range(2) for c in range(2)
)
ES_KEYS = {
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "swir16",
    "swir22",
    "scl",
}


def small(**kw) -> SyntheticWorld:
    base = dict(tiles=SMALL_TILES, margin_px=16, start=date(2023, 6, 1), end=date(2023, 7, 1))
    base.update(kw)
    return SyntheticWorld(WorldParams(**base))


def ndvi(refl: np.ndarray) -> np.ndarray:
    red, nir = refl[S2_BANDS.index("B04")], refl[S2_BANDS.index("B08")]
    return (nir - red) / (nir + red)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    world = small(corrupt=((1, "B04"),))
    return world, world.write(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def tile_world():
    """One full-size tile (728 px block), statics only unless a test renders."""
    return SyntheticWorld(tiles=block_tiles(1))


def test_determinism_by_seed():
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    for i in (0, 4):
        ra, rb, rc = dict(a.render(i)), dict(b.render(i)), dict(c.render(i))
        for band in ra:
            np.testing.assert_array_equal(ra[band], rb[band])
        assert any(not np.array_equal(ra[k], rc[k]) for k in ra)
    np.testing.assert_array_equal(a.landcover(), b.landcover())
    assert not np.array_equal(a.landcover(), c.landcover())


def test_dates_revisit_and_year_padding():
    w = SyntheticWorld(tiles=SMALL_TILES, margin_px=16)
    assert w.dates[0] == date(2022, 12, 2) and w.dates[-1] >= date(2024, 1, 25)
    assert {(b - a).days for a, b in zip(w.dates, w.dates[1:], strict=False)} == {5}
    assert 80 <= len(w.dates) <= 90
    assert {w.platform(i) for i in range(4)} == {"sentinel-2a", "sentinel-2b"}


def test_shapes_and_dn_ranges():
    w = small()
    h, wd = w.shape
    assert (h, wd) == (152, 152)
    out = dict(w.render(2))
    assert list(out) == [*S2_BANDS, "SCL"]
    for band, arr in out.items():
        res = 10 if band in ("B02", "B03", "B04", "B08") else 20
        assert arr.shape == (h * 10 // res, wd * 10 // res), band
        assert arr.dtype == (np.uint8 if band == "SCL" else np.uint16)
    for band in S2_BANDS:
        dn = out[band][out[band] > 0]
        refl = dn * 1e-4 - 0.1
        assert refl.min() > -0.05 and refl.max() < 1.2, band
    assert set(np.unique(out["SCL"])) <= set(range(12))


def test_spectral_signatures_per_class(tile_world):
    w = tile_world
    lc = w.landcover()
    summer = w.clean_reflectance("2023-07-15")
    winter = w.clean_reflectance(date(2023, 1, 15))
    assert summer.min() > 0 and summer.max() < 0.7
    b = {name: i for i, name in enumerate(S2_BANDS)}
    water, built = lc == WATER, lc == 5
    assert summer[b["B08"]][water].mean() < 0.05  # water: low NIR
    assert ndvi(summer)[water].mean() < 0
    assert summer[b["B11"]][built].mean() > 0.2  # built-up: bright SWIR
    forest = (lc == FOREST) & (w.tree_cover() > 0.8)
    assert summer[b["B08"]][forest].mean() > 0.25
    assert ndvi(winter)[forest].mean() > 0.3  # evergreen-ish
    crops = lc == CROPLAND
    assert ndvi(summer)[crops].mean() - ndvi(winter)[crops].mean() > 0.3  # phenology
    # every class is present and the truth layers agree with each other
    assert set(np.unique(lc)) == {1, 2, 3, 4, 5, 6}
    np.testing.assert_array_equal(w.natural(), np.isin(lc, NATURAL_CLASSES))
    tc = w.tree_cover()
    assert tc.min() >= 0 and tc.max() <= 1 and tc[lc == FOREST].min() >= 0.45
    assert tc[(lc == WATER) | (lc == CROPLAND)].max() == 0


def test_crop_ndvi_peaks_in_summer_for_each_field():
    w = small(seed=5)
    crops = w.landcover() == CROPLAND
    doys = [date(2023, m, 15) for m in range(1, 13)]
    series = np.stack([ndvi(w.clean_reflectance(d))[crops] for d in doys])
    peak_month = series.argmax(axis=0) + 1
    assert np.all((peak_month >= 4) & (peak_month <= 9))
    assert np.all(series.max(axis=0) - series[0] > 0.3)


def test_clean_truth_equals_archive_dn_without_clouds_and_noise():
    w = small(clouds=False, noise=0.0, swath_edge_prob=0.0)
    tile = SMALL_TILES[3].with_halo(7)  # odd halo: window not aligned to the 20 m grid
    clean = w.clean_reflectance(w.dates[3], tile=tile)
    assert clean.shape == (10, *tile.shape)
    out = dict(w.render(3))
    full = w.clean_reflectance(w.dates[3])
    for k, band in enumerate(S2_BANDS):
        dn = out[band].astype(np.int64)
        ref = full[k] if dn.shape == w.shape else full[k][::2, ::2]
        assert np.abs(dn - np.round((ref + 0.1) / 1e-4)).max() <= 1, band
    # the tile window is the same field cut at the tile's haloed grid; neighbours agree
    np.testing.assert_array_equal(clean, full[(slice(None), *w.block_slices(tile))])
    west = SMALL_TILES[2].with_halo(7)
    clean_w = w.clean_reflectance(w.dates[3], tile=west)
    overlap = 2 * 7  # the two haloed grids share 2 * halo columns
    np.testing.assert_array_equal(clean_w[..., -overlap:], clean[..., :overlap])
    with pytest.raises(InvalidInputError, match="margin_px"):
        w.clean_reflectance(w.dates[0], tile=SMALL_TILES[0].with_halo(40))


def test_cloud_cover_matches_scl_and_clouds_are_bright():
    w = small(start=date(2023, 1, 1), end=date(2023, 5, 1))
    covers = []
    for i in range(len(w.dates)):
        atm = w.atmosphere(i)
        out = dict(w.render(i, atm))
        scl = out["SCL"]
        valid = scl > 0
        cloud_scl = np.isin(scl, (8, 9))
        np.testing.assert_array_equal(cloud_scl, (atm.cloud >= CLOUD_FLAG) & valid)
        covers.append(cloud_scl[valid].mean() if valid.any() else 0.0)
        blue = out["B02"][::2, ::2] * 1e-4 - 0.1
        if (scl == 9).any():
            assert blue[scl == 9].mean() > 0.35
        clear = np.isin(scl, (4, 5, 6)) & (atm.cloud == 0) & (atm.shadow == 0)  # off the rim
        clean = w.clean_reflectance(w.dates[i], bands=["B02"])[0][::2, ::2]
        if clear.sum() > 100:
            assert np.abs(blue[clear] - clean[clear]).mean() < 0.01
    covers = np.array(covers)
    assert covers.min() < 0.05 and covers.max() > 0.5  # clear and cloudy dates both occur


def test_unflagged_haze_rim_around_clouds_like_real_scl():
    w = small(start=date(2023, 1, 1), end=date(2023, 5, 1), noise=0.0)
    seen = 0
    for i in range(len(w.dates)):
        atm = w.atmosphere(i)
        rim = (atm.cloud > 0.02) & (atm.cloud < CLOUD_FLAG) & ~atm.nodata
        if rim.sum() < 50:
            continue
        out = dict(w.render(i, atm))
        assert np.isin(out["SCL"][rim], (3, 4, 5, 6, 7, 10)).all()  # never flagged as cloud
        blue = out["B02"][::2, ::2] * 1e-4 - 0.1
        clean = w.clean_reflectance(w.dates[i], bands=["B02"])[0][::2, ::2]
        hazy = rim & (atm.shadow < 0.01) & (atm.cirrus == 0)
        if hazy.sum() < 20:
            continue
        assert (blue[hazy] - clean[hazy]).mean() > 0.005  # brighter than the true surface
        seen += 1
    assert seen >= 2


def _overlap(cloud: np.ndarray, shadow: np.ndarray, dr: int, dc: int) -> float:
    """Share of shadow pixels under which the cloud mask shifted by (dr, dc) is set."""
    h, w = cloud.shape
    pad = max(abs(dr), abs(dc))
    src = cloud[pad - dr : h - pad - dr, pad - dc : w - pad - dc]
    dst = shadow[pad : h - pad, pad : w - pad]
    return float((src & dst).sum()) / max(float(dst.sum()), 1.0)


def test_shadows_are_clouds_displaced_away_from_the_sun():
    w = SyntheticWorld(tiles=block_tiles(1), start=date(2023, 3, 1), end=date(2023, 6, 1))
    checked = 0
    for i in range(len(w.dates)):
        atm = w.atmosphere(i)
        if not 0.1 < (atm.cloud >= CLOUD_FLAG).mean() < 0.6:
            continue
        dr, dc = atm.shadow_offset_px
        # northern hemisphere, late morning: sun to the south(-east), shadows to the north(-west)
        assert 90 < atm.sun_azimuth < 200 and dr < 0
        assert (dr, dc) != (0, 0)
        cloud, shadow = atm.cloud >= CLOUD_FLAG, atm.shadow > 0.1
        assert _overlap(cloud, shadow, dr, dc) > 0.95 > _overlap(cloud, shadow, 0, 0) + 0.3
        out = dict(w.render(i, atm))
        clean = w.clean_reflectance(w.dates[i], bands=["B08"])[0][::2, ::2]
        nir = out["B08"][::2, ::2] * 1e-4 - 0.1
        assert nir[out["SCL"] == 3].mean() < 0.7 * clean[out["SCL"] == 3].mean()
        checked += 1
        if checked == 2:
            break
    assert checked >= 1


def test_items_are_earth_search_v1_style(archive):
    import pystac
    import rasterio

    world, arc = archive
    assert len(arc.item_ids) == len(world.dates) == 7
    real = "earthsearch_v1 layout"
    for item_id in arc.item_ids:
        item = pystac.Item.from_file(str(arc.items_dir / f"{item_id}.json"))
        assert item.collection_id == "sentinel-2-l2a", real
        p = item.properties
        assert p["proj:code"] == "EPSG:32631" and p["s2:processing_baseline"] == "05.10"
        assert 0 <= p["eo:cloud_cover"] <= 100 and p["platform"].startswith("sentinel-2")
        assert p["mgrs:utm_zone"] == 31 and p["mgrs:latitude_band"] == "U"
        assert set(item.assets) == ES_KEYS
        for key, asset in item.assets.items():
            band = canonical_band_name(key)
            assert band is not None and asset.href.startswith("/")
            rb = asset.extra_fields["raster:bands"][0]
            assert rb["nodata"] == 0
            if band != "SCL":
                assert (rb["scale"], rb["offset"], rb["data_type"]) == (1e-4, -0.1, "uint16")
            assert "data" in asset.roles
            if item_id == arc.item_ids[0] or key == "red":
                if asset.href in arc.corrupt_hrefs:
                    continue
                with rasterio.open(asset.href) as ds:
                    assert list(ds.transform)[:6] == asset.extra_fields["proj:transform"]
                    assert list(ds.shape) == asset.extra_fields["proj:shape"]
                    assert ds.crs.to_epsg() == 32631 and ds.nodata == 0
        lon0, lat0, lon1, lat1 = item.bbox
        assert lon0 < world.aoi[0] < world.aoi[2] < lon1 and lat0 < world.aoi[1] < lat1
    lines = arc.ndjson.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == list(arc.item_ids)
    fc = pystac.ItemCollection.from_file(str(arc.item_collection))
    assert [it.id for it in fc] == list(arc.item_ids)
    coll = pystac.Collection.from_file(str(arc.collection))
    assert coll.id == "sentinel-2-l2a" and len(coll.get_item_links()) == 7


def test_cloud_cover_property_matches_scl_file(archive):
    import rasterio

    _, arc = archive
    for item_id in arc.item_ids[:3]:
        item = json.loads((arc.items_dir / f"{item_id}.json").read_text())
        with rasterio.open(item["assets"]["scl"]["href"]) as ds:
            scl = ds.read(1)
        valid = scl > 0
        expected = 100 * np.isin(scl[valid], (8, 9, 10)).mean()
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(expected, abs=1e-4)


def test_cogs_are_valid(archive):
    from rio_cogeo.cogeo import cog_validate

    _, arc = archive
    folder = arc.root / "data" / arc.item_ids[0]
    paths = [folder / f"{b}.tif" for b in ("B04", "B11", "SCL")] + list(arc.truth.values())
    for path in paths:
        ok, errors, _ = cog_validate(str(path), quiet=True)
        assert ok, (path, errors)


def test_full_size_tile_cog_has_overviews(tmp_path, tile_world):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from geoxai.synthetic.files import write_cog

    arr = dict(tile_world.render(0))["B08"]
    path = tmp_path / "B08.tif"
    write_cog(path, arr, tile_world.transform, tile_world.crs, 0)
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2] and ds.profile["compress"].lower() == "zstd"
        np.testing.assert_array_equal(ds.read(1), arr)


def test_corrupt_option_really_corrupts(archive):
    import rasterio
    from rasterio.errors import RasterioError

    world, arc = archive
    assert len(arc.corrupt_hrefs) == 1
    bad = arc.corrupt_hrefs[0]
    assert bad.endswith(f"{world.item_id(1)}/B04.tif")
    with pytest.raises(RasterioError):
        with rasterio.open(bad) as ds:
            ds.read(1)
    with rasterio.open(bad.replace("B04", "B03")) as ds:
        assert ds.read(1).shape == world.shape


def test_truth_files_and_world_reload(archive):
    import rasterio

    world, arc = archive
    with rasterio.open(arc.truth["landcover"]) as ds:
        np.testing.assert_array_equal(ds.read(1), world.landcover())
        assert ds.transform == world.transform
    with rasterio.open(arc.truth["natural"]) as ds:
        np.testing.assert_array_equal(ds.read(1), world.natural())
    with rasterio.open(arc.truth["tree_cover"]) as ds:
        np.testing.assert_array_equal(ds.read(1), world.tree_cover())
    again = load_world(arc.root)
    assert again.params == world.params
    np.testing.assert_array_equal(dict(again.render(2))["B08"], dict(world.render(2))["B08"])


def test_aoi_covers_exactly_the_tiles_and_outside_tile_has_no_scene(tile_world):
    from shapely.geometry import box

    w = SyntheticWorld(tiles=block_tiles(4))
    covered = [t.id for t in cover_aoi(w.aoi)]
    assert len(covered) == 4 and set(covered) == {t.id for t in w.tiles}
    assert {t.id for t in w.tiles} == {
        "32631_E0096_N0938",
        "32631_E0097_N0938",
        "32631_E0096_N0939",
        "32631_E0097_N0939",
    }
    outside = w.outside_tile()
    assert not outside.footprint().intersects(box(*w.bbox))
    assert 50.7 < w.aoi[1] < 50.9 and 4.0 < w.aoi[0] < 4.3


def test_bad_params_raise_typed_errors():
    with pytest.raises(ConfigError, match="UTM zones"):
        WorldParams(tiles=(TileSpec(32631, 96, 938), TileSpec(32632, 10, 938)))
    with pytest.raises(ConfigError, match="even"):
        WorldParams(margin_px=63)
    with pytest.raises(ConfigError, match="corrupt band"):
        WorldParams(corrupt=((0, "B99"),))


def test_swath_edge_nodata_is_consistent_across_bands_and_scl():
    w = small(swath_edge_prob=1.0)
    out = dict(w.render(0))
    scl0 = out["SCL"] == 0
    assert 0.05 < scl0.mean() < 0.6
    for band in S2_BANDS:
        dn0 = out[band] == 0
        expect = scl0 if dn0.shape == scl0.shape else scl0.repeat(2, 0).repeat(2, 1)
        np.testing.assert_array_equal(dn0, expect, err_msg=band)


def test_demo_data_cli_writes_a_small_archive(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "demo"
    args = ["demo-data", "--out", str(out), "--tiles", "1", "--margin", "0"]
    args += ["--start", "2023-06-01", "--end", "2023-06-06", "--seed", "7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "32631_E0096_N0938" in result.output and "collection" in result.output
    items = sorted((out / "items").glob("*.json"))
    assert len(items) == 2 and all("_31UES_202306" in p.stem for p in items)
    world = load_world(out)
    assert world.params.seed == 7 and world.shape == (600, 600) and len(world.dates) == 2


def _worldcereal_series(root) -> dict[str, np.ndarray]:
    """Real L2A series of tile 31UDS (118 dates): band -> (time, 32, 32) DN at 20 m."""
    import warnings

    import rasterio

    stem = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
    out = {}
    for band in (*S2_BANDS, "SCL"):
        res = "10m" if band in ("B02", "B03", "B04", "B08") else "20m"
        path = root / "worldcereal_ts_patch" / f"S2_L2A_{res}_{stem}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the files carry no geotransform
            with rasterio.open(f"netcdf:{path}:{band}") as src:
                a = src.read()
        out[band] = a[:, ::2, ::2] if res == "10m" else a
    return out


@pytest.mark.realdata
def test_clear_sky_values_match_a_real_belgian_series(realdata):
    """Clear-sky (SCL 4/5) per-band quantiles and cloud share vs 118 real dates in 31UDS."""
    real = _worldcereal_series(realdata)
    real_scl = real["SCL"]
    clear = np.isin(real_scl, (4, 5))
    w = SyntheticWorld(tiles=block_tiles(1), start=date(2023, 1, 1), end=date(2023, 12, 31))
    syn: dict[str, list[np.ndarray]] = {b: [] for b in S2_BANDS}
    covers = []
    for i in range(0, len(w.dates), 3):
        out = dict(w.render(i))
        scl = out["SCL"]
        covers.append(np.isin(scl, (8, 9, 10))[scl > 0].mean())
        m = np.isin(scl, (4, 5))
        for b in S2_BANDS:
            a = out[b] if out[b].shape == scl.shape else out[b][::2, ::2]
            syn[b].append(a[m][::10] * 1e-4 - 0.1)
    real_cover = np.isin(real_scl, (8, 9, 10)).mean()
    assert abs(np.mean(covers) - real_cover) < 0.2
    for b in S2_BANDS:
        r = np.percentile(real[b][clear] * 1e-4, [10, 50, 90])  # baseline 02.xx: no offset
        s = np.percentile(np.concatenate(syn[b]), [10, 50, 90])
        assert np.all(np.abs(s - r) < np.maximum(0.05, 0.25 * r)), (b, r, s)


def test_items_normalize_and_search_like_earth_search(archive):
    """geoxai.io.stac reads the archive as it reads Earth Search v1: bands, EPSG, scale/offset."""
    from geoxai.errors import NoDataError
    from geoxai.geo.bands import CUBE_BANDS
    from geoxai.io.stac import search
    from geoxai.io.stac_items import band_scaling

    world, arc = archive
    found = search(
        arc.ndjson, collections="sentinel-2-l2a", bbox=world.aoi, max_cloud=60, bands=CUBE_BANDS
    )
    clouds = [json.loads(x)["properties"]["eo:cloud_cover"] for x in arc.ndjson.open()]
    assert len(found) == sum(c <= 60 for c in clouds) > 0
    for item in found:
        assert item.properties["proj:epsg"] == 32631
        assert set(CUBE_BANDS) <= set(item.assets)
        assert band_scaling(item, "B04") == pytest.approx((1e-4, -0.1))
        assert band_scaling(item, "SCL") == (1, 0)
    with pytest.raises(NoDataError):
        search(
            arc.ndjson, collections="sentinel-2-l2a", bbox=world.outside_tile().footprint().bounds
        )


@pytest.mark.stac
def test_archive_served_by_a_local_stac_api(archive, rustac_api):
    from geoxai.io.stac import search

    world, arc = archive
    url = rustac_api(arc.ndjson)
    found = search(
        url, collections="sentinel-2-l2a", bbox=world.aoi, datetime="2023-06-01/2023-06-20"
    )
    expect = [world.item_id(i) for i, d in enumerate(world.dates) if d <= date(2023, 6, 19)]
    assert [it.id for it in found] == expect and len(expect) == 4


def test_same_params_write_the_same_bytes(tmp_path):
    import hashlib

    def digest(root):
        return {
            str(p.relative_to(root)): hashlib.sha256(
                p.read_bytes().replace(str(root).encode(), b"ROOT")
            ).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    params = dict(start=date(2023, 6, 1), end=date(2023, 6, 11), seed=11)
    small(**params).write(tmp_path / "a", workers=1)
    small(**params).write(tmp_path / "b", workers=2)
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert len(a) == 3 * 12 + 3 + 4 and a == b
