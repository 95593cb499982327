"""A raw cube read lazily by row slices (what the smoothing stage's blocks ask): the same values
as the whole read, each read holding only its own rows (not the stored chunk's 128)."""

from __future__ import annotations

import numpy as np

from geoxai.io import store
from geoxai.io.cube_codec import ROWS
from geoxai.io.cube_rows import DecodedRows
from geoxai.io.tile_cube import build_tile_cube
from tests.io.test_cube_codec import BIG, _scenes


def test_a_row_slice_reads_and_holds_only_its_rows(tmp_path, monkeypatch):
    items = _scenes(tmp_path / "scenes")
    url = str(tmp_path / "cube.zarr")
    build_tile_cube(items, BIG, url, start="2023-01-01", end="2023-12-31")
    whole = store.read_cube(url).load()
    cube = store.read_cube(url)
    rows = 16
    assert cube.sizes["y"] >= ROWS + rows // 2  # a slice across two stored chunks fits

    seen: list[np.ndarray] = []
    orig = DecodedRows.__getitem__

    def spy(self, key):
        out = orig(self, key)
        seen.append(out)
        return out

    monkeypatch.setattr(DecodedRows, "__getitem__", spy)
    for y0 in (rows, ROWS - rows // 2):  # inside one stored chunk, and across two
        block = cube.isel(y=slice(y0, y0 + rows)).values
        np.testing.assert_array_equal(block, whole.isel(y=slice(y0, y0 + rows)).values)
        got = seen[-1]
        owner = got if got.base is None else got.base
        assert got.shape[2] == rows and owner.nbytes == got.nbytes  # no chunk-sized buffer
    for c in cube.coords:
        np.testing.assert_array_equal(cube[c].values, whole[c].values)
    assert cube.attrs == whole.attrs
