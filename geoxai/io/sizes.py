"""Sizes without reading contents: a stored prefix (objects and bytes, one listing) and a STAC
asset (``file:size``, else a stat or a HEAD request).

Used by ``geoxai plan`` (:mod:`geoxai.mapping.estimate`) to price a run before it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pystac

from geoxai.io.location import resolve, storage_errors

__all__ = ["stored_size", "asset_size"]

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 5.0
"""Seconds a HEAD request for an asset's size may take before the size counts as unknown."""


def stored_size(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """``(objects, bytes)`` of everything stored under ``url`` (a file or a prefix); one listing.

    A missing path is ``(0, 0)``.

    Raises:
        StoreError: the store cannot be listed (unreachable, denied), naming the URL and the fix.
    """
    loc = resolve(url, storage_options)
    fs = loc.filesystem()
    with storage_errors(loc, "list", passthrough=(FileNotFoundError,)):
        try:
            fs.invalidate_cache()
            if not fs.exists(loc.path):
                return 0, 0
            if fs.isfile(loc.path):
                return 1, int(fs.size(loc.path) or 0)
            found = fs.find(loc.path, detail=True)
        except FileNotFoundError:
            return 0, 0
    sizes = [int(i.get("size") or 0) for i in found.values() if i.get("type", "file") == "file"]
    return len(sizes), int(sum(sizes))


def asset_size(asset: pystac.Asset, *, head: bool = True) -> tuple[int | None, str]:
    """Stored bytes of one STAC asset and how they were found.

    Returns:
        ``(bytes, how)``: ``how`` is ``"file:size"`` (the item says so), ``"stat"`` (a local
        file), ``"head"`` (an HTTP/S3 HEAD request, only when ``head``) or ``"unknown"`` (then
        bytes is None: no size field, no file, or the request failed; never raised).
    """
    declared = asset.extra_fields.get("file:size")
    if isinstance(declared, int | float) and declared > 0:
        return int(declared), "file:size"
    href = asset.get_absolute_href() or asset.href
    if not href:
        return None, "unknown"
    proto = href.split("://", 1)[0].lower() if "://" in href else "file"
    if proto != "file" and not head:
        return None, "unknown"
    try:
        if proto in ("http", "https"):
            import fsspec  # lazy: only for assets behind HTTP

            fs = fsspec.filesystem(proto, client_kwargs={"timeout": _timeout()})
            return int(fs.size(href)), "head"
        loc = resolve(href)  # local path or s3:// (InvalidInputError for other schemes)
        return int(loc.filesystem().size(loc.path)), "stat" if proto == "file" else "head"
    except Exception as exc:  # noqa: BLE001 - a size we cannot get is "unknown", never fatal
        log.debug("size of %s unknown: %s", href, exc)
        return None, "unknown"


def _timeout() -> Any:
    import aiohttp  # lazy: fsspec's HTTP filesystem brings it

    return aiohttp.ClientTimeout(total=HEAD_TIMEOUT_S)
