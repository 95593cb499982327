"""Stored raw cubes (geoxai.io.cube_codec via store/tile_cube): uint16 DN + uint8 SCL in row-block
chunks that decode to exactly the float32 cube; checksums; old float32 cubes; bad encodings."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from xarray.core import indexing

from geoxai.errors import CorruptDataError, IncompleteOutputError
from geoxai.io import store
from geoxai.io.cube import build_cube
from geoxai.io.cube_codec import (
    DN_ENCODING,
    DN_OFFSET,
    DN_SCALE,
    FLOAT_ENCODING,
    ROWS,
    CheckedChunks,
    NotWholeDNError,
    encode_cube,
)
from geoxai.io.cube_rows import DecodedRows, delta_shuffle, undo_zigzag_delta, zigzag_delta
from geoxai.io.tile_cube import build_tile_cube
from tests.io.test_cube import TILE, WHEN, _scene

BIG = TILE.with_halo(40)  # 140 x 140 px: two row blocks; odd position on the 20 m grid


def _scenes(tmp_path: Path) -> list[dict]:
    """Three dates: a hole in B04, and an older processing baseline (offset 0) on the last."""
    a = _scene(tmp_path, "S2A_A", WHEN, hole=(slice(30, 40), slice(30, 45)), n10=240)
    b = _scene(tmp_path, "S2B_B", WHEN + dt.timedelta(days=3), n10=240)
    c = _scene(tmp_path, "S2A_C", WHEN + dt.timedelta(days=10), n10=240)
    for asset in c["assets"].values():
        rb = asset["raster:bands"][0]
        if "offset" in rb:
            rb["offset"] = 0.0
    return [a, b, c]


def _stored(url: str) -> dict:
    return {
        k: json.loads((Path(url) / k / "zarr.json").read_text()) for k in ("reflectance", "SCL")
    }


def test_dn_cube_decodes_to_exactly_the_float32_cube(tmp_path):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    rec = build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    want = build_cube(items, BIG).compute()  # today's float32 cube, bilinear 20 m
    back = store.read_cube(url)
    assert back.dtype == np.float32 and back.shape == want.shape
    np.testing.assert_array_equal(back.values, want.values)  # bit for bit, NaN where NaN
    assert np.isnan(back.sel(band="B04").values).any()  # the hole
    assert want.sel(band="B04").values[2, 0, 0] != want.sel(band="B04").values[1, 0, 0]
    for c in ("time", "band", "y", "x", "id", "view:sun_azimuth"):
        np.testing.assert_array_equal(back[c].values, want[c].values)
    assert DN_SCALE not in back.coords and back.attrs["transform"] == want.attrs["transform"]

    meta = _stored(url)
    assert meta["reflectance"]["data_type"] == "uint16" and meta["SCL"]["data_type"] == "uint8"
    grid = meta["reflectance"]["chunk_grid"]["configuration"]["chunk_shape"]
    assert grid == [1, 10, ROWS, BIG.shape[1]]
    names = [c["name"] for c in meta["reflectance"]["codecs"]]
    assert names[-1] == "zstd" and meta["reflectance"]["codecs"][-1]["configuration"]["checksum"]
    marker = store.read_commit(url)
    assert marker["extra"]["cube_encoding"] == DN_ENCODING
    assert len(marker["variables"]["reflectance"]["sha256"]) == 3 * 2  # dates x row blocks
    assert rec.nbytes == marker["nbytes"]
    raw = xr.open_zarr(url, consolidated=False)
    assert raw["reflectance"].attrs["nodata"] == 0 and raw["SCL"].attrs["nodata"] == 255
    np.testing.assert_array_equal(raw[DN_OFFSET].values[:, 0], np.float32([-0.1, -0.1, 0.0]))


def test_reading_rows_reads_only_their_chunks(tmp_path, monkeypatch):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    seen: list[range] = []
    orig = DecodedRows._read

    def spy(self, times, chunks, top, out):
        seen.append(chunks)
        return orig(self, times, chunks, top, out)

    monkeypatch.setattr(DecodedRows, "_read", spy)
    monkeypatch.setattr(CheckedChunks, "__getitem__", None)  # the Zarr path is not taken
    cube = store.read_cube(url)
    assert seen == []  # opening reads no chunk
    block = cube.isel(y=slice(ROWS, ROWS + 8)).values  # rows of the second block only
    assert block.shape == (3, 11, 8, BIG.shape[1])
    assert seen == [range(1, 2)]  # one read, of the second row block (every date) only
    want = build_cube(items, BIG).values
    np.testing.assert_array_equal(block, want[:, :, ROWS : ROWS + 8])
    np.testing.assert_array_equal(cube.isel(time=1, band=3).values, want[1, 3])  # all blocks
    assert seen[1:] == [range(0, 1), range(1, 2)] or seen[1:] == [range(0, 2)]


def test_values_that_are_not_whole_dn_are_stored_as_float32(tmp_path):
    items = _scenes(tmp_path / "scenes")
    cube = build_cube(items, BIG)
    cube = cube + xr.zeros_like(cube).where(cube.band != "B05", np.float32(3e-5))  # 0.3 DN
    ds, enc = encode_cube(cube)
    with pytest.raises(NotWholeDNError, match="not whole DN"):
        store.write_dataset(ds, str(tmp_path / "x.zarr"), encoding=enc)
    assert not store.exists(str(tmp_path / "x.zarr"))  # nothing half-written left
    ds, enc = encode_cube(cube, dn=False)
    store.write_dataset(ds, str(tmp_path / "f.zarr"), encoding=enc)
    assert store.read_commit(str(tmp_path / "f.zarr"))["variables"]["reflectance"]["dtype"] == (
        "float32"
    )
    np.testing.assert_array_equal(store.read_cube(str(tmp_path / "f.zarr")).values, cube.values)


def test_a_day_mosaicked_from_differently_scaled_items_is_stored_as_float32(tmp_path):
    a = _scene(tmp_path, "S2A_WEST", WHEN, n10=240)
    b = _scene(tmp_path, "S2A_EAST", WHEN + dt.timedelta(seconds=5), n10=240)
    for asset in b["assets"].values():
        if "offset" in asset["raster:bands"][0]:
            asset["raster:bands"][0]["offset"] = 0.0
    url = str(tmp_path / "cube.zarr")
    build_tile_cube([a, b], BIG, url, start="2023-01-01", end="2023-12-31")
    assert store.read_commit(url)["extra"]["cube_encoding"] == FLOAT_ENCODING
    np.testing.assert_array_equal(store.read_cube(url).values, build_cube([a, b], BIG).values)


def test_old_float32_cube_still_reads_and_reuse_rebuilds_it(tmp_path):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    query = store.read_commit(url)["extra"]["query"]
    old = build_cube(items, BIG).drop_vars([DN_SCALE, DN_OFFSET])
    old.attrs["item_ids"] = [it["id"] for it in items]
    extra = {"query": query, "item_ids": old.attrs["item_ids"]}  # as written before
    store.write_dataset(old, url, overwrite=True, extra=extra)
    np.testing.assert_array_equal(store.read_cube(url).values, old.values)  # still reads

    with pytest.warns(UserWarning, match="older geoxai .*float32"):
        rec = build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31", reuse=True)
    assert not rec.reused and "older geoxai" in rec.repaired
    assert store.read_commit(url)["extra"]["cube_encoding"] == DN_ENCODING
    again = build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31", reuse=True)
    assert again.reused and not again.repaired and again.verify_seconds > 0


def _flip_a_byte(url: str) -> Path:
    chunk = sorted(p for p in (Path(url) / "reflectance" / "c").rglob("*") if p.is_file())[-1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    return chunk


def _reuse_rebuilds(items: list[dict], url: str, why: str) -> None:
    """A run's cube stage (reuse) meets the bad cube: rebuilt with a warning saying ``why``,
    and the rebuilt cube reads as the float32 cube."""
    with pytest.warns(UserWarning, match=why):
        rec = build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31", reuse=True)
    assert not rec.reused and rec.repaired
    assert store.verify(url) > 0
    np.testing.assert_array_equal(store.read_cube(url).values, build_cube(items, BIG).values)


def test_a_flipped_byte_is_a_typed_error_and_reuse_rebuilds_the_cube(tmp_path):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    good = store.read_cube(url).values
    _flip_a_byte(url)
    with pytest.raises(CorruptDataError, match=r"chunk 'c/.*' of array 'reflectance'.*Delete"):
        store.verify(url)
    with pytest.raises(CorruptDataError, match=r"array 'reflectance' cannot be decoded.*Delete"):
        _ = store.read_cube(url).values  # zstd's checksum, named, never a bare RuntimeError
    with pytest.warns(UserWarning, match="does not match its checksum"):
        rec = build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31", reuse=True)
    assert not rec.reused and "checksum" in rec.repaired
    store.verify(url)
    np.testing.assert_array_equal(store.read_cube(url).values, good)


def test_a_chunk_of_the_wrong_size_is_a_typed_error(tmp_path):
    import numcodecs

    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    chunk = sorted(p for p in (Path(url) / "SCL" / "c").rglob("*") if p.is_file())[0]
    chunk.write_bytes(numcodecs.Zstd(checksum=True).encode(np.zeros(100, np.uint8).tobytes()))
    with pytest.raises(CorruptDataError, match=r"array 'SCL'.*Delete the store"):
        _ = store.read_cube(url).values
    _reuse_rebuilds(items, url, "chunk .* of array 'SCL' does not match its checksum")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda a: a.update(cube_encoding="geoxai-cube-dn/9"), "does not know"),
        (lambda a: a.pop("cube_bands"), "no band list"),
        (lambda a: a.update(cube_bands=["B02", "B07", "NIR", "SCL"]), "bands"),
    ],
)
def test_unknown_encoding_or_missing_layout_is_a_typed_error(tmp_path, edit, match):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    meta_path = Path(url) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    edit(meta["attributes"])
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptDataError, match=match) as err:
        store.read_cube(url)
    assert "rerun the cube stage" in str(err.value)
    _reuse_rebuilds(items, url, match)  # the chunks match their checksums; the layout does not


@pytest.mark.parametrize("key", ["scale", "offset"])
def test_missing_scale_or_offset_attribute_is_a_typed_error(tmp_path, key):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    meta_path = Path(url) / "reflectance" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"][key]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptDataError, match=rf"'reflectance' has no {key} .*rerun the cube"):
        store.read_cube(url)
    _reuse_rebuilds(items, url, f"'reflectance' has no {key}")


def test_every_dataset_gets_chunk_checksums(store_root):
    ds = xr.Dataset({"a": (("y", "x"), np.arange(64.0).reshape(8, 8))}).chunk({"y": 4})
    url = f"{store_root}/plain.zarr"
    marker = store.write_dataset(ds, url)
    assert len(marker["variables"]["a"]["sha256"]) == 2
    assert store.verify(url) == sum(len(v["sha256"]) for v in marker["variables"].values())


def test_verify_of_an_uncommitted_store_is_incomplete(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(IncompleteOutputError):
            store.verify(str(tmp_path / "none.zarr"))


# ---- real Sentinel-2 L2A DN (WorldCereal patch) written as COGs: exact on real values ------


def _real_items(realdata: Path, root: Path, n_dates: int) -> list[dict]:
    """STAC items over COGs of the first ``n_dates`` real acquisitions of the WorldCereal patch
    (DN as delivered, nodata 0; 10 m bands 64x64, 20 m bands and SCL 32x32)."""
    from affine import Affine

    from geoxai.geo.bands import BANDS, CUBE_BANDS
    from tests.fixtures.realdata_series import read_nc
    from tests.io.test_cube import KEYS, _write_tif

    folder = realdata / "worldcereal_ts_patch"
    stem = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
    x0, y1 = 501_360.0, 5_629_680.0
    data = {}
    for b in CUBE_BANDS:
        res = BANDS[b].resolution_m
        arr, _, _ = read_nc(folder / f"S2_L2A_{res}m_{stem}", b)
        data[b] = arr[:n_dates]
    items = []
    for t in range(n_dates):
        day = dt.datetime(2017, 8, 1, 10, 30, tzinfo=dt.UTC) + dt.timedelta(days=5 * t)
        iid = f"S2_REAL_{t:03d}"
        (root / iid).mkdir(parents=True)
        assets = {}
        for b in CUBE_BANDS:
            res = BANDS[b].resolution_m
            arr = data[b][t].astype(np.uint8 if b == "SCL" else np.uint16)
            path = root / iid / f"{b}.tif"
            _write_tif(path, arr, Affine(res, 0, x0, 0, -res, y1), 32631)
            rb = {"nodata": 0, "data_type": str(arr.dtype), "spatial_resolution": res}
            if b != "SCL":
                rb |= {"scale": 0.0001, "offset": 0.0}  # baseline < 04.00 (2017)
            assets[KEYS[b]] = {
                "href": str(path),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "proj:shape": list(arr.shape),
                "proj:transform": [res, 0, x0, 0, -res, y1],
                "raster:bands": [rb],
            }
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "stac_extensions": [],
                "id": iid,
                "collection": "sentinel-2-l2a",
                "bbox": [2.98, 50.80, 2.99, 50.81],
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[2.98, 50.80], [2.99, 50.80], [2.99, 50.81], [2.98, 50.81], [2.98, 50.80]]
                    ],
                },
                "properties": {
                    "datetime": day.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "proj:code": "EPSG:32631",
                    "s2:processing_baseline": "02.06",
                },
                "links": [],
                "assets": assets,
            }
        )
    return items


@pytest.mark.realdata
def test_real_l2a_dn_cube_decodes_exactly(realdata, tmp_path):
    from geoxai.geo.grid import TileSpec

    items = _real_items(realdata, tmp_path / "cogs", 24)
    # a 600 m tile whose 40 px halo holds the whole 640 m patch; the 20 m bands are bilinear
    tile = TileSpec(32631, 836, 9382, halo_px=40, tile_size_m=600)
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, tile, url, start="2017-01-01", end="2018-12-31")
    want = build_cube(items, tile).compute()
    back = store.read_cube(url).values
    assert np.isfinite(want.values).any() and np.isnan(want.values).any()
    np.testing.assert_array_equal(back, want.values)
    assert store.read_commit(url)["extra"]["cube_encoding"] == DN_ENCODING


def test_zigzag_delta_is_lossless_on_any_uint16():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 65536, (3, 5, 64), dtype=np.uint16)
    a[0, 0, :4] = [0, 65535, 0, 65535]  # steps of the whole range, both ways
    z = zigzag_delta(a)
    assert z.dtype == np.uint16 and z[0, 0, 1] == 1  # -1 -> 1: small steps stay small
    np.testing.assert_array_equal(undo_zigzag_delta(z), a)


def test_the_fused_predictor_and_shuffle_are_the_codec_chains_bytes():
    """The direct build's one-pass kernel makes the bytes zigzag_delta + little-endian bytes +
    numcodecs' shuffle make, on strided and contiguous chunks, and tells fill-only chunks."""
    import numcodecs

    rng = np.random.default_rng(4)
    block = rng.integers(0, 65536, (4, 9, 37), dtype=np.uint16)
    block[0, 0, :4] = [0, 65535, 0, 32768]  # steps of the whole range and of half of it
    block[1, :, 5:20] = 7
    shuffle = numcodecs.Shuffle(elementsize=2)
    for chunk in (block[:, 2:6], block, np.full((2, 3, 37), 7, np.uint16), block[1:2, :, 5:20]):
        raw = np.empty(2 * chunk.size, np.uint8)
        other = delta_shuffle()(chunk, 7, raw)
        want = shuffle.encode(zigzag_delta(np.ascontiguousarray(chunk)).astype("<u2"))
        assert bytes(raw) == bytes(want)
        assert other == bool((chunk != 7).any())
    assert not delta_shuffle()(np.full((2, 3, 37), 7, np.uint16), 7, np.empty(444, np.uint8))
    for at in ((0, 0, 0), (1, 2, 36)):  # one value other than the fill, first or last
        one = np.full((2, 3, 37), 7, np.uint16)
        one[at] = 8
        assert delta_shuffle()(one, 7, np.empty(444, np.uint8))


def test_a_dn_cube_stored_without_the_predictor_reads_the_same(tmp_path):
    """A uint16 cube written before the zigzag-delta predictor (shuffle + zstd only) decodes
    on the row-block path to the same float32 cube."""
    items = _scenes(tmp_path / "scenes")
    cube = build_cube(items, BIG)
    ds, enc = encode_cube(cube)
    assert [type(f).__name__ for f in enc["reflectance"]["filters"]] == ["ZigzagDelta"]
    enc["reflectance"] = {k: v for k, v in enc["reflectance"].items() if k != "filters"}
    url = str(tmp_path / "old.zarr")
    store.write_dataset(ds, url, encoding=enc)
    assert [c["name"] for c in _stored(url)["reflectance"]["codecs"]][0] == "bytes"
    back = store.read_cube(url)
    assert isinstance(back.variable._data, indexing.LazilyIndexedArray)  # not via Zarr/dask
    np.testing.assert_array_equal(back.values, cube.values)


def test_a_lazily_read_cube_pickles(tmp_path):
    """The lazy cube (row-block reader, its decoders) goes through pickle, e.g. to a worker."""
    import pickle

    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    cube = pickle.loads(pickle.dumps(store.read_cube(url)))
    np.testing.assert_array_equal(
        cube.isel(y=slice(0, 8)).values, build_cube(items, BIG).values[:, :, :8]
    )


# ---- layers beside a cube (S1 steps, terrain) ---------------------------------------------------


def _layer(ny: int = 300, nx: int = 40) -> xr.Dataset:
    """An S1-steps-shaped layer: float32 dB (time, band, y, x), counts, flags."""
    rng = np.random.default_rng(3)
    db = rng.normal(-12, 3, (3, 2, ny, nx)).astype(np.float32)
    db[0, :, :5] = np.nan
    ds = xr.Dataset(
        {
            "backscatter": (("time", "band", "y", "x"), db, {"units": "dB"}),
            "s1_n_obs": (("y", "x"), rng.integers(0, 50, (ny, nx)).astype(np.int16)),
            "s1_flags": (("y", "x"), rng.integers(0, 8, (ny, nx)).astype(np.uint8)),
        },
        coords={"band": ["VV", "VH"], "y": np.arange(ny) * -10.0, "x": np.arange(nx) * 10.0},
    )
    return ds


def test_layers_are_stored_in_row_blocks_and_read_back_exactly(tmp_path):
    from geoxai.io.cube_codec import LAYER_ENCODING, encode_layer

    layer = _layer()
    url = str(tmp_path / "t.s1.zarr")
    ds, enc = encode_layer(layer)
    marker = store.write_dataset(ds, url, encoding=enc)
    assert marker["variables"]["backscatter"]["chunks"] == [1, 2, ROWS, 40]
    assert marker["variables"]["s1_flags"]["chunks"] == [ROWS, 40]
    assert marker["variables"]["backscatter"]["objects"] == 3 * 3  # dates x row blocks
    got = store.read_layer(url)
    assert got.attrs["layer_encoding"] == LAYER_ENCODING
    for name in layer.data_vars:
        assert got[name].dtype == layer[name].dtype
        np.testing.assert_array_equal(got[name].values, layer[name].values)
    lazy = store.read_layer(url, load=False)
    assert lazy["backscatter"].chunks is not None  # opened, not read


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["attributes"].update(layer_encoding="geoxai-layer/9"), "does not know"),
        (None, r"array 'backscatter' \(dB\) is stored as int16 without scale_factor/add_offset"),
    ],
)
def test_a_layer_of_unknown_encoding_or_unscaled_integers_is_a_typed_error(tmp_path, edit, match):
    from geoxai.io.cube_codec import encode_layer

    layer = _layer(60, 8)
    if edit is None:  # dB written as integers without their scaling
        layer["backscatter"] = layer["backscatter"].fillna(0).astype(np.int16)
    url = tmp_path / "t.s1.zarr"
    ds, enc = encode_layer(layer)
    store.write_dataset(ds, str(url), encoding=enc)
    if edit is not None:
        meta = json.loads((url / "zarr.json").read_text())
        edit(meta)
        (url / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptDataError, match=match) as err:
        store.read_layer(str(url))
    assert "t.s1.zarr" in str(err.value) and "rerun the cube stage" in str(err.value).lower()
