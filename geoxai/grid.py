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

import json
import math
import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from geoxai.errors import AOIError, ConfigError, UnknownTileError

__all__ = [
    "TILE_SIZE_M",
    "RESOLUTION_M",
    "TileSpec",
    "tile_from_id",
    "tile_at",
    "utm_epsg",
    "parse_aoi",
    "country_geometry",
    "cover_aoi",
    "tiles_to_geojson",
]

TILE_SIZE_M = 6000
"""Edge of a tile core, metres."""
RESOLUTION_M = 10
"""Pixel size, metres."""

UTM_MIN_LAT = -80.0
UTM_MAX_LAT = 84.0

_ID_RE = re.compile(r"^(32[67])(\d{2})_E(\d{4})_N(\d{4})$")


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
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, self.transform, self.crs)

    def footprint(self, *, halo: bool = False) -> BaseGeometry:
        """Core (or haloed) footprint as a WGS84 lon/lat polygon (edges densified)."""
        b = self.bounds if halo else self.core_bounds
        poly = shapely.segmentize(box(*b), self.tile_size_m / 20)
        return _reproject(poly, _to_lonlat(self.epsg))

    def with_halo(self, halo_px: int) -> TileSpec:
        """The same tile with another halo width."""
        return replace(self, halo_px=halo_px)

    def neighbour(self, dcol: int, drow: int) -> TileSpec:
        """The tile ``dcol`` columns east and ``drow`` rows north of this one (same halo)."""
        return replace(self, col=self.col + dcol, row=self.row + drow)

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
            "bbox_lonlat": list(self.footprint().bounds),
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
    x, y = _from_lonlat(epsg).transform(lon, lat)
    return TileSpec(epsg, int(x // TILE_SIZE_M), int(y // TILE_SIZE_M), halo_px)


def _reproject(geom: BaseGeometry, transformer: Transformer) -> BaseGeometry:
    """Reproject every vertex of ``geom`` (densify first where edges should bend)."""
    return shapely.transform(geom, lambda x, y: transformer.transform(x, y), interleaved=False)


@cache
def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(CRS.from_epsg(epsg), CRS.from_epsg(4326), always_xy=True)


@cache
def _from_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(epsg), always_xy=True)


# ---- AOIs -------------------------------------------------------------------------------------


@cache
def _country_index() -> dict[str, Path]:
    """Map ISO 3166 alpha-2 and alpha-3 codes to countryinfo's per-country JSON files."""
    import importlib.resources

    index: dict[str, Path] = {}
    data = importlib.resources.files("countryinfo") / "data"
    for f in data.iterdir():
        if not f.name.endswith(".json"):
            continue
        doc = json.loads(f.read_text(encoding="utf-8"))
        iso = doc.get("ISO") or {}
        if not doc.get("geoJSON"):
            continue
        for key in ("alpha2", "alpha3"):
            code = iso.get(key)
            if code:
                index[str(code).upper()] = Path(str(f))
    return index


def country_geometry(code: str) -> BaseGeometry:
    """Outline of a country (WGS84) from its ISO 3166 alpha-2 or alpha-3 code.

    Outlines come from the ``countryinfo`` package (Natural Earth-derived, coarse: a few km);
    nothing is downloaded. For exact borders pass your own GeoJSON file as the AOI.
    """
    index = _country_index()
    path = index.get(code.upper())
    if path is None:
        import difflib

        close = difflib.get_close_matches(code.upper(), list(index), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise AOIError(
            f"Unknown ISO 3166 country code {code!r}.{hint} Use an alpha-3 (e.g. 'BEL') or "
            "alpha-2 code, a bbox 'minlon,minlat,maxlon,maxlat', or a GeoJSON file."
        )
    doc = json.loads(path.read_text(encoding="utf-8"))
    return _geojson_to_geometry(doc["geoJSON"], source=f"country {code}")


def _geojson_to_geometry(doc: dict[str, Any], *, source: str) -> BaseGeometry:
    kind = doc.get("type")
    try:
        if kind == "FeatureCollection":
            geoms = [shape(f["geometry"]) for f in doc.get("features", []) if f.get("geometry")]
        elif kind == "Feature":
            geoms = [shape(doc["geometry"])] if doc.get("geometry") else []
        else:
            geoms = [shape(doc)]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AOIError(f"{source}: not valid GeoJSON geometry ({exc}).") from exc
    geoms = [g if g.is_valid else shapely.make_valid(g) for g in geoms if not g.is_empty]
    if not geoms:
        raise AOIError(f"{source}: the GeoJSON holds no geometry; the AOI is empty.")
    return unary_union(geoms)


def parse_aoi(aoi: str | BaseGeometry | tuple[float, float, float, float]) -> BaseGeometry:
    """Turn an AOI into a WGS84 lon/lat shapely geometry.

    Args:
        aoi: a shapely geometry; a bbox ``(minlon, minlat, maxlon, maxlat)`` as a tuple or a
            string ``"minlon,minlat,maxlon,maxlat"``; a path to a GeoJSON file (Geometry,
            Feature or FeatureCollection, WGS84); or an ISO 3166 alpha-3/alpha-2 country code.

    Raises:
        AOIError: the AOI is empty, unreadable, has bad coordinates, or is an unknown country.
    """
    if isinstance(aoi, BaseGeometry):
        geom = aoi
    elif isinstance(aoi, tuple | list):
        geom = _bbox_geometry([float(v) for v in aoi], source=str(aoi))
    else:
        text = str(aoi).strip()
        if "," in text and not Path(text).exists():
            try:
                values = [float(v) for v in text.split(",")]
            except ValueError as exc:
                raise AOIError(
                    f"AOI {text!r} looks like a bbox but is not four numbers "
                    "'minlon,minlat,maxlon,maxlat'."
                ) from exc
            geom = _bbox_geometry(values, source=text)
        elif text.lower().endswith((".json", ".geojson")) or Path(text).exists():
            path = Path(text)
            if not path.is_file():
                raise AOIError(f"AOI file {text!r} does not exist; give a GeoJSON file path.")
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise AOIError(f"AOI file {text!r} is not readable GeoJSON: {exc}.") from exc
            geom = _geojson_to_geometry(doc, source=f"AOI file {text!r}")
        elif re.fullmatch(r"[A-Za-z]{2,3}", text):
            geom = country_geometry(text)
        else:
            raise AOIError(
                f"Cannot read AOI {text!r}: give 'minlon,minlat,maxlon,maxlat', a GeoJSON file, "
                "or an ISO 3166 country code like 'BEL'."
            )
    if geom.is_empty:
        raise AOIError("The AOI is empty.")
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AOIError(
            f"AOI bounds {geom.bounds} are not lon/lat degrees; geoxai reads AOIs in WGS84 "
            "(EPSG:4326). Reproject the file first."
        )
    return geom


def _bbox_geometry(values: list[float], *, source: str) -> BaseGeometry:
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise AOIError(
            f"AOI bbox {source!r} must be four finite numbers minlon,minlat,maxlon,maxlat."
        )
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1):
        raise AOIError(
            f"AOI bbox {source!r} is empty or inverted: need minlon < maxlon and minlat < maxlat "
            "(order: minlon,minlat,maxlon,maxlat)."
        )
    return box(x0, y0, x1, y1)


def cover_aoi(
    aoi: str | BaseGeometry | tuple[float, float, float, float],
    halo_px: int = 0,
    *,
    tile_size_m: int = TILE_SIZE_M,
) -> list[TileSpec]:
    """Cover an AOI with tiles, zone by zone, without gaps or duplicates.

    Returns:
        Tiles sorted by (epsg, row, col). See the module docstring for the zone-boundary rule.

    Raises:
        AOIError: the AOI is empty or lies outside 80 S..84 N.
    """
    geom = parse_aoi(aoi)
    _, miny, _, maxy = geom.bounds
    if maxy <= UTM_MIN_LAT or miny >= UTM_MAX_LAT:
        raise AOIError(
            f"AOI latitude range {miny:.3f}..{maxy:.3f} lies outside UTM (80 S..84 N); polar "
            "grids are not supported."
        )
    band = box(-180.0, UTM_MIN_LAT, 180.0, UTM_MAX_LAT)
    geom = geom.intersection(band)
    area_aoi = geom.area > 0
    tiles: list[TileSpec] = []
    minx, miny, maxx, maxy = geom.bounds
    z0 = max(1, int((minx + 180.0) // 6.0) + 1)
    z1 = min(60, int((maxx + 180.0) // 6.0) + 1)
    for zone in range(z0, z1 + 1):
        lon0 = -180.0 + 6.0 * (zone - 1)
        for south, (lat0, lat1) in ((False, (0.0, UTM_MAX_LAT)), (True, (UTM_MIN_LAT, 0.0))):
            strip = box(lon0, lat0, lon0 + 6.0, lat1)
            part = geom.intersection(strip)
            if part.is_empty:
                continue
            if area_aoi and part.area == 0:
                continue  # only touches the strip edge: owned by the neighbour
            epsg = (32700 if south else 32600) + zone
            tiles.extend(_cover_part(part, epsg, halo_px, tile_size_m, area_aoi))
    if not tiles:
        raise AOIError(f"The AOI {geom.bounds} is covered by no tile (empty after clipping).")
    return sorted(tiles, key=lambda t: (t.epsg, t.row, t.col))


def _cover_part(
    part: BaseGeometry, epsg: int, halo_px: int, tile_size_m: int, area_aoi: bool
) -> list[TileSpec]:
    dense = shapely.segmentize(part, 0.01) if part.length > 0 else part
    proj = _reproject(dense, _from_lonlat(epsg))
    x0, y0, x1, y1 = proj.bounds
    s = tile_size_m
    cols = np.arange(math.floor(x0 / s), math.floor(x1 / s) + 1)
    rows = np.arange(math.floor(y0 / s), math.floor(y1 / s) + 1)
    grid_c, grid_r = np.meshgrid(cols, rows)
    cc, rr = grid_c.ravel(), grid_r.ravel()
    boxes = shapely.box(cc * s, rr * s, (cc + 1) * s, (rr + 1) * s)
    shapely.prepare(proj)
    hit = shapely.intersects(boxes, proj)
    if area_aoi:
        cand = np.flatnonzero(hit)
        areas = shapely.area(shapely.intersection(boxes[cand], proj))
        keep = cand[areas > 0]
    else:
        keep = np.flatnonzero(hit)
    return [TileSpec(epsg, int(cc[i]), int(rr[i]), halo_px, tile_size_m=tile_size_m) for i in keep]


def tiles_to_geojson(tiles: list[TileSpec]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of tile core footprints (WGS84) with their properties."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": t.id,
                "geometry": mapping(t.footprint()),
                "properties": {k: v for k, v in t.to_dict().items() if k != "bbox_lonlat"},
            }
            for t in tiles
        ],
    }
