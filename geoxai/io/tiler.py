"""Web Mercator map tiles and point values of a run's mosaics, read with rio-tiler.

A run keeps one VRT mosaic per UTM zone and layer (:func:`geoxai.io.mosaic.build_vrt`) over
per-tile COGs with internal overviews, and the zone's overview COG that the VRT names
(:func:`geoxai.io.mosaic.build_overview`; :class:`Pyramid` turns both into the overview levels
of one dataset). :func:`render_tile` reads the part of every zone's
mosaic that falls into one XYZ tile (``WebMercatorQuad``), reprojected by rio-tiler
(``WarpedVRT``; GDAL picks the overview level whose resolution is just finer than the tile's,
so a country-zoom tile reads overviews, never full-resolution blocks), and composites the zones
with the *home-zone rule*: an output pixel takes its value from the zone whose 6-degree strip
holds its longitude, and only where that zone has no data from another zone. Tiles of several
zones therefore meet at the zone meridian without overlap, and without gaps where only one zone
has data. :func:`point_values` applies the same rule to one point.

S3 mosaics are read through GDAL's ``/vsis3/``; :func:`gdal_env` turns the store's s3fs options
(endpoint) into the GDAL options GDAL needs (the run's credential conventions: keys only from
the environment).
"""

from __future__ import annotations

import functools
import io
import math
import os
import posixpath
import queue
import xml.etree.ElementTree as ET  # noqa: N817 - the stdlib's customary alias
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from geoxai.errors import CorruptDataError, StoreError
from geoxai.io.location import StoreLocation

__all__ = [
    "TILE_PX",
    "ZoneMosaic",
    "gdal_env",
    "render_tile",
    "point_values",
    "overview_level",
    "tile_bounds_lonlat",
    "encode_png",
    "empty_png",
    "Pyramid",
]

TILE_PX = 256
"""Edge of a served map tile, pixels."""


@dataclass(frozen=True)
class ZoneMosaic:
    """One zone's mosaic of one layer.

    Attributes:
        epsg: the zone's EPSG code (326xx / 327xx).
        path: what GDAL opens (a local path or ``/vsis3/bucket/key.vrt``).
        bounds_lonlat: ``(west, south, east, north)`` of the mosaic, degrees.
        nodata: the layer's fill value (NaN for float layers).
        name: the mosaic's URL, for messages (default ``path``).
    """

    epsg: int
    path: str
    bounds_lonlat: tuple[float, float, float, float]
    nodata: float | int
    name: str = ""


def gdal_env(loc: StoreLocation) -> dict[str, str]:
    """GDAL config options to read ``loc`` through ``/vsis3/`` (empty for local stores).

    A custom endpoint in the store options (``endpoint_url``) becomes ``AWS_S3_ENDPOINT`` with
    ``AWS_HTTPS`` from its scheme and path-style addressing; variables already set in the
    environment win (GDAL reads them itself). Keys are never passed: GDAL reads
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from the environment like the run does.
    """
    if not loc.is_s3:
        return {}
    so = loc.storage_options
    endpoint = so.get("endpoint_url") or (so.get("client_kwargs") or {}).get("endpoint_url")
    env: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    if endpoint and not os.environ.get("AWS_S3_ENDPOINT"):
        parts = urlsplit(str(endpoint))
        env["AWS_S3_ENDPOINT"] = parts.netloc or parts.path
        env["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        env["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return env


@contextmanager
def _reading(path: str, env: Mapping[str, str]) -> Iterator[None]:
    """GDAL options for the read; a GDAL failure becomes a typed error naming the file."""
    import rasterio  # lazy: rasterio (GDAL) only when tiles are read
    from rasterio.errors import RasterioError  # lazy: rasterio (GDAL) only when tiles are read

    try:
        with rasterio.Env(**env):
            yield
    except RasterioError as exc:
        text = str(exc)
        if "No such file" in text or "does not exist" in text:
            raise StoreError(
                f"Could not read {path}: {text}. A COG the mosaic names is missing: rebuild "
                "it from the zone store (`geoxai view --write-cogs RUN_ROOT`)."
            ) from exc
        raise CorruptDataError(
            f"Could not read {path} (or a COG it names): {text}. The file is damaged: rewrite "
            "the tile's COGs from the zone store with `geoxai view --write-cogs RUN_ROOT`."
        ) from exc


_POOL: dict[str, queue.SimpleQueue[Any]] = {}
"""Open datasets per path, reused across requests (one user at a time: GDAL datasets are not
safe for concurrent use, sequential use from several threads is fine)."""


@contextmanager
def _dataset(path: str) -> Iterator[Any]:
    """An open rasterio dataset of ``path``: from the pool, or opened; returned after use."""
    import rasterio  # lazy: rasterio (GDAL) only when tiles are read

    pool = _POOL.setdefault(path, queue.SimpleQueue())
    try:
        ds = pool.get_nowait()
    except queue.Empty:
        ds = rasterio.open(path)
    ok = False
    try:
        yield ds
        ok = True
    finally:
        if ok:
            pool.put(ds)
        else:
            ds.close()  # a failed read may leave GDAL's state dirty: do not reuse


def release(path: str) -> None:
    """Close the pooled datasets of ``path`` (before its file goes away)."""
    pool = _POOL.pop(path, None)
    while pool is not None and not pool.empty():
        pool.get_nowait().close()


def tile_bounds_lonlat(x: int, y: int, z: int) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` in degrees of the Web Mercator tile ``z/x/y``."""
    n = 2.0**z

    def lat(row: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def _home_zone(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """EPSG code of the plain UTM zone of each point (same rule as ``geoxai.geo.grid``)."""
    zone = np.minimum(np.floor((lon + 180.0) / 6.0).astype(int) + 1, 60)
    return np.where(lat >= 0, 32600, 32700) + zone


def _pixel_lonlat(x: int, y: int, z: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Longitude, latitude (degrees) of the pixel centres of tile ``z/x/y``, ``(size, size)``."""
    n = 2.0**z
    cols = x + (np.arange(size) + 0.5) / size
    rows = y + (np.arange(size) + 0.5) / size
    lon = cols / n * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(np.pi * (1 - 2 * rows / n))))
    return np.broadcast_to(lon[None, :], (size, size)), np.broadcast_to(lat[:, None], (size, size))


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def render_tile(
    mosaics: Sequence[ZoneMosaic],
    x: int,
    y: int,
    z: int,
    *,
    band: int = 0,
    resampling: str = "nearest",
    env: Mapping[str, str] | None = None,
    size: int = TILE_PX,
) -> tuple[np.ma.MaskedArray, dict[str, Any]]:
    """Values of one band of a layer in the Web Mercator tile ``z/x/y``, every zone composited.

    Args:
        mosaics: the layer's mosaic in each zone.
        x, y, z: the XYZ tile.
        band: 0-based band of the layer.
        resampling: GDAL resampling for the reprojection (``nearest`` for classes and native
            zoom, ``bilinear`` for smooth layers).
        env: GDAL options (:func:`gdal_env`).
        size: tile edge, pixels.

    Returns:
        ``(values, info)``: a float64 masked array ``(size, size)`` (masked = no data, the
        whole tile masked outside the run) and ``{"zones": [epsg read], "overview": {epsg: level}}``
        (level 0 = full resolution, k = the k-th overview; see :func:`overview_level`).

    Raises:
        CorruptDataError: a mosaic or a COG it names cannot be decoded.
        StoreError: a COG the mosaic names is missing.
    """
    from rio_tiler.errors import TileOutsideBounds  # lazy: rio-tiler only in the viewer
    from rio_tiler.io import Reader  # lazy: rio-tiler only in the viewer

    out = np.ma.masked_all((size, size), dtype="float64")
    info: dict[str, Any] = {"zones": [], "overview": {}}
    bbox = tile_bounds_lonlat(x, y, z)
    hits = [m for m in mosaics if _intersects(m.bounds_lonlat, bbox)]
    if not hits:
        return out, info
    lon, lat = _pixel_lonlat(x, y, z, size)
    home = _home_zone(lon, lat)
    parts: list[tuple[ZoneMosaic, np.ma.MaskedArray]] = []
    for m in hits:
        with (
            _reading(m.name or m.path, env or {}),
            _dataset(m.path) as ds,
            Reader(m.path, dataset=ds) as src,
        ):
            try:
                img = src.tile(
                    x,
                    y,
                    z,
                    tilesize=size,
                    indexes=band + 1,
                    reproject_method=resampling,
                    resampling_method=resampling,
                    nodata=m.nodata,
                )
            except TileOutsideBounds:
                continue
            info["overview"][m.epsg] = overview_level(src.dataset, bbox, size)
        a = img.array[0].astype("float64")
        parts.append((m, a))
        info["zones"].append(m.epsg)
    filled = np.zeros((size, size), dtype=bool)
    for pass_home in (True, False):  # home-zone pixels first, then fill gaps from other zones
        for m, a in parts:
            take = ~np.ma.getmaskarray(a) & ~filled
            if pass_home:
                take &= home == m.epsg
            out[take] = a.data[take]
            filled |= take
    return out, info


def overview_level(dataset: Any, bbox_lonlat: Sequence[float], size: int) -> int:
    """The overview level GDAL reads for a ``size`` px tile over ``bbox_lonlat`` (0 = full).

    GDAL's rule (``GDALBandGetBestOverviewLevel2``): the coarsest overview whose resolution is
    still at least as fine as the requested one (within GDAL's 1.2 tolerance of ``AUTO``).
    """
    t = _from_lonlat(dataset.crs.to_string())
    xs, ys = t.transform(
        [bbox_lonlat[0], bbox_lonlat[2], bbox_lonlat[0], bbox_lonlat[2]],
        [bbox_lonlat[1], bbox_lonlat[1], bbox_lonlat[3], bbox_lonlat[3]],
    )
    want = max((max(xs) - min(xs)) / size, (max(ys) - min(ys)) / size)
    native = abs(dataset.transform.a)
    level = 0
    for k, factor in enumerate(dataset.overviews(1), start=1):
        if native * factor <= want * 1.2:
            level = k
    return level


@functools.lru_cache(maxsize=64)
def _from_lonlat(crs: str) -> Any:
    from pyproj import Transformer  # lazy: pyproj only with rasterio

    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def point_values(
    mosaics: Sequence[ZoneMosaic],
    lon: float,
    lat: float,
    *,
    env: Mapping[str, str] | None = None,
    prefer: int | None = None,
) -> tuple[int | None, list[float | None]]:
    """Every band of a layer at ``(lon, lat)``, from the home zone's mosaic (else another zone).

    ``prefer``: the zone to try first (so every layer of a click comes from one zone).

    Returns:
        ``(epsg, values)``: the zone read and one value per band (None = no data), or
        ``(None, [])`` when no zone has data there.
    """
    from rio_tiler.errors import PointOutsideBounds  # lazy: rio-tiler only in the viewer
    from rio_tiler.io import Reader  # lazy: rio-tiler only in the viewer

    home = prefer or int(_home_zone(np.array([lon]), np.array([lat]))[0])
    ordered = sorted(mosaics, key=lambda m: m.epsg != home)
    for m in ordered:
        b = m.bounds_lonlat
        if not (b[0] <= lon <= b[2] and b[1] <= lat <= b[3]):
            continue
        with (
            _reading(m.name or m.path, env or {}),
            _dataset(m.path) as ds,
            Reader(m.path, dataset=ds) as src,
        ):
            try:
                pt = src.point(lon, lat, nodata=m.nodata)
            except PointOutsideBounds:
                continue
        mask = np.ma.getmaskarray(pt.array)
        if mask.all():
            continue
        return m.epsg, [None if k else float(v) for v, k in zip(pt.array.data, mask, strict=True)]
    return None, []


def encode_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an RGBA ``(H, W, 4)`` uint8 image (alpha kept: transparent = no data).

    Pillow at zlib level 1: about 3x faster than GDAL's PNG driver at its default level for
    a 256 px tile, for tiles about twice the size (still a few kB for a map tile).
    """
    from PIL import Image  # lazy: Pillow only in the viewer

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8), "RGBA").save(
        buf, "PNG", compress_level=1
    )
    return buf.getvalue()


def empty_png(size: int = TILE_PX) -> bytes:
    """A fully transparent ``size`` px PNG (a tile outside the run)."""
    return encode_png(np.zeros((size, size, 4), dtype=np.uint8))


class Pyramid:
    """An in-memory copy of a zone mosaic VRT with explicit overviews (GDAL ``/vsimem/``).

    The run's mosaics place full-resolution COGs side by side; GDAL's VRT exposes implicit
    overviews only for single-source VRTs, so a warped read of a mosaic at country zoom would
    read every COG at full resolution. This copy adds, per overview level ``k`` of the COGs
    (factors 2, 4 ...), an ``<Overview>`` VRT whose sources open each COG at
    ``OVERVIEW_LEVEL=k-1``: GDAL's warper then reads the COGs' internal overviews. When the
    mosaic names the zone's overview COG (``<Overview>``, :func:`geoxai.io.mosaic.build_vrt`),
    its base level and each of its internal overviews become further levels (factors 8, 16,
    32 ... for 600 px cores), replacing tile-COG levels as coarse or coarser, so a country-zoom
    tile reads one file, not the COGs of every tile it covers. Source paths become absolute
    (local paths, or ``/vsis3/`` for S3 mosaics); nothing is written to the run.

    Attributes:
        path: the ``/vsimem/`` path to open instead of the mosaic.
        factors: overview factors (e.g. ``[2, 4, 8, 16]``); empty when the COGs have none.
    """

    def __init__(self, xml: str, mosaic_path: str, env: Mapping[str, str] | None = None) -> None:
        import rasterio  # lazy: rasterio (GDAL) only when tiles are read
        from rasterio.io import MemoryFile  # lazy: rasterio (GDAL) only when tiles are read

        root = ET.fromstring(xml)
        base = mosaic_path.rsplit("/", 1)[0]
        zone_overview: str | None = None
        for band in root.iter("VRTRasterBand"):
            for o in band.findall("Overview"):
                rel = o.find("SourceFilename")
                if rel is not None and rel.text:
                    zone_overview = rel.text
                    if rel.get("relativeToVRT") == "1":
                        zone_overview = _join(base, rel.text)
                band.remove(o)
        first: str | None = None
        for fn in root.iter("SourceFilename"):
            name = fn.text or ""
            if fn.get("relativeToVRT") == "1":
                name = _join(base, name)
            fn.text, first = name, first or name
            fn.attrib.pop("relativeToVRT", None)
        tile_factors: list[int] = []
        if first is not None:
            with _reading(first, env or {}), rasterio.open(first) as src:
                tile_factors = list(src.overviews(1))
        gt = [float(v) for v in (root.findtext("GeoTransform") or "").split(",")]
        nx, ny = int(root.get("rasterXSize", "0")), int(root.get("rasterYSize", "0"))
        zone_levels: list[tuple[int, int, int]] = []  # (factor, width, height) per level
        if zone_overview is not None:
            with _reading(zone_overview, env or {}), rasterio.open(zone_overview) as src:
                f0 = round(gt[1] and src.transform.a / gt[1])
                zone_levels = [(f0, src.width, src.height)] + [
                    (f0 * k, math.ceil(src.width / k), math.ceil(src.height / k))
                    for k in src.overviews(1)
                ]
            tile_factors = [f for f in tile_factors if f < zone_levels[0][0]]
        self.factors: list[int] = tile_factors + [f for f, _, _ in zone_levels]
        self._files: list[Any] = []
        ovr_paths = []
        for level, f in enumerate(tile_factors):
            ovr = ET.fromstring(ET.tostring(root))
            ovr.set("rasterXSize", str(math.ceil(nx / f)))
            ovr.set("rasterYSize", str(math.ceil(ny / f)))
            g = [gt[0], gt[1] * f, gt[2], gt[3], gt[4], gt[5] * f]
            gt_el = ovr.find("GeoTransform")
            if gt_el is not None:
                gt_el.text = ", ".join(repr(v) for v in g)
            for src_el in ovr.iter("SimpleSource"):
                oo = ET.SubElement(src_el, "OpenOptions")
                ET.SubElement(oo, "OOI", key="OVERVIEW_LEVEL").text = str(level)
                for tag in ("SrcRect", "DstRect"):
                    r = src_el.find(tag)
                    if r is not None:
                        for k in r.attrib:
                            r.set(k, str(int(r.get(k, "0")) // f))
                props = src_el.find("SourceProperties")
                if props is not None:
                    src_el.remove(props)
            mf = MemoryFile(ET.tostring(ovr), ext=".vrt")
            self._files.append(mf)
            ovr_paths.append(mf.name)
        for level, (f, w, h) in enumerate(zone_levels):
            ovr_paths.append(self._zone_level(root, zone_overview or "", level, f, w, h))
        for band in root.iter("VRTRasterBand"):
            b = band.get("band", "1")
            for p in ovr_paths:
                o = ET.SubElement(band, "Overview")
                ET.SubElement(o, "SourceFilename").text = p
                ET.SubElement(o, "SourceBand").text = b
        main = MemoryFile(ET.tostring(root), ext=".vrt")
        self._files.append(main)
        self.path: str = main.name

    def _zone_level(self, root: Any, path: str, level: int, f: int, w: int, h: int) -> str:
        """A ``/vsimem/`` VRT of the mosaic's extent at factor ``f`` whose one source per band
        is level ``level`` of the zone overview COG at ``path`` (0 = its base)."""
        from rasterio.io import MemoryFile  # lazy: rasterio (GDAL) only when tiles are read

        gt = [float(v) for v in (root.findtext("GeoTransform") or "").split(",")]
        ovr = ET.Element("VRTDataset", rasterXSize=str(w), rasterYSize=str(h))
        srs = root.find("SRS")
        if srs is not None:
            ovr.append(srs)
        ET.SubElement(ovr, "GeoTransform").text = ", ".join(
            repr(v) for v in [gt[0], gt[1] * f, gt[2], gt[3], gt[4], gt[5] * f]
        )
        for band in root.iter("VRTRasterBand"):
            b = ET.SubElement(ovr, "VRTRasterBand", band.attrib)
            nodata = band.find("NoDataValue")
            if nodata is not None:
                ET.SubElement(b, "NoDataValue").text = nodata.text
            src_el = ET.SubElement(b, "SimpleSource")
            ET.SubElement(src_el, "SourceFilename").text = path
            ET.SubElement(src_el, "SourceBand").text = band.get("band", "1")
            if level:
                oo = ET.SubElement(src_el, "OpenOptions")
                ET.SubElement(oo, "OOI", key="OVERVIEW_LEVEL").text = str(level - 1)
            ET.SubElement(src_el, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
            ET.SubElement(src_el, "DstRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        mf = MemoryFile(ET.tostring(ovr), ext=".vrt")
        self._files.append(mf)
        return str(mf.name)

    def close(self) -> None:
        """Close pooled datasets of the in-memory files and free them."""
        for f in self._files:
            release(f.name)
            f.close()
        self._files = []


def _join(base: str, rel: str) -> str:
    """``rel`` resolved against the folder ``base`` (POSIX rules; keeps ``/vsis3/``)."""
    return posixpath.normpath(posixpath.join(base, rel))
