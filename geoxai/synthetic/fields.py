"""Random fields and small helpers of the synthetic world: B-spline noise, octaves, thresholds,
sun position, MGRS names, block tiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from geoxai.errors import ConfigError
from geoxai.geo.grid import TileSpec, tile_from_id

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_ORIGIN_TILE",
    "block_tiles",
]

DEFAULT_ORIGIN_TILE = "32631_E0096_N0938"
"""South-west tile of the default block (zone 31N, ~50.8 N 4.1 E, near Brussels)."""


def block_tiles(n: int = 4, origin: str | TileSpec = DEFAULT_ORIGIN_TILE) -> tuple[TileSpec, ...]:
    """``n`` tiles as a near-square block (row-major from the south-west ``origin`` tile).

    ``ceil(sqrt(n))`` columns; e.g. 4 -> 2 x 2, 6 -> 3 x 2, 1 -> the origin tile alone.
    """
    if n < 1:
        raise ConfigError(f"The number of tiles must be >= 1, got {n}.")
    t0 = tile_from_id(origin) if isinstance(origin, str) else origin.with_halo(0)
    ncol = math.ceil(math.sqrt(n))
    return tuple(t0.neighbour(i % ncol, i // ncol) for i in range(n))


@cache
def _bspline_matrix(n_out: int, cell: float) -> Any:
    """Sparse (n_out, n_coarse) cubic B-spline weights that upsample coarse knots by ``cell``."""

    t = (np.arange(n_out) + 0.5) / cell
    base = np.floor(t).astype(np.int64)
    rows, cols, vals = [], [], []
    for k in range(-1, 3):
        d = np.abs(t - (base + k))
        w = np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
        rows.append(np.arange(n_out))
        cols.append(base + k + 1)
        vals.append(w)
    n_coarse = int(base.max()) + 4
    m = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_out, n_coarse),
        dtype=np.float64,
    )
    norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return m, norm


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth Gaussian random field, unit variance everywhere, correlation length ~``cell`` px."""
    my, ny = _bspline_matrix(shape[0], float(cell))
    mx, nx = _bspline_matrix(shape[1], float(cell))
    coarse = rng.standard_normal((my.shape[1], mx.shape[1]))
    out = (mx @ (my @ coarse).T).T
    out /= ny[:, None] * nx[None, :]
    return out.astype(np.float32)


def octave_noise(
    rng: np.random.Generator, shape: tuple[int, int], spec: Sequence[tuple[float, float]]
):
    """Sum of smooth fields ``sum(weight * noise(cell))`` normalised to unit variance."""
    total = np.zeros(shape, np.float32)
    for cell, weight in spec:
        total += np.float32(weight) * smooth_noise(rng, shape, cell)
    return total / np.float32(math.sqrt(sum(w * w for _, w in spec)))


def threshold(values: np.ndarray, fraction: float) -> float:
    """Value above which ``fraction`` of ``values`` lies (on a strided sample, fast)."""
    sample = values[::2, ::2].ravel()
    return float(np.quantile(sample, 1.0 - fraction))


def sun_position(lon: float, lat: float, when: datetime) -> tuple[float, float]:
    """(azimuth, elevation) in degrees of the sun seen from ``(lon, lat)`` at ``when`` (UTC)."""
    doy = when.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    solar_hour = when.hour + when.minute / 60 + lon / 15.0
    hour_angle = math.radians(15.0 * (solar_hour - 12.0))
    phi = math.radians(lat)
    sin_e = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    elev = math.asin(max(-1.0, min(1.0, sin_e)))
    cos_az = (math.sin(decl) - sin_e * math.sin(phi)) / (math.cos(elev) * math.cos(phi))
    az = math.degrees(math.acos(max(-1.0, min(1.0, cos_az))))
    if hour_angle > 0:
        az = 360.0 - az
    return az, math.degrees(elev)


def mgrs_square(zone: int, lat: float, easting: float, northing: float) -> tuple[str, str]:
    """(latitude band letter, 100 km grid square) of a UTM point (standard MGRS lettering)."""
    bands = "CDEFGHJKLMNPQRSTUVWX"
    lat_band = bands[min(max(int((lat + 80) // 8), 0), len(bands) - 1)]
    col_sets = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
    col = col_sets[(zone - 1) % 3][int(easting // 100_000) - 1]
    row_letters = "ABCDEFGHJKLMNPQRSTUV"
    row = row_letters[(int(northing // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
    return lat_band, col + row


def mean2(a: np.ndarray) -> np.ndarray:
    """2 x 2 block mean of an (H, W) float32 array with even H, W."""
    out = a[0::2, 0::2] + a[1::2, 0::2]
    out += a[0::2, 1::2]
    out += a[1::2, 1::2]
    out *= np.float32(0.25)
    return out


def up2(a: np.ndarray) -> np.ndarray:
    """Nearest 2x upsampling of (h, w) to (2h, 2w)."""
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)
