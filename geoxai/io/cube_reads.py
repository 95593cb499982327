"""One asset's window on the tile grid as the file's integers (the direct cube build's reads).

:func:`read_dn` reads what :class:`geoxai.io.cube._CheckedReader` reads for an asset on the
tile's lattice (same CRS, pixels 1x the tile's, or 2x with bilinear resampling, or k x with
nearest: :func:`geoxai.io.cube._pixel_shift` decides, as it does there), but keeps the DN as
uint16 with 0 for nodata and outside the raster, instead of float32 with NaN: the same rasterio
window read, the same :func:`geoxai.geo.resample.bilinear_2x` (into integers: it rounds to
whole DN either way), the same nearest repeat. An asset that path would warp, or whose nodata,
data type or mask the integer form cannot carry, raises :class:`Fallback`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geoxai.errors import GeoXAIError
from geoxai.geo.resample import bilinear_2x, source_rows
from geoxai.io.cube import _pixel_shift, _read_error

__all__ = ["Fallback", "read_dn"]


class Fallback(Exception):  # noqa: N818 - a signal to the caller, not an error of the user's
    """The direct build cannot make this cube exactly; the caller builds it the float way."""


class _Spec:
    """What :func:`geoxai.io.cube._pixel_shift` reads of stackstac's RasterSpec."""

    def __init__(self, epsg: int, transform: Any) -> None:
        self.epsg, self.transform = epsg, transform


def read_dn(
    href: str,
    transform: Any,
    epsg: int,
    shape: tuple[int, int],
    resampling: str,
    *,
    scl: bool = False,
) -> np.ndarray:
    """The asset at ``href`` on the grid ``transform`` (EPSG ``epsg``, ``shape`` pixels) as
    ``(y, x)`` uint16 DN, 0 at nodata and outside the raster.

    Args:
        resampling: ``"bilinear"`` or ``"nearest"`` (SCL: nearest).
        scl: the asset is SCL (uint8 or uint16 classes); otherwise uint16 reflectance DN.

    Raises:
        Fallback: the asset is not one the direct build reproduces (module docstring).
        CorruptDataError, DataAccessError: the file cannot be opened or decoded (the float
            path's errors, naming the href).
    """
    import rasterio  # lazy: rasterio (GDAL) only when pixels are read
    from stackstac.rio_reader import DEFAULT_GDAL_ENV  # lazy: the float path's GDAL settings

    try:
        with DEFAULT_GDAL_ENV.open, rasterio.open(href) as ds:
            return _read(ds, href, transform, epsg, shape, resampling, scl, DEFAULT_GDAL_ENV)
    except (Fallback, GeoXAIError):
        raise
    except Exception as exc:
        raise _read_error(href, exc) from exc


def _read(
    ds: Any,
    href: str,
    transform: Any,
    epsg: int,
    shape: tuple[int, int],
    resampling: str,
    scl: bool,
    env: Any,
) -> np.ndarray:
    from rasterio.enums import MaskFlags  # lazy: as read_dn

    dtype = np.dtype(ds.dtypes[0])
    allowed = (np.uint8, np.uint16) if scl else (np.uint16,)
    if dtype not in allowed:
        raise Fallback(f"{href}: data type {dtype}")
    if ds.nodata is None or ds.nodata != 0:
        raise Fallback(f"{href}: nodata {ds.nodata} (the direct build needs 0)")
    if list(ds.mask_flag_enums[0]) != [MaskFlags.nodata]:
        raise Fallback(f"{href}: mask {ds.mask_flag_enums[0]} (not the nodata value alone)")
    nearest, bilinear = resampling == "nearest", resampling == "bilinear"
    shift = _pixel_shift(ds, _Spec(epsg, transform), nearest, bilinear)
    if shift is None:
        raise Fallback(f"{href}: not on the tile's lattice (the float path warps it)")
    dr, dc, k = shift
    h, w = shape
    if k == 2 and bilinear:
        s0, s1 = source_rows(dr, h)
        t0, t1 = source_rows(dc, w)
        src = _read_clipped(ds, env, (s0, s1), (t0, t1), dtype)
        valid = src != 0
        out = np.empty((h, w), np.uint16)
        return bilinear_2x(src, valid, (s0, t0), (dr, dc), (ds.height, ds.width), out, 0)
    # fine rows/cols from the raster's origin; a source pixel holds fine pixels fine // k
    s0, t0 = dr // k, dc // k
    s1, t1 = (dr + h - 1) // k + 1, (dc + w - 1) // k + 1
    src = _read_clipped(ds, env, (s0, s1), (t0, t1), np.uint16)
    if k == 1:
        return src
    fine = np.empty((src.shape[0], k, src.shape[1], k), src.dtype)  # each pixel k x k, one pass
    fine[...] = src[:, None, :, None]
    fine = fine.reshape(src.shape[0] * k, src.shape[1] * k)
    return fine[dr - s0 * k : dr - s0 * k + h, dc - t0 * k : dc - t0 * k + w]


def _read_clipped(
    ds: Any, env: Any, rows: tuple[int, int], cols: tuple[int, int], dtype: Any
) -> np.ndarray:
    """Source pixels ``rows`` x ``cols`` (half-open, may reach past the raster), 0 outside it."""
    from rasterio.windows import Window  # lazy: as read_dn

    (s0, s1), (t0, t1) = rows, cols
    a0, b0 = max(s0, 0), max(t0, 0)
    a1, b1 = min(s1, ds.height), min(t1, ds.width)
    if (a0, b0, a1, b1) == (s0, t0, s1, t1):  # inside the raster: as read, no copy
        with env.read:
            return np.asarray(ds.read(1, window=Window(t0, s0, t1 - t0, s1 - s0), out_dtype=dtype))
    src = np.zeros((s1 - s0, t1 - t0), dtype)
    if a1 > a0 and b1 > b0:
        with env.read:
            part = ds.read(1, window=Window(b0, a0, b1 - b0, a1 - a0))
        src[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0] = part
    return src
