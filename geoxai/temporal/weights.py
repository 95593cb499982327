"""Observation weights of a raw tile cube, whole or streamed row block by row block.

:func:`observation_weights` for a whole cube; :class:`RowBlocks` reads the cube's row blocks
once each (one contiguous slice of all dates x bands x rows) with their final weights, for
:func:`geoxai.temporal.smoothing.preprocess`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from geoxai.geo.bands import SCL
from geoxai.temporal.binning import clear_nonfinite
from geoxai.temporal.clouds import required_halo_px as _cloud_halo
from geoxai.temporal.clouds import scl_weights, spectral_weights
from geoxai.temporal.masks import MASK_BANDS, cube_sun_angles

if TYPE_CHECKING:
    from geoxai.temporal.smoothing import PreprocessParams

__all__ = ["pixel_size_m", "observation_weights", "RowBlocks"]


def pixel_size_m(raw: xr.DataArray) -> float:
    """Pixel size, metres: ``attrs["resolution_m"]``, else the spacing of the ``x`` coordinate
    (a projected grid), else 10. Converts the cloud buffer (and shadow reach) to pixels."""
    if "resolution_m" in raw.attrs:
        return float(raw.attrs["resolution_m"])
    x = np.asarray(raw["x"].values, dtype=np.float64) if "x" in raw.coords else np.zeros(0)
    step = float(abs(x[1] - x[0])) if x.size > 1 else 0.0
    return step if step >= 0.5 else 10.0  # < 0.5: degrees or pixel indices, not metres


def observation_weights(
    raw: xr.DataArray, params: PreprocessParams, keep: np.ndarray | None = None
) -> np.ndarray:
    """``(T, Y, X)`` float32 cloud/shadow/snow weights of the raw cube (before NaN checks).

    Uses SCL or the spectral rule as ``params.clouds.method`` says ("auto": SCL if present).
    """
    have = [str(b) for b in raw["band"].values]
    method = params.clouds.method
    if method == "auto":
        method = "scl" if SCL in have else "spectral"
    res = pixel_size_m(raw)
    tsel = slice(None) if keep is None else np.nonzero(keep)[0]
    nt = raw.sizes["time"] if keep is None else int(np.count_nonzero(keep))
    if method == "scl":  # pick the band first: never copy the whole cube
        scl = np.asarray(raw.sel(band=SCL).isel(time=tsel).values, dtype=np.float32)
        w = scl_weights(scl, params.clouds, res)
    elif method == "spectral":  # the mask's bands that the cube has; it says what it lacks
        names = tuple(b for b in MASK_BANDS if b in have) or ("B02", "B04", "B08")
        refl = np.asarray(raw.sel(band=list(names)).isel(time=tsel).values, dtype=np.float32)
        y = np.asarray(raw["y"].values) if "y" in raw.coords else np.zeros(0)
        w = spectral_weights(
            refl,
            names,
            params.clouds,
            res,
            sun=cube_sun_angles(raw, None if keep is None else np.nonzero(keep)[0]),
            y_ascending=bool(y.size > 1 and y[1] > y[0]),
        )
    else:
        w = np.ones((nt, raw.sizes["y"], raw.sizes["x"]), dtype=np.float32)
    return w


class RowBlocks:
    """The raw cube's row blocks with their final weights, for :func:`preprocess`.

    Each block (all kept dates x all bands x ``rows`` rows) is read once, as one contiguous
    slice ``raw[:, :, r0:r1, :]`` (numpy view, or one read of a dask/zarr-backed cube), one
    block ahead: the SCL buffer of a block's edge rows needs up to ``halo`` rows of the blocks
    above (kept from the previous one) and below (the next one, already read). So at most two
    raw blocks are held, whatever the tile's length. The spectral mask, whose shadow
    projection reaches further than a block, is computed for the whole tile first
    (:func:`observation_weights`, ``4 T Y X`` bytes). Iterating yields
    ``(r0, r1, refl, w)``: ``refl`` ``(T, B, rows * X)`` the feature bands (a view where the
    band order allows), ``w`` ``(T, rows * X)`` float32 weights, 0 where a band is NaN/inf.
    """

    def __init__(
        self, raw: xr.DataArray, params: PreprocessParams, keep: np.ndarray, rows: int
    ) -> None:
        have = [str(b) for b in raw["band"].values]
        method = params.clouds.method
        if method == "auto":
            method = "scl" if SCL in have else "spectral"
        self.raw, self.params, self.method = raw, params, method
        self.ti = np.nonzero(keep)[0]
        self.res = pixel_size_m(raw)
        self.halo = _cloud_halo(params.clouds, self.res, have) if method == "scl" else 0
        sp = params.smoothing
        self.rows = max(int(rows), sp.lambda_pool_px if sp.lambda_ is None else 0, 1)
        self.whole = None
        if method == "spectral" or self.halo > self.rows:
            self.whole = observation_weights(raw, params, keep)
        pos = [have.index(b) for b in params.bands]
        contiguous = pos == list(range(pos[0], pos[0] + len(pos)))
        self.bsel: slice | list[int] = slice(pos[0], pos[0] + len(pos)) if contiguous else pos
        self.scl_i = have.index(SCL) if method == "scl" else -1

    def _read(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of the kept dates, ``(T, band, rows, X)``: the dates from the first
        to the last kept one are read as one slice (a lazily read cube decodes only those), and
        copied out only where dates in between are dropped (cloud-cover screen)."""
        t0, t1 = int(self.ti[0]), int(self.ti[-1]) + 1
        arr = np.asarray(self.raw.isel(time=slice(t0, t1), y=slice(r0, r1)).values)
        return arr if self.ti.size == t1 - t0 else arr[self.ti - t0]

    def _weights(
        self, r0: int, r1: int, tail: np.ndarray | None, cur: np.ndarray, nxt: np.ndarray | None
    ) -> np.ndarray:
        t = self.ti.size
        if self.whole is not None:
            return np.array(self.whole[:, r0:r1].reshape(t, -1), dtype=np.float32)
        if self.method != "scl":
            return np.ones((t, (r1 - r0) * cur.shape[-1]), dtype=np.float32)
        h = self.halo
        parts = [cur[:, self.scl_i]]
        if tail is not None:
            parts.insert(0, tail)
        if nxt is not None and h:
            parts.append(nxt[:, self.scl_i, :h])
        src = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        top = 0 if tail is None else tail.shape[1]
        w = scl_weights(src, self.params.clouds, self.res)[:, top : top + r1 - r0]
        return np.ascontiguousarray(w).reshape(t, -1)

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        ny, rows, h = self.raw.sizes["y"], self.rows, self.halo
        tail = None
        nxt: np.ndarray | None = self._read(0, min(rows, ny))
        for r0 in range(0, ny, rows):
            r1 = min(r0 + rows, ny)
            cur = nxt
            if cur is None:  # pragma: no cover - read one block ahead, never None here
                break
            nxt = self._read(r1, min(r1 + rows, ny)) if r1 < ny else None
            w = self._weights(r0, r1, tail, cur, nxt)
            refl = cur[:, self.bsel].reshape(cur.shape[0], len(self.params.bands), -1)
            clear_nonfinite(refl, w)
            if h and self.scl_i >= 0:
                tail = cur[:, self.scl_i, -h:].copy()
            yield r0, r1, refl, w
            # let go of this block before the next read: else it is held (by these names)
            # while the next block is read, three blocks at a time instead of two
            del cur, refl, w
