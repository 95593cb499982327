"""STAC search and item normalization: whatever the catalog, items come out the same.

:func:`search` queries a STAC API (pystac-client, POST by default, paged, retried with
backoff) or a local static source (item JSON files, a FeatureCollection, an ndjson file, a
static catalog) and returns *normalized* items sorted by ``(datetime, id)`` without duplicate
ids. The cloud-cover filter is always applied on the client, so it also works against APIs that
ignore ``query`` (``rustac serve``).

:func:`normalize_item` returns a copy of an item that every later stage can read the same way:

- **canonical asset keys**: each data asset is also available under its canonical band name
  (``B02 ... B12, B8A, SCL``; :mod:`geoxai.geo.bands`), the original keys are kept. The name comes
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

import datetime as dt
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pystac
from shapely.geometry import box, shape

from geoxai.errors import DataAccessError, InvalidInputError, NoDataError, StacError
from geoxai.io.stac_items import check_bands, item_datetime, item_from_dict, normalize_item

__all__ = [
    "search",
    "read_items",
]

log = logging.getLogger(__name__)


_RETRY_STATUS = (429, 500, 502, 503, 504)


def _items_from_doc(doc: Any, source: str) -> Iterator[pystac.Item]:
    if isinstance(doc, list):
        for d in doc:
            yield from _items_from_doc(d, source)
        return
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{source}: expected STAC JSON objects, found {type(doc)}.")
    kind = doc.get("type")
    if kind == "Feature":
        yield item_from_dict(doc, source)
    elif kind == "FeatureCollection":
        for feature in doc.get("features", []):
            yield item_from_dict(feature, source)
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
            when = item_datetime(item)
            first = item.common_metadata.start_datetime or when
            last = item.common_metadata.end_datetime or when
            first = first if first.tzinfo else first.replace(tzinfo=dt.UTC)
            last = last if last.tzinfo else last.replace(tzinfo=dt.UTC)
            if (start is not None and last < start) or (end is not None and first > end):
                continue
        yield item


def _antimeridian_halves(params: dict[str, Any]) -> list[dict[str, Any]]:
    """``params`` once, or twice when its bbox crosses the antimeridian (minlon > maxlon,
    RFC 7946 section 5.2): one bbox per side of 180 degrees, as not every API (nor the local
    filter) reads such a bbox."""
    b = params.get("bbox")
    if not b or b[0] <= b[len(b) // 2]:
        return [params]
    n = len(b) // 2
    east = [*b[:n], 180.0, *b[n + 1 :]]
    west = [-180.0, *b[1:]]
    return [{**params, "bbox": east}, {**params, "bbox": west}]


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
    if isinstance(exc, json.JSONDecodeError):  # it answered, but not with STAC JSON
        return StacError(
            f"{url} answered, but not with JSON ({detail}): it is not a STAC API, or it "
            "served an HTML page (a login or proxy page, a web viewer, a wrong path). Fix: "
            "pass the STAC API root URL (its landing page is JSON with a link to /search), "
            "and check any proxy or authentication in front of it."
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
    import requests  # lazy: requests only for HTTP probes
    from pystac_client import Client  # lazy: pystac-client only when an API is searched
    from pystac_client.exceptions import (
        APIError,  # lazy: pystac-client only when an API is searched
    )
    from pystac_client.stac_api_io import (
        StacApiIO,  # lazy: pystac-client only when an API is searched
    )
    from urllib3 import Retry  # lazy: urllib3 only for HTTP retries

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
        bbox: ``(minlon, minlat, maxlon, maxlat)`` in degrees (EPSG:4326); ``minlon > maxlon``
            crosses the antimeridian and is searched as its two halves.
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
    from pystac_client.item_search import (
        ItemSearch,  # lazy: pystac-client only when an API is searched
    )

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

    def one(part: dict[str, Any]) -> Iterable[pystac.Item]:
        if _is_url(url):
            return _api_items(
                str(url),
                part,
                max_cloud=max_cloud,
                limit=limit,
                method=method,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                headers=headers,
            )
        return _local_filter(read_items(url), part)  # type: ignore[arg-type]

    source = itertools.chain.from_iterable(one(p) for p in _antimeridian_halves(params))

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
    items = sorted(seen.values(), key=lambda it: (item_datetime(it), it.id))
    if bands:
        items = check_bands(items, bands, on_missing=on_missing)
        if not items:
            raise NoDataError(
                f"No STAC item for {_query_text(url, params, max_cloud)} carries all of "
                f"{list(bands)}. Fix: choose a collection with these bands."
            )
    return items
