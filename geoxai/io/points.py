"""Reference point files: read with their CRS (any), write a sample for interpreters.

GeoPackage / GeoJSON / Shapefile go through pyogrio with their declared CRS; CSV has ``lon``/
``lat`` columns (EPSG:4326) or ``x``/``y`` with an ``epsg`` column or a CRS given by the caller.
Points without a declared CRS are an error, never a guess, and so are projected coordinates in
a file that declares a geographic CRS (metres written into a GeoJSON).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from geoxai.errors import DataAccessError, InvalidInputError

__all__ = ["LABEL_COLUMN", "PointTable", "read_points", "write_points"]

LABEL_COLUMN = "reference"
"""Column left empty by ``geoxai assess sample`` for the interpreters' reference label."""


@dataclass(frozen=True)
class PointTable:
    """Points read from a file.

    Attributes:
        x: ``(n,)`` first coordinate (easting or longitude) in ``crs``.
        y: ``(n,)`` second coordinate (northing or latitude).
        crs: ``(n,)`` CRS of each point (``EPSG:4326``, WKT ...): one per file, or per row.
        fields: column name -> ``(n,)`` values (object arrays as read).
        source: the file, for messages.
    """

    x: np.ndarray
    y: np.ndarray
    crs: np.ndarray
    fields: dict[str, np.ndarray]
    source: str

    @property
    def n(self) -> int:
        """Number of points."""
        return int(self.x.size)


def _is_geographic(crs: str) -> bool:
    return bool(CRS.from_user_input(str(crs)).is_geographic)  # np.str_ confuses pyproj


def _check_geographic(x: np.ndarray, y: np.ndarray, crs: np.ndarray, source: str) -> None:
    for c in np.unique(crs.astype(str)):
        sel = crs.astype(str) == c
        if _is_geographic(c) and (np.abs(x[sel]) > 180).any() | (np.abs(y[sel]) > 90).any():
            raise InvalidInputError(
                f"Points of {source} are declared in a geographic CRS ({c[:40]}) but have "
                f"coordinates up to ({np.abs(x[sel]).max():.0f}, {np.abs(y[sel]).max():.0f}): "
                "they are projected (metres) without their CRS. Save them with their real CRS "
                "(GeoPackage), or give a CSV with x/y and --crs EPSG:<code> (GeoJSON is always "
                "EPSG:4326)."
            )


def read_points(path: str | Path, *, crs: str | None = None) -> PointTable:
    """Read points with their CRS (see the module docstring for the accepted forms).

    Args:
        path: GeoPackage, GeoJSON, Shapefile or CSV.
        crs: CRS of CSV ``x``/``y`` columns (``EPSG:32631``); ignored for files that carry one
            (a conflicting declaration is an error).

    Raises:
        DataAccessError: the file does not exist or cannot be read.
        InvalidInputError: no CRS is declared, geometries are not points, or coordinates
            contradict the declared CRS.
    """
    p = Path(path)
    if not p.exists():
        raise DataAccessError(f"Reference points {str(p)!r} do not exist.")
    if p.suffix.lower() == ".csv":
        return _read_csv(p, crs)
    import pyogrio  # lazy: pyogrio (GDAL vectors) only when a vector file is read

    try:
        meta, _, wkb, fields = pyogrio.raw.read(str(p))
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise DataAccessError(
            f"Reference points {str(p)!r} cannot be read ({exc}); give a GeoPackage, GeoJSON, "
            "Shapefile or CSV."
        ) from exc
    file_crs = meta.get("crs")
    if file_crs is None:
        if crs is None:
            raise InvalidInputError(
                f"Reference points {str(p)!r} declare no CRS; save them with one (a Shapefile "
                "needs its .prj) or pass --crs EPSG:<code>."
            )
        file_crs = crs
    elif crs is not None and not _same_crs(file_crs, crs):
        raise InvalidInputError(
            f"Reference points {str(p)!r} declare {file_crs[:60]} but --crs says {crs}; drop "
            "--crs (the file's own CRS is used) or fix the file."
        )
    geoms = shapely.from_wkb(wkb)
    kinds = set(shapely.get_type_id(geoms).tolist()) if len(geoms) else set()
    if kinds - {0}:
        raise InvalidInputError(
            f"Reference points {str(p)!r} hold non-point geometries; a sample is points "
            "(take polygon centroids first)."
        )
    x, y = shapely.get_x(geoms), shapely.get_y(geoms)
    crs_arr = np.full(x.size, str(file_crs), dtype=object)
    _check_geographic(x, y, crs_arr, str(p))
    names = [str(f) for f in meta["fields"]]
    cols = {n: np.asarray(v, dtype=object) for n, v in zip(names, fields, strict=True)}
    return PointTable(x.astype(np.float64), y.astype(np.float64), crs_arr, cols, str(p))


def _same_crs(a: str, b: str) -> bool:
    return bool(CRS.from_user_input(str(a)) == CRS.from_user_input(str(b)))


def _read_csv(p: Path, crs: str | None) -> PointTable:
    with p.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InvalidInputError(f"Reference points {str(p)!r} have no rows.")
    cols = {k.strip(): np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    low = {k.lower(): k for k in cols}

    def num(name: str) -> np.ndarray:
        try:
            return cols[low[name]].astype(np.float64)
        except ValueError as exc:
            raise InvalidInputError(f"{p}: column {low[name]!r} must be numbers.") from exc

    for xs, ys in (("lon", "lat"), ("longitude", "latitude")):
        if xs in low and ys in low:
            x, y = num(xs), num(ys)
            crs_arr = np.full(x.size, "EPSG:4326", dtype=object)
            break
    else:
        if "x" not in low or "y" not in low:
            raise InvalidInputError(
                f"{p}: a CSV of points needs lon/lat columns (EPSG:4326) or x/y columns; it "
                f"has {list(cols)}."
            )
        x, y = num("x"), num("y")
        if "epsg" in low:
            crs_arr = np.array([f"EPSG:{int(float(v))}" for v in cols[low["epsg"]]], dtype=object)
        elif crs is not None:
            crs_arr = np.full(x.size, crs, dtype=object)
        else:
            raise InvalidInputError(
                f"{p}: x/y columns without a CRS (no 'epsg' column, no --crs); say which CRS "
                "they are in with --crs EPSG:<code>, or give lon/lat columns."
            )
    _check_geographic(x, y, crs_arr, str(p))
    return PointTable(x, y, crs_arr, cols, str(p))


def write_points(
    path: str | Path, columns: Mapping[str, np.ndarray], *, label_column: str = LABEL_COLUMN
) -> str:
    """Write sample points (``columns`` from :func:`draw_sample`, plus ``strata_spec``).

    GeoPackage keeps the zone CRS when every point is in one zone (EPSG:4326 otherwise);
    GeoJSON is EPSG:4326; CSV has ``lon``/``lat`` plus the zone ``x``/``y``/``epsg``. An empty
    text column ``label_column`` is added for the interpreters. Returns the path written.

    Raises:
        InvalidInputError: the extension is not .gpkg, .geojson, .json or .csv.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".gpkg", ".geojson", ".json", ".csv"):
        raise InvalidInputError(f"--out {str(p)!r}: write .gpkg, .geojson or .csv.")
    n = len(columns["x"])
    cols = {k: np.asarray(v) for k, v in columns.items()}
    cols[label_column] = np.full(n, "", dtype=object)
    epsgs = np.unique(cols["epsg"]) if n else np.array([4326])
    lon = np.empty(n)
    lat = np.empty(n)
    for e in epsgs:
        sel = cols["epsg"] == e
        tr = Transformer.from_crs(f"EPSG:{int(e)}", "EPSG:4326", always_xy=True)
        lon[sel], lat[sel] = tr.transform(cols["x"][sel], cols["y"][sel])
    p.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".csv":
        names = ["lon", "lat", *cols]
        with p.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(names)
            for k in range(n):
                w.writerow([f"{lon[k]:.8f}", f"{lat[k]:.8f}", *(_cell(cols[c][k]) for c in cols)])
        return str(p)
    import pyogrio  # lazy: pyogrio (GDAL vectors) only when a vector file is read

    if ext == ".gpkg" and len(epsgs) == 1:
        gx, gy, crs = cols["x"], cols["y"], f"EPSG:{int(epsgs[0])}"
    else:
        gx, gy, crs = lon, lat, "EPSG:4326"
    geoms = shapely.points(np.asarray(gx, float), np.asarray(gy, float))
    fields, data = [], []
    for name, v in cols.items():
        fields.append(name)
        data.append(v.astype(str) if v.dtype == object else v)
    if p.exists():
        p.unlink()
    pyogrio.raw.write(
        str(p),
        geometry=shapely.to_wkb(geoms),
        field_data=data,
        fields=fields,
        crs=crs,
        driver="GPKG" if ext == ".gpkg" else "GeoJSON",
        geometry_type="Point",
        layer="points" if ext == ".gpkg" else None,
    )
    return str(p)


def _cell(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "" if not math.isfinite(float(v)) else f"{float(v):.10g}"
    return str(v)
