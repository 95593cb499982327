"""A run's per-tile records read through their compacted index, and the index written.

``<run_root>/_records_index.parquet`` (:meth:`RunLayout.record_index_url`) holds every record's
JSON text with the size and version stamp it was listed with (:mod:`geoxai.io.json_index`).
Reading the records (:func:`record_docs`, :func:`iter_records`) lists ``records/`` once, takes
each record whose listed size and stamp match the index from the index and GETs the others, so
a rerun of a finished 240,000-tile run reads one index file instead of 240,000 records, and a
record rewritten, deleted or added since the index was written is still seen as it is now.

The index is written by :func:`write_record_index` at the end of a run (``finish_run``) and by
the driver while tiles finish (:class:`IndexCheckpoints`: every 10 minutes, and at 1,000
finished tiles and each doubling after), so a run stopped midway is planned again from
an index plus the records written since. Planning never writes it (``geoxai plan`` is a dry run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container, Iterator
from typing import Any

from geoxai.io.json_index import IndexSummary, iter_json_objects, write_json_index
from geoxai.io.layout import RunLayout
from geoxai.io.listing import Listing

__all__ = ["IndexCheckpoints", "iter_records", "record_docs", "write_record_index"]

log = logging.getLogger(__name__)


def record_docs(
    layout: RunLayout,
    listing: Listing | None = None,
    *,
    tile_ids: Container[str] | None = None,
) -> Iterator[tuple[str, Any | None, str | None]]:
    """``(tile_id, document, problem)`` of every listed record (of ``tile_ids``, if given), in
    tile id order; ``problem`` says why a record is unreadable (not JSON).

    Cost: one listing of ``records/`` (shared with ``listing``'s other lookups), one read of the
    index, one GET per record not in the index with its listed size and stamp. Memory: one
    batch of ~1,000 records and one index row group at a time.

    Raises:
        StoreError: the store cannot be listed or reached.
    """
    listing = listing if listing is not None else Listing(layout.storage_options)
    wanted = None if tile_ids is None else _Keys(tile_ids)
    for key, doc, why in iter_json_objects(
        layout.records_url(), layout.record_index_url(), listing, wanted=wanted
    ):
        yield key[: -len(".json")], doc, why


class _Keys:
    """``<id>.json in keys`` for a container of tile ids (no copy of it)."""

    def __init__(self, ids: Container[str]) -> None:
        self.ids = ids

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.endswith(".json") and key[:-5] in self.ids


def iter_records(layout: RunLayout, listing: Listing | None = None) -> Iterator[dict[str, Any]]:
    """Every readable record of the run, in tile id order (unreadable ones, and ones whose
    ``tile_id`` is not their file's name, are skipped); a stream, see :func:`record_docs`."""
    for tile_id, doc, _ in record_docs(layout, listing):
        if isinstance(doc, dict) and doc.get("tile_id") == tile_id:
            yield doc


def write_record_index(layout: RunLayout) -> IndexSummary:
    """(Re)write ``<run_root>/_records_index.parquet`` from the records now stored: records
    unchanged since the previous index are copied from it, the others read (one GET each);
    staged, checked and moved into place whole (:func:`geoxai.io.json_index.write_json_index`).

    Raises:
        StoreError: the store cannot be listed, read or written (the old index is kept).
    """
    return write_json_index(
        layout.records_url(), layout.record_index_url(), storage_options=layout.storage_options
    )


class IndexCheckpoints:
    """The driver's rewrites of the record index while tiles finish, in a background thread, so
    a driver killed midway leaves an index of (nearly) all it had done and its rerun plans with
    few GETs. Each rewrite reads only the records written since the previous one.

    A rewrite starts when tiles finished since the previous one and either ``every_s`` passed
    since the previous one started (or since the start), or the finished tiles reached
    ``first_at`` (1,000) or a doubling of it (2,000, 4,000, ...) not yet written: a fast run
    has an index early, and the rewrites, each writing the whole index, cost a constant factor
    of the records in all. At most one runs at a time (a due one starts at the next tick).

    Args:
        layout: the run's layout.
        every_s: seconds between the start of two rewrites (and before the first) by time.
        first_at: finished tiles of the first rewrite by count; then at each doubling.
        clock: seconds, monotonic (tests pass their own).

    Attributes:
        written: rewrites finished without error.
    """

    def __init__(
        self,
        layout: RunLayout,
        every_s: float = 600.0,
        first_at: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout, self.every_s, self.clock = layout, every_s, clock
        self.written = 0
        self._last = clock()
        self._finished = 0
        self._next_count = max(1, first_at)
        self._thread: threading.Thread | None = None

    def tick(self, finished: int) -> bool:
        """Start a rewrite when one is due (``finished``: tiles finished so far; see the class)
        and none is running; True if one started."""
        now = self.clock()
        busy = self._thread is not None and self._thread.is_alive()
        due = now - self._last >= self.every_s or finished >= self._next_count
        if busy or finished <= self._finished or not due:
            return False
        self._last, self._finished = now, finished
        while self._next_count <= finished:
            self._next_count *= 2
        self._thread = threading.Thread(target=self._write, name="record-index", daemon=True)
        self._thread.start()
        return True

    def _write(self) -> None:
        try:
            idx = write_record_index(self.layout)
        except Exception as exc:  # noqa: BLE001 - a cache: the run goes on without it
            log.warning("the record index was not rewritten (%s: %s)", type(exc).__name__, exc)
            return
        self.written += 1
        log.info("record index %s: %d records (%d read)", idx.url, idx.rows, idx.fetched)

    def close(self) -> None:
        """Wait for a rewrite in progress (before the run's finish writes the index)."""
        if self._thread is not None:
            self._thread.join()
