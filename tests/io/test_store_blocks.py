"""A raw cube read lazily in blocks of its reader's rows (``store.read_cube(block_rows=)``):
the same values as the stored-chunk read, each read holding only its own rows."""

from __future__ import annotations

import numpy as np

from geoxai.io import store
from geoxai.io.cube_codec import ROWS, CheckedChunks
from geoxai.io.tile_cube import build_tile_cube
from tests.io.test_cube_codec import BIG, _scenes


def test_block_rows_reads_the_same_cube_in_smaller_blocks(tmp_path, monkeypatch):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    whole = store.read_cube(url)
    rows = 24
    cube = store.read_cube(url, block_rows=rows)
    assert whole.data.chunksize[2] == ROWS and cube.data.chunksize[2] == rows
    assert cube.data.chunksize[:2] == whole.data.chunksize[:2]  # all dates x all bands
    np.testing.assert_array_equal(cube.values, whole.values)  # bit for bit, NaN where NaN
    for c in cube.coords:
        np.testing.assert_array_equal(cube[c].values, whole[c].values)
    assert cube.attrs == whole.attrs

    want = whole.isel(y=slice(rows, 2 * rows)).values
    seen: list[tuple] = []
    orig = CheckedChunks.__getitem__

    def spy(self, key):
        seen.append(key)
        out = orig(self, key)
        assert out.shape[-2] == rows  # never a stored-chunk-sized block for a part of it
        return out

    monkeypatch.setattr(CheckedChunks, "__getitem__", spy)
    block = cube.isel(y=slice(rows, 2 * rows)).values
    np.testing.assert_array_equal(block, want)
    assert len(seen) == 2  # one read of the reflectance, one of SCL
    assert all((k[-2].start, k[-2].stop) == (rows, 2 * rows) for k in seen)
