"""A compacted index of the JSON objects under a prefix (a run's per-tile records): one Parquet
file holding each object's key, size, version stamp and text, so that reading every object costs
one listing of the prefix and one read of the index, not one GET per object.

At 240,000 tiles, deciding what a rerun must redo by GETting every record is 240,000 requests
(146 s locally, minutes to hours on S3); the index replaces them with one object read. It is a
cache, never the truth: the prefix is always listed (:meth:`Listing.stamped`), and an index row
stands for an object only when the object is listed now with the row's size **and** version
stamp (ETag on S3; modification time and inode locally). An object rewritten after the index
was written is read again, one deleted since is not listed (so not yielded), one added since is
not in the index (so read). A missing or unreadable index (truncated, corrupt, another format)
makes every object be read with a warning; it never changes an answer.

Format (:data:`INDEX_FORMAT`): Parquet, zstd-compressed, row groups of :data:`ROWS_PER_GROUP`
rows sorted by key; columns ``key`` (string), ``bytes`` (int64, the object's size),
``stamp`` (string) and ``text`` (string, the object's UTF-8 content); the file's key-value
metadata ``geoxai.index`` is ``{"format", "rows", "prefix"}``. The same idea as the Delta Lake
checkpoint of a table's log or a stac-geoparquet file of a catalog's Items: many small objects
compacted into one columnar file, read in row groups.

Writing (:func:`write_json_index`) is incremental and atomic: the prefix is listed, rows whose
object is unchanged are copied from the old index, the others are read; the file is staged in a
local temporary folder, read back and checked (row count, sorted unique keys), then moved into
place whole (one PUT on S3, ``os.replace`` locally; :func:`geoxai.io.store.upload_file`). A
crash leaves the old index or the new one, never half of one. Memory: one row group (~4,096
objects) at a time, plus the listing (~150 bytes per object).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoxai.errors import StoreError
from geoxai.io.listing import Listing, parse_json
from geoxai.io.location import resolve, storage_errors
from geoxai.io.store import upload_file

__all__ = [
    "INDEX_FORMAT",
    "ROWS_PER_GROUP",
    "IndexSummary",
    "iter_json_objects",
    "write_json_index",
]

log = logging.getLogger(__name__)

INDEX_FORMAT = "geoxai-json-index/1"
"""``format`` of the index file's ``geoxai.index`` metadata."""

ROWS_PER_GROUP = 4096
"""Rows per Parquet row group (~30 MB of text for records of ~8 KB before compression)."""

_META_KEY = b"geoxai.index"
_CHUNK = 1024  # objects decided together: index rows matched, the others fetched in one batch


@dataclass(frozen=True)
class IndexSummary:
    """What :func:`write_json_index` wrote.

    Attributes:
        url: the index's URL.
        rows: objects in the index.
        from_index: rows copied from the previous index (objects unchanged since).
        fetched: objects read from the store (new or changed since the previous index).
        skipped: listed objects left out (vanished while read, or not UTF-8).
        nbytes: size of the index file in bytes.
    """

    url: str
    rows: int
    from_index: int
    fetched: int
    skipped: int
    nbytes: int


def _listed_keys(
    listing: Listing, prefix_url: str, suffix: str, wanted: Container[str] | None
) -> tuple[list[str], dict[str, tuple[int, str]]]:
    present = listing.stamped(prefix_url)
    keys = sorted(
        k
        for k in present
        if k.endswith(suffix) and "/" not in k and (wanted is None or k in wanted)
    )
    return keys, present


def _index_rows(index_url: str, listing: Listing) -> Iterator[tuple[str, int, str, str]]:
    """``(key, bytes, stamp, text)`` of the index's rows in key order; nothing when it is
    absent; stops with a warning where it turns out unreadable (the caller reads the objects
    it no longer finds here from the store)."""
    import pyarrow as pa  # lazy: arrow only when an index is read
    import pyarrow.parquet as pq  # lazy: arrow only when an index is read

    loc = resolve(index_url, listing.storage_options)
    fs = loc.filesystem()
    try:
        with storage_errors(loc, "read", passthrough=(FileNotFoundError,)):
            fs.invalidate_cache(loc.path)
            f = fs.open(loc.path, "rb")
    except FileNotFoundError:
        log.info("no index at %s: every object is read from the store", loc.describe())
        return
    listing.count_read()
    prev: str | None = None
    with f:
        try:
            pf = pq.ParquetFile(f)
            meta = json.loads((pf.metadata.metadata or {}).get(_META_KEY, b"{}"))
            if meta.get("format") != INDEX_FORMAT or meta.get("rows") != pf.metadata.num_rows:
                raise ValueError(
                    f"format {meta.get('format')!r} with {meta.get('rows')} rows announced and "
                    f"{pf.metadata.num_rows} stored; expected {INDEX_FORMAT!r}"
                )
            batches = pf.iter_batches(
                batch_size=ROWS_PER_GROUP, columns=["key", "bytes", "stamp", "text"]
            )
            for batch in batches:
                cols = [batch.column(i).to_pylist() for i in range(4)]
                for key, size, stamp, text in zip(*cols, strict=True):
                    if not isinstance(key, str) or (prev is not None and key <= prev):
                        raise ValueError(f"keys out of order at {key!r} (after {prev!r})")
                    prev = key
                    yield key, int(size), str(stamp), str(text)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            if isinstance(exc, StoreError):
                raise
            log.warning(
                "the index %s is unreadable after %r (%s: %s): the objects it would hold are "
                "read from the store one by one instead; the next finished run rewrites it",
                loc.describe(),
                prev,
                type(exc).__name__,
                exc,
            )


def _merged(
    prefix_url: str, index_url: str, listing: Listing, keys: list[str], present: dict
) -> Iterator[tuple[str, int, str, bytes | str | None, str | None, bool]]:
    """``(key, bytes, stamp, content, problem, from_index)`` for each of ``keys`` (sorted):
    the index's text where its size and stamp match the listing, else the object read."""
    rows = _index_rows(index_url, listing) if keys else iter(())
    cur = next(rows, None)
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        texts: dict[str, str] = {}
        gets: list[str] = []
        for k in chunk:
            while cur is not None and cur[0] < k:
                cur = next(rows, None)
            # a store that gives no stamp (neither ETag nor LastModified) is never trusted
            if cur is not None and cur[0] == k and cur[2] and (cur[1], cur[2]) == present[k]:
                texts[k] = cur[3]
            else:
                gets.append(k)
        fetched = {k: (raw, why) for k, raw, why in listing.read_bytes(prefix_url, gets)}
        for k in chunk:
            size, stamp = present[k]
            if k in texts:
                yield k, size, stamp, texts[k], None, True
            else:
                raw, why = fetched[k]
                yield k, size, stamp, raw, why, False


def iter_json_objects(
    prefix_url: str,
    index_url: str,
    listing: Listing,
    *,
    suffix: str = ".json",
    wanted: Container[str] | None = None,
) -> Iterator[tuple[str, Any | None, str | None]]:
    """``(key, document, problem)`` of every object directly under ``prefix_url`` whose key
    ends with ``suffix`` (and is in ``wanted``, if given), in key order.

    Cost: one listing of the prefix (:meth:`Listing.stamped`, reused if ``listing`` already
    has it), one read of the index, one GET (in concurrent batches) per object that is not in
    the index with its listed size and stamp. ``document`` is None when the object vanished
    since the listing (``problem`` None) or is not JSON (``problem`` says why).

    Raises:
        StoreError: the store cannot be listed or reached.
    """
    keys, present = _listed_keys(listing, prefix_url, suffix, wanted)
    reads = listing.reads
    n_index = 0
    for key, _, _, content, why, from_index in _merged(
        prefix_url, index_url, listing, keys, present
    ):
        n_index += from_index
        if content is None:
            yield key, None, why
        else:
            doc, why = parse_json(content)
            yield key, doc, why
    fetched = len(keys) - n_index
    if fetched > max(100, len(keys) // 10):
        log.warning(
            "%d of %d objects under %s were read one by one (%d requests): the index %s was "
            "missing, unreadable or out of date; a finished run rewrites it",
            fetched,
            len(keys),
            prefix_url,
            listing.reads - reads,
            index_url,
        )


def write_json_index(
    prefix_url: str,
    index_url: str,
    *,
    storage_options: Any = None,
    suffix: str = ".json",
) -> IndexSummary:
    """(Re)write the index of the objects directly under ``prefix_url`` (see the module
    docstring): unchanged objects from the old index, the others read; staged, checked, then
    moved into place whole.

    Raises:
        StoreError: the store cannot be listed, read or written; or the staged index does not
            read back as written (nothing replaced).
    """
    import pyarrow as pa  # lazy: arrow only when an index is written
    import pyarrow.parquet as pq  # lazy: arrow only when an index is written

    listing = Listing(storage_options)
    keys, present = _listed_keys(listing, prefix_url, suffix, None)
    schema = pa.schema(
        [("key", pa.string()), ("bytes", pa.int64()), ("stamp", pa.string()), ("text", pa.string())]
    )
    rows = from_index = skipped = 0
    dest = resolve(index_url, storage_options)
    with tempfile.TemporaryDirectory(prefix="geoxai-index-") as tmp:
        path = Path(tmp) / "index.parquet"
        cols: list[list[Any]] = [[], [], [], []]
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:

            def flush() -> None:
                if cols[0]:
                    writer.write_table(pa.table(cols, schema=schema))
                    for c in cols:
                        c.clear()

            for key, size, stamp, content, _, old in _merged(
                prefix_url, index_url, listing, keys, present
            ):
                if isinstance(content, bytes):
                    try:
                        content = content.decode("utf-8")
                    except UnicodeDecodeError:
                        content = None
                if content is None:
                    skipped += 1
                    continue
                for c, v in zip(cols, (key, size, stamp, content), strict=True):
                    c.append(v)
                rows += 1
                from_index += old
                if len(cols[0]) >= ROWS_PER_GROUP:
                    flush()
            flush()
            meta = {"format": INDEX_FORMAT, "rows": rows, "prefix": prefix_url}
            writer.add_key_value_metadata({_META_KEY: json.dumps(meta).encode()})
        _check_staged(path, rows, dest.describe())
        nbytes = path.stat().st_size
        upload_file(path, dest)
    return IndexSummary(dest.url, rows, from_index, rows - from_index, skipped, nbytes)


def _check_staged(path: Path, rows: int, where: str) -> None:
    """Read the staged index back: its metadata, row count and sorted unique keys."""
    import pyarrow.parquet as pq  # lazy: arrow only when an index is written

    pf = pq.ParquetFile(path)
    meta = json.loads((pf.metadata.metadata or {}).get(_META_KEY, b"{}"))
    keys = pq.read_table(path, columns=["key"]).column("key").to_pylist()
    ordered = all(a < b for a, b in zip(keys, keys[1:], strict=False))
    if meta.get("rows") != rows or pf.metadata.num_rows != rows or len(keys) != rows or not ordered:
        raise StoreError(
            f"The index staged for {where} does not read back as written ({pf.metadata.num_rows} "
            f"rows stored, {rows} written, keys sorted: {ordered}); the old index is kept. "
            "Check the local temporary folder's disk and rerun."
        )
