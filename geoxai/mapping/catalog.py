"""A STAC catalog of a run's outputs: one Collection, one Item per mapped tile.

Written by :func:`write_catalog` under ``<run_root>/catalog/`` as a *self-contained* catalog
(every link and asset href relative), so the run folder can be copied or synced to S3 and still
resolve::

    catalog/collection.json                       the Collection (root)
    catalog/<tile_id>/<tile_id>.json              one Item per tile recorded ``done``
    catalog/items.parquet                         the same Items as stac-geoparquet

The stac-geoparquet file (written by ``rustac``; asset ``geoparquet-items`` of the Collection,
hrefs relative to ``catalog/``) is what a country-scale catalog is queried through: one file
instead of one JSON per tile, readable by ``rustac``, ``stac-geoparquet``, DuckDB or any
Parquet reader (one row per tile, properties as columns).

Items carry the tile core footprint (WGS84) and bbox, the projection extension v2
(``proj:code``, ``proj:transform``, ``proj:shape`` of the core), the year as
``start_datetime``/``end_datetime``, and the provenance of the pixels: ``geoxai:config_hash``,
``geoxai:code_version``, ``geoxai:input_items`` (the input STAC item ids) and the processing
time (``created``). Assets: the tile's COGs (role ``data``) and its record (role ``metadata``).
The Collection's assets are the zone Zarr stores, the mosaics, the config and the report.

COG assets carry the raster extension (``raster:bands``: data type, nodata, unit of each band)
and the file extension (``file:size``, ``file:checksum`` as a SHA2-256 multihash of the bytes the
record verified). Tiles recorded ``empty`` or ``failed`` produced no pixels and get no Item; the
report lists them. The catalog validates against the published STAC 1.1 core, projection v2.0,
raster v1.1 and file v2.1 schemas (``tests/mapping/test_catalog.py`` runs pystac's validator on
local copies of them); :func:`check_catalog` checks the required fields and that every href
resolves, offline.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import posixpath
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from shapely.geometry import mapping

from geoxai.errors import CorruptDataError, InvalidInputError
from geoxai.geo.grid import TILE_SIZE_M, tile_from_id
from geoxai.io.layout import RunLayout
from geoxai.io.location import StoreLocation
from geoxai.io.store import upload_file
from geoxai.io.zonestore import LayerSpec, ZoneStore

__all__ = [
    "COG_MEDIA_TYPE",
    "ZARR_MEDIA_TYPE",
    "VRT_MEDIA_TYPE",
    "GEOPARQUET_MEDIA_TYPE",
    "build_collection",
    "write_catalog",
    "write_geoparquet",
    "check_catalog",
]

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
"""Media type of the per-tile COG assets."""


ZARR_MEDIA_TYPE = "application/vnd+zarr"
"""Media type of the zone store assets."""


VRT_MEDIA_TYPE = "application/xml; profile=gdal-vrt"
"""Media type of the mosaic assets."""


GEOPARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
"""Media type of the stac-geoparquet mirror of the Items."""


GEOPARQUET_NAME = "items.parquet"
"""File name of the stac-geoparquet mirror, under ``catalog/``."""


_ITEM_FIELDS = ("type", "stac_version", "id", "geometry", "bbox", "properties", "links", "assets")


_COLLECTION_FIELDS = ("type", "stac_version", "id", "description", "license", "extent", "links")


def _year_range(year: int) -> tuple[_dt.datetime, _dt.datetime]:
    start = _dt.datetime(year, 1, 1, tzinfo=_dt.UTC)
    end = _dt.datetime(year, 12, 31, 23, 59, 59, tzinfo=_dt.UTC)
    return start, end


def _parse_time(text: Any) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def _config_fields(config: Any) -> dict[str, Any]:
    """name, year, aoi and output hash of a RunConfig (or a dict with those keys)."""
    if hasattr(config, "output_hash"):
        return {
            "name": config.name,
            "year": int(config.year),
            "aoi": str(config.aoi),
            "config_hash": config.output_hash(),
        }
    if isinstance(config, Mapping) and {"name", "year"} <= set(config):
        return {
            "name": str(config["name"]),
            "year": int(config["year"]),
            "aoi": str(config.get("aoi", "")),
            "config_hash": str(config.get("config_hash", "")),
        }
    raise InvalidInputError(
        f"write_catalog needs the RunConfig (or a dict with 'name' and 'year'), got "
        f"{type(config).__name__}."
    )


def build_collection(
    layout: RunLayout,
    config: Any,
    records: Sequence[Mapping[str, Any]],
    *,
    staging: Path,
    mosaics: Mapping[int, Mapping[str, str]] | None = None,
) -> Any:
    """The ``pystac.Collection`` of the run with hrefs laid out under ``staging``.

    ``staging`` mirrors the run root (``staging/catalog/...``); asset hrefs point to where the
    files are relative to it, so saving as self-contained makes them relative.
    """

    cfg = _config_fields(config)
    start, end = _year_range(cfg["year"])
    done = [r for r in records if r.get("status") == "done"]
    specs = _layer_specs(layout)
    now = _dt.datetime.now(_dt.UTC)
    items = []
    for rec in sorted(done, key=lambda r: str(r["tile_id"])):
        tile = tile_from_id(
            str(rec["tile_id"]), tile_size_m=int(rec.get("tile_size_m", TILE_SIZE_M))
        )
        foot = tile.footprint()
        created = _parse_time(rec.get("created")) or now
        item = pystac.Item(
            id=tile.id,
            geometry=mapping(foot),
            bbox=list(tile.lonlat_bbox()),
            datetime=None,
            start_datetime=start,
            end_datetime=end,
            properties={
                "title": f"{cfg['name']} {cfg['year']} tile {tile.id}",
                "geoxai:tile_id": tile.id,
                "geoxai:config_hash": str(rec.get("config_hash", "")),
                "geoxai:code_version": str(rec.get("code_version", "")),
                "geoxai:input_items": list(rec.get("input_items", [])),
                "geoxai:timings_s": dict(rec.get("timings", {})),
                "geoxai:layers": sorted(dict(rec.get("layers", {}))),
                "created": created.isoformat().replace("+00:00", "Z"),
                "updated": now.isoformat().replace("+00:00", "Z"),
            },
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.epsg = tile.epsg
        x0, y0, x1, y1 = tile.core_bounds
        proj.bbox = [float(x0), float(y0), float(x1), float(y1)]
        proj.shape = [tile.core_px, tile.core_px]
        proj.transform = [float(v) for v in list(tile.transform)[:6]]
        for layer, info in sorted(dict(rec.get("cogs") or {}).items()):
            meta = rec.get("layers", {}).get(layer, {})
            extra: dict[str, Any] = {}
            if meta.get("bands"):
                extra["geoxai:bands"] = list(meta["bands"])
            asset = pystac.Asset(
                href=str(staging / info["href"]),
                media_type=COG_MEDIA_TYPE,
                roles=["data"],
                title=f"{layer} (COG)",
                extra_fields=extra,
            )
            item.add_asset(layer, asset)
            _describe_cog(asset, info, meta, specs.get(tile.epsg, {}).get(layer))
        item.add_asset(
            "record",
            pystac.Asset(
                href=str(staging / "records" / f"{tile.id}.json"),
                media_type="application/json",
                roles=["metadata"],
                title="tile record: status, checksums, timings, inputs",
            ),
        )
        items.append(item)

    if items:
        bboxes = [list(i.bbox) for i in items if i.bbox]
        spatial = [
            min(b[0] for b in bboxes),
            min(b[1] for b in bboxes),
            max(b[2] for b in bboxes),
            max(b[3] for b in bboxes),
        ]
    else:
        spatial = [-180.0, -90.0, 180.0, 90.0]
    collection = pystac.Collection(
        id=f"geoxai-{cfg['name']}-{cfg['year']}",
        title=f"geoxai run {cfg['name']}, {cfg['year']}",
        description=(
            f"Outputs of the geoxai run '{cfg['name']}' for {cfg['year']} (AOI {cfg['aoi']}): "
            "per-tile predictions, ASOS sensitivity and quality as COGs, per-zone Zarr stores "
            "and mosaics. Each item records the config hash, code version and input items."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([spatial]), pystac.TemporalExtent([[start, end]])
        ),
        license="other",
        extra_fields={
            "geoxai:config_hash": cfg["config_hash"],
            "geoxai:year": cfg["year"],
            "geoxai:aoi": cfg["aoi"],
            "geoxai:tiles_done": len(items),
        },
    )
    for epsg in layout.zones():
        collection.add_asset(
            f"zarr_{epsg}",
            pystac.Asset(
                href=str(staging / f"zone={epsg}" / "outputs.zarr"),
                media_type=ZARR_MEDIA_TYPE,
                roles=["data"],
                title=f"zone EPSG:{epsg} Zarr group (prediction, asos_sensitivity, quality)",
            ),
        )
    for epsg, by_layer in sorted(dict(mosaics or {}).items()):
        for layer in sorted(by_layer):
            collection.add_asset(
                f"mosaic_{layer}_{epsg}",
                pystac.Asset(
                    href=str(staging / "mosaics" / f"zone={epsg}" / f"{layer}.vrt"),
                    media_type=VRT_MEDIA_TYPE,
                    roles=["data", "overview"],
                    title=f"{layer} mosaic of zone EPSG:{epsg} (GDAL VRT over the COGs)",
                ),
            )
            overview = layout.overview_url(layer, epsg)
            if _exists(layout.at(overview)):
                collection.add_asset(
                    f"overview_{layer}_{epsg}",
                    pystac.Asset(
                        href=str(staging / "mosaics" / f"zone={epsg}" / f"{layer}.overview.tif"),
                        media_type=pystac.MediaType.COG,
                        roles=["overview"],
                        title=f"{layer} of zone EPSG:{epsg} at reduced resolution (overview "
                        "COG with internal overviews; the VRT's overview)",
                    ),
                )
    for key, url, media, role in (
        ("config", layout.config_url(), "application/json", "metadata"),
        ("report", layout.report_url(), "text/html", "overview"),
    ):
        name = url.rsplit("/", 1)[-1]
        if not _exists(layout.at(url)):
            continue  # only files that exist: every href of the catalog resolves
        collection.add_asset(
            key, pystac.Asset(href=str(staging / name), media_type=media, roles=[role])
        )
    if items:
        collection.add_asset(
            "geoparquet-items",
            pystac.Asset(
                href=str(staging / "catalog" / GEOPARQUET_NAME),
                media_type=GEOPARQUET_MEDIA_TYPE,
                roles=["collection-mirror"],
                title="The collection's Items as stac-geoparquet (one row per tile)",
            ),
        )
    collection.add_items(items)
    return collection


def _layer_specs(layout: RunLayout) -> dict[int, dict[str, LayerSpec]]:
    """epsg -> layer -> :class:`LayerSpec` of every zone store of the run (nodata and units)."""
    return {epsg: dict(ZoneStore.open(layout, epsg).layers) for epsg in layout.zones()}


def _describe_cog(
    asset: pystac.Asset,
    info: Mapping[str, Any],
    meta: Mapping[str, Any],
    spec: LayerSpec | None,
) -> None:
    """Raster and file extension fields of a tile COG asset, from its record and layer spec."""
    if info.get("bytes") or info.get("sha256"):
        file_ext = FileExtension.ext(asset, add_if_missing=True)
        if info.get("bytes"):
            file_ext.size = int(info["bytes"])
        if info.get("sha256"):
            file_ext.checksum = "1220" + str(info["sha256"])  # multihash: sha2-256, 32 bytes
    dtype = str(meta.get("dtype") or (spec.dtype if spec else ""))
    if not dtype:
        return
    fill = spec.fill if spec is not None else None
    nodata: float | NoDataStrings | None = (
        NoDataStrings.NAN if isinstance(fill, float) and fill != fill else fill
    )
    unit = spec.units if spec is not None and spec.units else None
    n_bands = len(meta.get("bands") or (spec.bands if spec else ())) or 1
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(data_type=DataType(dtype), nodata=nodata, unit=unit)
        for _ in range(n_bands)
    ]


def write_catalog(
    layout: RunLayout,
    config: Any,
    records: Sequence[Mapping[str, Any]],
    *,
    mosaics: Mapping[int, Mapping[str, str]] | None = None,
    check: bool = True,
) -> str:
    """Write the self-contained STAC catalog under ``<run_root>/catalog/``; return its root URL.

    Args:
        layout: the run's layout.
        config: the RunConfig (or a dict with ``name``, ``year``, ``aoi``, ``config_hash``).
        records: the tile records (:func:`geoxai.mapping.records.read_records`); ``done`` ones get
            Items.
        mosaics: epsg -> layer -> mosaic URL (:func:`geoxai.io.mosaic.build_mosaics`), for the
            Collection's assets (with the zone's overview COG where it exists); None = look
            for mosaics under the run root.
        check: run :func:`check_catalog` on the staged catalog first (not hrefs to outputs
            that live elsewhere) and fail loudly on missing fields.

    Returns:
        URL of ``catalog/collection.json``.
    """

    if mosaics is None:
        mosaics = _find_mosaics(layout)
    with tempfile.TemporaryDirectory(prefix="geoxai-stac-") as tmp:
        staging = Path(tmp)
        collection = build_collection(layout, config, records, staging=staging, mosaics=mosaics)
        collection.normalize_hrefs(str(staging / "catalog"))
        collection.make_all_asset_hrefs_relative()
        for asset in collection.assets.values():  # pystac leaves collection assets absolute
            asset.href = os.path.relpath(asset.href, staging / "catalog").replace(os.sep, "/")
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        if check:
            problems = check_catalog(staging / "catalog" / "collection.json", hrefs=False)
            if problems:
                raise CorruptDataError(
                    "The STAC catalog of the run is incomplete: " + "; ".join(problems[:10])
                )
        if "geoparquet-items" in collection.assets:
            write_geoparquet(staging / "catalog")
        for path in sorted(p for p in (staging / "catalog").rglob("*") if p.is_file()):
            rel = path.relative_to(staging / "catalog").as_posix()
            upload_file(path, layout.at(layout.catalog_url(*rel.split("/"))))
    return layout.catalog_url("collection.json")


def write_geoparquet(catalog_dir: Path) -> Path:
    """Write ``catalog_dir/items.parquet``: the Items of a saved self-contained catalog as
    stac-geoparquet, hrefs rebased to be relative to ``catalog_dir``.

    Args:
        catalog_dir: local folder holding ``collection.json`` and ``<tile_id>/<tile_id>.json``.

    Returns:
        The file written.
    """
    import rustac  # lazy: the Rust STAC library (arrow + parquet) only when a catalog is written

    coll = json.loads((catalog_dir / "collection.json").read_text(encoding="utf-8"))
    items = []
    for link in coll.get("links", []):
        if link.get("rel") != "item":
            continue
        rel_dir = posixpath.dirname(posixpath.normpath(link["href"]))
        item = json.loads((catalog_dir / link["href"]).read_text(encoding="utf-8"))
        for ref in [*item.get("assets", {}).values(), *item.get("links", [])]:
            href = ref.get("href", "")
            if href and "://" not in href and not href.startswith("/"):
                ref["href"] = posixpath.normpath(posixpath.join(rel_dir, href))
        items.append(_without_empty_objects(item))
    out = catalog_dir / GEOPARQUET_NAME
    rustac.write_sync(str(out), items)
    return out


def _without_empty_objects(value: Any) -> Any:
    """``value`` without ``{}`` members at any depth (Parquet has no empty struct; an empty
    object, e.g. the timings of a tile recorded without them, carries nothing)."""
    if isinstance(value, dict):
        return {k: _without_empty_objects(v) for k, v in value.items() if v != {}}
    if isinstance(value, list):
        return [_without_empty_objects(v) for v in value]
    return value


def _exists(loc: StoreLocation) -> bool:
    fs = loc.filesystem()
    fs.invalidate_cache()
    return bool(fs.exists(loc.path))


def _find_mosaics(layout: RunLayout) -> dict[int, dict[str, str]]:
    loc = layout.at(layout.mosaics_url())
    fs = loc.filesystem()
    out: dict[int, dict[str, str]] = {}
    try:
        fs.invalidate_cache()
        found = fs.glob(f"{loc.path}/zone=*/*.vrt")
    except FileNotFoundError:
        return out
    for p in found:
        zone_dir, name = p.rstrip("/").rsplit("/", 2)[-2:]
        if zone_dir[5:].isdigit():
            epsg = int(zone_dir[5:])
            out.setdefault(epsg, {})[name[: -len(".vrt")]] = layout.mosaic_url(
                name[: -len(".vrt")], epsg
            )
    return out


def check_catalog(collection_json: str | Path, *, hrefs: bool = True) -> list[str]:
    """Offline structural check of a self-contained catalog written by :func:`write_catalog`.

    Checks the required fields of the Collection and every Item (STAC 1.x core, projection
    fields, geoxai provenance), that links are relative, and (``hrefs=True``) that every link
    and asset href resolves to an existing file or folder. Local paths only.

    Returns:
        Problems, one line each; empty when the catalog is sound.
    """
    root = Path(collection_json)
    problems: list[str] = []
    try:
        coll = json.loads(root.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{root}: unreadable ({exc})"]
    for f in _COLLECTION_FIELDS:
        if f not in coll:
            problems.append(f"collection: missing {f!r}")
    if coll.get("type") != "Collection":
        problems.append(f"collection: type is {coll.get('type')!r}, expected 'Collection'")
    ext = coll.get("extent", {})
    if not ext.get("spatial", {}).get("bbox") or not ext.get("temporal", {}).get("interval"):
        problems.append("collection: extent lacks spatial bbox or temporal interval")
    problems += _check_links(root, coll, "collection", hrefs)
    for link in coll.get("links", []):
        if link.get("rel") != "item":
            continue
        path = (root.parent / link["href"]).resolve()
        try:
            item = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"item link {link['href']}: unreadable ({exc})")
            continue
        where = f"item {item.get('id', path.name)}"
        for f in _ITEM_FIELDS:
            if f not in item:
                problems.append(f"{where}: missing {f!r}")
        props = item.get("properties", {})
        if props.get("datetime") is None and not (
            props.get("start_datetime") and props.get("end_datetime")
        ):
            problems.append(f"{where}: needs datetime or start_datetime/end_datetime")
        for key in (
            "proj:code",
            "proj:transform",
            "proj:shape",
            "geoxai:config_hash",
            "geoxai:code_version",
            "geoxai:input_items",
        ):
            if key not in props:
                problems.append(f"{where}: missing property {key!r}")
        if item.get("collection") != coll.get("id"):
            problems.append(f"{where}: collection is {item.get('collection')!r}")
        problems += _check_links(path, item, where, hrefs)
    return problems


def _check_links(path: Path, doc: Mapping[str, Any], where: str, hrefs: bool) -> list[str]:
    out = []
    targets = [("link", lk.get("rel"), lk.get("href")) for lk in doc.get("links", [])]
    targets += [("asset", k, a.get("href")) for k, a in doc.get("assets", {}).items()]
    for kind, name, href in targets:
        if not href:
            out.append(f"{where}: {kind} {name!r} has no href")
            continue
        if "://" in href or posixpath.isabs(href):
            out.append(f"{where}: {kind} {name!r} href {href!r} is not relative")
            continue
        if hrefs and not (path.parent / href).exists():
            out.append(f"{where}: {kind} {name!r} href {href!r} does not resolve")
    return out
