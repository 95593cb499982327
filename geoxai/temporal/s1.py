"""Sentinel-1 backscatter on the time axis of the optical features: dB conversion, per-step
median, gap filling in time and the flags of what was filled (arrays in, arrays out).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from geoxai.errors import (
    ConfigError,
    InvalidInputError,
    look_up_option,
)
from geoxai.geo.grid import TileSpec
from geoxai.temporal.smoothing import time_axis

__all__ = [
    "S1_BANDS",
    "CUBE_NAME",
    "ORBITS",
    "FLAG_NO_COVERAGE",
    "FLAG_GAP_FILLED",
    "FLAG_NONPOSITIVE",
    "FLAG_MIXED_ORBIT",
    "FLAG_MISSING_POL",
    "S1Params",
    "to_db",
    "db_to_unit",
    "aggregate_s1",
    "s1_nodata",
]

S1_BANDS: tuple[str, ...] = ("VV", "VH")


CUBE_NAME = "backscatter"
"""Name of the S1 DataArray (acquisitions: linear power; aggregated steps: dB)."""


ORBITS = ("auto", "ascending", "descending", "both")
"""Accepted values of :attr:`S1Params.orbit`."""


FLAG_NO_COVERAGE = 1
"""Pixel flag: no valid S1 acquisition at all (the layer is NaN there)."""


FLAG_GAP_FILLED = 2
"""Pixel flag: at least one step had no acquisition and was filled in time."""


FLAG_NONPOSITIVE = 4
"""Pixel flag: a linear value <= 0 was set to the dB floor."""


FLAG_MIXED_ORBIT = 8
"""Pixel flag (whole tile): neither direction alone had enough days; both were used."""


FLAG_MISSING_POL = 16
"""Pixel flag (whole tile): some items lacked a polarisation (kept with NaN there)."""


_POLICIES = ("drop", "nan", "raise")


DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class S1Params:
    """How Sentinel-1 is searched, read and aggregated.

    Attributes:
        polarizations: canonical bands to read, from :data:`S1_BANDS` (upper case).
        orbit: ``"auto"`` (preferred direction with fallback), ``"ascending"``,
            ``"descending"`` (that one first, same fallback) or ``"both"`` (no choice).
        preferred_orbit: the direction ``"auto"`` tries first.
        min_acquisitions: distinct acquisition days a direction needs over the super-block.
        superblock_tiles: edge of the super-block, in tiles of the zone lattice (>= 1).
        on_missing_polarization: ``"drop"`` the item, ``"nan"`` keep it with NaN, ``"raise"``.
        db_floor: lowest backscatter kept, dB (the reference clamps at -22 dB).
        window_days: width of the aggregation window centred on each step, days; None = the
            step length.
        fill_gaps: fill empty steps linearly in time (else they stay NaN).
        resampling: GDAL resampling onto the tile grid (on linear power): bilinear, average,
            nearest or cubic.
        grd_calibration: amplitude calibration constant A of GRD DN (power = DN^2 / A^2);
            None refuses uncalibrated GRD amplitude items.
        collection: STAC collection searched by :func:`s1_steps` / :func:`search_s1`.
    """

    polarizations: tuple[str, ...] = S1_BANDS
    orbit: str = "auto"
    preferred_orbit: str = "ascending"
    min_acquisitions: int = 12
    superblock_tiles: int = 10
    on_missing_polarization: str = "drop"
    db_floor: float = -22.0
    window_days: float | None = None
    fill_gaps: bool = True
    resampling: str = "bilinear"
    grd_calibration: float | None = None
    collection: str = "sentinel-1-rtc"

    def __post_init__(self) -> None:
        pols = tuple(str(p).upper() for p in self.polarizations)
        for p in pols:
            look_up_option(p, ("VV", "VH", "HH", "HV"), what="Sentinel-1 polarisation")
        if not pols or len(set(pols)) != len(pols):
            raise ConfigError(f"S1Params.polarizations={self.polarizations} must be unique, >= 1.")
        object.__setattr__(self, "polarizations", pols)
        look_up_option(self.orbit, ORBITS, what="orbit direction")
        look_up_option(self.preferred_orbit, ORBITS[1:3], what="preferred orbit direction")
        look_up_option(self.on_missing_polarization, _POLICIES, what="missing-polarisation policy")
        look_up_option(
            self.resampling, ("bilinear", "average", "nearest", "cubic"), what="resampling"
        )
        if self.min_acquisitions < 1 or self.superblock_tiles < 1:
            raise ConfigError(
                f"S1Params.min_acquisitions={self.min_acquisitions} and superblock_tiles="
                f"{self.superblock_tiles} must be >= 1."
            )
        if not (math.isfinite(self.db_floor) and self.db_floor < 0):
            raise ConfigError(f"S1Params.db_floor={self.db_floor} must be a negative dB value.")
        if self.window_days is not None and not self.window_days > 0:
            raise ConfigError(f"S1Params.window_days={self.window_days} must be > 0 or None.")
        if self.grd_calibration is not None and not self.grd_calibration > 0:
            raise ConfigError(f"S1Params.grd_calibration={self.grd_calibration} must be > 0.")


def to_db(power: np.ndarray, floor: float = -22.0) -> tuple[np.ndarray, np.ndarray]:
    """Linear power -> dB, floored; NaN stays NaN.

    Args:
        power: linear backscatter, any shape.
        floor: lowest value, dB.

    Returns:
        ``(db, nonpositive)``: float32 ``max(10 log10(power), floor)`` (non-positive power ->
        ``floor``) and the bool mask of the non-positive values.
    """
    p = np.asarray(power, dtype=np.float32)
    nonpos = p <= 0  # NaN compares False
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.float32(10.0) * np.log10(np.where(nonpos, np.float32(1.0), p))
    db = np.where(nonpos, np.float32(floor), np.maximum(db, np.float32(floor)))
    return db.astype(np.float32), nonpos


def db_to_unit(db: np.ndarray, floor: float = -22.0) -> np.ndarray:
    """The reference's model scaling of dB to [0, 1]: ``(clip(db, floor, 0) - floor) / -floor``."""
    d = np.clip(np.asarray(db, dtype=np.float32), floor, 0.0)
    return ((d - np.float32(floor)) / np.float32(-floor)).astype(np.float32)


def _fill_in_time(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN steps of ``(S, N)`` linearly between filled ones (nearest at the ends)."""
    s, n = steps.shape
    ok = np.isfinite(steps)
    idx = np.arange(s)[:, None]
    prev = np.maximum.accumulate(np.where(ok, idx, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(ok, idx, s)[::-1], axis=0)[::-1]
    has_prev, has_next = prev >= 0, nxt < s
    cols = np.broadcast_to(np.arange(n)[None, :], (s, n))
    vp = steps[np.clip(prev, 0, s - 1), cols]
    vn = steps[np.clip(nxt, 0, s - 1), cols]
    frac = np.where(has_prev & has_next, (idx - prev) / np.maximum(nxt - prev, 1), 0.0)
    val = np.where(has_prev & has_next, vp + frac * (vn - vp), np.where(has_prev, vp, vn))
    filled = np.where(ok, steps, val).astype(np.float32)
    return filled, ~ok & (has_prev | has_next)


def aggregate_s1(
    cube: xr.DataArray,
    smoothing: Any,
    params: S1Params = S1Params(),
    *,
    rows_per_block: int = 64,
) -> xr.Dataset:
    """Acquisitions (linear power) -> per-step median dB on the fixed axis of the optical series.

    Args:
        cube: ``(time, band, y, x)`` output of :func:`build_s1_cube` (linear power).
        smoothing: :class:`geoxai.temporal.SmoothingParams`; its :func:`time_axis` is the axis.
        params: floor, window, gap filling.
        rows_per_block: image rows computed together (bounds memory).

    Returns:
        Dataset with ``backscatter`` ``(time, band, y, x)`` float32 dB (NaN where no coverage),
        ``s1_valid`` ``(y, x)`` bool, ``s1_n_obs`` ``(y, x)`` int16 (acquisitions with a finite
        value of every band inside the axis windows) and ``s1_flags`` ``(y, x)`` uint8 (bits
        ``FLAG_*``); y/x coords and the cube's attrs (``units="dB"``).
    """

    if tuple(cube.dims) != ("time", "band", "y", "x"):
        raise InvalidInputError(
            f"S1 cube dims are {tuple(cube.dims)}; expected ('time', 'band', 'y', 'x')."
        )
    units = str(cube.attrs.get("units", "linear"))
    if units != "linear":
        raise InvalidInputError(
            f"S1 cube of tile {cube.attrs.get('tile_id', '?')} is in {units!r}; aggregate_s1 "
            "takes linear power (the output of build_s1_cube)."
        )
    centres = time_axis(smoothing)
    half = (params.window_days or smoothing.step_days) / 2.0 * DAY_NS
    t = np.asarray(cube["time"].values).astype("datetime64[ns]").astype(np.int64)
    c = centres.astype(np.int64)
    member = (t[None, :] >= c[:, None] - half) & (t[None, :] < c[:, None] + half)  # (S, T)
    used = np.nonzero(member.any(axis=0))[0]
    s, nb = centres.size, cube.sizes["band"]
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    out = np.full((s, nb, ny, nx), np.nan, np.float32)
    n_obs = np.zeros((ny, nx), np.int16)
    flags = np.full((ny, nx), int(cube.attrs.get("flags", 0)), np.uint8)
    for r0 in range(0, ny, rows_per_block):
        r1 = min(r0 + rows_per_block, ny)
        if used.size == 0:
            break
        block = np.asarray(cube.isel(time=used, y=slice(r0, r1)).values, np.float32)
        db, nonpos = to_db(block, params.db_floor)
        flags[r0:r1] |= np.where(nonpos.any(axis=(0, 1)), FLAG_NONPOSITIVE, 0).astype(np.uint8)
        n_obs[r0:r1] = np.isfinite(db).all(axis=1).sum(axis=0).astype(np.int16)
        m = member[:, used]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN
            for k in range(s):
                if m[k].any():
                    out[k, :, r0:r1] = np.nanmedian(db[m[k]], axis=0)
    if params.fill_gaps:
        flat = out.reshape(s, -1)
        filled, gap = _fill_in_time(flat)
        out = filled.reshape(out.shape)
        gap_px = gap.reshape(s, nb, ny, nx).any(axis=(0, 1))
        flags |= np.where(gap_px, FLAG_GAP_FILLED, 0).astype(np.uint8)
    valid = np.isfinite(out).all(axis=(0, 1))
    flags |= np.where(valid, 0, FLAG_NO_COVERAGE).astype(np.uint8)
    return _steps_dataset(
        out,
        valid,
        n_obs,
        flags,
        cube["y"].values,
        cube["x"].values,
        centres,
        list(cube["band"].values),
        dict(cube.attrs),
    )


def _steps_dataset(out, valid, n_obs, flags, y, x, centres, bands, attrs) -> xr.Dataset:
    attrs = {k: v for k, v in attrs.items() if k != "flags"}
    attrs["units"] = "dB"
    ds = xr.Dataset(
        {
            CUBE_NAME: (("time", "band", "y", "x"), out),
            "s1_valid": (("y", "x"), valid),
            "s1_n_obs": (("y", "x"), n_obs),
            "s1_flags": (("y", "x"), flags),
        },
        coords={"time": centres, "band": [str(b) for b in bands], "y": y, "x": x},
        attrs=attrs,
    )
    ds[CUBE_NAME].attrs["units"] = "dB"
    return ds


def s1_nodata(
    tile: TileSpec, smoothing: Any, params: S1Params = S1Params(), *, reason: str = ""
) -> xr.Dataset:
    """The flagged nodata S1 layer of a tile without coverage (all NaN, FLAG_NO_COVERAGE)."""

    centres = time_axis(smoothing)
    ny, nx = tile.shape
    y, x = tile.coords()
    nb = len(params.polarizations)
    attrs = {
        **tile.grid_attrs(),
        "item_ids": [],
        "s1_missing_reason": reason,
    }
    return _steps_dataset(
        np.full((centres.size, nb, ny, nx), np.nan, np.float32),
        np.zeros((ny, nx), bool),
        np.zeros((ny, nx), np.int16),
        np.full((ny, nx), FLAG_NO_COVERAGE, np.uint8),
        y,
        x,
        centres,
        list(params.polarizations),
        attrs,
    )
