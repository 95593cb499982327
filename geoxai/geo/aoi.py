"""Areas of interest: bbox, GeoJSON or ISO 3166 country -> geometry -> the tiles that cover it.

An AOI is split by UTM zone, then covered by tiles of the zone's lattice (:mod:`geoxai.geo.grid`).
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from geoxai.errors import AOIError
from geoxai.geo.grid import TILE_SIZE_M, TileSpec, from_lonlat, reproject

__all__ = [
    "parse_aoi",
    "country_geometry",
    "cover_aoi",
    "tiles_to_geojson",
]

UTM_MIN_LAT = -80.0


UTM_MAX_LAT = 84.0


@cache
def _country_index() -> dict[str, Path]:
    """Map ISO 3166 alpha-2 and alpha-3 codes to countryinfo's per-country JSON files."""

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
    # minlon > maxlon crosses the antimeridian (RFC 7946 section 5.2); taken as such only when
    # the box is then narrower than half the globe, so swapped longitudes stay an error
    across = x0 > x1 and x0 - x1 > 180.0 and -180 <= x1 and x0 <= 180
    if not ((x0 < x1 or across) and y0 < y1):
        raise AOIError(
            f"AOI bbox {source!r} is empty or inverted: need minlon < maxlon and minlat < maxlat "
            "(order: minlon,minlat,maxlon,maxlat). A bbox across 180 degrees has minlon > "
            "maxlon, e.g. '179.5,-17,-179.5,-16'."
        )
    if across:  # its two halves, one per side of the antimeridian
        return MultiPolygon([box(x0, y0, 180.0, y1), box(-180.0, y0, x1, y1)])
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
    proj = reproject(dense, from_lonlat(epsg))
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
        # a box inside the AOI overlaps it by its whole area: only the boundary boxes need the
        # (costly, for a country's coastline) intersection
        inside = hit & shapely.contains_properly(proj, boxes)
        cand = np.flatnonzero(hit & ~inside)
        areas = shapely.area(shapely.intersection(boxes[cand], proj))
        keep = np.union1d(np.flatnonzero(inside), cand[areas > 0])
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
