"""What the viewer shows of a run: its layers and their styles, map tiles, the values of a pixel,
the tile grid with statuses and records, and the summary (``geoxai view``, ``pipelines/viewer``).

:meth:`RunView.open` reads a run root (local or ``s3://``) once: ``config.json``, the records,
every zone store's layers and grid, and which VRT mosaics exist. Tiles come from the mosaics
(:mod:`geoxai.io.tiler`, rio-tiler); values of a clicked pixel from the mosaics as well (the
COGs the map shows), or from the zone stores when the run wrote no COGs. Problems that leave
part of the run viewable (no COGs, a zone without mosaics) are listed in
:attr:`RunView.problems` with how to fix them; a path that is not a run root raises.
"""

from __future__ import annotations

import html
import json
import math
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoxai.errors import DataAccessError, InvalidInputError, StoreError, look_up_option
from geoxai.geo.grid import TILE_SIZE_M, TileSpec, tile_from_id
from geoxai.io.cog import write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.mosaic import build_mosaics
from geoxai.io.store import read_json
from geoxai.io.tiler import Pyramid, ZoneMosaic, gdal_env, point_values, render_tile
from geoxai.io.zonestore import LayerSpec, ZoneStore
from geoxai.mapping.records import read_records
from geoxai.mapping.report import STATUS_COLOURS, tile_statuses
from geoxai.mapping.styles import LayerStyle, layer_style

__all__ = ["VIEW_LAYERS", "RunView", "NotARunError", "LayerError", "write_missing_cogs"]

VIEW_LAYERS = (
    "prediction",
    "asos_sensitivity",
    "spacex_attribution",
    "quality",
    "change",
    "change_flag",
)
"""Layers the viewer offers, in this order, when the run has them (others follow)."""


class NotARunError(StoreError):
    """The path given is not the root of a geoxai run."""


@dataclass
class _Zone:
    store: ZoneStore
    bounds_lonlat: tuple[float, float, float, float]


@dataclass
class RunView:
    """A run opened for viewing (see the module docstring).

    Attributes:
        layout: the run's layout.
        config: ``config.json`` as a dict (empty when absent).
        records: the tile records.
        zones: epsg -> the zone store and its lon/lat bounds.
        layers: layer name -> its spec (first zone that has it).
        styles: layer name -> colour map and value range.
        mosaics: layer name -> the zones' VRT mosaics of it.
        problems: messages about what cannot be shown and how to fix it.
    """

    layout: RunLayout
    config: dict[str, Any]
    records: list[dict[str, Any]]
    zones: dict[int, _Zone]
    layers: dict[str, LayerSpec]
    styles: dict[str, LayerStyle]
    mosaics: dict[str, list[ZoneMosaic]]
    problems: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: str, storage_options: Mapping[str, Any] | None = None) -> RunView:
        """Open the run under ``root`` (``<store.root>/<name>/<year>``, path or ``s3://``).

        Raises:
            NotARunError: no ``config.json``, no records and no zone store under ``root``.
            StoreError: the store cannot be read (credentials, endpoint ...).
        """
        layout = RunLayout(str(root), storage_options)
        loc = layout.location
        fs = loc.filesystem()
        if not loc.is_s3 and not fs.isdir(loc.path):
            raise NotARunError(
                f"{loc.url} is not a folder. Give the run root, <store.root>/<name>/<year> "
                "(the folder holding config.json, records/ and zone=<epsg>/)."
            )
        config = read_json(layout.at(layout.config_url()), default=None) or {}
        records = list(read_records(layout))
        epsgs = layout.zones()
        if not config and not records and not epsgs:
            raise NotARunError(
                f"{loc.describe()} is not a geoxai run root: it has no config.json, no "
                "records/ and no zone=<epsg>/outputs.zarr. Give <store.root>/<name>/<year> "
                "(e.g. demo-output/demo/2024)."
            )
        zones: dict[int, _Zone] = {}
        layers: dict[str, LayerSpec] = {}
        problems: list[str] = []
        for epsg in epsgs:
            try:
                store = ZoneStore.open(layout, epsg)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            zones[epsg] = _Zone(store, _lonlat_bounds(epsg, store.grid.bounds))
            for name, spec in store.layers.items():
                layers.setdefault(name, spec)
        order = [n for n in VIEW_LAYERS if n in layers] + sorted(set(layers) - set(VIEW_LAYERS))
        layers = {n: layers[n] for n in order}
        stats: dict[str, list[Mapping[str, Any]]] = {}
        for r in records:
            for name, info in dict(r.get("layers") or {}).items():
                if isinstance(info, dict) and isinstance(info.get("stats"), dict):
                    stats.setdefault(name, []).append(info["stats"])
        styles = {
            n: layer_style(n, units=s.units, bands=s.bands, stats=stats.get(n, ()))
            for n, s in layers.items()
        }
        env = gdal_env(loc)
        mosaics: dict[str, list[ZoneMosaic]] = {n: [] for n in layers}
        missing: list[str] = []
        pyramids: list[Pyramid] = []
        for epsg, z in zones.items():
            for name, spec in layers.items():
                if name not in z.store.layers:
                    continue
                vrt = layout.at(layout.mosaic_url(name, epsg))
                if not fs.exists(vrt.path):
                    missing.append(f"{name} (EPSG:{epsg})")
                    continue
                path = f"/vsis3/{vrt.path}" if vrt.is_s3 else vrt.path
                xml = fs.cat_file(vrt.path).decode("utf-8", "replace")
                outside = _sources_outside(xml, vrt.path, loc.path, local=not loc.is_s3)
                if outside:
                    problems.append(
                        f"Mosaic {vrt.url} names {outside}, outside the run root; it is not "
                        f"served. Rebuild it with `geoxai view --write-cogs {layout.root}`."
                    )
                    continue
                try:
                    pyr = Pyramid(xml, path, env)
                except DataAccessError as exc:
                    problems.append(f"Mosaic {vrt.url}: {exc}")
                    continue
                pyramids.append(pyr)
                mosaics[name].append(
                    ZoneMosaic(epsg, pyr.path, z.bounds_lonlat, spec.fill, name=vrt.url)
                )
        done = [r for r in records if r.get("status") == "done"]
        if missing and done:
            no_cogs = not any(r.get("cogs") for r in done) and not any(mosaics.values())
            if no_cogs:
                problems.append(
                    "This run wrote no COGs (processing.write_cogs: false), so there are no map "
                    "tiles; the tile grid, records and pixel values (from the zone stores) still "
                    "work. Write them from the zone stores with `geoxai view --write-cogs "
                    f"{layout.root}` (or rerun with processing.write_cogs: true)."
                )
            else:
                problems.append(
                    f"No mosaic for {', '.join(missing)}: those layers have no map tiles. "
                    f"Rebuild them with `geoxai view --write-cogs {layout.root}`."
                )
        view = cls(layout, dict(config), records, zones, layers, styles, mosaics, problems)
        view._env = env
        view._pyramids = pyramids
        return view

    def close(self) -> None:
        """Free the in-memory overview VRTs."""
        for p in self._pyramids:
            p.close()

    # ---- map tiles ----------------------------------------------------------------------

    def style(self, layer: str) -> LayerStyle:
        """The layer's style.

        Raises:
            InvalidInputError: no such layer in the run (the message lists the layers).
        """
        look_up_option(
            layer, list(self.layers), what=f"layer of run {self.layout.root}", error=LayerError
        )
        return self.styles[layer]

    def tile(self, layer: str, x: int, y: int, z: int, band: int = 0) -> tuple[np.ndarray, dict]:
        """RGBA ``(256, 256, 4)`` uint8 of ``layer`` in Web Mercator tile ``z/x/y`` (transparent
        outside the run) and the read info (zones, overview level per zone).

        Raises:
            LayerError: unknown layer or band.
            CorruptDataError / StoreError: a COG cannot be read (message names it).
        """
        style = self.style(layer)
        nb = max(1, len(self.layers[layer].bands))
        if not 0 <= band < nb:
            raise LayerError(f"Layer {layer!r} has {nb} band(s); band {band} does not exist.")
        resampling = "nearest" if style.kind == "classes" else "bilinear"
        if z >= self.native_zoom():
            resampling = "nearest"  # at native zoom and beyond: the pixels as they are
        values, info = render_tile(
            self.mosaics.get(layer, []), x, y, z, band=band, resampling=resampling, env=self._env
        )
        return style.colourize(values), info

    def native_zoom(self) -> int:
        """The Web Mercator zoom whose pixels are closest to the run's (10 m at the run's
        latitude)."""
        lat = 0.0
        if self.zones:
            b = np.mean([z.bounds_lonlat for z in self.zones.values()], axis=0)
            lat = float((b[1] + b[3]) / 2)
        res = float(self._resolution())
        return int(round(math.log2(156543.03392 * math.cos(math.radians(lat)) / res)))

    def _resolution(self) -> float:
        for z in self.zones.values():
            return abs(float(z.store.grid.transform[0]))
        return 10.0

    # ---- a clicked pixel ----------------------------------------------------------------

    def pixel(self, lon: float, lat: float) -> dict[str, Any]:
        """Everything about the pixel at ``(lon, lat)``: zone, tile, row/col in the zone grid,
        every layer's values per band, the quality code and the tile's record.

        Values come from the COG mosaics (what the map shows); a layer without mosaics is read
        from the zone store. ``{"inside": False}`` when no zone of the run holds the point.
        """
        from pyproj import Transformer  # lazy: pyproj only with rasterio

        epsg: int | None = None
        ref = "quality" if self.mosaics.get("quality") else "prediction"
        if self.mosaics.get(ref):
            epsg, _ = point_values(self.mosaics[ref], lon, lat, env=self._env)
        if epsg is None:
            for e, z in sorted(self.zones.items(), key=lambda kv: kv[0] != _home(lon, lat)):
                col, row = _grid_index(z.store, e, lon, lat)
                if col is not None:
                    epsg = e
                    break
        if epsg is None:
            return {"inside": False, "lon": lon, "lat": lat}
        zone = self.zones[epsg]
        t = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        x, y = t.transform(lon, lat)
        col, row = _grid_index(zone.store, epsg, lon, lat)
        size = self._tile_size()
        tile = TileSpec(epsg, int(x // size), int(y // size), 0, tile_size_m=size)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, spec in self.layers.items():
            bands = list(spec.bands) or [name]
            got: list[float | None] | None = None
            if self.mosaics.get(name):
                hit, vals = point_values(self.mosaics[name], lon, lat, env=self._env, prefer=epsg)
                if hit == epsg:
                    got, sources[name] = vals, "COG mosaic"
                elif hit is None:
                    got, sources[name] = [None] * len(bands), "COG mosaic"
            if got is None and name in zone.store.layers and col is not None:
                a = np.asarray(zone.store.array(name)[..., row, col]).reshape(-1)
                fill = spec.fill
                got = [
                    None
                    if (isinstance(fill, float) and math.isnan(fill) and math.isnan(float(v)))
                    or (not (isinstance(fill, float) and math.isnan(fill)) and v == fill)
                    else float(v)
                    for v in a
                ]
                sources[name] = "zone store"
            if got is not None:
                values[name] = dict(zip(bands, got, strict=False))
        q = values.get("quality", {}).get("quality")
        record = next((r for r in self.records if r.get("tile_id") == tile.id), None)
        return {
            "inside": True,
            "lon": lon,
            "lat": lat,
            "epsg": epsg,
            "x": x,
            "y": y,
            "row": row,
            "col": col,
            "tile_id": tile.id,
            "values": values,
            "sources": sources,
            "quality": None if q is None else int(q),
            "record": record,
        }

    def _tile_size(self) -> int:
        proc = dict(self.config.get("processing") or {})
        if proc.get("tile_size_m"):
            return int(proc["tile_size_m"])
        for r in self.records:
            if r.get("tile_size_m"):
                return int(r["tile_size_m"])
        return TILE_SIZE_M

    # ---- tile grid and summary ----------------------------------------------------------

    def planned_tiles(self) -> list[TileSpec]:
        """Every tile of the plan (``config.tiles`` when listed) and every tile with a record."""
        size = self._tile_size()
        ids = [str(t) for t in self.config.get("tiles") or []]
        ids += [str(r["tile_id"]) for r in self.records if r.get("tile_id")]
        out: dict[str, TileSpec] = {}
        for i in ids:
            if i not in out:
                out[i] = tile_from_id(i, tile_size_m=size)
        return list(out.values())

    def tile_grid(self) -> dict[str, Any]:
        """GeoJSON FeatureCollection (lon/lat) of the planned tiles with status, colour, reason."""
        tiles = self.planned_tiles()
        status = tile_statuses(tiles, self.records)
        feats = []
        for t in tiles:
            d = status[t.id]
            geom = t.footprint().__geo_interface__
            feats.append(
                {
                    "type": "Feature",
                    "geometry": geom,
                    "properties": {
                        "tile_id": t.id,
                        "status": d["status"],
                        "reason": d["reason"],
                        "colour": STATUS_COLOURS[d["status"]],
                    },
                }
            )
        return {"type": "FeatureCollection", "features": feats}

    def summary(self) -> dict[str, Any]:
        """The report's summary figures: name, year, AOI, tile counts by status, zones, config
        hash, code versions, and what each layer is (legend, bands, units)."""
        tiles = self.planned_tiles()
        status = tile_statuses(tiles, self.records)
        counts = {s: sum(1 for d in status.values() if d["status"] == s) for s in STATUS_COLOURS}
        versions = sorted({str(r["code_version"]) for r in self.records if r.get("code_version")})
        hashes = sorted({str(r["config_hash"]) for r in self.records if r.get("config_hash")})
        bounds = [z.bounds_lonlat for z in self.zones.values()]
        if bounds:
            b = np.asarray(bounds)
            bbox = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()),
                    float(b[:, 3].max())]  # fmt: skip
        else:
            bbox = []
        return {
            "root": self.layout.root,
            "name": self.config.get("name", ""),
            "year": self.config.get("year", ""),
            "aoi": self.config.get("aoi", ""),
            "tiles": len(tiles),
            "counts": counts,
            "status_colours": STATUS_COLOURS,
            "zones": sorted(self.zones),
            "config_hash": ", ".join(hashes),
            "code_version": ", ".join(versions),
            "bounds": bbox,
            "native_zoom": self.native_zoom(),
            "layers": [
                {
                    **self.styles[n].legend(),
                    "description": s.description,
                    "has_tiles": bool(self.mosaics.get(n)),
                }
                for n, s in self.layers.items()
            ],
            "problems": list(self.problems),
        }

    def cube_url(self, tile_id: str) -> str:
        """URL of the tile's committed raw cube (``<root>/cubes/<tile_id>.zarr``)."""
        return self.layout.cube_url(tile_id)

    def dumps(self, obj: Any) -> bytes:
        """JSON bytes with NaN written as null."""
        return json.dumps(_nan_to_none(obj), default=str).encode()

    _env: dict[str, str] = field(default_factory=dict, repr=False)
    _pyramids: list[Pyramid] = field(default_factory=list, repr=False)


class LayerError(InvalidInputError):
    """A layer (or band) that the run does not have."""


def _home(lon: float, lat: float) -> int:
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def _grid_index(store: ZoneStore, epsg: int, lon: float, lat: float) -> tuple[Any, Any]:
    from pyproj import Transformer  # lazy: pyproj only with rasterio

    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)
    a, _, c, _, e, f = store.grid.transform
    col, row = int(math.floor((x - c) / a)), int(math.floor((y - f) / e))
    ny, nx = store.grid.shape
    if 0 <= row < ny and 0 <= col < nx:
        return col, row
    return None, None


_SOURCE_RE = re.compile(r"<SourceFilename[^>]*>([^<]*)</SourceFilename>")


def _sources_outside(text: str, vrt_path: str, root_path: str, *, local: bool) -> str | None:
    """The first file a VRT names (or the VRT itself) that resolves outside the run root.

    Locally symlinks are resolved (``os.path.realpath``), so a linked COG or mosaic that points
    elsewhere is refused like ``../`` or an absolute source path.
    """
    base = posixpath.dirname(vrt_path)
    if local:
        root = os.path.realpath(root_path)
        names = [vrt_path] + [
            os.path.join(base, html.unescape(n)) for n in _SOURCE_RE.findall(text)
        ]
        for n in names:
            real = os.path.realpath(n)
            if os.path.commonpath([real, root]) != root:
                return n
        return None
    for n in _SOURCE_RE.findall(text):
        n = html.unescape(n)
        full = posixpath.normpath(posixpath.join(base, n))
        if (
            n.startswith(("/", "\\"))
            or "://" in n
            or not full.startswith(root_path.rstrip("/") + "/")
        ):
            return n
    return None


def _lonlat_bounds(epsg: int, bounds: Sequence[float]) -> tuple[float, float, float, float]:
    from pyproj import Transformer  # lazy: pyproj only with rasterio

    t = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    x0, y0, x1, y1 = (float(v) for v in bounds)
    w, s, e, n = t.transform_bounds(x0, y0, x1, y1, densify_pts=21)
    return float(w), float(s), float(e), float(n)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return _nan_to_none(obj.item())
    return obj


def write_missing_cogs(
    root: str, storage_options: Mapping[str, Any] | None = None
) -> dict[int, dict[str, str]]:
    """Write every done tile's COGs from the zone stores and rebuild the zone mosaics.

    For a run made with ``processing.write_cogs: false`` (or whose COGs were damaged): COGs
    are derived products, read back from the verified zone-store chunks
    (:func:`geoxai.io.cog.write_tile_cogs` with ``layers=None``). Records are not rewritten.

    Returns:
        epsg -> layer -> mosaic URL.
    """
    view = RunView.open(root, storage_options)
    size = view._tile_size()
    done = [
        tile_from_id(str(r["tile_id"]), tile_size_m=int(r.get("tile_size_m", size)))
        for r in view.records
        if r.get("status") == "done"
    ]
    if not done:
        raise NotARunError(f"{view.layout.root} has no done tile; there is nothing to write.")
    out: dict[int, dict[str, str]] = {}
    for epsg, z in view.zones.items():
        tiles = [t for t in done if t.epsg == epsg]
        if not tiles:
            continue
        for t in tiles:
            write_tile_cogs(view.layout, z.store, t)
        out.update(build_mosaics(view.layout, tiles, list(z.store.layers.values())))
    return out
