"""Terrain from STAC: a DEM mosaic on the tile grid, void filling and slope in degrees.

:func:`terrain` (searching with :func:`search_dem` first, or given items) returns the static
layers the model-ready cube appends to every time step (:func:`geoxai.temporal.fuse`):

* ``DEM`` ``(y, x)`` float32 elevation, metres, on the tile's haloed grid;
* ``slope`` ``(y, x)`` float32 slope, degrees (0 flat .. 90 vertical), same grid;
* ``dem_flags`` ``(y, x)`` uint8: :data:`FLAG_VOID_FILLED`, :data:`FLAG_VOID` (no elevation,
  slope NaN), :data:`FLAG_NO_DEM` (no DEM item covers the tile at all).

How, so that neighbouring tiles agree exactly in their overlap (seamless by construction):

1. **read** (:func:`build_dem`): the DEM items (e.g. Copernicus GLO-30, ``cop-dem-glo-30`` on
   Planetary Computer and Earth Search, asset ``data``, EPSG:4326, ~30 m) are warped by
   stackstac/GDAL with ``resampling`` (bilinear by default) onto the tile's 10 m lattice,
   *extended* by ``1 + void_fill_px`` pixels beyond the halo. Several items (DEM tiles) are
   mosaicked first-valid in id order. Void values (the asset's ``nodata``, the
   ``void_values`` of :class:`DemParams`, non-finite values) become NaN.
2. **voids** (:func:`fill_voids`): each void pixel gets the Gaussian-weighted mean of the valid
   elevations within ``void_fill_px`` pixels (normalized convolution); larger voids stay NaN.
3. **slope** (:func:`slope_degrees`): Horn's 3 x 3 finite differences,
   ``atan(hypot(dz/dx, dz/dy))``. It consumes one pixel on every side: the extension read in
   step 1 pays for it, so the slope of a pixel depends only on lattice pixels both tiles read
   the same way.

Every output pixel therefore depends on source pixels within ``void_fill_px + 1`` lattice
pixels, all inside the extended read; the cores of adjacent tiles match to GDAL's warp
round-off. Slope is in degrees; a model bundle's normalization scales it (the reference uses
degrees / 90).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.ndimage import convolve

from geoxai.errors import ConfigError, InvalidInputError, look_up_option
from geoxai.geo.grid import TileSpec

__all__ = [
    "DEM_BAND",
    "SLOPE_BAND",
    "FLAG_VOID_FILLED",
    "FLAG_VOID",
    "FLAG_NO_DEM",
    "DemParams",
    "slope_degrees",
    "fill_voids",
    "terrain_nodata",
]

DEM_BAND = "DEM"
"""Canonical name of the elevation layer (metres)."""
SLOPE_BAND = "slope"
"""Canonical name of the slope layer (degrees)."""


FLAG_VOID_FILLED = 1
"""Pixel flag: the DEM had a void here (or in the slope's 3 x 3 window), filled from neighbours."""


FLAG_VOID = 2
"""Pixel flag: void too large to fill; elevation and/or slope are NaN."""


FLAG_NO_DEM = 4
"""Pixel flag (whole tile): no DEM item covers the tile."""


@dataclass(frozen=True)
class DemParams:
    """How the DEM is searched, read and turned into slope.

    Attributes:
        collection: STAC collection id of the DEM (Copernicus GLO-30 on PC / Earth Search).
        asset: asset key of the elevation raster.
        resampling: GDAL resampling onto the tile grid: bilinear, cubic or nearest.
        void_values: extra elevation values meaning "void" besides the asset's nodata.
        void_fill_px: radius, 10 m pixels, within which voids are filled from valid neighbours.
    """

    collection: str = "cop-dem-glo-30"
    asset: str = "data"
    resampling: str = "bilinear"
    void_values: tuple[float, ...] = (-32767.0, -32768.0, -9999.0)
    void_fill_px: int = 8

    def __post_init__(self) -> None:
        look_up_option(self.resampling, ("bilinear", "cubic", "nearest"), what="DEM resampling")
        if not (isinstance(self.void_fill_px, int) and self.void_fill_px >= 0):
            raise ConfigError(f"DemParams.void_fill_px={self.void_fill_px!r} must be an int >= 0.")

    @property
    def extra_px(self) -> int:
        """Pixels read beyond the tile's halo: void filling reach + the slope's 1 px."""
        return self.void_fill_px + 1


def slope_degrees(elevation: np.ndarray, resolution_m: float) -> np.ndarray:
    """Slope by Horn's method on the interior of an elevation grid.

    Args:
        elevation: ``(H, W)`` elevation, metres, north-up rows (NaN = void), H, W >= 3.
        resolution_m: pixel size, metres (square pixels).

    Returns:
        ``(H - 2, W - 2)`` float32 slope, degrees, of the interior pixels; NaN where any of
        the 3 x 3 neighbours is NaN. The outer ring is consumed (read a 1 px wider grid).
    """
    z = np.asarray(elevation, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) < 3:
        raise InvalidInputError(f"slope needs a (H, W) grid with H, W >= 3, got {z.shape}.")
    if not resolution_m > 0:
        raise InvalidInputError(f"resolution_m={resolution_m} must be > 0.")
    a, b, c = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * resolution_m)
    dzdy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8.0 * resolution_m)
    centre_void = ~np.isfinite(z[1:-1, 1:-1])  # Horn's kernel skips the centre; a void has none
    slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    return np.where(centre_void, np.nan, slope).astype(np.float32)


def fill_voids(elevation: np.ndarray, radius_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN voids with the Gaussian-weighted mean of valid pixels within ``radius_px``.

    Args:
        elevation: ``(H, W)`` elevation, metres, NaN = void.
        radius_px: reach of the fill, pixels (0 = no filling).

    Returns:
        ``(filled, was_void)``: float32 elevation (voids farther than ``radius_px`` from any
        valid pixel stay NaN) and the bool mask of the input voids.
    """

    z = np.asarray(elevation, dtype=np.float32)
    void = ~np.isfinite(z)
    if radius_px == 0 or not void.any():
        return z.copy(), void
    r = int(radius_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kern = np.exp(-0.5 * (yy**2 + xx**2) / max(r / 2.0, 0.5) ** 2)
    kern[yy**2 + xx**2 > r * r] = 0.0
    w = convolve((~void).astype(np.float64), kern, mode="constant", cval=0.0)
    s = convolve(np.where(void, 0.0, z).astype(np.float64), kern, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(w > 1e-9, s / w, np.nan)
    return np.where(void, est, z).astype(np.float32), void


def terrain_layers(tile: TileSpec, elev_ext: np.ndarray, params: DemParams) -> xr.Dataset:
    filled, void = fill_voids(elev_ext, params.void_fill_px)
    f = params.void_fill_px
    inner = filled[f : filled.shape[0] - f, f : filled.shape[1] - f]  # halo + 1 px
    void_in = void[f : void.shape[0] - f, f : void.shape[1] - f]
    slope = slope_degrees(inner, tile.resolution_m)
    dem = inner[1:-1, 1:-1]
    touched = np.zeros_like(dem, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            touched |= void_in[dy : dy + dem.shape[0], dx : dx + dem.shape[1]]
    flags = np.where(touched, FLAG_VOID_FILLED, 0).astype(np.uint8)
    flags |= np.where(~np.isfinite(slope) | ~np.isfinite(dem), FLAG_VOID, 0).astype(np.uint8)
    return _dataset(tile, dem.astype(np.float32), slope, flags, {})


def _dataset(tile, dem, slope, flags, attrs) -> xr.Dataset:
    y, x = tile.coords()
    ds = xr.Dataset(
        {
            DEM_BAND: (("y", "x"), dem),
            SLOPE_BAND: (("y", "x"), slope),
            "dem_flags": (("y", "x"), flags),
        },
        coords={"y": y, "x": x},
        attrs={
            **tile.grid_attrs(),
            **attrs,
        },
    )
    ds[DEM_BAND].attrs["units"] = "m"
    ds[SLOPE_BAND].attrs["units"] = "degrees"
    return ds


def terrain_nodata(tile: TileSpec, *, reason: str = "") -> xr.Dataset:
    """Flagged nodata terrain of a tile without DEM coverage (NaN, :data:`FLAG_NO_DEM`)."""
    shape = tile.shape
    return _dataset(
        tile,
        np.full(shape, np.nan, np.float32),
        np.full(shape, np.nan, np.float32),
        np.full(shape, FLAG_NO_DEM | FLAG_VOID, np.uint8),
        {"item_ids": [], "dem_missing_reason": reason},
    )
