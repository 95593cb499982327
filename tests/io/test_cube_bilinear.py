"""20 m bands read at 20 m and upsampled by geoxai.geo.resample.bilinear_2x equal stackstac's
GDAL warp (WarpedVRT, bilinear) bit for bit: on real Sentinel-2 20 m DN with nodata holes
punched in, tiles whose halo runs past the rasters' edges at both phases of the 2 x 2 relation;
a raster off the 2 x 2 lattice falls back to the warp."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine

from geoxai.geo.grid import TileSpec
from geoxai.io import cube as cube_mod
from geoxai.io.cube import build_cube

B20 = ["B05", "B06", "B07", "B8A", "B11", "B12"]


def _holes(name: str, i: int, dn: np.ndarray) -> np.ndarray:
    """Nodata (DN 0) in the 20 m bands: scattered pixels, a block, a row at the edge."""
    if dn.dtype != np.uint16 or dn.shape[0] != 32:
        return dn
    rng = np.random.default_rng(i * 17 + len(name))
    dn = dn.copy()
    dn[rng.random(dn.shape) < 0.1] = 0
    dn[4 + i % 5 : 9 + i % 5, 10:17] = 0
    dn[-1, : 5 + i] = 0
    return dn


def _spy(monkeypatch) -> list[int]:
    calls: list[int] = []
    orig = cube_mod.bilinear_2x

    def counted(*args, **kwargs):
        calls.append(1)
        return orig(*args, **kwargs)

    monkeypatch.setattr(cube_mod, "bilinear_2x", counted)
    return calls


@pytest.mark.parametrize(
    "col, row, halo",
    [
        (835, 9381, 3),  # the rasters start 39 px (odd: the other phase) inside the tile
        (836, 9382, 32),  # the rasters end inside the tile's halo
    ],
)
def test_real_20m_bands_read_directly_equal_the_gdal_warp(
    realdata, tmp_path, monkeypatch, col, row, halo
):
    from tests.fixtures.realdata_archive import write_worldcereal_archive

    arch = write_worldcereal_archive(realdata, tmp_path, dates=range(0, 118, 13), edit=_holes)
    items = [json.loads(line) for line in arch.ndjson.read_text().splitlines()]
    tile = TileSpec(32631, col, row, halo, 600)
    calls = _spy(monkeypatch)
    fast = build_cube(items, tile, bands=B20).values
    assert len(calls) == len(items) * len(B20)  # every 20 m read took the direct path
    monkeypatch.setattr(cube_mod._CheckedReader, "_aligned", None)  # every asset warped
    warped = build_cube(items, tile, bands=B20).values
    assert len(calls) == len(items) * len(B20)
    np.testing.assert_array_equal(fast, warped)  # NaN at the same pixels, values bit for bit
    finite = np.isfinite(fast)
    assert 0.05 < finite.mean() < 0.95  # edges and holes are in the comparison
    assert not finite.all(axis=0).all()


def test_a_20m_raster_off_the_tile_lattice_is_warped(tmp_path, monkeypatch):
    """A 20 m raster whose origin is 5 m off the tile's 10 m lattice takes the warp path."""
    from tests.io.test_cube import TILE, WHEN, _scene
    from tests.io.test_cube_direct import _off_lattice

    item = _off_lattice(tmp_path, _scene(tmp_path, "S2A_OFF", WHEN))
    calls = _spy(monkeypatch)
    cube = build_cube([item], TILE, bands=B20).values
    assert calls == []
    assert np.isfinite(cube).all() and len(np.unique(cube)) > 2  # interpolated by GDAL


def test_shift_refuses_what_the_kernel_does_not_reproduce(tmp_path):
    """Bilinear 2 x 2 needs an unsigned-integer raster with a nodata value; 3 x 3 is warped."""
    import rasterio

    from geoxai.synthetic.files import write_cog
    from tests.io.test_cube import TILE

    class Spec:  # what _pixel_shift reads of stackstac's RasterSpec
        epsg = TILE.epsg
        transform = TILE.transform

    x0, y1 = TILE.bounds[0], TILE.bounds[3]
    cases = {
        "u16": (np.uint16, 20, 0, (0, 0, 2)),
        "f32": (np.float32, 20, 0, None),
        "nonodata": (np.uint16, 20, None, None),
        "k3": (np.uint16, 30, 0, None),
    }
    for name, (dtype, res, nodata, want) in cases.items():
        path = tmp_path / f"{name}.tif"
        write_cog(
            path, np.ones((8, 8), dtype), Affine(res, 0, x0, 0, -res, y1), "EPSG:32632", nodata
        )
        with rasterio.open(path) as ds:
            assert cube_mod._pixel_shift(ds, Spec, False, True) == want, name
