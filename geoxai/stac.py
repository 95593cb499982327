"""STAC search and item normalization: whatever the catalog, items come out the same.

:func:`search` queries a STAC API (pystac-client, POST by default, paged, retried with
backoff) or a local static source (item JSON files, a FeatureCollection, an ndjson file, a
static catalog) and returns *normalized* items sorted by ``(datetime, id)`` without duplicate
ids. The cloud-cover filter is always applied on the client, so it also works against APIs that
ignore ``query`` (``rustac serve``).

:func:`normalize_item` returns a copy of an item that every later stage can read the same way:

- **canonical asset keys**: each data asset is also available under its canonical band name
  (``B02 ... B12, B8A, SCL``; :mod:`geoxai.bands`), the original keys are kept. The name comes
  from the asset key (Earth Search v1 ``red``/``nir08``/``scl``; Earth Search v0 and Planetary
  Computer ``B04``/``SCL``), else from ``eo:bands[0].name``, else from an unambiguous
  ``eo:bands[0].common_name`` (``rededge`` names three bands and, on Planetary Computer, B8A
  too, so it is never used). JPEG2000 duplicates (``red-jp2``) are used only when no other
  asset gives that band; thumbnails, overviews, metadata and multi-band ``visual`` assets are
  never band assets.
- **Sentinel-1** items (``sar:*`` properties, constellation ``sentinel-1``) are never mistaken
  for Sentinel-2: their polarisation assets get the lower-case keys ``vv vh hh hv`` and no S2
  band is mapped.
- an unresolved ``root`` link is dropped (``Item.to_dict()`` would fetch it over the network).
- ``proj:epsg`` is set from ``proj:code`` (stackstac 0.5.1 reads only ``proj:epsg``; pystac
  >= 1.12 migrates ``proj:epsg`` away when it reads older items).
- **scale/offset** (reflectance = DN * scale + offset) per band, in this order:

  1. the asset's ``raster:bands[0]`` ``scale``/``offset`` when a scale is given (Earth Search
     v1: 1e-4, -0.1). The catalog is trusted: a wrong flag upstream stays wrong here;
  2. else the processing-baseline rule: baseline >= ``04.00`` -> offset -0.1 (BOA_ADD_OFFSET of
     -1000 DN), older -> 0, scale 1e-4. The baseline is read from ``s2:processing_baseline``,
     ``sentinel:processing_baseline`` or the ``_Nxxyy_`` field of the product id (Planetary
     Computer carries ``s2:processing_baseline`` but no scale; Earth Search v0 carries only
     ``sentinel:product_id``);
  3. else the acquisition date (baseline 04.00 began on 2022-01-25).

  SCL and Sentinel-1 assets get (1, 0). The result is written into the canonical asset's
  ``raster:bands`` (so ``stackstac.stack(..., rescale=True)`` treats every catalog alike) and
  the rule used into the item property ``geoxai:scaling``.

Missing bands: :func:`check_bands` raises :class:`DataAccessError` naming the item and the band
(policy ``"raise"``, the default of :func:`search` when ``bands`` is given) or drops the item
with a warning (policy ``"drop"``). Dropping depends only on the item, never on the tile, so
neighbouring tiles still see the same dates.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pystac

from geoxai.bands import BANDS, S2_BANDS, SCL, canonical_band_name
from geoxai.errors import DataAccessError, InvalidInputError, NoDataError, StacError

__all__ = [
    "S1_POLARIZATIONS",
    "DEFAULT_S2_SCALE",
    "BASELINE_OFFSET_START",
    "search",
    "read_items",
    "normalize_item",
    "band_scaling",
    "sensor",
    "processing_baseline",
    "check_bands",
]

log = logging.getLogger(__name__)

S1_POLARIZATIONS: tuple[str, ...] = ("vv", "vh", "hh", "hv")
"""Canonical (lower-case) asset keys of Sentinel-1 polarisation assets."""
DEFAULT_S2_SCALE = 1e-4
"""Reflectance per DN of Sentinel-2 L1C/L2A (QUANTIFICATION_VALUE 10000)."""
BASELINE_OFFSET = -0.1
"""Reflectance offset of processing baseline >= 04.00 (BOA/RADIO_ADD_OFFSET -1000 DN)."""
BASELINE_OFFSET_START = dt.datetime(2022, 1, 25, tzinfo=dt.UTC)
"""First acquisitions processed with baseline 04.00 (used only when no baseline is recorded)."""

_NON_DATA_ROLES = {"thumbnail", "overview", "metadata", "visual", "tiles"}
_AMBIGUOUS_COMMON_NAMES = {"rededge", "nir"}
_REFLECTANCE_BANDS = {b for b in BANDS if b != SCL}
_BASELINE_IN_ID = re.compile(r"_N(\d{2})(\d{2})(?:_|$)")
_RETRY_STATUS = (429, 500, 502, 503, 504)


# --------------------------------------------------------------------------- normalization


def sensor(item: pystac.Item) -> str | None:
    """``"sentinel-1"``, ``"sentinel-2"`` or None (unknown) from an item's properties."""
    props = item.properties
    names = " ".join(
        str(props.get(k, "")) for k in ("constellation", "platform", "mission")
    ).lower()
    names = names.replace(" ", "-").replace("_", "-")
    if "sentinel-1" in names or any(k.startswith(("sar:", "s1:")) for k in props):
        return "sentinel-1"
    if "sentinel-2" in names or any(k.startswith(("s2:", "sentinel:")) for k in props):
        return "sentinel-2"
    return None


def processing_baseline(item: pystac.Item) -> str | None:
    """The Sentinel-2 processing baseline as ``"NN.NN"`` (e.g. ``"05.09"``), or None."""
    props = item.properties
    for key in ("s2:processing_baseline", "sentinel:processing_baseline"):
        value = props.get(key)
        if value:
            match = re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})\s*", str(value))
            if match:
                return f"{int(match[1]):02d}.{int(match[2]):02d}"
    for key in ("s2:product_uri", "sentinel:product_id", "s2:product_id"):
        value = props.get(key)
        if value:
            match = _BASELINE_IN_ID.search(str(value).removesuffix(".SAFE"))
            if match:
                return f"{match[1]}.{match[2]}"
    match = _BASELINE_IN_ID.search(item.id)
    return f"{match[1]}.{match[2]}" if match else None


def _item_from_dict(doc: dict[str, Any], source: str) -> pystac.Item:
    """pystac.Item.from_dict with typed errors; silences pystac's storage-migration warning."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Could not parse bucket", category=UserWarning
            )
            return pystac.Item.from_dict(doc, preserve_dict=False)
    except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{source}: STAC item {doc.get('id')!r} is not a valid item ({type(exc).__name__}: "
            f"{exc}). Every item needs id, geometry, properties.datetime (or start/end_datetime) "
            "and assets."
        ) from exc


def _item_datetime(item: pystac.Item) -> dt.datetime:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InvalidInputError(
            f"STAC item {item.id!r} has neither 'datetime' nor 'start_datetime'; "
            "every acquisition needs a time. Fix the item or drop it from the source."
        )
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _epsg_from_code(code: Any) -> int | None:
    if code is None:
        return None
    match = re.fullmatch(r"\s*EPSG:(\d+)\s*", str(code), flags=re.IGNORECASE)
    return int(match[1]) if match else None


def _is_jp2(key: str, asset: pystac.Asset) -> bool:
    return key.lower().endswith("-jp2") or "jp2" in str(asset.media_type or "").lower()


def _is_data_asset(asset: pystac.Asset) -> bool:
    roles = set(asset.roles or [])
    if roles & _NON_DATA_ROLES:
        return False
    media = str(asset.media_type or "").lower()
    if media and not media.startswith(("image/tiff", "image/jp2", "image/vnd.stac.geotiff")):
        return False
    eo_bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    return len(eo_bands) <= 1


def _band_from_asset(key: str, asset: pystac.Asset) -> str | None:
    """Canonical S2 band of one asset, or None."""
    base = key[: -len("-jp2")] if key.lower().endswith("-jp2") else key
    canon = canonical_band_name(base)
    if canon is not None and base.lower() != "rededge":
        return canon
    eo_bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    if len(eo_bands) == 1 and isinstance(eo_bands[0], dict):
        name = eo_bands[0].get("name")
        if name and canonical_band_name(name) and str(name).lower() != "rededge":
            return canonical_band_name(name)
        common = eo_bands[0].get("common_name") or eo_bands[0].get("eo:common_name")
        if common and str(common).lower() not in _AMBIGUOUS_COMMON_NAMES:
            return canonical_band_name(common)
    return None


def _s1_key(key: str) -> str | None:
    base = key.lower().removesuffix("-jp2")
    return base if base in S1_POLARIZATIONS else None


def _declared_scaling(asset: pystac.Asset) -> tuple[float, float] | None:
    """(scale, offset) declared by raster:bands (STAC 1.0) or asset fields (STAC 1.1)."""
    bands = asset.extra_fields.get("raster:bands") or []
    first = bands[0] if bands and isinstance(bands[0], dict) else {}
    for source in (first, asset.extra_fields):
        scale = source.get("scale", source.get("raster:scale"))
        if scale is not None:
            offset = source.get("offset", source.get("raster:offset", 0.0))
            return float(scale), float(offset or 0.0)
    return None


def _rule_scaling(item: pystac.Item) -> tuple[tuple[float, float], str]:
    baseline = processing_baseline(item)
    if baseline is not None:
        offset = BASELINE_OFFSET if baseline >= "04.00" else 0.0
        return (DEFAULT_S2_SCALE, offset), f"processing-baseline {baseline}"
    when = _item_datetime(item)
    offset = BASELINE_OFFSET if when >= BASELINE_OFFSET_START else 0.0
    return (DEFAULT_S2_SCALE, offset), "acquisition-date"


def _with_scaling(asset: pystac.Asset, scale: float, offset: float) -> pystac.Asset:
    new = asset.clone()
    bands = copy.deepcopy(new.extra_fields.get("raster:bands") or [{}])
    first = dict(bands[0]) if isinstance(bands[0], dict) else {}
    first.setdefault("nodata", 0)
    first["scale"] = scale
    first["offset"] = offset
    new.extra_fields["raster:bands"] = [first, *bands[1:]]
    return new


def normalize_item(item: pystac.Item | dict[str, Any]) -> pystac.Item:
    """A normalized copy of ``item`` (see the module docstring); the input is not changed.

    Idempotent: normalizing a normalized item gives the same item.
    """
    if isinstance(item, dict):
        item = _item_from_dict(copy.deepcopy(item), "normalize_item")
    elif not isinstance(item, pystac.Item):
        raise InvalidInputError(
            f"normalize_item needs a pystac.Item or an item dict, got {type(item).__name__}."
        )
    out = item.clone()
    props = out.properties
    if "geoxai:scaling" in props:
        return out  # already normalized
    _item_datetime(out)  # typed error when the item has no time at all
    # An unresolved root link makes pystac's to_dict() fetch it over the network (offline
    # that fails, online it is slow): keep only roots that are already loaded objects.
    out.links = [link for link in out.links if link.rel != "root" or link.is_resolved()]

    if props.get("proj:epsg") is None:
        epsg = _epsg_from_code(props.get("proj:code"))
        if epsg is not None:
            props["proj:epsg"] = epsg
    for asset in out.assets.values():
        if asset.extra_fields.get("proj:epsg") is None:
            epsg = _epsg_from_code(asset.extra_fields.get("proj:code"))
            if epsg is not None:
                asset.extra_fields["proj:epsg"] = epsg

    kind = sensor(out)
    props["geoxai:sensor"] = kind
    if kind == "sentinel-1":
        _map_s1(out)
    elif kind == "sentinel-2" or kind is None:
        _map_s2(out)
    return out


def _map_s1(item: pystac.Item) -> None:
    found: dict[str, tuple[int, str]] = {}
    for key, asset in item.assets.items():
        pol = _s1_key(key)
        if pol is None or not _is_data_asset(asset):
            continue
        rank = 0 if key == pol else (2 if _is_jp2(key, asset) else 1)
        if pol not in found or rank < found[pol][0]:
            found[pol] = (rank, key)
    for pol, (_, key) in found.items():
        asset = item.assets[key]
        scale, offset = _declared_scaling(asset) or (1.0, 0.0)
        item.assets[pol] = _with_scaling(asset, scale, offset)
    item.properties["geoxai:scaling"] = {pol: "raster:bands" for pol in found}


def _map_s2(item: pystac.Item) -> None:
    found: dict[str, tuple[int, str]] = {}
    for key, asset in item.assets.items():
        if not _is_data_asset(asset):
            continue
        canon = _band_from_asset(key, asset)
        if canon is None:
            continue
        # preference: the canonical key itself, then a COG, then a JPEG2000 duplicate
        rank = 0 if key == canon else (2 if _is_jp2(key, asset) else 1)
        if canon not in found or rank < found[canon][0]:
            found[canon] = (rank, key)
    rules: dict[str, str] = {}
    rule_scaling: tuple[tuple[float, float], str] | None = None
    for canon, (_, key) in sorted(found.items()):
        asset = item.assets[key]
        if canon == SCL:
            scale, offset = 1.0, 0.0
            rules[canon] = "classification"
        else:
            declared = _declared_scaling(asset)
            if declared is not None:
                (scale, offset), rules[canon] = declared, "raster:bands"
            else:
                if rule_scaling is None:
                    rule_scaling = _rule_scaling(item)
                (scale, offset), rules[canon] = rule_scaling
        item.assets[canon] = _with_scaling(asset, scale, offset)
    item.properties["geoxai:scaling"] = rules


def band_scaling(item: pystac.Item, band: str) -> tuple[float, float]:
    """``(scale, offset)`` with reflectance = DN * scale + offset for one band of an item.

    ``band`` is a canonical name or an alias (``"red"``, ``"B04"``), or a Sentinel-1
    polarisation (``"vv"``). Works on raw and normalized items alike.
    """
    norm = item if "geoxai:scaling" in item.properties else normalize_item(item)
    key = band.lower() if band.lower() in S1_POLARIZATIONS else canonical_band_name(band)
    if key is None:
        valid = sorted(k for k in norm.assets if k in BANDS or k in S1_POLARIZATIONS)
        raise InvalidInputError(
            f"Unknown band {band!r} for STAC item {item.id!r}. Use a Sentinel-2 band name "
            f"(B02 ... B12, B8A, SCL, or a common name like 'red') or a polarisation; "
            f"this item has {valid}."
        )
    _require(norm, key)
    declared = _declared_scaling(norm.assets[key])
    if declared is None:  # pragma: no cover - normalize_item always records one
        raise DataAccessError(f"STAC item {item.id!r}: band {key} has no scale recorded.")
    return declared


def _require(item: pystac.Item, band: str) -> None:
    if band not in item.assets:
        have = sorted(k for k in item.assets if k in BANDS or k in S1_POLARIZATIONS)
        raise DataAccessError(
            f"STAC item {item.id!r} (collection {item.collection_id!r}, sensor "
            f"{item.properties.get('geoxai:sensor')}) has no asset for band {band}; "
            f"bands found: {have or 'none'}. Fix: choose a collection that carries {band} "
            "(e.g. sentinel-2-l2a for SCL), drop the band from the request, or pass "
            "on_missing='drop' to skip such items."
        )


def check_bands(
    items: Sequence[pystac.Item], bands: Sequence[str], *, on_missing: str = "raise"
) -> list[pystac.Item]:
    """Items (normalized) that carry every band in ``bands``.

    Args:
        items: normalized items.
        bands: canonical band names or aliases (``"B04"``, ``"red"``) or polarisations.
        on_missing: ``"raise"`` (DataAccessError naming the item and band) or ``"drop"``
            (skip the item, log a warning).
    """
    if on_missing not in ("raise", "drop"):
        raise InvalidInputError(
            f"on_missing={on_missing!r} is not a policy; use 'raise' or 'drop'."
        )
    keys = []
    for b in bands:
        key = b.lower() if b.lower() in S1_POLARIZATIONS else canonical_band_name(b)
        if key is None:
            raise InvalidInputError(
                f"Unknown band {b!r}; use names like {', '.join(S2_BANDS)}, SCL or vv/vh."
            )
        keys.append(key)
    kept = []
    for item in items:
        try:
            for key in keys:
                _require(item, key)
        except DataAccessError as exc:
            if on_missing == "raise":
                raise
            log.warning("dropping STAC item: %s", exc)
            continue
        kept.append(item)
    return kept


# --------------------------------------------------------------------------- local sources


def _items_from_doc(doc: Any, source: str) -> Iterator[pystac.Item]:
    if isinstance(doc, list):
        for d in doc:
            yield from _items_from_doc(d, source)
        return
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{source}: expected STAC JSON objects, found {type(doc)}.")
    kind = doc.get("type")
    if kind == "Feature":
        yield _item_from_dict(doc, source)
    elif kind == "FeatureCollection":
        for feature in doc.get("features", []):
            yield _item_from_dict(feature, source)
    elif kind in ("Catalog", "Collection"):
        catalog = pystac.read_file(source)
        if not isinstance(catalog, pystac.Catalog):  # pragma: no cover
            raise InvalidInputError(f"{source} is not a STAC catalog.")
        yield from catalog.get_items(recursive=True)
    else:
        raise InvalidInputError(
            f"{source}: JSON of type {kind!r} is not a STAC Item, ItemCollection, Catalog "
            "or Collection. Pass item JSON files, a FeatureCollection, an .ndjson file or a "
            "static catalog."
        )


def read_items(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[pystac.Item]:
    """Read STAC items (not normalized) from local files.

    Args:
        source: a path or a list of paths; each an Item JSON, a FeatureCollection JSON, an
            ``.ndjson``/``.jsonl`` file (one item per line), a static Catalog/Collection JSON
            (items found recursively) or a directory (its ``catalog.json``/``collection.json``
            when present, else every ``*.json``/``*.ndjson`` in it).
    """
    paths = [source] if isinstance(source, str | os.PathLike) else list(source)
    items: list[pystac.Item] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            root = next(
                (path / n for n in ("catalog.json", "collection.json") if (path / n).exists()),
                None,
            )
            files = [root] if root else sorted([*path.glob("*.json"), *path.glob("*.ndjson")])
            items.extend(read_items(files))
            continue
        if not path.is_file():
            raise DataAccessError(
                f"STAC source {str(path)!r} does not exist. Pass item JSON files, an ndjson "
                "file, a FeatureCollection or a static catalog, or an http(s) API URL."
            )
        try:
            if path.suffix.lower() in (".ndjson", ".jsonl", ".geojsonl"):
                with path.open() as fh:
                    for n, line in enumerate(fh, 1):
                        if line.strip():
                            items.extend(_items_from_doc(json.loads(line), f"{path}:{n}"))
            else:
                items.extend(_items_from_doc(json.loads(path.read_text()), str(path)))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"STAC source {str(path)!r} is not valid JSON: {exc}") from exc
    return items


def _parse_instant(text: str) -> dt.datetime | None:
    if text in ("", ".."):
        return None
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _local_filter(items: Iterable[pystac.Item], params: dict[str, Any]) -> Iterator[pystac.Item]:
    from shapely.geometry import box, shape

    collections = set(params.get("collections") or ())
    region = None
    if params.get("bbox"):
        b = params["bbox"]
        region = box(b[0], b[1], b[-3] if len(b) == 6 else b[2], b[-2] if len(b) == 6 else b[3])
    if params.get("intersects"):
        region = shape(params["intersects"])
    start = end = None
    if params.get("datetime"):
        text = params["datetime"]
        lo, _, hi = text.partition("/")
        start = _parse_instant(lo)
        end = _parse_instant(hi) if "/" in text else start
        if end is not None and "/" in text and end.microsecond == 0 and end.second == 59:
            end = end.replace(microsecond=999999)  # pystac-client closes ranges at :59
    for item in items:
        if collections and item.collection_id not in collections:
            continue
        if region is not None:
            geom = (
                shape(item.geometry) if item.geometry else (box(*item.bbox) if item.bbox else None)
            )
            if geom is None or not geom.intersects(region):
                continue
        if start is not None or end is not None:
            when = _item_datetime(item)
            first = item.common_metadata.start_datetime or when
            last = item.common_metadata.end_datetime or when
            first = first if first.tzinfo else first.replace(tzinfo=dt.UTC)
            last = last if last.tzinfo else last.replace(tzinfo=dt.UTC)
            if (start is not None and last < start) or (end is not None and first > end):
                continue
        yield item


# --------------------------------------------------------------------------- search


def _is_url(source: Any) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def _cloud_cover(item: pystac.Item) -> float | None:
    value = item.properties.get("eo:cloud_cover")
    return None if value is None else float(value)


def _query_text(url: Any, params: dict[str, Any], max_cloud: float | None) -> str:
    parts = [f"collections={list(params.get('collections') or [])}"]
    for key in ("bbox", "intersects", "datetime"):
        if params.get(key) is not None:
            value = params[key]
            value = list(value) if isinstance(value, tuple) else value
            if key == "intersects":
                value = str(value.get("type") if isinstance(value, dict) else value) + " geometry"
            parts.append(f"{key}={value}")
    if max_cloud is not None:
        parts.append(f"max_cloud={max_cloud}")
    return f"{url} ({', '.join(parts)})"


def _stac_error(url: str, exc: Exception, retries: int) -> StacError:
    status = getattr(exc, "status_code", None)
    detail = str(exc).strip().replace("\n", " ")[:300]
    if status is not None and 400 <= status < 500 and status != 429:
        return StacError(
            f"STAC API {url} rejected the request with HTTP {status}: {detail}. Fix: check "
            "the collection names, bbox (minlon,minlat,maxlon,maxlat) and datetime; the "
            "server may not support this search (try method='GET' or 'POST')."
        )
    what = f"HTTP {status}" if status is not None else "no connection"
    return StacError(
        f"STAC API {url} failed after {retries} retries ({what}): {detail}. Fix: check that "
        "the URL is right and the server is up (and reachable through any proxy), or retry "
        "later with more `retries`/`backoff`."
    )


def _api_items(
    url: str,
    params: dict[str, Any],
    *,
    max_cloud: float | None,
    limit: int,
    method: str,
    retries: int,
    backoff: float,
    timeout: float,
    headers: dict[str, str] | None,
) -> Iterator[pystac.Item]:
    import requests
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO
    from urllib3 import Retry

    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        backoff_max=max(backoff * 8, backoff),
        status_forcelist=_RETRY_STATUS,
        allowed_methods=None,  # POST searches are read-only: retry them too
        raise_on_status=False,
    )
    io = StacApiIO(headers=headers, timeout=timeout, max_retries=retry)
    errors = (APIError, requests.RequestException, pystac.STACError, json.JSONDecodeError)
    try:
        client = Client.open(url, stac_io=io)
        query = None
        if max_cloud is not None and client.conforms_to("QUERY"):
            query = {"eo:cloud_cover": {"lte": max_cloud}}  # a hint; filtered again below
        found = client.search(method=method, limit=limit, query=query, **params)
        yield from found.items()
    except errors as exc:
        raise _stac_error(url, exc, retries) from exc
    except NotImplementedError as exc:  # pystac-client: API without item search
        raise StacError(
            f"{url} is not a STAC API with item search ({exc}). Fix: pass the API root URL "
            "(the landing page that links to /search)."
        ) from exc


def search(
    url: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    collections: str | Sequence[str],
    bbox: Sequence[float] | None = None,
    intersects: dict[str, Any] | Any | None = None,
    datetime: str | dt.datetime | Sequence[Any] | None = None,
    max_cloud: float | None = None,
    bands: Sequence[str] | None = None,
    on_missing: str = "raise",
    limit: int = 100,
    max_items: int | None = None,
    method: str = "POST",
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> list[pystac.Item]:
    """Search a STAC API or a local static source; normalized items, sorted, no duplicates.

    Args:
        url: STAC API root (``http(s)://...``), or local item files / an ndjson or
            FeatureCollection file / a static catalog (a path or a list of paths).
        collections: collection id(s), e.g. ``"sentinel-2-l2a"``.
        bbox: ``(minlon, minlat, maxlon, maxlat)`` in degrees (EPSG:4326).
        intersects: a GeoJSON geometry dict (or anything with ``__geo_interface__``).
        datetime: an RFC 3339 instant or interval (``"2023-01-01/2023-12-31"``, ``"2023"``,
            open ends ``".."``), a datetime, or a ``(start, end)`` pair.
        max_cloud: keep items with ``eo:cloud_cover`` <= this, percent; items without a
            cloud cover are kept. Always applied here, also sent to APIs that declare the
            ``query`` extension.
        bands: when given, every item must carry these bands (see :func:`check_bands`).
        on_missing: ``"raise"`` or ``"drop"`` for items missing one of ``bands``.
        limit: page size requested from the API.
        max_items: stop after this many matching items (after the cloud filter, in the
            server's order; the result is then sorted).
        method: ``"POST"`` (works on every API here, ``rustac serve`` included) or ``"GET"``.
        retries: retries per request on connection errors, timeouts and HTTP 429/5xx.
        backoff: backoff factor, seconds: waits ``backoff * 2**(n-1)`` before retry ``n``.
        timeout: seconds per HTTP request.
        headers: extra HTTP headers (e.g. an API key); never logged.

    Raises:
        NoDataError: no item matched (the message names the query).
        StacError: the API was unreachable or answered with an error after all retries.
        DataAccessError: an item lacks one of ``bands`` (``on_missing="raise"``).
    """
    from pystac_client.item_search import ItemSearch

    cols = [collections] if isinstance(collections, str) else list(collections or [])
    if not cols:
        raise InvalidInputError(
            "search needs at least one collection id, e.g. collections='sentinel-2-l2a'."
        )
    if limit < 1 or (max_items is not None and max_items < 1) or retries < 0 or backoff < 0:
        raise InvalidInputError(
            f"search paging/retry settings must be positive: limit={limit}, "
            f"max_items={max_items}, retries={retries}, backoff={backoff}."
        )
    method = method.upper()
    if method not in ("GET", "POST"):
        raise InvalidInputError(f"method={method!r}: use 'POST' or 'GET'.")
    values: list[float] | None = None
    if bbox is not None:
        try:
            values = [float(v) for v in bbox]
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"bbox {bbox!r} must be numbers.") from exc
        n = len(values)
        if n not in (4, 6) or not -90 <= values[1] <= values[n // 2 + 1] <= 90:
            raise InvalidInputError(
                f"bbox {list(bbox)} is not (minlon, minlat, maxlon, maxlat) in degrees "
                "(EPSG:4326); give 4 numbers with -90 <= minlat <= maxlat <= 90."
            )
    geo = getattr(intersects, "__geo_interface__", None)
    if geo is not None:
        intersects = geo
    try:  # pystac-client's own parameter normalization, without any request
        params = ItemSearch(
            "http://normalize.invalid/search",
            collections=cols,
            bbox=values,
            intersects=intersects,
            datetime=datetime,  # type: ignore[arg-type]
        ).get_parameters()
    except (ValueError, TypeError, pystac.STACError) as exc:
        raise InvalidInputError(
            f"Bad STAC search parameters (bbox={bbox}, datetime={datetime!r}): {exc}"
        ) from exc
    params["collections"] = list(params.get("collections") or cols)
    if "bbox" in params:
        params["bbox"] = list(params["bbox"])

    if _is_url(url):
        source: Iterable[pystac.Item] = _api_items(
            str(url),
            params,
            max_cloud=max_cloud,
            limit=limit,
            method=method,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            headers=headers,
        )
    else:
        source = _local_filter(read_items(url), params)  # type: ignore[arg-type]

    seen: dict[str, pystac.Item] = {}
    n_total = 0
    for item in source:
        n_total += 1
        cloud = _cloud_cover(item)
        if max_cloud is not None and cloud is not None and cloud > max_cloud:
            continue
        if item.id in seen:
            continue
        seen[item.id] = normalize_item(item)
        if max_items is not None and len(seen) >= max_items:
            break
    if not seen:
        why = (
            f"; {n_total} item(s) matched but all have eo:cloud_cover > {max_cloud}"
            if n_total
            else ""
        )
        raise NoDataError(
            f"No STAC items for {_query_text(url, params, max_cloud)}{why}. Fix: widen the "
            "bbox or dates, raise max_cloud, or check the collection id."
        )
    items = sorted(seen.values(), key=lambda it: (_item_datetime(it), it.id))
    if bands:
        items = check_bands(items, bands, on_missing=on_missing)
        if not items:
            raise NoDataError(
                f"No STAC item for {_query_text(url, params, max_cloud)} carries all of "
                f"{list(bands)}. Fix: choose a collection with these bands."
            )
    return items
