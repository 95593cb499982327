"""Per-zone mosaics of the tile COGs: a flat VRT and a GDAL tile index at full resolution, and
an overview COG.

Flat mosaic (:func:`build_vrt`): a per-zone, per-layer GDAL VRT written by hand (no ``osgeo``
needed) that places every tile COG at its pixel offset on the zone grid with *relative* source
paths, so the run folder can be moved or synced to S3 as a whole. It holds no copy of the
pixels and always agrees with the tiles; it is the full-resolution source of the viewer.

Overview COG (:func:`build_overview`): the whole zone at ``1/F`` of full resolution (``F`` =
:func:`overview_factor`, 8 for 600 px cores: 80 m pixels) in one Cloud-Optimized GeoTIFF with
its own internal overviews (2x, 4x ... by the same resampling), next to the VRT as
``<layer>.overview.tif``. At country scale a VRT over 240,000 COGs cannot be read at country
zoom (every COG would be opened); the VRT therefore names the overview COG as its
``<Overview>``: GDAL (a desktop GIS, the report's quicklooks) reads any request coarser than
``F`` from that one file and, through it, from its internal overviews. Each overview pixel is
GDAL's decimated read of one tile COG (``average`` of the valid values for continuous layers,
``nearest`` for class layers; GDAL reads the tile COG's coarsest overview that is not coarser
than ``F``, so the value of a block with no nodata equals the mean of its full-resolution
pixels to float32 rounding). It is built streaming, one row of tiles at a time (memory: one
strip of ``F``-decimated tiles plus GDAL's block cache, :data:`CACHE_MB`; the COGs of a row are
read by :data:`READ_THREADS` threads), into a tiled GeoTIFF that GDAL's COG driver then copies
with its overviews. Cost: one decimated read per tile and layer (~5-15 ms on one core), so
a 60,000-tile zone takes minutes per layer on a few cores (``benchmarks/bench_scale_outputs.py``).

Tile index (:func:`build_tile_index`): the same mosaic as a GDAL raster tile index (GTI driver,
GDAL >= 3.9; QGIS >= 3.36 opens it), ``<layer>.gti.gpkg``: a GeoPackage with one footprint
polygon and relative COG path per tile in an R-tree, and the mosaic's grid in the layer
metadata. Opening it reads that metadata, not a list of every tile: the largest Brazil zone
(60,269 tiles) opens in ~0.04 s against ~4 s for its flat VRT (24 MB of XML), and a read looks
up only the tiles it touches. Its overview is a second layer of the same file whose single
feature is the overview COG (a path relative to the index, as the tiles'), so coarse reads go
to the overview COG and its internal overviews, and the folder stays movable.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from geoxai.errors import CorruptDataError, InvalidInputError
from geoxai.geo.grid import TileSpec
from geoxai.io.cog import GDAL_TYPES, cog_block, gdal_path, validate_cog
from geoxai.io.layout import RunLayout
from geoxai.io.store import upload_file
from geoxai.io.tiler import gdal_env
from geoxai.io.zonestore import LayerSpec, ZoneGrid

__all__ = [
    "OVERVIEW_MAX_FACTOR",
    "CACHE_MB",
    "overview_factor",
    "build_vrt",
    "build_overview",
    "build_tile_index",
    "build_mosaics",
]

log = logging.getLogger(__name__)

OVERVIEW_MAX_FACTOR = 8
"""Largest reduction of the overview COG's base level (600 px cores: 8, i.e. 80 m pixels)."""

CACHE_MB = 256
"""GDAL block cache while an overview COG is written, MB (bounds its memory with the strip)."""

READ_THREADS = min(8, os.cpu_count() or 1)
"""Threads reading tile COGs for an overview (one decimated read each, ~5-15 ms)."""

OVERVIEW_BLOCKSIZE = 512
"""Internal tile edge of the overview COGs, pixels."""


def overview_factor(core_px: int) -> int:
    """Reduction of the overview COG for ``core_px`` px cores: the largest power of two that
    divides ``core_px`` and is at most :data:`OVERVIEW_MAX_FACTOR` (600 -> 8, 300 -> 4,
    60 -> 4); 1 when ``core_px`` is odd (no overview COG then)."""
    f = 1
    while f * 2 <= OVERVIEW_MAX_FACTOR and core_px % (f * 2) == 0:
        f *= 2
    return f


def _fmt(v: float | int) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return repr(float(v)) if isinstance(v, float) else str(int(v))


def _one_zone(spec: LayerSpec, tiles: Sequence[TileSpec], what: str) -> None:
    if not tiles:
        raise InvalidInputError(f"{what}({spec.name}): no tiles; nothing to mosaic.")
    zones = {t.epsg for t in tiles}
    if len(zones) != 1:
        raise InvalidInputError(
            f"{what}({spec.name}): tiles of several zones {sorted(zones)}; a mosaic holds "
            "one CRS. Call it once per zone."
        )
    if spec.dtype not in GDAL_TYPES:
        raise InvalidInputError(f"{what}: dtype {spec.dtype} of {spec.name!r} unsupported.")


def build_vrt(
    layout: RunLayout,
    spec: LayerSpec,
    tiles: Sequence[TileSpec],
    *,
    grid: ZoneGrid | None = None,
    overview: str | None = None,
) -> str:
    """Write ``<root>/mosaics/zone=<epsg>/<layer>.vrt`` over the tiles' COGs; return its URL.

    Args:
        layout: the run's layout.
        spec: the layer (dtype, bands, nodata).
        tiles: tiles of one zone whose COG of the layer exists (typically the done tiles).
        grid: extent of the mosaic; default the bounding box of ``tiles``.
        overview: URL of the zone's overview COG (:func:`build_overview`, same folder), named
            as the VRT's ``<Overview>`` (relative path); None = none.

    Raises:
        InvalidInputError: no tiles, tiles of several zones, or a tile off ``grid``.
    """
    from rasterio.crs import CRS  # lazy: rasterio (GDAL) only on this path

    _one_zone(spec, tiles, "build_vrt")
    if grid is None:
        grid = ZoneGrid.from_tiles(tiles)[tiles[0].epsg]
    gdal_type = GDAL_TYPES[spec.dtype]
    n = grid.core_px
    ny, nx = grid.shape
    gt = grid.transform
    geotransform = f"{gt[2]!r}, {gt[0]!r}, {gt[1]!r}, {gt[5]!r}, {gt[3]!r}, {gt[4]!r}"
    bands = list(spec.bands) or [spec.name]
    fill = spec.fill
    ordered = sorted(set(tiles), key=lambda t: (-t.row, t.col))
    wkt = CRS.from_epsg(grid.epsg).to_wkt()
    lines = [
        f'<VRTDataset rasterXSize="{nx}" rasterYSize="{ny}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(wkt)}</SRS>',
        f"  <GeoTransform>{geotransform}</GeoTransform>",
    ]
    for b, band_name in enumerate(bands, start=1):
        lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{b}">')
        lines.append(f"    <Description>{escape(str(band_name))}</Description>")
        lines.append(f"    <NoDataValue>{_fmt(fill)}</NoDataValue>")
        for t in ordered:
            i, j = grid.chunk_index(t)
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="1">../../cogs/{spec.name}/{t.id}.tif'
                "</SourceFilename>",
                f"      <SourceBand>{b}</SourceBand>",
                f'      <SourceProperties RasterXSize="{n}" RasterYSize="{n}" '
                f'DataType="{gdal_type}" BlockXSize="{cog_block(n)}" '
                f'BlockYSize="{cog_block(n)}" />',
                f'      <SrcRect xOff="0" yOff="0" xSize="{n}" ySize="{n}" />',
                f'      <DstRect xOff="{j * n}" yOff="{i * n}" xSize="{n}" ySize="{n}" />',
                "    </SimpleSource>",
            ]
        if overview:
            name = escape(overview.rsplit("/", 1)[-1])
            lines += [
                "    <Overview>",
                f'      <SourceFilename relativeToVRT="1">{name}</SourceFilename>',
                f"      <SourceBand>{b}</SourceBand>",
                "    </Overview>",
            ]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    xml = "\n".join(lines) + "\n"
    loc = layout.at(layout.mosaic_url(spec.name, grid.epsg))
    with tempfile.TemporaryDirectory(prefix="geoxai-vrt-") as tmp:
        path = Path(tmp) / "mosaic.vrt"
        path.write_text(xml, encoding="utf-8")
        upload_file(path, loc)
    return loc.url


GTI_TILES_LAYER = "tiles"
"""Layer of a tile index holding one feature per tile COG."""

GTI_OVERVIEW_LAYER = "overview"
"""Layer of a tile index holding the zone's overview COG (its GTI overview)."""


def _gti_metadata(
    spec: LayerSpec, grid: ZoneGrid, res: float, block: int, bands: Sequence[str]
) -> dict[str, str]:
    """GTI layer metadata: the mosaic's grid at ``res`` m, bands, data type, nodata."""
    a, _, c, _, e, g = grid.transform
    ny, nx = grid.shape
    md = {
        "LOCATION_FIELD": "location",
        "RESX": repr(float(res)),
        "RESY": repr(float(res)),
        "MINX": repr(float(c)),
        "MAXX": repr(float(c + nx * a)),
        "MINY": repr(float(g + ny * e)),
        "MAXY": repr(float(g)),
        "BAND_COUNT": str(len(bands)),
        "DATA_TYPE": GDAL_TYPES[spec.dtype],
        "NODATA": _fmt(spec.fill),
        "BLOCKXSIZE": str(block),
        "BLOCKYSIZE": str(block),
    }
    for k, name in enumerate(bands, start=1):  # GTI has no band description: band metadata
        md[f"BAND_{k}_DESCRIPTION"] = str(name)
        if spec.units:
            md[f"BAND_{k}_UNITTYPE"] = spec.units
    return md


def build_tile_index(
    layout: RunLayout,
    spec: LayerSpec,
    tiles: Sequence[TileSpec],
    *,
    grid: ZoneGrid | None = None,
    overview: str | None = None,
) -> str:
    """Write ``<root>/mosaics/zone=<epsg>/<layer>.gti.gpkg`` over the tiles' COGs; return its URL.

    A GDAL raster tile index (module docstring): layer :data:`GTI_TILES_LAYER` with one
    feature per tile (its core footprint in the zone CRS, m, and ``location``
    ``../../cogs/<layer>/<tile>.tif`` relative to the index), the grid (``grid``'s extent and
    10 m pixels, or the zone's pixel size), bands, data type and nodata of ``spec`` as layer
    metadata; with ``overview``, layer :data:`GTI_OVERVIEW_LAYER` holding that COG as the
    index's overview. Written locally, opened by GDAL to check its grid, then uploaded.

    Args:
        layout: the run's layout.
        spec: the layer (dtype, bands, nodata).
        tiles: tiles of one zone whose COG of the layer exists.
        grid: extent; default the bounding box of ``tiles`` (give the same as :func:`build_vrt`).
        overview: URL of the zone's overview COG (:func:`build_overview`, same folder); None =
            none.

    Raises:
        InvalidInputError: no tiles, tiles of several zones, an unsupported dtype.
        CorruptDataError: GDAL does not read the written index back with the zone's grid.
    """
    import pyogrio.raw  # lazy: OGR only on this path
    import rasterio  # lazy: rasterio (GDAL) only on this path
    import shapely  # lazy: only on this path
    from rasterio.crs import CRS  # lazy: rasterio (GDAL) only on this path

    _one_zone(spec, tiles, "build_tile_index")
    if grid is None:
        grid = ZoneGrid.from_tiles(tiles)[tiles[0].epsg]
    a, _, c, _, e, g = grid.transform
    n = grid.core_px
    bands = [str(b) for b in spec.bands] or [spec.name]
    ordered = sorted(set(tiles), key=lambda t: (-t.row, t.col))
    ij = np.array([grid.chunk_index(t) for t in ordered], dtype=np.float64).reshape(-1, 2)
    x0 = c + ij[:, 1] * n * a
    y1 = g + ij[:, 0] * n * e
    footprints = shapely.to_wkb(shapely.box(x0, y1 + n * e, x0 + n * a, y1))
    where = np.array([f"../../cogs/{spec.name}/{t.id}.tif" for t in ordered], dtype=object)
    wkt = CRS.from_epsg(grid.epsg).to_wkt()
    md = _gti_metadata(spec, grid, a, cog_block(n), bands)
    if overview:
        md["OVERVIEW_0_LAYER"] = GTI_OVERVIEW_LAYER
    loc = layout.at(layout.tile_index_url(spec.name, grid.epsg))
    with tempfile.TemporaryDirectory(prefix="geoxai-gti-") as tmp:
        path = Path(tmp) / f"{spec.name}.gti.gpkg"
        common = {"driver": "GPKG", "geometry_type": "Polygon", "crs": wkt}
        pyogrio.raw.write(
            path, footprints, [where], ["location"], layer=GTI_TILES_LAYER,
            layer_metadata=md, dataset_metadata={"TILE_INDEX_LAYER": GTI_TILES_LAYER},
            **common,
        )  # fmt: skip
        if overview:
            ny, nx = grid.shape
            zone = shapely.to_wkb(np.array([shapely.box(c, g + ny * e, c + nx * a, g)]))
            f = overview_factor(n)
            pyogrio.raw.write(
                path, zone, [np.array([overview.rsplit("/", 1)[-1]], dtype=object)],
                ["location"], layer=GTI_OVERVIEW_LAYER, append=True,
                layer_metadata=_gti_metadata(spec, grid, a * f, OVERVIEW_BLOCKSIZE, bands),
                dataset_metadata={"TILE_INDEX_LAYER": GTI_TILES_LAYER}, **common,
            )  # fmt: skip
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path) as ds:
            if (
                ds.shape != grid.shape
                or ds.count != len(bands)
                or ds.crs != CRS.from_epsg(grid.epsg)
            ):
                raise CorruptDataError(
                    f"Tile index {loc.url}: GDAL reads {ds.count} bands of {ds.shape} in "
                    f"{ds.crs}, expected {len(bands)} of {grid.shape} in EPSG:{grid.epsg}. "
                    "Check the GDAL version (the GTI driver needs GDAL >= 3.9)."
                )
        upload_file(path, loc)
    return loc.url


def build_overview(
    layout: RunLayout,
    spec: LayerSpec,
    tiles: Sequence[TileSpec],
    *,
    grid: ZoneGrid | None = None,
    workers: int = READ_THREADS,
) -> str | None:
    """Write ``<root>/mosaics/zone=<epsg>/<layer>.overview.tif``; return its URL.

    The zone grid at ``1/F`` resolution (:func:`overview_factor`; ``(K, ny/F, nx/F)``, the
    layer's dtype, bands and nodata), filled from each tile's COG by a decimated read
    (module docstring), nodata where no tile was given; a COG with internal overviews down to
    one block. Streaming: one row of tiles at a time.

    Args:
        layout: the run's layout.
        spec: the layer.
        tiles: tiles of one zone whose COG of the layer exists.
        grid: extent; default the bounding box of ``tiles`` (give the same as :func:`build_vrt`).
        workers: threads reading the tile COGs of a row (GDAL decodes without the GIL).

    Returns:
        The URL, or None when the cores have an odd size (no reduction divides them).

    Raises:
        InvalidInputError: no tiles, tiles of several zones, an unsupported dtype.
        CorruptDataError: a tile COG cannot be decoded (the message names it).
    """
    import rasterio  # lazy: rasterio (GDAL) only on this path
    import rasterio.shutil  # lazy: rasterio (GDAL) only on this path
    from rasterio.enums import Resampling  # lazy: rasterio (GDAL) only on this path
    from rasterio.errors import RasterioError  # lazy: rasterio (GDAL) only on this path
    from rasterio.transform import Affine  # lazy: rasterio (GDAL) only on this path
    from rasterio.windows import Window  # lazy: rasterio (GDAL) only on this path

    _one_zone(spec, tiles, "build_overview")
    if grid is None:
        grid = ZoneGrid.from_tiles(tiles)[tiles[0].epsg]
    f = overview_factor(grid.core_px)
    if f < 2:
        log.warning("no overview COG of %s: %d px cores are odd", spec.name, grid.core_px)
        return None
    m = grid.core_px // f
    ny, nx = grid.nrows * m, grid.ncols * m
    bands = list(spec.bands) or [spec.name]
    continuous = np.dtype(spec.dtype).kind == "f"
    resampling = Resampling.average if continuous else Resampling.nearest
    fill = spec.fill
    a, b, c, d, e, g = grid.transform
    rows: dict[int, list[TileSpec]] = {}
    for t in set(tiles):
        rows.setdefault(grid.chunk_index(t)[0], []).append(t)
    loc = layout.at(layout.overview_url(spec.name, grid.epsg))
    env: dict[str, Any] = {"GDAL_CACHEMAX": CACHE_MB, **gdal_env(layout.location)}
    profile = {
        "driver": "GTiff",
        "width": nx,
        "height": ny,
        "count": len(bands),
        "dtype": spec.dtype,
        "crs": f"EPSG:{grid.epsg}",
        "transform": Affine(a * f, b, c, d, e * f, g),
        "nodata": fill,
        "tiled": True,
        "blockxsize": OVERVIEW_BLOCKSIZE,
        "blockysize": OVERVIEW_BLOCKSIZE,
        "compress": "DEFLATE",
        "zlevel": 1,
        "bigtiff": "IF_SAFER",
    }
    with tempfile.TemporaryDirectory(prefix="geoxai-overview-") as tmp:
        base, cog = Path(tmp) / "base.tif", Path(tmp) / "overview.tif"
        with (
            rasterio.Env(**env),
            ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="overview") as pool,
        ):
            with rasterio.open(base, "w", **profile) as dst:
                for i in sorted(rows):
                    strip = np.full((len(bands), m, nx), fill, dtype=spec.dtype)

                    def read(t: TileSpec, strip: np.ndarray = strip) -> None:
                        j = grid.chunk_index(t)[1]
                        url = layout.cog_url(spec.name, t.id)
                        try:  # rasterio's Env is per thread: each reader sets the options
                            with (
                                rasterio.Env(**env),
                                rasterio.open(gdal_path(url, layout.storage_options)) as src,
                            ):
                                strip[:, :, j * m : (j + 1) * m] = src.read(
                                    out_shape=(len(bands), m, m), resampling=resampling
                                )
                        except RasterioError as exc:
                            raise CorruptDataError(
                                f"Overview of {spec.name} (EPSG:{grid.epsg}): tile COG {url} "
                                f"cannot be read: {exc}. Rewrite it from the zone store with "
                                f"`geoxai view --write-cogs {layout.root}`."
                            ) from exc

                    list(pool.map(read, rows[i]))  # GDAL releases the GIL while it decodes
                    dst.write(strip, window=Window(0, i * m, nx, m))
                for k, name in enumerate(bands, start=1):
                    dst.set_band_description(k, str(name))
                dst.update_tags(layer=spec.name, units=spec.units, factor=str(f))
            rasterio.shutil.copy(
                base,
                cog,
                driver="COG",
                compress="DEFLATE",
                predictor=3 if continuous else 2,
                blocksize=OVERVIEW_BLOCKSIZE,
                overview_resampling=resampling.name,
                bigtiff="IF_SAFER",
            )
        validate_cog(cog)
        upload_file(cog, loc)
    return loc.url


def build_mosaics(
    layout: RunLayout,
    tiles: Sequence[TileSpec],
    layers: Sequence[LayerSpec],
    *,
    overviews: bool = True,
) -> dict[int, dict[str, str]]:
    """Per zone and layer over ``tiles`` (the ones with COGs): the overview COG
    (:func:`build_overview`, unless ``overviews`` is False), the VRT and the tile index
    (:func:`build_tile_index`) that name it as their overview; epsg -> layer -> VRT URL."""
    by_zone: dict[int, list[TileSpec]] = {}
    for t in tiles:
        by_zone.setdefault(t.epsg, []).append(t)
    out: dict[int, dict[str, str]] = {}
    for epsg, ts in sorted(by_zone.items()):
        grid = ZoneGrid.from_tiles(ts)[epsg]
        out[epsg] = {}
        for spec in layers:
            ovr = build_overview(layout, spec, ts, grid=grid) if overviews else None
            out[epsg][spec.name] = build_vrt(layout, spec, ts, grid=grid, overview=ovr)
            build_tile_index(layout, spec, ts, grid=grid, overview=ovr)
    return out
