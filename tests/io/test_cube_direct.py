"""The direct cube build (geoxai.io.cube_direct: DN read straight from the COGs) commits the very
store the float path (stackstac's float32 cube, encoded) commits: the same chunk objects (their
SHA-256 in the commit marker), the same arrays, coordinates and attributes. On synthetic scenes
(holes, partial footprints, a mosaicked day, both phases of the 20 m grid, bilinear and
nearest), on the synthetic world, and on real Sentinel-2 DN; and every case the direct build
does not reproduce takes the float path, with the reason recorded."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

from geoxai.geo.grid import TileSpec
from geoxai.io import store
from geoxai.io.cube_direct import dn_table
from geoxai.io.location import resolve
from geoxai.io.tile_cube import DIRECT, FLOAT, build_tile_cube
from tests.io.test_cube import (  # noqa: F401 - clean_world is a fixture
    SYN_TILES,
    TILE,
    WHEN,
    _scene,
    _scene_in_zone,
    clean_world,
)
from tests.io.test_signing import pc_items  # noqa: F401 - a fixture

DATES = {"start": "2023-01-01", "end": "2023-12-31"}


def _both(items: list[Any], tile: TileSpec, tmp: Path | str, **kw: Any) -> tuple[Any, Any]:
    """``(direct record, float record)`` of the same cube built both ways."""
    kw = DATES | kw
    fast = build_tile_cube(items, tile, f"{tmp}/direct.zarr", **kw)
    slow = build_tile_cube(items, tile, f"{tmp}/float.zarr", direct=False, **kw)
    assert slow.build_path == FLOAT and slow.fallback == "direct=False"
    return fast, slow


def _assert_same_store(a: Any, b: Any) -> None:
    """Same chunk objects, arrays (values, dtypes, attrs), coordinates and group attrs."""
    va, vb = a.marker["variables"], b.marker["variables"]
    assert va.keys() == vb.keys()
    for name in va:
        assert va[name]["sha256"] == vb[name]["sha256"], name
        assert va[name] == vb[name], name
    da, db = (store.read_dataset(r.url, chunks={}).load() for r in (a, b))
    assert da.attrs == db.attrs
    assert set(da.variables) == set(db.variables)
    for name in da.variables:
        x, y = da[name], db[name]
        assert x.dtype == y.dtype and x.dims == y.dims and x.attrs == y.attrs, name
        np.testing.assert_array_equal(x.values, y.values, err_msg=str(name))
    assert a.marker["extra"] == b.marker["extra"]
    fs = resolve(a.url).filesystem()
    for name in va:  # the zarr.json of every array, byte for byte
        ka, kb = (resolve(f"{r.url}/{name}/zarr.json").path for r in (a, b))
        assert fs.cat_file(ka) == fs.cat_file(kb), name


def _scenes(tmp: Path) -> list[dict]:
    """Ramps with a hole, a scene covering the west of the tile only, and one day of two
    granules (the west one cut to 50 columns) whose values differ."""
    west = _scene(tmp, "S2A_DAY_W", WHEN + dt.timedelta(days=10), n10=60)
    east = _scene(tmp, "S2A_DAY_E", WHEN + dt.timedelta(days=10, seconds=5))
    return [
        _scene(tmp, "S2A_HOLE", WHEN, hole=(slice(30, 40), slice(30, 45))),
        _scene(tmp, "S2A_EDGE", WHEN + dt.timedelta(days=5), n10=40),
        east,
        west,
    ]


@pytest.mark.parametrize("resampling", ["bilinear", "nearest"])
@pytest.mark.parametrize("halo", [4, 7])  # 7: the tile grid is off the 20 m grid's phase
def test_direct_build_commits_the_float_paths_store(tmp_path, resampling, halo):
    tile = TileSpec(TILE.epsg, TILE.col, TILE.row, halo_px=halo, tile_size_m=600)
    fast, slow = _both(_scenes(tmp_path), tile, tmp_path, resampling=resampling)
    assert fast.build_path == DIRECT and fast.fallback == ""
    _assert_same_store(fast, slow)
    cube = store.read_cube(fast.url)
    assert cube.sizes["time"] == 3  # the two granules of one day are one step
    v = cube.values
    assert np.isnan(v).any() and np.isfinite(v).any()  # holes and edges are in the comparison


def test_empty_chunks_are_left_out_and_s3_stores_match(tmp_path, store_root):
    """A 2 km tile (two row blocks) and a date whose scene covers its top rows only: the chunks
    of fill values are not stored, as Zarr leaves them out; on the local S3 too."""
    tile = TileSpec(32632, col=300, row=2499, halo_px=4, tile_size_m=2000)  # 208 x 208 px
    origin = (599_800.0, 5_000_200.0)
    items = [
        _scene(tmp_path, "S2A_FULL", WHEN, origin=origin, n10=240),
        _scene(tmp_path, "S2A_TOP", WHEN + dt.timedelta(days=5), origin=origin, n10=60),
    ]
    fast, slow = _both(items, tile, store_root)
    assert fast.build_path == DIRECT
    _assert_same_store(fast, slow)
    refl = fast.marker["variables"]["reflectance"]
    assert refl["objects"] == 3  # 2 dates x 2 row blocks, the empty one left out


def test_direct_build_on_the_synthetic_world(clean_world, tmp_path):  # noqa: F811
    world, archive = clean_world
    from geoxai.io.stac import read_items

    items = read_items(archive.ndjson)
    tile = SYN_TILES[3].with_halo(7)
    fast, slow = _both(items, tile, tmp_path)
    assert fast.build_path == DIRECT
    _assert_same_store(fast, slow)


B20 = ["B05", "B06", "B07", "B8A", "B11", "B12"]


@pytest.mark.realdata
@pytest.mark.parametrize(
    "col, row, halo",
    [
        (835, 9381, 3),  # the rasters start 39 px (odd: the other phase) inside the tile
        (836, 9382, 32),  # the rasters end inside the tile's halo
    ],
)
def test_direct_build_on_real_dn(realdata, tmp_path, col, row, halo):
    """Real L2A DN of the WorldCereal patch (20 m bands with nodata holes punched in), tiles
    over the rasters' edges at both phases of the 20 m grid: the same store both ways."""
    from tests.fixtures.realdata_archive import write_worldcereal_archive
    from tests.io.test_cube_bilinear import _holes

    arch = write_worldcereal_archive(realdata, tmp_path, dates=range(0, 118, 9), edit=_holes)
    items = [json.loads(line) for line in arch.ndjson.read_text().splitlines()]
    tile = TileSpec(32631, col, row, halo, 600)
    fast, slow = _both(items, tile, tmp_path, start="2000-01-01", end="2100-01-01")
    assert fast.build_path == DIRECT
    _assert_same_store(fast, slow)
    cube = store.read_cube(fast.url)
    finite = np.isfinite(cube.sel(band=B20).values)
    assert 0.05 < finite.mean() < 0.95  # edges and holes are in the comparison


def test_dn_table_is_the_encoders_rule():
    """The table the direct build maps DN through is what encoding the float cube gives."""
    from geoxai.io.cube_rows import dn_encoder

    for scale, offset in ((1e-4, -0.1), (1e-4, 0.0), (2.5e-5, -0.1), (1e-7, 1000.0)):
        stored, bad = dn_table(scale, offset)
        dn = np.arange(65536, dtype=np.uint16)
        s, o = np.float32(scale), np.float32(offset)
        refl = dn.astype(np.float32) * s + o
        refl[0] = np.nan  # DN 0 is nodata
        out = np.empty((1, 1, 1, 65536), np.uint16)
        n_range, n_bad, _ = dn_encoder()(
            refl.reshape(1, 1, 1, -1), np.array([[s]]), np.array([[o]]), out
        )
        np.testing.assert_array_equal(stored[~bad], out.ravel()[~bad])
        assert int(bad.sum()) == n_range + n_bad
    assert not dn_table(1e-4, -0.1)[1].any()  # Sentinel-2's: every DN encodes back
    # float32 cannot tell most DN apart at this scaling: the float path stores other DN
    assert (dn_table(1e-7, 1000.0)[0] != np.arange(65536)).sum() > 60000


def test_a_lossy_scaling_is_stored_as_the_float_path_stores_it(tmp_path):
    """A scaling under which the float cube's DN are not the files' (float32 cannot tell them
    apart): the direct build maps the DN through the encoder's table, to the same store."""
    items = _scenes(tmp_path)
    for item in items[:2]:
        for asset in item["assets"].values():
            for rb in asset["raster:bands"]:
                if "scale" in rb:
                    rb["scale"], rb["offset"] = 1e-7, 1000.0
    fast, slow = _both(items, TILE, tmp_path)
    assert fast.build_path == DIRECT
    _assert_same_store(fast, slow)
    dn = store.read_dataset(fast.url, chunks={})["reflectance"].values
    assert 0 < (dn[:2] == 0).mean() < 1 and (dn[2] != 0).mean() > 0.5


# ---- the cases the direct build leaves to the float path ---------------------------------


def _fallback(items: list[Any], tile: TileSpec, tmp: Path, why: str, **kw: Any) -> None:
    fast, slow = _both(items, tile, tmp, **kw)
    assert fast.build_path == FLOAT
    assert why in fast.fallback, fast.fallback
    _assert_same_store(fast, slow)


def test_an_item_of_another_zone_takes_the_float_path(tmp_path):
    refl = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    const = {b: 3000 + 10 * k for k, b in enumerate(refl)} | {"SCL": 4}
    a = _scene(tmp_path, "S2A_Z32", WHEN, const=const)
    b = _scene_in_zone(tmp_path, "S2B_Z31", WHEN + dt.timedelta(days=3), 32631, const)
    _fallback([a, b], TILE, tmp_path, "EPSG:32631")


def _off_lattice(tmp: Path, item: dict) -> dict:
    """The item with its 20 m reflectance rasters moved 5 m off the tile's 10 m lattice, their
    metadata unchanged in zone (found when the file is opened)."""
    from geoxai.synthetic.files import write_cog

    x0, y1 = (v + 5.0 for v in (599_800.0, 4_998_800.0))
    for key, asset in item["assets"].items():
        if asset["proj:transform"][0] != 20 or key == "scl":
            continue
        arr = np.full(asset["proj:shape"], 3000, np.uint16)
        arr[::3, ::2] = 4000
        write_cog(tmp / f"{key}_off.tif", arr, Affine(20, 0, x0, 0, -20, y1), "EPSG:32632", 0)
        asset["href"] = str(tmp / f"{key}_off.tif")
        asset["proj:transform"] = [20, 0, x0, 0, -20, y1]
    return item


def _float_asset(tmp: Path, item: dict) -> dict:
    """The item with its B02 stored as float32 DN (a data type the direct build refuses)."""
    import rasterio

    from geoxai.synthetic.files import write_cog

    asset = item["assets"]["blue"]
    with rasterio.open(asset["href"]) as ds:
        arr, transform = ds.read(1).astype(np.float32), ds.transform
    write_cog(tmp / "blue_f32.tif", arr, transform, "EPSG:32632", 0)
    asset["href"] = str(tmp / "blue_f32.tif")
    return item


@pytest.mark.parametrize(
    ("edit", "why"),
    [(_off_lattice, "lattice"), (_float_asset, "data type float32")],
)
def test_an_odd_asset_takes_the_float_path(tmp_path, edit, why):
    good = _scene(tmp_path, "S2A_GOOD", WHEN)
    odd = edit(tmp_path, _scene(tmp_path, "S2A_ODD", WHEN + dt.timedelta(days=5)))
    _fallback([good, odd], TILE, tmp_path, why)


def test_a_day_of_differently_scaled_items_takes_the_float_path(tmp_path):
    west = _scene(tmp_path, "S2A_W", WHEN, n10=60)
    east = _scene(tmp_path, "S2A_E", WHEN + dt.timedelta(seconds=5))
    for asset in east["assets"].values():
        for rb in asset["raster:bands"]:
            if "offset" in rb:
                rb["offset"] = 0.0
    _fallback([west, east], TILE, tmp_path, "scaled differently")


def test_other_resampling_takes_the_float_path(tmp_path):
    items = [_scene(tmp_path, "S2A_CUBIC", WHEN)]
    _fallback(items, TILE, tmp_path, "resampling 'cubic'", resampling="cubic")


@pytest.mark.realdata
def test_signing_and_signed_hrefs_take_the_float_path(pc_items, pc_standin, tmp_path):  # noqa: F811
    from geoxai.io.signing import SIGNER
    from tests.io.test_signing import TILE as PC_TILE

    wide = {"start": "2000-01-01", "end": "2100-01-01"}
    _fallback(pc_items, PC_TILE, tmp_path / "a", "signing", signing="planetary-computer", **wide)
    signed = json.loads(json.dumps(pc_items))
    for asset in signed[0]["assets"].values():
        if asset["href"].startswith(pc_standin.blob_url):
            asset["href"] = SIGNER.sign(asset["href"])[0]
    assert "?" in signed[0]["assets"]["B04"]["href"]
    _fallback(signed, PC_TILE, tmp_path / "b", "signed (query-string) href", **wide)


def test_a_corrupt_or_missing_cog_is_the_float_paths_typed_error(tmp_path):
    """Read errors on the direct path are the float path's: CorruptDataError / DataAccessError
    naming the href, and nothing is committed."""
    from geoxai.errors import CorruptDataError, DataAccessError

    items = [_scene(tmp_path, "S2A_OK", WHEN), _scene(tmp_path, "S2A_BAD", WHEN + dt.timedelta(1))]
    href = items[1]["assets"]["red"]["href"]
    raw = Path(href).read_bytes()
    Path(href).write_bytes(raw[: len(raw) // 3])  # header survives, tiles do not
    url = str(tmp_path / "cube.zarr")
    with pytest.raises(CorruptDataError, match=href):
        build_tile_cube(items, TILE, url, **DATES)
    assert not store.is_committed(url)
    Path(href).unlink()
    with pytest.raises(DataAccessError, match=href):
        build_tile_cube(items, TILE, url, **DATES)
    assert not store.is_committed(url)
