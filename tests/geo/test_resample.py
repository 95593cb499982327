"""geoxai.geo.resample.bilinear_2x against GDAL's own bilinear warp (rasterio.warp.reproject).

Exact equality is required: the kernel reproduces GDAL's stencil, nodata renormalisation, edges
and integer rounding, so the cube's pixels do not change with the read path."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from geoxai.geo.resample import bilinear_2x, source_rows

CRS = "EPSG:32631"
X0, Y1 = 500000.0, 5600000.0


def _gdal(src: np.ndarray, f0: int, g0: int, h: int, w: int) -> np.ndarray:
    """GDAL's bilinear warp of ``src`` (20 m, nodata 0) onto the 10 m window (f0, g0, h, w)."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    dst = np.zeros((h, w), src.dtype)
    reproject(
        src,
        dst,
        src_transform=Affine(20, 0, X0, 0, -20, Y1),
        src_crs=CRS,
        src_nodata=0,
        dst_transform=Affine(10, 0, X0 + 10 * g0, 0, -10, Y1 - 10 * f0),
        dst_crs=CRS,
        dst_nodata=0,
        resampling=Resampling.bilinear,
    )
    out = dst.astype(np.float32)
    out[dst == 0] = np.nan
    return out


def _ours(src: np.ndarray, f0: int, g0: int, h: int, w: int) -> np.ndarray:
    s0, s1 = source_rows(f0, h)
    t0, t1 = source_rows(g0, w)
    win = np.zeros((s1 - s0, t1 - t0), src.dtype)
    a0, b0, a1, b1 = max(s0, 0), max(t0, 0), min(s1, src.shape[0]), min(t1, src.shape[1])
    if a1 > a0 and b1 > b0:
        win[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0] = src[a0:a1, b0:b1]
    valid = np.zeros(win.shape, bool)
    valid[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0] = win[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0] != 0
    out = np.empty((h, w), np.float32)
    return bilinear_2x(win, valid, (s0, t0), (f0, g0), src.shape, out)


def _raster(rng: np.random.Generator, dtype: type, shape: tuple[int, int]) -> np.ndarray:
    hi = 255 if dtype == np.uint8 else 12000
    a = rng.integers(1, hi, size=shape).astype(dtype)
    a[rng.random(shape) < 0.15] = 0  # scattered nodata
    a[5:9, 3:12] = 0  # a hole
    a[-3, :] = 0  # a nodata row next to the edge
    a[:, 0] = np.where(rng.random(shape[0]) < 0.5, 0, a[:, 0])
    return a


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
@pytest.mark.parametrize(
    "f0, g0, h, w",
    [
        (0, 0, 74, 82),  # the whole raster, even phase
        (1, 3, 40, 33),  # odd phase in both axes, interior
        (-5, -7, 90, 100),  # beyond every edge of the raster
        (60, 70, 30, 30),  # the far corner and beyond
        (-40, 10, 30, 20),  # wholly above the raster: all nodata
    ],
)
def test_bilinear_2x_equals_gdal_warp(dtype, f0, g0, h, w):
    src = _raster(np.random.default_rng(7), dtype, (37, 41))
    want = _gdal(src, f0, g0, h, w)
    got = _ours(src, f0, g0, h, w)
    np.testing.assert_array_equal(got, want)  # NaN where GDAL leaves nodata, exact elsewhere


def test_bilinear_2x_exact_on_ties_and_extremes():
    """Sums that land on .5 (rounded half up) and DN near 65535."""
    rng = np.random.default_rng(3)
    src = rng.choice(np.array([1, 2, 3, 65534, 65535], np.uint16), size=(20, 22))
    np.testing.assert_array_equal(_ours(src, -1, -1, 44, 46), _gdal(src, -1, -1, 44, 46))


def test_bilinear_2x_refuses_a_window_that_does_not_cover_the_output():
    src = np.ones((4, 4), np.uint16)
    with pytest.raises(ValueError, match="do not cover"):
        bilinear_2x(src, src > 0, (0, 0), (0, 0), (4, 4), np.empty((8, 8), np.float32))
