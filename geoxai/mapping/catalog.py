"""A STAC catalog of a run's outputs: one Collection, one Item per mapped tile.

Written by :func:`write_catalog` under ``<run_root>/catalog/`` as a *self-contained* catalog
(every link and asset href relative), so the run folder can be copied or synced to S3 and still
resolve::

    catalog/collection.json                       the Collection (root)
    catalog/items.parquet                         every Item, as stac-geoparquet
    catalog/<tile_id>/<tile_id>.json              one JSON Item per tile (optional, below)

The stac-geoparquet file (asset ``geoparquet-items`` of the Collection, hrefs relative to
``catalog/``) is the catalog at scale: one file instead of one JSON per tile, readable by
``rustac``, ``stac-geoparquet``, DuckDB or any Parquet reader (one row per tile, properties as
columns). The per-tile JSON Items are written when ``items_json`` says so (config
``catalog.items_json``: ``auto`` = up to :data:`ITEMS_JSON_AUTO_MAX` done tiles); the
Collection then links them (``rel: item``), otherwise it links none and the Parquet file holds
them all.

Items are plain dicts built straight from the tile records in one pass, streamed to the
Parquet writer in batches of :data:`BATCH` (memory: one batch, not the catalog). They carry the
tile core footprint (WGS84) and bbox, the projection extension v2 (``proj:code``,
``proj:transform``, ``proj:shape`` of the core), the year as ``start_datetime``/``end_datetime``,
and the provenance of the pixels: ``geoxai:config_hash``, ``geoxai:code_version``,
``geoxai:input_items`` (the input STAC item ids) and the processing time (``created``). Assets:
the tile's COGs (role ``data``) and its record (role ``metadata``). The Collection's assets are
the zone Zarr stores, the mosaics and the zones' overview COGs, the config, the report and the
Parquet file.

COG assets carry the raster extension (``raster:bands``: data type, nodata, unit of each band)
and the file extension (``file:size``, ``file:checksum`` as a SHA2-256 multihash of the bytes the
record verified). Tiles recorded ``empty`` or ``failed`` produced no pixels and get no Item; the
report lists them. The catalog validates against the published STAC 1.1 core, projection v2.0,
raster v1.1 and file v2.1 schemas (``tests/mapping/test_catalog.py`` runs pystac's validator on
local copies of them); :func:`check_catalog` checks the required fields and that every href
resolves, offline.

Rerun safety: everything is staged in a local folder and checked there; then the old
``collection.json`` is deleted, the Items and the Parquet file are uploaded, and the new
``collection.json`` is written last: a catalog whose root exists is complete.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac

from geoxai.errors import CorruptDataError, InvalidInputError
from geoxai.io.geoparquet import read_stac_geoparquet, write_stac_geoparquet
from geoxai.io.layout import RunLayout
from geoxai.io.location import StoreLocation
from geoxai.io.store import upload_file
from geoxai.io.zonestore import LayerSpec, ZoneStore
from geoxai.mapping.catalog_items import (
    COG_MEDIA_TYPE,
    ItemBuilder,
    json_item,
    record_shape,
    year_range,
)

__all__ = [
    "BATCH",
    "COG_MEDIA_TYPE",
    "ZARR_MEDIA_TYPE",
    "VRT_MEDIA_TYPE",
    "GEOPARQUET_MEDIA_TYPE",
    "ITEMS_JSON_AUTO_MAX",
    "write_catalog",
    "check_catalog",
]

ZARR_MEDIA_TYPE = "application/vnd+zarr"
"""Media type of the zone store assets."""


VRT_MEDIA_TYPE = "application/xml; profile=gdal-vrt"
"""Media type of the mosaic assets."""

GPKG_MEDIA_TYPE = "application/geopackage+sqlite3"
"""Media type of the mosaics' GDAL tile indexes (GeoPackage)."""


GEOPARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
"""Media type of the stac-geoparquet Items."""


GEOPARQUET_NAME = "items.parquet"
"""File name of the stac-geoparquet Items, under ``catalog/``."""


ITEMS_JSON_AUTO_MAX = 10_000
"""``items_json: auto`` writes one JSON Item per tile up to this many done tiles."""


BATCH = 4096
"""Items built and handed to the Parquet writer at a time."""


_ITEM_FIELDS = ("type", "stac_version", "id", "geometry", "bbox", "properties", "links", "assets")


_COLLECTION_FIELDS = ("type", "stac_version", "id", "description", "license", "extent", "links")


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


def _collection(
    layout: RunLayout,
    cfg: Mapping[str, Any],
    *,
    n_items: int,
    spatial: list[float],
    mosaics: Mapping[int, Mapping[str, str]],
    item_ids: Sequence[str],
) -> dict[str, Any]:
    """The Collection dict, hrefs relative to ``catalog/``; links the JSON Items ``item_ids``."""
    start, end = year_range(cfg["year"])
    title = f"geoxai run {cfg['name']}, {cfg['year']}"
    coll = pystac.Collection(
        id=f"geoxai-{cfg['name']}-{cfg['year']}",
        title=title,
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
            "geoxai:tiles_done": n_items,
        },
    )

    def add(key: str, href: str, media: str, roles: list[str], title: str | None = None) -> None:
        coll.add_asset(key, pystac.Asset(href=href, media_type=media, roles=roles, title=title))

    for epsg in layout.zones():
        add(
            f"zarr_{epsg}",
            f"../zone={epsg}/outputs.zarr",
            ZARR_MEDIA_TYPE,
            ["data"],
            f"zone EPSG:{epsg} Zarr group (prediction, asos_sensitivity, quality)",
        )
    for epsg, by_layer in sorted(dict(mosaics).items()):
        for layer in sorted(by_layer):
            add(
                f"mosaic_{layer}_{epsg}",
                f"../mosaics/zone={epsg}/{layer}.vrt",
                VRT_MEDIA_TYPE,
                ["data", "overview"],
                f"{layer} mosaic of zone EPSG:{epsg} (GDAL VRT over the COGs)",
            )
            if _exists(layout.at(layout.overview_url(layer, epsg))):
                add(
                    f"overview_{layer}_{epsg}",
                    f"../mosaics/zone={epsg}/{layer}.overview.tif",
                    str(pystac.MediaType.COG),
                    ["overview"],
                    f"{layer} of zone EPSG:{epsg} at reduced resolution (overview COG with "
                    "internal overviews; the VRT's overview)",
                )
            if _exists(layout.at(layout.tile_index_url(layer, epsg))):
                add(
                    f"tile_index_{layer}_{epsg}",
                    f"../mosaics/zone={epsg}/{layer}.gti.gpkg",
                    GPKG_MEDIA_TYPE,
                    ["data", "overview"],
                    f"{layer} mosaic of zone EPSG:{epsg} as a GDAL raster tile index (GTI, "
                    "GDAL >= 3.9: opens without listing every tile)",
                )
    for key, url, media, role in (
        ("config", layout.config_url(), "application/json", "metadata"),
        ("report", layout.report_url(), "text/html", "overview"),
    ):
        if _exists(layout.at(url)):  # only files that exist: every href of the catalog resolves
            add(key, "../" + url.rsplit("/", 1)[-1], media, [role])
    if n_items:
        add(
            "geoparquet-items",
            GEOPARQUET_NAME,
            GEOPARQUET_MEDIA_TYPE,
            ["collection-mirror"],
            "The collection's Items as stac-geoparquet (one row per tile)",
        )
    out = coll.to_dict(include_self_link=False, transform_hrefs=False)
    link = {"type": "application/json", "title": title}
    out["links"] = [{"rel": "root", "href": "./collection.json", **link}] + [
        {"rel": "item", "href": f"./{i}/{i}.json", "type": "application/geo+json"} for i in item_ids
    ]
    return out


Records = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]
"""Tile records as :func:`write_catalog` takes them: an iterable, or a callable that returns a
fresh iterable of the same records on each call (read twice, never held)."""


def write_catalog(
    layout: RunLayout,
    config: Any,
    records: Records,
    *,
    mosaics: Mapping[int, Mapping[str, str]] | None = None,
    check: bool = True,
    items_json: bool | None = None,
) -> str:
    """Write the self-contained STAC catalog under ``<run_root>/catalog/``; return its root URL.

    Time is linear in the done tiles; memory is one batch of :data:`BATCH` Items when
    ``records`` is a callable (two passes over what it returns: the Item shapes, then the
    Items), else the done records of ``records`` are held (sorted by tile id).

    Args:
        layout: the run's layout.
        config: the RunConfig (or a dict with ``name``, ``year``, ``aoi``, ``config_hash``).
        records: the tile records (:func:`geoxai.mapping.records.read_records`); ``done`` ones get
            Items. A callable (e.g. ``lambda: read_records(layout)``) is called twice and its
            records are streamed in the order it yields them.
        mosaics: epsg -> layer -> mosaic URL (:func:`geoxai.io.mosaic.build_mosaics`), for the
            Collection's assets (with the zone's overview COG where it exists); None = look
            for mosaics under the run root.
        check: check every Item and the Collection for missing fields before anything is
            uploaded, and fail loudly (hrefs to outputs are not resolved here).
        items_json: also write one JSON Item per tile (linked from the Collection); None =
            when there are at most :data:`ITEMS_JSON_AUTO_MAX` done tiles.

    Returns:
        URL of ``catalog/collection.json``.

    Raises:
        CorruptDataError: an Item or the Collection misses a required field (``check``), or
            the Parquet file read back does not hold every Item.
    """

    if mosaics is None:
        mosaics = _find_mosaics(layout)
    cfg = _config_fields(config)
    done = _done_records(records)
    n_done = 0
    firsts: dict[tuple[Any, ...], Mapping[str, Any]] = {}  # one record of each shape
    for rec in done():
        n_done += 1
        firsts.setdefault(record_shape(rec), rec)
    first = sorted(firsts.values(), key=lambda r: str(r["tile_id"]))
    if items_json is None:
        items_json = n_done <= ITEMS_JSON_AUTO_MAX
    build = ItemBuilder(cfg, _layer_specs(layout))
    box = [math.inf, math.inf, -math.inf, -math.inf]
    json_ids: list[str] = []
    with tempfile.TemporaryDirectory(prefix="geoxai-stac-") as tmp:
        stage = Path(tmp)

        def ordered() -> Iterator[Mapping[str, Any]]:
            """The first record of each shape (the first batch fixes the schema), then the
            others in the source's order."""
            yield from first
            taken = {str(r["tile_id"]) for r in first}
            yield from (r for r in done() if str(r["tile_id"]) not in taken)

        def batches() -> Iterator[list[dict[str, Any]]]:
            for recs in _chunks(ordered(), BATCH):
                batch = [build(r) for r in recs]
                for item in batch:
                    if check:
                        problems = _item_problems(item, build.collection_id, "item")
                        if problems:
                            raise CorruptDataError(
                                "A STAC Item of the run is incomplete: " + "; ".join(problems)
                            )
                    b = item["bbox"]
                    box[:] = [min(box[0], b[0]), min(box[1], b[1])] + [
                        max(box[2], b[2]),
                        max(box[3], b[3]),
                    ]
                    if items_json:
                        path = stage / item["id"] / f"{item['id']}.json"
                        path.parent.mkdir()
                        path.write_text(json.dumps(json_item(item), indent=2), encoding="utf-8")
                        json_ids.append(item["id"])
                yield batch

        if n_done:
            write_stac_geoparquet(stage / GEOPARQUET_NAME, batches())
        coll = _collection(
            layout,
            cfg,
            n_items=n_done,
            spatial=box if n_done else [-180.0, -90.0, 180.0, 90.0],
            mosaics=mosaics,
            item_ids=sorted(json_ids),
        )
        if check:
            problems = _collection_problems(coll)
            if problems:
                raise CorruptDataError(
                    "The STAC catalog of the run is incomplete: " + "; ".join(problems[:10])
                )
        root = layout.at(layout.catalog_url("collection.json"))
        fs = root.filesystem()
        fs.invalidate_cache()
        if fs.exists(root.path):  # the root goes first and comes back last: it marks done
            fs.rm(root.path)
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            rel = path.relative_to(stage).as_posix()
            upload_file(path, layout.at(layout.catalog_url(*rel.split("/"))))
        (stage / "collection.json").write_text(json.dumps(coll, indent=2), encoding="utf-8")
        upload_file(stage / "collection.json", root)
    return layout.catalog_url("collection.json")


def _done_records(records: Records) -> Callable[[], Iterator[Mapping[str, Any]]]:
    """A callable giving the ``done`` records of ``records`` afresh on each call."""
    if callable(records):
        source = records
        return lambda: (r for r in source() if r.get("status") == "done")
    held = sorted(
        (r for r in records if r.get("status") == "done"), key=lambda r: str(r["tile_id"])
    )
    return lambda: iter(held)


def _chunks(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Lists of ``n`` consecutive values of ``it`` (the last one shorter)."""
    batch: list[Any] = []
    for v in it:
        batch.append(v)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _layer_specs(layout: RunLayout) -> dict[int, dict[str, LayerSpec]]:
    """epsg -> layer -> :class:`LayerSpec` of every zone store of the run (nodata and units)."""
    return {epsg: dict(ZoneStore.open(layout, epsg).layers) for epsg in layout.zones()}


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


def _collection_problems(coll: Mapping[str, Any]) -> list[str]:
    """Missing required fields of a Collection dict."""
    problems = [f"collection: missing {f!r}" for f in _COLLECTION_FIELDS if f not in coll]
    if coll.get("type") != "Collection":
        problems.append(f"collection: type is {coll.get('type')!r}, expected 'Collection'")
    ext = coll.get("extent", {})
    if not ext.get("spatial", {}).get("bbox") or not ext.get("temporal", {}).get("interval"):
        problems.append("collection: extent lacks spatial bbox or temporal interval")
    return problems


def _item_problems(item: Mapping[str, Any], collection_id: Any, where: str) -> list[str]:
    """Missing required fields of an Item dict (STAC core, projection, geoxai provenance)."""
    where = f"{where} {item.get('id', '?')}"
    problems = [f"{where}: missing {f!r}" for f in _ITEM_FIELDS if f not in item]
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
    if item.get("collection") != collection_id:
        problems.append(f"{where}: collection is {item.get('collection')!r}")
    return problems


def check_catalog(collection_json: str | Path, *, hrefs: bool = True) -> list[str]:
    """Offline structural check of a self-contained catalog written by :func:`write_catalog`.

    Checks the required fields of the Collection and every Item (STAC 1.x core, projection
    fields, geoxai provenance), that links are relative, and (``hrefs=True``) that every link
    and asset href resolves to an existing file or folder. The Items are the JSON ones the
    Collection links, or, when it links none, those of its ``geoparquet-items`` file (read
    whole: ~1 GB of memory per 100,000 Items). Local paths only.

    Returns:
        Problems, one line each; empty when the catalog is sound.
    """
    root = Path(collection_json)
    try:
        coll = json.loads(root.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{root}: unreadable ({exc})"]
    problems = _collection_problems(coll)
    problems += _check_links(root, coll, "collection", hrefs)
    links = [lk for lk in coll.get("links", []) if lk.get("rel") == "item"]
    for link in links:
        path = (root.parent / link["href"]).resolve()
        try:
            item = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"item link {link['href']}: unreadable ({exc})")
            continue
        problems += _item_problems(item, coll.get("id"), "item")
        problems += _check_links(path, item, f"item {item.get('id', path.name)}", hrefs)
    parquet = coll.get("assets", {}).get("geoparquet-items")
    if not links and parquet and "://" not in parquet.get("href", ""):
        path = root.parent / parquet["href"]
        try:
            items = read_stac_geoparquet(path)
        except CorruptDataError as exc:
            return [*problems, str(exc)]
        for item in items:
            problems += _item_problems(item, coll.get("id"), "item")
            problems += _check_links(path, item, f"item {item.get('id')}", hrefs)
    return problems


def _check_links(path: Path, doc: Mapping[str, Any], where: str, hrefs: bool) -> list[str]:
    out = []
    targets = [("link", lk.get("rel"), lk.get("href")) for lk in doc.get("links", [])]
    targets += [("asset", k, a.get("href")) for k, a in doc.get("assets", {}).items()]
    for kind, name, href in targets:
        if not href:
            out.append(f"{where}: {kind} {name!r} has no href")
            continue
        if "://" in href or Path(href).is_absolute():
            out.append(f"{where}: {kind} {name!r} href {href!r} is not relative")
            continue
        if hrefs and not (path.parent / href).exists():
            out.append(f"{where}: {kind} {name!r} href {href!r} does not resolve")
    return out
