"""geoxai.io.cube: STAC items -> raw tile cube, on small local COGs with known DN and on real items.

Local scenes are Earth Search v1 style items (asset keys ``red``/``nir08``/``scl``,
``proj:code`` only, raster:bands scale 1e-4 offset -0.1, nodata 0) pointing at GeoTIFFs written
here, so every pixel value is known. Tiles are small (600 m = 60 px, plus halo) to stay fast.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from geoxai.errors import CorruptDataError, DataAccessError, NoDataError
from geoxai.geo.bands import BANDS, CUBE_BANDS
from geoxai.geo.grid import TileSpec
from geoxai.io import store
from geoxai.io.cube import build_cube, solar_day
from geoxai.io.tile_cube import build_tile_cube

KEYS = {b: BANDS[b].common_name for b in CUBE_BANDS}  # B04 -> "red", B8A -> "nir08", SCL -> "scl"
TILE = TileSpec(32632, col=1000, row=8330, halo_px=4, tile_size_m=600)  # 68 x 68 px
SCENE_ORIGIN = (599_800.0, 4_998_800.0)  # top-left of the scenes, metres (multiple of 20)
SCENE_PX = 120  # 10 m pixels per side: covers the whole haloed tile


def _dn10(k: int, n: int) -> np.ndarray:
    """10 m DN of band index k: a linear ramp, unique per band (uint16)."""
    r, c = np.mgrid[0:n, 0:n]
    return (1000 + 100 * k + 7 * r + 3 * c).astype(np.uint16)


def _dn20(k: int, n: int) -> np.ndarray:
    r, c = np.mgrid[0:n, 0:n]
    return (2000 + 100 * k + 11 * r + 5 * c).astype(np.uint16)


def _scl(n: int) -> np.ndarray:
    r, c = np.mgrid[0:n, 0:n]
    return ((r + 2 * c) % 11 + 1).astype(np.uint8)


def _write_tif(path: Path, arr: np.ndarray, transform: Affine, epsg: int) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=0,
        tiled=True,
        blockxsize=32,
        blockysize=32,
        compress="deflate",
    ) as dst:
        dst.write(arr, 1)


def _scene(
    root: Path,
    item_id: str,
    when: dt.datetime,
    *,
    epsg: int = 32632,
    origin: tuple[float, float] = SCENE_ORIGIN,
    n10: int = SCENE_PX,
    const: dict[str, int] | None = None,
    hole: tuple[slice, slice] | None = None,
    drop: str | None = None,
) -> dict[str, Any]:
    """Write one acquisition (10 m + 20 m GeoTIFFs) and return its Earth Search v1 style item.

    Args:
        const: band -> constant DN (instead of the ramps), for warped scenes.
        hole: 10 m (rows, cols) set to nodata (DN 0) in B04.
    """
    folder = root / item_id
    folder.mkdir(parents=True)
    x0, y1 = origin
    assets: dict[str, Any] = {}
    for k, b in enumerate(CUBE_BANDS):
        res = BANDS[b].resolution_m
        n = n10 * 10 // res
        if b == "SCL":
            arr = _scl(n) if const is None else np.full((n, n), const.get(b, 4), np.uint8)
        elif res == 10:
            arr = _dn10(k, n) if const is None else np.full((n, n), const[b], np.uint16)
        else:
            arr = _dn20(k, n) if const is None else np.full((n, n), const[b], np.uint16)
        if hole is not None and b == "B04":
            arr[hole] = 0
        transform = Affine(res, 0, x0, 0, -res, y1)
        path = folder / f"{b}.tif"
        _write_tif(path, arr, transform, epsg)
        if b == drop:
            continue
        rb = {"nodata": 0, "data_type": str(arr.dtype), "spatial_resolution": res}
        if b != "SCL":
            rb |= {"scale": 0.0001, "offset": -0.1}
        assets[KEYS[b]] = {
            "href": str(path),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data", "reflectance"],
            "proj:shape": [n, n],
            "proj:transform": [res, 0, x0, 0, -res, y1],
            "raster:bands": [rb],
        }
    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    size = n10 * 10
    corners = [
        to_ll.transform(x, y)
        for x, y in [(x0, y1), (x0 + size, y1), (x0 + size, y1 - size), (x0, y1 - size)]
    ]
    lons, lats = zip(*corners, strict=True)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "geometry": {"type": "Polygon", "coordinates": [[*map(list, corners), list(corners[0])]]},
        "properties": {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "platform": "sentinel-2a",
            "constellation": "sentinel-2",
            "proj:code": f"EPSG:{epsg}",
            "s2:processing_baseline": "05.10",
            "eo:cloud_cover": 10.0,
        },
        "links": [],
        "assets": assets,
    }


def _tile_window(tile: TileSpec, origin: tuple[float, float] = SCENE_ORIGIN) -> tuple[int, int]:
    """(row, col) of the tile's top-left pixel in the 10 m scene grid."""
    x0, _, _, y1 = tile.bounds
    return int(round((origin[1] - y1) / 10)), int(round((x0 - origin[0]) / 10))


WHEN = dt.datetime(2023, 6, 2, 10, 18, 3, tzinfo=dt.UTC)


def test_cube_contract_values_and_alignment(tmp_path):
    hole = (slice(30, 40), slice(30, 45))
    item = _scene(tmp_path, "S2A_TEST_20230602_0_L2A", WHEN, hole=hole)
    cube = build_cube([item], TILE, resampling="nearest")

    assert cube.name == "reflectance"
    assert cube.dims == ("time", "band", "y", "x")
    assert cube.dtype == np.float32
    assert cube.chunks is not None  # lazy
    assert cube.shape == (1, 11, *TILE.shape)
    assert list(cube.band.values) == list(CUBE_BANDS)
    y, x = TILE.coords()
    np.testing.assert_array_equal(cube.y.values, y)
    np.testing.assert_array_equal(cube.x.values, x)
    assert cube.time.dtype == np.dtype("datetime64[ns]")
    assert str(cube.time.values[0])[:10] == "2023-06-02"
    assert list(cube.id.values) == ["S2A_TEST_20230602_0_L2A"]
    assert cube.attrs["crs"] == "EPSG:32632"
    assert cube.attrs["transform"] == [10.0, 0.0, 599960.0, 0.0, -10.0, 4998640.0]
    assert (cube.attrs["tile_id"], cube.attrs["halo_px"], cube.attrs["resolution_m"]) == (
        TILE.id,
        4,
        10,
    )

    v = cube.values
    r0, c0 = _tile_window(TILE)
    n = TILE.shape[0]
    for k, b in enumerate(CUBE_BANDS):
        got = v[0, k]
        if b == "SCL":
            want = np.repeat(np.repeat(_scl(SCENE_PX // 2), 2, 0), 2, 1)[r0 : r0 + n, c0 : c0 + n]
            np.testing.assert_array_equal(got, want.astype(np.float32))
            continue
        if BANDS[b].resolution_m == 10:
            dn = _dn10(k, SCENE_PX)
        else:  # nearest: every 20 m pixel becomes 2 x 2 pixels of 10 m
            dn = np.repeat(np.repeat(_dn20(k, SCENE_PX // 2), 2, 0), 2, 1)
        want = dn[r0 : r0 + n, c0 : c0 + n].astype(np.float32) * np.float32(1e-4) - np.float32(0.1)
        if b == "B04":
            wr, wc = hole[0].start - r0, hole[1].start - c0
            mask = np.zeros_like(want, bool)
            mask[wr : wr + 10, wc : wc + 15] = True
            assert np.isnan(got[mask]).all() and not np.isnan(got[~mask]).any()
            want[mask] = np.nan
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-7, equal_nan=True)


def test_bilinear_20m_is_exact_on_a_linear_ramp(tmp_path):
    item = _scene(tmp_path, "S2A_TEST_20230602_0_L2A", WHEN)
    got = build_cube([item], TILE, bands=["B05", "SCL"]).values[0]
    r0, c0 = _tile_window(TILE)
    n = TILE.shape[0]
    # 20 m pixel-centre coordinate of each 10 m pixel centre
    rr = (np.arange(r0, r0 + n) + 0.5) / 2 - 0.5
    cc = (np.arange(c0, c0 + n) + 0.5) / 2 - 0.5
    k = CUBE_BANDS.index("B05")
    dn = 2000 + 100 * k + 11 * rr[:, None] + 5 * cc[None, :]
    want = dn * 1e-4 - 0.1
    # GDAL warps in the file's integer type: interpolated values are whole DN (<= 0.5 DN off)
    np.testing.assert_allclose(got[0], want, atol=0.5e-4 + 1e-6)
    assert np.abs(got[0] - want).max() > 1e-5  # really interpolated, not nearest
    assert set(np.unique(got[1])) <= set(range(1, 12))  # SCL stays classes (nearest)


def test_partial_footprint_is_nodata_not_error(tmp_path):
    # a scene covering only the western part of the tile
    item = _scene(tmp_path, "S2A_EDGE", WHEN, origin=(599_800.0, 4_998_800.0), n10=40)
    got = build_cube([item], TILE, bands=["B04"]).values[0, 0]
    inside = 599_800 + 400 - TILE.bounds[0]  # metres of the tile covered, from its west edge
    ncov = int(inside // 10)
    assert not np.isnan(got[: 40 - 16, :ncov]).any()
    assert np.isnan(got[:, ncov:]).all()


def test_missing_asset_names_item_and_band(tmp_path):
    item = _scene(tmp_path, "S2A_NOSWIR", WHEN, drop="B11")
    with pytest.raises(DataAccessError, match=r"S2A_NOSWIR.*B11"):
        build_cube([item], TILE)
    cube = build_cube([item], TILE, bands=["B02", "B04", "SCL"])  # not asked for: fine
    assert cube.sizes["band"] == 3


def test_corrupt_cog_raises_on_compute_and_write(tmp_path):
    item = _scene(tmp_path, "S2A_BROKEN", WHEN)
    href = item["assets"]["red"]["href"]
    raw = Path(href).read_bytes()
    Path(href).write_bytes(raw[: len(raw) // 3])  # header survives, tiles do not
    cube = build_cube([item], TILE, bands=["B02", "B04"])  # lazy: nothing read yet
    with pytest.raises(CorruptDataError, match=href):
        cube.compute()
    url = str(tmp_path / "cube.zarr")
    with pytest.raises(CorruptDataError, match=href):
        store.write_dataset(cube, url)
    assert not store.is_committed(url)


def test_missing_file_raises_data_access_error(tmp_path):
    item = _scene(tmp_path, "S2A_GONE", WHEN)
    href = item["assets"]["nir"]["href"]
    Path(href).unlink()
    with pytest.raises(DataAccessError, match=href):
        build_cube([item], TILE, bands=["B08"]).compute()


def test_zero_items_and_empty_window(tmp_path):
    with pytest.raises(NoDataError, match=TILE.id):
        build_cube([], TILE)
    item = _scene(tmp_path, "S2A_JUNE", WHEN)
    with pytest.raises(NoDataError, match="2024-01-01/2024-12-31"):
        build_cube([item], TILE, start="2024-01-01", end="2024-12-31")
    assert build_cube([item], TILE, start="2023-06-02", end="2023-06-02").sizes["time"] == 1


def _scene_in_zone(tmp_path: Path, item_id: str, when: dt.datetime, epsg: int, const: dict):
    """A constant scene in another UTM zone that covers TILE's haloed footprint."""
    lon, lat = TILE.footprint(halo=True).exterior.xy
    fwd = Transformer.from_crs(4326, epsg, always_xy=True)
    xs, ys = fwd.transform(np.asarray(lon), np.asarray(lat))
    x0 = np.floor(min(xs) / 20) * 20 - 200
    y1 = np.ceil(max(ys) / 20) * 20 + 200
    n10 = int(np.ceil((max(max(xs) - x0, y1 - min(ys)) + 200) / 20)) * 2
    return _scene(tmp_path, item_id, when, epsg=epsg, origin=(x0, y1), n10=n10, const=const)


def test_mixed_crs_items_are_warped_to_the_tile_grid(tmp_path):
    const = {b: 3000 + 10 * k for k, b in enumerate(CUBE_BANDS) if b != "SCL"} | {"SCL": 4}
    a = _scene(tmp_path, "S2A_Z32", WHEN, const=const)
    b = _scene_in_zone(tmp_path, "S2B_Z31", WHEN + dt.timedelta(days=3), 32631, const)
    assert b["properties"]["proj:code"] == "EPSG:32631"
    cube = build_cube([b, a], TILE)
    assert list(cube.id.values) == ["S2A_Z32", "S2B_Z31"]  # sorted by time
    v = cube.values
    assert not np.isnan(v).any()
    for k, band in enumerate(CUBE_BANDS):
        want = (
            4.0 if band == "SCL" else np.float32(const[band]) * np.float32(1e-4) - np.float32(0.1)
        )
        np.testing.assert_allclose(v[:, k], want, atol=1e-6)


def test_same_day_granules_are_mosaicked_first_valid(tmp_path):
    # two granules of one overpass, seconds apart; they overlap east of scene column 50
    west = _scene(
        tmp_path, "S2A_WEST", WHEN, n10=SCENE_PX, const={b: 1500 for b in CUBE_BANDS if b != "SCL"}
    )
    for key in list(west["assets"]):  # cut the west granule to its western 50 columns
        href = Path(west["assets"][key]["href"])
        with rasterio.open(href, "r+") as ds:
            arr = ds.read(1)
            arr[:, int(500 // ds.res[0]) :] = 0
            ds.write(arr, 1)
    east = _scene(
        tmp_path,
        "S2A_EAST",
        WHEN + dt.timedelta(seconds=5),
        const={b: 2500 for b in CUBE_BANDS if b != "SCL"},
    )
    cube = build_cube([east, west], TILE, bands=["B04", "B11"])
    assert cube.sizes["time"] == 1
    assert list(cube.id.values) == ["S2A_WEST,S2A_EAST"]
    assert str(cube.time.values[0]) == "2023-06-02T00:00:00.000000000"
    v = cube.values[0, 0]
    _, c0 = _tile_window(TILE)
    split = 50 - c0  # first tile column that only the east granule covers
    np.testing.assert_allclose(v[:, :split], np.float32(1500e-4) - np.float32(0.1), atol=1e-6)
    np.testing.assert_allclose(v[:, split:], np.float32(2500e-4) - np.float32(0.1), atol=1e-6)


def test_solar_day_uses_longitude():
    import pystac

    item = pystac.Item(
        "x",
        {"type": "Point", "coordinates": [170.0, 0.0]},
        [169.0, -1.0, 171.0, 1.0],
        dt.datetime(2023, 6, 1, 22, 30, tzinfo=dt.UTC),
        {},
    )
    assert solar_day(item) == dt.date(2023, 6, 2)  # 22:30 UTC + 11.3 h


def test_round_trip_through_store(tmp_path, store_root):
    item = _scene(tmp_path, "S2A_RT", WHEN, hole=(slice(30, 40), slice(30, 45)))
    url = f"{store_root}/{TILE.id}.zarr"
    record = build_tile_cube([item], TILE, url, start="2023-01-01", end="2023-12-31")
    assert record.n_items == 1 and record.shape == (1, 11, *TILE.shape) and record.nbytes > 0
    back = store.read_cube(url)
    want = build_cube([item], TILE).compute()
    np.testing.assert_array_equal(back.values, want.values)
    np.testing.assert_array_equal(back.x.values, want.x.values)
    assert list(back.band.values) == list(CUBE_BANDS)
    assert back.attrs["crs"] == "EPSG:32632"
    assert back.attrs["transform"] == want.attrs["transform"]
    assert store.read_commit(url)["extra"]["item_ids"] == ["S2A_RT"]


# ---- real STAC item metadata: grid planning only (assets are remote) -------------------------


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("earthsearch_v1/S2A_32TPS_20230602_0_L2A.json", TileSpec(32632, 105, 855, halo_px=16)),
        # the same 32TPS item planned onto a tile of the neighbouring zone 33 (warped)
        ("earthsearch_v1/S2A_32TPS_20230602_0_L2A.json", TileSpec(32633, 38, 855, halo_px=8)),
        ("earthsearch_v0/S2A_28QCH_20200714_0_L2A.json", None),
        (
            "planetary_computer/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json",
            None,
        ),
    ],
)
def test_real_items_plan_the_tile_grid(realdata, path, tile):
    doc = json.loads((realdata / "stac_items" / path).read_text())
    if tile is None:  # a tile at the centre of the item's first 10 m asset, in its own zone
        from geoxai.io.stac_items import normalize_item

        norm = normalize_item(doc)
        a = norm.assets["B04"].extra_fields
        t = a["proj:transform"]
        h, w = a["proj:shape"]
        epsg = norm.properties["proj:epsg"]
        tile = TileSpec(epsg, int((t[2] + w * 5) // 6000), int((t[5] - h * 5) // 6000), 32)
    cube = build_cube([doc], tile)
    assert cube.shape == (1, 11, *tile.shape)
    assert cube.dtype == np.float32
    assert list(cube.band.values) == list(CUBE_BANDS)
    y, x = tile.coords()
    np.testing.assert_array_equal(cube.y.values, y)
    np.testing.assert_array_equal(cube.x.values, x)
    assert cube.attrs["crs"] == tile.crs
    assert list(cube.id.values) == [doc["id"]]
    # one dask chunk per date and band, the whole tile
    assert cube.data.chunksize == (1, 1, *tile.shape)


# ---- end to end on the synthetic world: archive -> (STAC API) -> cube -> store -------------

SYN_TILES = tuple(
    TileSpec(32631, 960 + c, 9380 + r, tile_size_m=600) for r in range(2) for c in range(2)
)


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory):
    """A cloud-free, noise-free 2x2 world of 600 m tiles, four acquisitions in June 2023."""
    from datetime import date

    from geoxai.synthetic.params import WorldParams
    from geoxai.synthetic.world import SyntheticWorld

    world = SyntheticWorld(
        WorldParams(
            tiles=SYN_TILES,
            margin_px=16,
            start=date(2023, 6, 1),
            end=date(2023, 6, 16),
            clouds=False,
            noise=0.0,
            swath_edge_prob=0.0,
        )
    )
    return world, world.write(tmp_path_factory.mktemp("world"))


def _check_against_truth(world, cube, tile):
    assert cube.shape == (len(world.dates), 11, *tile.shape)
    v = cube.values
    for t, when in enumerate(world.dates):
        assert str(cube.time.values[t])[:10] == str(when)[:10]
        clean = world.clean_reflectance(when, tile=tile)
        # archive DN = round((value + 0.1) / 1e-4): the cube is within half a DN of the truth
        np.testing.assert_allclose(v[t, :10], clean, atol=0.5e-4 + 2e-6)
        assert set(np.unique(v[t, 10])) <= set(range(1, 12))


def test_world_to_cube_to_store(clean_world, store_root):
    world, archive = clean_world
    tile = SYN_TILES[3].with_halo(7)  # odd halo: the tile grid is not on the 20 m grid
    url = f"{store_root}/cubes/{tile.id}.zarr"
    record = build_tile_cube(
        archive.ndjson, tile, url, start="2023-01-01", end="2023-12-31", resampling="nearest"
    )
    assert record.item_ids == archive.item_ids
    back = store.read_cube(url)
    _check_against_truth(world, back, tile)
    np.testing.assert_array_equal(back.x.values, tile.coords()[1])


def test_adjacent_tiles_agree_in_their_overlap(clean_world):
    _, archive = clean_world
    from geoxai.io.stac import read_items

    items = read_items(archive.ndjson)
    west, east = SYN_TILES[2].with_halo(6), SYN_TILES[3].with_halo(6)
    a = build_cube(items, west).values
    b = build_cube(items, east).values  # bilinear 20 m: still the same per pixel
    np.testing.assert_array_equal(a[..., -12:], b[..., :12])


@pytest.mark.stac
def test_build_tile_cube_from_a_local_stac_api(clean_world, rustac_api, tmp_path):
    world, archive = clean_world
    url = rustac_api(archive.ndjson)
    tile = SYN_TILES[0].with_halo(4)
    out = str(tmp_path / "cube.zarr")
    record = build_tile_cube(
        url, tile, out, start="2023-06-01", end="2023-06-30", resampling="nearest"
    )
    assert record.item_ids == archive.item_ids
    _check_against_truth(world, store.read_cube(out), tile)


def test_cli_cube(clean_world, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    _, archive = clean_world
    tile = SYN_TILES[1]
    out = tmp_path / "cli.zarr"
    args = ["cube", "--stac", str(archive.ndjson), "--tile", tile.id, "--start", "2023-06-01"]
    args += ["--end", "2023-06-30", "--out", str(out), "--halo", "8", "--tile-size", "600"]
    args += ["--bands", "red,nir,scl"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "items" in result.output and str(len(archive.item_ids)) in result.output
    assert "built by" in result.output and "direct" in result.output  # read straight as DN
    cube = store.read_cube(str(out))
    assert list(cube.band.values) == ["B04", "B08", "SCL"]
    assert cube.shape[2:] == tile.with_halo(8).shape
    again = CliRunner().invoke(app, args)  # committed: refuses without --overwrite
    assert again.exit_code != 0
    assert "overwrite" in str(again.exception)
