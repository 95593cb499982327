"""geoxai.io.store: commit protocol, round trips and errors, on the local filesystem and local
S3."""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine

from geoxai.errors import CorruptDataError, IncompleteOutputError, InvalidInputError, StoreError
from geoxai.io import store
from geoxai.io.location import resolve
from tests.fixtures.net import free_port


def _cube(seed: int = 0, *, fail_block: int | None = None) -> xr.DataArray:
    """A small raw-cube-like array: (time=4, band=3, y=20, x=24), chunked one date per chunk."""
    rng = np.random.default_rng(seed)
    values = rng.random((4, 3, 20, 24), dtype=np.float32)
    values[1, :, :5, :5] = np.nan
    data = dsa.from_array(values, chunks=(1, 3, 20, 24))
    if fail_block is not None:

        def boom(block, block_info=None):
            if block_info[0]["chunk-location"][0] == fail_block:
                raise CorruptDataError("simulated unreadable input in the middle of the write")
            return block

        data = data.map_blocks(boom, dtype=np.float32)
    y = 5_000_000 - 10 * (np.arange(20) + 0.5)
    x = 600_000 + 10 * (np.arange(24) + 0.5)
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.date_range("2023-01-01", periods=4, freq="5D").values,
            "band": ["B02", "B04", "SCL"],
            "id": ("time", np.array([f"S2A_item_{i}" for i in range(4)], dtype=object)),
            "y": y,
            "x": x,
        },
        name="reflectance",
        attrs={
            "crs": "EPSG:32632",
            "transform": Affine(10, 0, 600_000, 0, -10, 5_000_000),
            "tile_id": "32632_E0100_N0833",
            "halo_px": 0,
            "resolution_m": np.int64(10),
            "spec": object(),  # like stackstac's RasterSpec: no JSON form, dropped
        },
    )


def test_round_trip(store_root):
    url = f"{store_root}/cube.zarr"
    cube = _cube()
    record = store.write_dataset(cube, url, attrs={"run": "test"}, extra={"n_items": 4})
    assert store.is_committed(url)
    assert record["variables"]["reflectance"]["shape"] == [4, 3, 20, 24]
    assert record["variables"]["reflectance"]["dtype"] == "float32"
    assert record["variables"]["reflectance"]["objects"] == 4  # one chunk object per date
    assert record["nbytes"] > 0
    assert record["extra"] == {"n_items": 4}
    assert record["code_version"].startswith("geoxai")

    back = store.read_cube(url)
    assert back.name == "reflectance"
    assert back.dims == cube.dims
    assert back.dtype == np.float32
    assert back.chunks is not None  # lazy
    np.testing.assert_array_equal(back.values, cube.values)  # NaN positions included
    np.testing.assert_array_equal(back.x.values, cube.x.values)
    np.testing.assert_array_equal(back.y.values, cube.y.values)
    np.testing.assert_array_equal(back.time.values, cube.time.values)
    assert list(back.band.values) == ["B02", "B04", "SCL"]
    assert list(back.id.values) == [f"S2A_item_{i}" for i in range(4)]
    assert back.attrs["crs"] == "EPSG:32632"
    assert back.attrs["transform"] == [10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0]
    assert back.attrs["resolution_m"] == 10
    assert back.attrs["run"] == "test"
    assert "spec" not in back.attrs
    assert store.read_commit(url) == record


def test_uncommitted_store_is_refused(store_root):
    url = f"{store_root}/cube.zarr"
    store.write_dataset(_cube(), url)
    loc = resolve(url)
    fs = loc.filesystem()
    fs.rm(loc.child(store.COMMIT_MARKER).path)
    assert not store.is_committed(url)
    assert store.exists(url)
    with pytest.raises(IncompleteOutputError, match="never committed.*Rerun") as err:
        store.read_dataset(url)
    assert loc.url in str(err.value)
    with pytest.raises(IncompleteOutputError, match="does not exist"):
        store.read_cube(f"{store_root}/nothing-here.zarr")


def test_corrupt_marker_is_refused(store_root):
    url = f"{store_root}/cube.zarr"
    store.write_dataset(_cube(), url)
    loc = resolve(url)
    loc.filesystem().pipe_file(loc.child(store.COMMIT_MARKER).path, b"{not json")
    with pytest.raises(IncompleteOutputError, match="not valid JSON"):
        store.read_dataset(url)


def test_interrupted_write_leaves_nothing_that_reads_as_complete(store_root):
    url = f"{store_root}/cube.zarr"
    with pytest.raises(CorruptDataError, match="simulated"):
        store.write_dataset(_cube(fail_block=2), url)
    assert not store.is_committed(url)
    with pytest.raises(IncompleteOutputError):
        store.read_cube(url)

    # a failing overwrite of a committed store un-commits it before touching the data
    store.write_dataset(_cube(1), url)
    assert store.is_committed(url)
    with pytest.raises(CorruptDataError):
        store.write_dataset(_cube(fail_block=3), url, overwrite=True)
    assert not store.is_committed(url)
    # and a rerun of the write succeeds over the leftovers without overwrite=True
    store.write_dataset(_cube(2), url)
    np.testing.assert_array_equal(store.read_cube(url).values, _cube(2).values)


def test_overwrite_semantics(store_root):
    url = f"{store_root}/cube.zarr"
    store.write_dataset(_cube(1), url)
    with pytest.raises(StoreError, match="already exists.*overwrite=True"):
        store.write_dataset(_cube(2), url)
    np.testing.assert_array_equal(store.read_cube(url).values, _cube(1).values)
    store.write_dataset(_cube(2), url, overwrite=True)
    np.testing.assert_array_equal(store.read_cube(url).values, _cube(2).values)


def test_delete(store_root):
    url = f"{store_root}/cube.zarr"
    store.write_dataset(_cube(), url)
    assert store.delete(url) is True
    assert not store.exists(url)
    assert store.delete(url) is False


def test_json_records(store_root):
    url = f"{store_root}/records/tile_a.json"
    assert store.read_json(url, default=None) is None
    with pytest.raises(StoreError, match="does not exist"):
        store.read_json(url)
    store.write_json({"status": "done", "n": np.int32(3), "bad": float("nan")}, url)
    assert store.read_json(url) == {"status": "done", "n": 3, "bad": None}
    store.write_json({"status": "failed"}, url)
    assert store.read_json(url) == {"status": "failed"}


def test_bad_inputs(tmp_path):
    with pytest.raises(InvalidInputError, match="unnamed DataArray"):
        store.write_dataset(_cube().rename(None), str(tmp_path / "x.zarr"))
    with pytest.raises(InvalidInputError, match="scheme 'gs'"):
        resolve("gs://bucket/x")
    with pytest.raises(InvalidInputError, match="no bucket"):
        resolve("s3://")


@pytest.mark.s3
def test_unreachable_endpoint(s3_env):
    # moto_server accepts any key, so wrong credentials cannot be tested against it; an
    # unreachable endpoint and a missing bucket are the S3 failures tested here.
    port = free_port("127.0.0.4")  # nothing listens there
    options = {
        "endpoint_url": f"http://127.0.0.4:{port}",
        "key": "testing-key",
        "secret": "very-secret-value",
    }
    with pytest.raises(StoreError) as err:
        store.write_dataset(_cube(), "s3://bucket/cube.zarr", storage_options=options)
    text = str(err.value)
    assert "s3://bucket/cube.zarr" in text
    assert "unreachable" in text and "AWS_ENDPOINT_URL" in text
    assert "very-secret-value" not in text
    assert isinstance(err.value, OSError)


@pytest.mark.s3
def test_missing_bucket(s3_env):
    url = "s3://no-such-bucket-geoxai/cube.zarr"
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-geoxai' does not exist"):
        store.write_dataset(_cube(), url)
    with pytest.raises(StoreError, match="no-such-bucket-geoxai"):
        store.write_json({"a": 1}, "s3://no-such-bucket-geoxai/r.json")
