"""The tile grid: 6 km UTM tiles on a lattice fixed per zone, and AOI covers.

Tiles live on a lattice anchored at easting/northing 0 of their UTM zone (EPSG:326zz north,
EPSG:327zz south): tile ``(col, row)`` covers
``[col*6000, (col+1)*6000) x [row*6000, (row+1)*6000)``
metres, 600 x 600 pixels of 10 m. Its id is ``{epsg}_E{col:04d}_N{row:04d}``, e.g.
``32631_E0096_N0938`` (easting 576 km, northing 5,628 km in zone 31N).

A tile is processed with a *halo* of ``halo_px`` pixels on each side (context for temporal
filters and inference windows) and writes only its *core*.

Zone-boundary rule (documented in the README): an AOI is cut along the UTM zone meridians
(every 6 degrees) and the equator. Each part is covered, in its own zone's CRS, by every tile
whose core overlaps it with positive area (or intersects it, for point/line AOIs). Tiles on a
zone edge therefore extend past the meridian; the ground they cover beyond it is *owned* by the
neighbouring zone, whose tiles also cover it. So the union of cores covers the AOI without
gaps, every tile id appears once, and a pixel's value in a mosaic is taken from the zone whose
longitude strip contains it. Norway/Svalbard zone exceptions are not applied (plain 6-degree
strips); UTM is defined for 80 S to 84 N and AOIs outside fail with :class:`AOIError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import antimeridian
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geoxai.errors import ConfigError, UnknownTileError

__all__ = [
    "GRID_ATTRS",
    "TILE_SIZE_M",
    "RESOLUTION_M",
    "TileSpec",
    "tile_from_id",
    "tile_at",
    "utm_epsg",
    "split_at_antimeridian",
]

TILE_SIZE_M = 6000
"""Edge of a tile core, metres."""


RESOLUTION_M = 10
"""Pixel size, metres."""


_ID_RE = re.compile(r"^(32[67])(\d{2})_E(\d{4})_N(\d{4})$")


GRID_ATTRS = ("crs", "transform", "tile_id", "halo_px", "resolution_m")
"""Names of :meth:`TileSpec.grid_attrs` (the tile grid carried by every tile array)."""


@dataclass(frozen=True, order=True)
class TileSpec:
    """One tile of the zone-global lattice, with its halo.

    Attributes:
        epsg: EPSG code of the UTM zone (32601..32660 north, 32701..32760 south).
        col: lattice column, ``floor(easting / tile_size_m)``.
        row: lattice row, ``floor(northing / tile_size_m)``.
        halo_px: context pixels added on every side (processing only, never written).
        tile_size_m: core edge in metres (6,000 by default).
        resolution_m: pixel size in metres (10 by default).
    """

    epsg: int
    col: int
    row: int
    halo_px: int = 0
    tile_size_m: int = TILE_SIZE_M
    resolution_m: int = RESOLUTION_M

    def __post_init__(self) -> None:
        if not (32601 <= self.epsg <= 32660 or 32701 <= self.epsg <= 32760):
            raise UnknownTileError(
                f"EPSG:{self.epsg} is not a UTM zone on WGS84; tiles use EPSG:32601-32660 (north) "
                "or EPSG:32701-32760 (south)."
            )
        if self.halo_px < 0:
            raise ConfigError(f"halo_px must be >= 0, got {self.halo_px}.")
        if self.tile_size_m <= 0 or self.resolution_m <= 0 or self.tile_size_m % self.resolution_m:
            raise ConfigError(
                f"tile_size_m ({self.tile_size_m}) must be a positive multiple of resolution_m "
                f"({self.resolution_m})."
            )
        if not (0 <= self.col <= 9999 and 0 <= self.row <= 9999):
            raise UnknownTileError(f"Tile column/row ({self.col}, {self.row}) outside 0..9999.")

    # ---- identity -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Stable id ``{epsg}_E{col:04d}_N{row:04d}``; independent of the halo."""
        return f"{self.epsg}_E{self.col:04d}_N{self.row:04d}"

    @property
    def zone(self) -> int:
        """UTM zone number, 1..60."""
        return self.epsg % 100

    @property
    def south(self) -> bool:
        """True for southern-hemisphere zones (EPSG:327zz)."""
        return self.epsg >= 32701

    @property
    def crs(self) -> str:
        """CRS as an ``"EPSG:xxxxx"`` string."""
        return f"EPSG:{self.epsg}"

    # ---- geometry -------------------------------------------------------------------------
    @property
    def core_px(self) -> int:
        """Core edge in pixels (600 by default)."""
        return self.tile_size_m // self.resolution_m

    @property
    def core_bounds(self) -> tuple[float, float, float, float]:
        """Core ``(minx, miny, maxx, maxy)`` in metres of the zone CRS."""
        s = self.tile_size_m
        return (self.col * s, self.row * s, (self.col + 1) * s, (self.row + 1) * s)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Bounds including the halo, metres."""
        h = self.halo_px * self.resolution_m
        x0, y0, x1, y1 = self.core_bounds
        return (x0 - h, y0 - h, x1 + h, y1 + h)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels including the halo."""
        n = self.core_px + 2 * self.halo_px
        return (n, n)

    @property
    def transform(self) -> Affine:
        """Affine pixel->CRS transform of the haloed grid (north-up, top-left origin)."""
        x0, _, _, y1 = self.bounds
        r = self.resolution_m
        return Affine(r, 0.0, x0, 0.0, -r, y1)

    @property
    def core_slice(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices that cut the core out of a haloed ``(..., y, x)`` array."""
        h, n = self.halo_px, self.core_px
        return (slice(h, h + n), slice(h, h + n))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates ``(y, x)`` of the haloed grid, metres (y decreasing)."""
        x0, _, _, y1 = self.bounds
        r = self.resolution_m
        n = self.shape[0]
        x = x0 + r * (np.arange(n) + 0.5)
        y = y1 - r * (np.arange(n) + 0.5)
        return y, x

    @property
    def geobox(self) -> Any:
        """The haloed grid as an ``odc.geo.geobox.GeoBox``."""
        from odc.geo.geobox import GeoBox  # lazy: odc-geo only on this path

        return GeoBox(self.shape, self.transform, self.crs)

    def footprint(self, *, halo: bool = False) -> BaseGeometry:
        """Core (or haloed) footprint as a WGS84 lon/lat polygon (edges densified).

        A tile that crosses the antimeridian (zones 1 and 60) is a MultiPolygon split at
        +-180 degrees (RFC 7946, as STAC items are), never a polygon around the globe."""
        b = self.bounds if halo else self.core_bounds
        poly = shapely.segmentize(box(*b), self.tile_size_m / 20)
        return split_at_antimeridian(reproject(poly, _to_lonlat(self.epsg)))

    def lonlat_bbox(self, *, halo: bool = False) -> tuple[float, float, float, float]:
        """``(minlon, minlat, maxlon, maxlat)`` of :meth:`footprint`, degrees. For a tile across
        the antimeridian ``minlon > maxlon`` (RFC 7946 section 5.2);
        :func:`geoxai.io.stac.search` splits such a bbox into its two halves."""
        x0, y0, x1, y1 = antimeridian.bbox(self.footprint(halo=halo))
        return (float(x0), float(y0), float(x1), float(y1))

    def with_halo(self, halo_px: int) -> TileSpec:
        """The same tile with another halo width."""
        return replace(self, halo_px=halo_px)

    def neighbour(self, dcol: int, drow: int) -> TileSpec:
        """The tile ``dcol`` columns east and ``drow`` rows north of this one (same halo)."""
        return replace(self, col=self.col + dcol, row=self.row + drow)

    def grid_attrs(self) -> dict[str, Any]:
        """The grid attributes every array of this tile carries (cubes, features, S1, terrain):
        ``crs``, ``transform`` (6 floats, halo included), ``tile_id``, ``halo_px``,
        ``resolution_m``; what the inference lattice and the stores read back."""
        return {
            "crs": self.crs,
            "transform": [float(v) for v in list(self.transform)[:6]],
            "tile_id": self.id,
            "halo_px": self.halo_px,
            "resolution_m": self.resolution_m,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (id, CRS, bounds, shape, transform, lon/lat bbox)."""
        return {
            "id": self.id,
            "epsg": self.epsg,
            "col": self.col,
            "row": self.row,
            "halo_px": self.halo_px,
            "resolution_m": self.resolution_m,
            "core_bounds": list(self.core_bounds),
            "bounds": list(self.bounds),
            "shape": list(self.shape),
            "transform": list(self.transform)[:6],
            "bbox_lonlat": list(self.lonlat_bbox()),
        }


def tile_from_id(tile_id: str, halo_px: int = 0, *, tile_size_m: int = TILE_SIZE_M) -> TileSpec:
    """Parse a tile id like ``32631_E0096_N0938``.

    Raises:
        UnknownTileError: the id does not have the form ``{epsg}_E{col:04d}_N{row:04d}``.
    """
    m = _ID_RE.match(str(tile_id).strip())
    if not m:
        raise UnknownTileError(
            f"Tile id {tile_id!r} is not of the form '{{epsg}}_E{{col:04d}}_N{{row:04d}}' "
            "(e.g. '32631_E0096_N0938'); list valid ids with `geoxai tiles --aoi ...`."
        )
    prefix, zone, col, row = m.groups()
    if not 1 <= int(zone) <= 60:
        raise UnknownTileError(f"Tile id {tile_id!r}: UTM zone {int(zone)} is not in 1..60.")
    return TileSpec(int(prefix + zone), int(col), int(row), halo_px, tile_size_m=tile_size_m)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the plain 6-degree UTM zone that holds ``(lon, lat)``."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def tile_at(lon: float, lat: float, halo_px: int = 0) -> TileSpec:
    """The tile of the point's own zone whose core holds ``(lon, lat)``."""
    epsg = utm_epsg(lon, lat)
    x, y = from_lonlat(epsg).transform(lon, lat)
    return TileSpec(epsg, int(x // TILE_SIZE_M), int(y // TILE_SIZE_M), halo_px)


def split_at_antimeridian(polygon: BaseGeometry) -> BaseGeometry:
    """A lon/lat polygon as it is, or, when its longitudes span more than 180 degrees (a ring
    reprojected across the antimeridian), a MultiPolygon split at +-180 (RFC 7946, the
    ``antimeridian`` package as stactools uses it)."""
    x0, _, x1, _ = polygon.bounds
    if x1 - x0 <= 180.0:
        return polygon
    return antimeridian.fix_polygon(polygon, great_circle=False)


def reproject(geom: BaseGeometry, transformer: Transformer) -> BaseGeometry:
    """Reproject every vertex of ``geom`` (densify first where edges should bend)."""
    return shapely.transform(geom, lambda x, y: transformer.transform(x, y), interleaved=False)


@cache
def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(CRS.from_epsg(epsg), CRS.from_epsg(4326), always_xy=True)


@cache
def from_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(epsg), always_xy=True)
