"""Data side of the rasters + mask workflow: one grid, stacked bands, a label mask, split tiles.

:func:`prepare_scene` turns a list of feature rasters (any resolution and CRS) and a mask
(polygons or a raster) into a :class:`Scene`, validating everything before pixels are read:

1. **Grid** (:func:`derive_grid`): CRS = ``crs`` or the first raster's; resolution =
   ``resolution`` or the finest input (its pixel size reprojected to the grid CRS); bounds =
   ``bounds`` or the bounding box of the *convex hull of the mask polygons* (the mask raster's
   footprint for a raster mask), clipped to where all rasters overlap, and snapped outwards to
   multiples of the resolution (so windows fall on the inference lattice of
   :mod:`geoxai.inference`). The *labelled area* is that hull (or the ``bounds`` box): pixels
   outside it have no label and add nothing to the loss.
2. **Stack** (:func:`stack_rasters`): each raster's bands are read over the grid's footprint and
   reprojected with GDAL (``average`` when the source is finer than the grid, ``bilinear``
   otherwise); every nodata convention (a nodata value in the file, NaN, an internal mask, or a
   ``nodata`` override in the config) becomes NaN; the valid mask is "every band finite".
3. **Labels** (:func:`rasterize_labels`): polygons (GeoJSON, GeoPackage, Shapefile: anything
   OGR reads, via pyogrio) are reprojected and burnt with ``rasterio.features.rasterize``
   (optionally only the features whose ``attribute`` is in ``values``); a mask raster is
   reprojected with nearest neighbour, ``> 0`` = positive, its nodata = unlabelled.
4. **Tiles** (:func:`split_tiles`): non-overlapping ``tile_size`` px tiles; the validation
   tiles form one compact region of blocks grown from a border block, and every tile touching
   it (8-neighbourhood) is a *gap* tile used by neither side, so no training tile borders a
   validation tile.

Everything is held in memory as ``(C, H, W)`` float32: fine for scenes up to a few 10^8 pixel
bands; cut larger areas into several runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pydantic import Field
from pyproj import Transformer

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError, look_up_option
from geoxai.strict import StrictModel

__all__ = [
    "RasterInput",
    "MaskInput",
    "Grid",
    "Scene",
    "derive_grid",
    "stack_rasters",
    "rasterize_labels",
    "prepare_scene",
    "grid_for_rasters",
    "VECTOR_SUFFIXES",
]

VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".kml", ".gml", ".zip")
"""Mask files read as polygons; anything else is opened as a raster."""


class RasterInput(StrictModel):
    """One feature raster (any GDAL format, any CRS and resolution)."""

    path: str = Field(description="Raster file (GeoTIFF/COG, or anything GDAL opens).")
    bands: list[int] | None = Field(
        None, description="1-based band numbers to use; default all bands."
    )
    name: str | None = Field(
        None, description="Prefix of the band names (default: the file name without suffix)."
    )
    nodata: float | None = Field(
        None,
        description="Nodata value overriding the file's (e.g. 0 for a file without a nodata "
        "tag); NaN is always nodata.",
    )


class MaskInput(StrictModel):
    """The target mask: polygons (positive inside) or a raster (> 0 = positive)."""

    path: str = Field(description="GeoJSON / GeoPackage / Shapefile polygons, or a raster.")
    attribute: str | None = Field(
        None, description="Polygon attribute to filter on (vector masks only)."
    )
    values: list[Any] | None = Field(
        None, description="Burn only features whose attribute is one of these values."
    )


@dataclass(frozen=True)
class Grid:
    """The common grid: ``shape = (H, W)`` pixels of ``resolution`` CRS units, north up."""

    crs: str
    transform: Affine
    shape: tuple[int, int]

    @property
    def resolution(self) -> float:
        """Pixel edge, CRS units (metres for projected CRSs)."""
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the grid CRS."""
        t, (h, w) = self.transform, self.shape
        return (t.c, t.f + h * t.e, t.c + w * t.a, t.f)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``from_json`` inverts it)."""
        return {"crs": self.crs, "transform": list(self.transform)[:6], "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Grid:
        """Grid from :meth:`to_json` output."""
        return cls(str(d["crs"]), Affine(*d["transform"]), (int(d["shape"][0]), int(d["shape"][1])))


@dataclass
class Scene:
    """Stacked inputs and labels on one grid.

    Attributes:
        grid: the common grid.
        data: ``(C, H, W)`` float32 bands, NaN = nodata.
        band_names: C names (``<prefix>_<description or b<n>>``).
        valid: ``(H, W)`` bool, every band has data.
        target: ``(H, W)`` uint8 0/1 mask (0 outside the labelled area).
        labelled: ``(H, W)`` bool, inside the labelled area and valid: pixels with a label.
        bands_per_raster: how many of the C bands each input raster gave, in order.
    """

    grid: Grid
    data: np.ndarray
    band_names: list[str]
    valid: np.ndarray
    target: np.ndarray
    labelled: np.ndarray
    bands_per_raster: list[int]


@dataclass(frozen=True)
class _RasterMeta:
    path: str
    crs: Any
    transform: Affine
    width: int
    height: int
    bands: list[int]
    names: list[str]
    nodata: list[float | None]
    override: float | None


def _open(path: str, what: str) -> Any:
    import rasterio  # lazy: rasterio (GDAL) only on this path
    from rasterio.errors import RasterioIOError  # lazy: rasterio (GDAL) only on this path

    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        raise DataAccessError(f"{what} {path!r} does not exist; check the path in the config.")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise DataAccessError(
            f"{what} {path!r} cannot be opened as a raster ({exc}); give a GeoTIFF or another "
            "GDAL-readable file."
        ) from exc


def raster_meta(inp: RasterInput) -> _RasterMeta:
    with _open(inp.path, "Raster") as src:
        if src.crs is None:
            raise InvalidInputError(
                f"Raster {inp.path!r} has no CRS, so it cannot be placed on the grid; assign "
                "one (gdal_edit.py -a_srs EPSG:xxxx) first."
            )
        bands = list(inp.bands) if inp.bands else list(range(1, src.count + 1))
        bad = [b for b in bands if not 1 <= b <= src.count]
        if bad:
            raise ConfigError(
                f"Raster {inp.path!r} has {src.count} bands (1..{src.count}); bands {bad} do "
                "not exist."
            )
        prefix = inp.name or Path(inp.path).stem
        desc = src.descriptions
        names = [f"{prefix}_{desc[b - 1] or f'b{b}'}" for b in bands]
        nodata = [src.nodatavals[b - 1] for b in bands]
        return _RasterMeta(
            inp.path,
            src.crs,
            src.transform,
            src.width,
            src.height,
            bands,
            names,
            nodata,
            inp.nodata,
        )


def _crs(value: Any) -> Any:
    from rasterio.crs import CRS  # lazy: rasterio (GDAL) only on this path
    from rasterio.errors import CRSError  # lazy: rasterio (GDAL) only on this path

    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise ConfigError(f"crs {value!r} is not a CRS rasterio understands ({exc}).") from exc


def to_crs(geom: Any, src_crs: Any, dst_crs: Any) -> Any:
    """``geom`` reprojected (densified first so edges bend like the projection)."""

    if _crs(src_crs) == _crs(dst_crs):
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / 32 or 1.0
    dense = shapely.segmentize(geom, step)
    tr = Transformer.from_crs(_crs(src_crs).to_wkt(), _crs(dst_crs).to_wkt(), always_xy=True)
    return shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _footprint(meta: _RasterMeta, dst_crs: Any) -> Any:

    t = meta.transform
    corners = [t * (0, 0), t * (meta.width, 0), t * (meta.width, meta.height), t * (0, meta.height)]
    return to_crs(shapely.Polygon(corners), meta.crs, dst_crs)


def _pixel_size(meta: _RasterMeta, dst_crs: Any) -> float:
    """Source pixel edge in ``dst_crs`` units: sqrt of the reprojected footprint area per pixel.

    Rounded to 3 significant digits, so that a 5 m raster in another projected CRS gives 5 m
    rather than 4.8997 m (area distortion between CRSs is a fraction of a percent).
    """
    edge = math.sqrt(_footprint(meta, dst_crs).area / (meta.width * meta.height))
    return float(f"{edge:.3g}")


def _is_vector(path: str) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def _read_polygons(mask: MaskInput, dst_crs: Any) -> list[Any]:
    """Mask polygons reprojected to ``dst_crs`` (filtered by attribute/values)."""
    import pyogrio  # lazy: pyogrio (GDAL vectors) only when a vector file is read

    if not Path(mask.path).exists():
        raise DataAccessError(f"Mask {mask.path!r} does not exist; check mask.path.")
    try:
        info = pyogrio.read_info(mask.path)
        cols = [mask.attribute] if mask.attribute else None
        if mask.attribute and mask.attribute not in list(info["fields"]):
            look_up_option(
                mask.attribute, [str(f) for f in info["fields"]], what=f"attribute of {mask.path}"
            )
        meta, _, wkb, fields = pyogrio.raw.read(mask.path, columns=cols)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise DataAccessError(
            f"Mask {mask.path!r} cannot be read as polygons ({exc}); give a GeoJSON, GeoPackage "
            "or Shapefile."
        ) from exc
    if meta.get("crs") is None:
        raise InvalidInputError(
            f"Mask {mask.path!r} has no CRS; save it with one (GeoJSON is EPSG:4326 by "
            "definition; a Shapefile needs its .prj)."
        )
    geoms = shapely.from_wkb(wkb)
    keep = np.ones(len(geoms), bool)
    if mask.attribute:
        col = np.asarray(fields[0], dtype=object)
        keep = np.isin(col, np.asarray(mask.values if mask.values is not None else [], object))
        if mask.values is None:
            keep = col.astype(bool)  # no values: features with a truthy attribute
    polys = [
        g
        for g in geoms[keep]
        if g is not None and not g.is_empty and g.geom_type in ("Polygon", "MultiPolygon")
    ]
    if len(polys) == 0:
        raise InvalidInputError(
            f"Mask {mask.path!r} has no polygon to burn"
            + (f" with {mask.attribute} in {mask.values}" if mask.attribute else "")
            + "; the mask must hold positive (polygon) features."
        )
    return [shapely.make_valid(to_crs(g, meta["crs"], dst_crs)) for g in polys]


def derive_grid(
    rasters: list[RasterInput],
    mask: MaskInput,
    *,
    crs: str | None = None,
    resolution: float | None = None,
    bounds: list[float] | None = None,
    tile_size: int = 128,
) -> tuple[Grid, Any, list[_RasterMeta]]:
    """The common grid, the labelled area (a polygon in the grid CRS) and each raster's metadata.

    Reads only metadata (and the mask polygons). See the module docstring for the rules.

    Raises:
        ConfigError: bad bands, CRS, resolution or bounds; a tile larger than the area.
        InvalidInputError: rasters that do not overlap each other or the mask area.
        DataAccessError: a file that is missing or unreadable.
    """

    metas, dst, common = _rasters_overlap(rasters, crs)
    crs_str = dst.to_string()
    # labelled area
    if bounds is not None:
        if len(bounds) != 4 or not (bounds[0] < bounds[2] and bounds[1] < bounds[3]):
            raise ConfigError(
                f"bounds {bounds} must be [minx, miny, maxx, maxy] with min < max, in {crs_str}."
            )
        area = shapely.box(*bounds)
    elif _is_vector(mask.path):
        area = shapely.union_all(_read_polygons(mask, dst)).convex_hull
    else:
        area = _footprint(raster_meta(RasterInput(path=mask.path)), dst)
    inside = area.intersection(common)
    if inside.is_empty or inside.area == 0:
        raise InvalidInputError(
            f"The training area {_fmt(area.bounds)} ({'bounds' if bounds else 'mask'}) does not "
            f"overlap the area all rasters cover {_fmt(common.bounds)} in {crs_str}; check the "
            "mask/bounds and the rasters' CRSs."
        )
    grid = _snap_grid(inside.bounds, dst, metas, resolution, tile_size)
    return grid, area, metas


def _rasters_overlap(
    rasters: list[RasterInput], crs: str | None
) -> tuple[list[_RasterMeta], Any, Any]:
    """Metadata of each raster, the grid CRS and the polygon all rasters cover (in that CRS).

    Raises:
        InvalidInputError: a raster that does not overlap the ones before it.
    """
    if not rasters:
        raise ConfigError("rasters is empty; give at least one feature raster.")
    metas = [raster_meta(r) for r in rasters]
    names = [n for m in metas for n in m.names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"Band names {dupes} occur twice; give the rasters distinct 'name' prefixes."
        )
    dst = _crs(crs) if crs is not None else metas[0].crs
    feet = [_footprint(m, dst) for m in metas]
    common = feet[0]
    for m, f in zip(metas[1:], feet[1:], strict=True):
        nxt = common.intersection(f)
        if nxt.is_empty or nxt.area == 0:
            same = _crs(m.crs) == _crs(metas[0].crs)
            how = "" if same else f" (compared in {dst.to_string()}; {m.path} is in {m.crs})"
            raise InvalidInputError(
                f"Raster {m.path!r} does not overlap the rasters before it{how}: its footprint "
                f"{_fmt(f.bounds)} vs {_fmt(common.bounds)}. All rasters must cover the "
                "training area; check the files and their CRSs."
            )
        common = nxt
    return metas, dst, common


def _snap_grid(
    box: tuple[float, float, float, float],
    dst: Any,
    metas: list[_RasterMeta],
    resolution: float | None,
    min_px: int,
) -> Grid:
    """The grid over ``box`` snapped outwards to multiples of the resolution (>= ``min_px``)."""
    crs_str = dst.to_string()
    res = float(resolution) if resolution is not None else min(_pixel_size(m, dst) for m in metas)
    if not (math.isfinite(res) and res > 0):
        raise ConfigError(f"resolution must be a positive number of {crs_str} units, got {res}.")
    x0, y0, x1, y1 = box
    eps = 1e-6  # reprojection round-trips leave ~1e-9 m of noise on exact pixel edges
    x0, y0 = math.floor(x0 / res + eps) * res, math.floor(y0 / res + eps) * res
    x1, y1 = math.ceil(x1 / res - eps) * res, math.ceil(y1 / res - eps) * res
    w, h = round((x1 - x0) / res), round((y1 - y0) / res)
    if min(h, w) < min_px:
        raise ConfigError(
            f"tile_size {min_px} px is larger than the training area, {h} x {w} px at "
            f"{res:g} {crs_str} units ({_fmt((x0, y0, x1, y1))}); use tile_size <= {min(h, w)} "
            "(or a finer resolution / larger bounds)."
        )
    return Grid(crs_str, Affine(res, 0.0, x0, 0.0, -res, y1), (h, w))


def grid_for_rasters(
    rasters: list[RasterInput], *, crs: str, resolution: float, min_px: int = 1
) -> tuple[Grid, list[_RasterMeta]]:
    """The grid (``crs``, ``resolution``) over the area all ``rasters`` cover, for prediction.

    Raises:
        InvalidInputError: the rasters do not overlap.
    """
    metas, dst, common = _rasters_overlap(rasters, crs)
    return _snap_grid(common.bounds, dst, metas, resolution, min_px), metas


def _fmt(b: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


def _read_band_block(meta: _RasterMeta, grid: Grid) -> tuple[np.ndarray, Affine] | None:
    """The bands over the grid's footprint (+2 px), float32 with NaN nodata, and its transform."""
    import rasterio  # lazy: rasterio (GDAL) only on this path
    from rasterio.warp import transform_bounds  # lazy: rasterio (GDAL) only on this path
    from rasterio.windows import Window, from_bounds  # lazy: rasterio (GDAL) only on this path

    b = transform_bounds(_crs(grid.crs), meta.crs, *grid.bounds, densify_pts=21)
    with rasterio.open(meta.path) as src:
        f = from_bounds(*b, transform=src.transform)
        c0, r0 = math.floor(f.col_off) - 2, math.floor(f.row_off) - 2
        c1 = math.ceil(f.col_off + f.width) + 2
        r1 = math.ceil(f.row_off + f.height) + 2
        win = Window(c0, r0, c1 - c0, r1 - r0)
        full = Window(0, 0, src.width, src.height)
        try:
            win = win.intersection(full)
        except rasterio.errors.WindowError:
            return None
        arr = src.read(meta.bands, window=win, out_dtype="float32")
        if meta.override is not None:
            bad = arr == np.float32(meta.override)
        else:
            bad = np.stack([src.read_masks(b, window=win) == 0 for b in meta.bands])
        arr[bad | ~np.isfinite(arr)] = np.nan
        return arr, src.window_transform(win)


def stack_rasters(metas: list[_RasterMeta], grid: Grid) -> tuple[np.ndarray, list[str]]:
    """All bands reprojected onto ``grid``: ``(C, H, W)`` float32 (NaN = nodata) and names.

    Resampling: ``average`` for a source finer than the grid (down-sampling), ``bilinear``
    otherwise. Nodata (file value, internal mask, override, NaN) never enters an average.
    """
    from rasterio.enums import Resampling  # lazy: rasterio (GDAL) only on this path
    from rasterio.warp import reproject  # lazy: rasterio (GDAL) only on this path

    h, w = grid.shape
    out = np.full((sum(len(m.bands) for m in metas), h, w), np.nan, np.float32)
    dst_crs = _crs(grid.crs)
    k = 0
    for m in metas:
        n = len(m.bands)
        block = _read_band_block(m, grid)
        if block is not None:
            arr, tr = block
            finer = _pixel_size(m, dst_crs) < 0.99 * grid.resolution
            reproject(
                source=arr,
                destination=out[k : k + n],
                src_transform=tr,
                src_crs=m.crs,
                src_nodata=np.nan,
                dst_transform=grid.transform,
                dst_crs=dst_crs,
                dst_nodata=np.nan,
                resampling=Resampling.average if finer else Resampling.bilinear,
            )
        k += n
    return out, [nm for m in metas for nm in m.names]


def rasterize_labels(mask: MaskInput, grid: Grid, area: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(target uint8 0/1, in_area bool)`` on ``grid`` from the mask and the labelled area."""
    from rasterio.enums import Resampling  # lazy: rasterio (GDAL) only on this path
    from rasterio.features import rasterize  # lazy: rasterio (GDAL) only on this path
    from rasterio.warp import reproject  # lazy: rasterio (GDAL) only on this path

    h, w = grid.shape
    in_area = rasterize(
        [(area, 1)], out_shape=(h, w), transform=grid.transform, fill=0, dtype="uint8"
    ).astype(bool)
    if _is_vector(mask.path):
        polys = _read_polygons(mask, _crs(grid.crs))
        target = rasterize(
            [(g, 1) for g in polys],
            out_shape=(h, w),
            transform=grid.transform,
            fill=0,
            dtype="uint8",
        )
        return target, in_area
    meta = raster_meta(RasterInput(path=mask.path, bands=[1]))
    block = _read_band_block(meta, grid)
    lab = np.full((1, h, w), np.nan, np.float32)
    if block is not None:
        arr, tr = block
        reproject(
            source=arr,
            destination=lab,
            src_transform=tr,
            src_crs=meta.crs,
            src_nodata=np.nan,
            dst_transform=grid.transform,
            dst_crs=_crs(grid.crs),
            dst_nodata=np.nan,
            resampling=Resampling.nearest,
        )
    known = np.isfinite(lab[0])
    return (np.nan_to_num(lab[0], nan=0.0) > 0).astype(np.uint8), in_area & known


def prepare_scene(
    rasters: list[RasterInput],
    mask: MaskInput,
    *,
    crs: str | None = None,
    resolution: float | None = None,
    bounds: list[float] | None = None,
    tile_size: int = 128,
) -> Scene:
    """Grid, stacked bands and labels (see the module docstring); checks before heavy reads.

    Raises:
        InvalidInputError: no overlap, no valid pixel, a mask without positives in the area.
        ConfigError / DataAccessError: see :func:`derive_grid`.
    """
    grid, area, metas = derive_grid(
        rasters, mask, crs=crs, resolution=resolution, bounds=bounds, tile_size=tile_size
    )
    target, in_area = rasterize_labels(mask, grid, area)
    if not (target.astype(bool) & in_area).any():  # cheap check before reading the rasters
        raise InvalidInputError(
            f"The mask {mask.path!r} has no positive pixel inside the training area "
            f"{_fmt(grid.bounds)} ({grid.crs}); nothing to learn. Check the mask "
            "(attribute/values), its CRS and the bounds."
        )
    data, names = stack_rasters(metas, grid)
    valid = np.isfinite(data).all(axis=0)
    if not valid.any():
        raise InvalidInputError(
            f"No pixel of the {grid.shape[0]} x {grid.shape[1]} px grid has data in every band "
            f"({names}); check the rasters' nodata values and that they overlap."
        )
    labelled = in_area & valid
    pos = int((target.astype(bool) & labelled).sum())
    if pos == 0:
        raise InvalidInputError(
            f"The mask {mask.path!r} has no positive pixel inside the training area "
            f"{_fmt(grid.bounds)} ({grid.crs}) where all rasters have data; nothing to learn. "
            "Check the mask (attribute/values), its CRS and the bounds."
        )
    if pos == int(labelled.sum()):
        raise InvalidInputError(
            f"The mask {mask.path!r} is positive on every labelled pixel; give an area with "
            "negatives too (e.g. larger bounds)."
        )
    target = np.where(labelled, target, 0).astype(np.uint8)
    return Scene(grid, data, names, valid, target, labelled, [len(m.bands) for m in metas])
