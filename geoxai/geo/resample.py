"""GDAL's bilinear warp of a 20 m raster onto a 10 m grid aligned with it, without GDAL.

A 20 m Sentinel-2 band lies on a grid that the tile's 10 m grid refines 2 x 2 (same CRS, the
origins a whole number of 10 m pixels apart). On such a pair GDAL's bilinear warp (what
stackstac's ``WarpedVRT`` runs) is a fixed stencil, and :func:`bilinear_2x` computes it directly
from the 20 m window, as GDAL's warp kernel does (``GWKBilinearResample4Sample``):

* **Pixel centres.** Fine pixel ``f`` (10 m, counted from the raster's origin) has its centre at
  ``u = (f + 0.5) / 2`` coarse pixels; its neighbours are ``a = floor(u - 0.5)`` and ``a + 1``
  with weights ``1.5 - (u - a)`` and the rest: for even ``f = 2m``, rows ``m - 1`` and ``m``
  weighted 1/4 and 3/4; for odd ``f = 2m + 1``, ``m`` and ``m + 1`` weighted 3/4 and 1/4. The
  same along x; a pixel's four weights are the products (9, 3, 3, 1 sixteenths). Every product
  and partial sum is exact in float64 (DN < 2**16), so the order of GDAL's sums does not matter.
* **Nodata.** A fine pixel whose centre lies in a nodata source pixel is nodata (GDAL does not
  warp from an invalid source pixel). Otherwise a neighbour at the raster's nodata value, or
  outside the raster, drops out: its weight is left out of the sum and of the divisor
  (``acc / divisor``; ``acc`` itself when the divisor is 1).
* **Edges.** A fine pixel whose centre lies outside the raster (``u < 0`` or ``u >= size``) is
  nodata, as GDAL leaves destination pixels without a source position; one inside the raster
  but beyond its outermost pixel centres takes the valid neighbours inside (renormalised).
* **Rounding.** GDAL warps in the file's integer type: the value is rounded half up,
  ``floor(v + 0.5)`` (v >= 0 here). Unsigned integer sources only (Sentinel-2 DN, uint8/uint16).

The equality to the warp path is tested on real Sentinel-2 20 m data (tests/geo/test_resample.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bilinear_2x", "source_rows"]


def source_rows(f0: int, n: int) -> tuple[int, int]:
    """``(s0, s1)``: the coarse rows (or columns) ``s0:s1`` that fine rows ``f0:f0 + n`` of a
    2x finer grid read bilinearly (each fine row reads two coarse rows around its centre)."""
    return f0 // 2 - 1, (f0 + n - 1) // 2 + 2


def _bilinear_2x(src, valid, s0, t0, f0, g0, rows, cols, fill, out):  # type: ignore[no-untyped-def]
    """Kernel of :func:`bilinear_2x` (plain Python; compiled by numba on first use).

    Where all four neighbours are valid (the centre's pixel is one of them) the weights are
    ``wx * wy / 16`` with ``wx, wy`` in {1, 3} and the divisor is 1, so GDAL's
    ``floor(sum / 16 + 0.5)`` is the integer ``(sum + 8) >> 4`` (every term exact, integer
    sources): that case is computed in integers, the rows' weighted sums once per source
    column; the others as GDAL's kernel does."""
    h, w = out.shape
    tw = src.shape[1]
    col = np.empty(tw, np.int64)  # a row's two source rows, weighted (sixteenths / wx)
    both = np.empty(tw, np.bool_)  # both valid
    jlo, jhi = min(max(0, -g0), w), max(min(w, 2 * cols - g0), 0)  # columns inside the raster
    for i in range(h):
        f = f0 + i
        if f < 0 or f >= 2 * rows:
            for j in range(w):
                out[i, j] = fill
            continue
        wy = 1 + 2 * (f & 1)
        ia = ((f - 1) >> 1) - s0  # f // 2 - 1 (f even) or f // 2 (odd), in the window
        every = True
        for c in range(tw):
            col[c] = wy * np.int64(src[ia, c]) + (4 - wy) * np.int64(src[ia + 1, c])
            both[c] = valid[ia, c] and valid[ia + 1, c]
            every &= both[c]
        for j in range(jlo):
            out[i, j] = fill
        for j in range(jhi, w):
            out[i, j] = fill
        for j in range(jlo, jhi):
            g = g0 + j
            wx = 1 + 2 * (g & 1)
            jb = ((g - 1) >> 1) - t0
            out[i, j] = (wx * col[jb] + (4 - wx) * col[jb + 1] + 8) >> 4
        if every:
            continue
        for j in range(jlo, jhi):  # pixels with an invalid neighbour: GDAL's kernel
            g = g0 + j
            wx = 1 + 2 * (g & 1)
            jb = ((g - 1) >> 1) - t0
            if both[jb] and both[jb + 1]:
                continue
            if not valid[(f >> 1) - s0, (g >> 1) - t0]:  # the pixel holding the centre
                out[i, j] = fill
                continue
            ry, rx = 0.25 * wy, 0.25 * wx
            acc = 0.0
            div = 0.0
            if valid[ia, jb]:
                m = rx * ry
                div += m
                acc += src[ia, jb] * m
            if valid[ia, jb + 1]:
                m = (1.0 - rx) * ry
                div += m
                acc += src[ia, jb + 1] * m
            if valid[ia + 1, jb]:
                m = rx * (1.0 - ry)
                div += m
                acc += src[ia + 1, jb] * m
            if valid[ia + 1, jb + 1]:
                m = (1.0 - rx) * (1.0 - ry)
                div += m
                acc += src[ia + 1, jb + 1] * m
            v = acc if div == 1.0 else acc / div  # div >= 9/16: the centre's pixel is valid
            out[i, j] = np.floor(v + 0.5)


_KERNEL: list[Any] = []


def _kernel() -> Any:
    if not _KERNEL:
        from numba import njit  # lazy: numba's JIT only when a 20 m band is upsampled

        _KERNEL.append(njit(cache=True, nogil=True)(_bilinear_2x))
    return _KERNEL[0]


def bilinear_2x(
    src: np.ndarray,
    valid: np.ndarray,
    origin: tuple[int, int],
    fine: tuple[int, int],
    raster: tuple[int, int],
    out: np.ndarray,
    fill: float = np.nan,
) -> np.ndarray:
    """GDAL's bilinear warp of a coarse window onto the 2x finer grid (module docstring).

    Args:
        src: ``(S, T)`` the coarse window's values (unsigned integer DN; any value where
            ``valid`` is False).
        valid: ``(S, T)`` bool, False at nodata and outside the raster.
        origin: ``(s0, t0)`` raster row/column of ``src[0, 0]`` (may be negative).
        fine: ``(f0, g0)`` fine row/column, from the raster's origin, of ``out[0, 0]``; the
            window must cover :func:`source_rows` of ``out``'s rows and columns.
        raster: ``(rows, cols)`` of the whole coarse raster.
        out: ``(h, w)`` float32 (or float64), written in place and returned.
        fill: the value of nodata pixels.

    Returns:
        ``out``: whole DN as floats, ``fill`` where no valid source pixel contributes.

    Raises:
        ValueError: the window does not cover what ``out`` reads, or shapes disagree.
    """
    h, w = out.shape
    r = source_rows(fine[0], h)
    c = source_rows(fine[1], w)
    if src.shape != valid.shape or src.ndim != 2:
        raise ValueError(f"src {src.shape} and valid {valid.shape} must be one 2-D shape.")
    s0, t0 = origin
    if r[0] < s0 or c[0] < t0 or r[1] > s0 + src.shape[0] or c[1] > t0 + src.shape[1]:
        raise ValueError(
            f"the coarse window rows {s0}:{s0 + src.shape[0]}, cols {t0}:{t0 + src.shape[1]} "
            f"do not cover rows {r[0]}:{r[1]}, cols {c[0]}:{c[1]} that the output reads."
        )
    _kernel()(src, valid, s0, t0, fine[0], fine[1], raster[0], raster[1], out.dtype.type(fill), out)
    return out
