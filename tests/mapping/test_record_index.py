"""The record index on the local filesystem and on the local S3 server (``-m s3``): planning
from a fresh index makes no record GET; a record rewritten, deleted or added since the index is
seen as it is now (ETag on S3, mtime and inode locally); a corrupt index falls back to reading
every record with a warning; the index is replaced whole."""

from __future__ import annotations

import logging
import threading

from geoxai.io.listing import Listing
from geoxai.io.store import put_atomic, read_json, write_json
from geoxai.mapping.record_index import IndexCheckpoints, iter_records, write_record_index
from geoxai.mapping.records import check_tiles, delete_record, write_status
from tests.mapping.test_resume_scale import _stopped_run

N = 200  # tiles; the first half and tiles[100] have records (100: tiles[5]'s was deleted)


def _plan(layout, tiles) -> tuple[list[str], Listing]:
    listing = Listing(layout.storage_options)
    found = check_tiles(layout, tiles, "h", listing=listing)
    return [t.id for t in found.todo], listing


def test_the_record_index_on_the_store(store_root, caplog):
    layout, tiles, unfinished = _stopped_run(store_root, N)
    want = [t.id for t in tiles if t.id in unfinished]
    todo, listing = _plan(layout, tiles)  # no index yet: one GET per record
    assert todo == want and (listing.listings, listing.reads) == (5, 100)
    idx = write_record_index(layout)
    assert (idx.rows, idx.fetched, idx.skipped) == (100, 100, 0) and idx.nbytes > 0
    todo, listing = _plan(layout, tiles)
    assert todo == want and (listing.listings, listing.reads) == (5, 1)  # the index only
    listing = Listing(layout.storage_options)
    recs = list(iter_records(layout, listing))
    assert listing.reads == 1 and len(recs) == 100
    assert recs == sorted(recs, key=lambda r: r["tile_id"])

    # rewritten (same content but for the status), deleted, added since the index
    rec = read_json(layout.at(layout.record_url(tiles[20].id)))
    write_json({**rec, "status": "faild"}, layout.record_url(tiles[20].id))
    write_status(layout, tiles[1], "failed", "ValueError: redone", {"config_hash": "h"})
    delete_record(layout, tiles[30].id)
    write_status(layout, tiles[150], "empty", "no-op tile", {"config_hash": "h"})
    todo, listing = _plan(layout, tiles)
    changed = {tiles[1].id, tiles[20].id, tiles[30].id}
    assert todo == [t.id for t in tiles if t.id in (unfinished | changed) - {tiles[150].id}]
    assert listing.reads == 1 + 3  # the index, the two rewritten records and the added one
    by_id = {r["tile_id"]: r for r in iter_records(layout)}
    assert by_id[tiles[20].id]["status"] == "faild" and tiles[30].id not in by_id
    assert by_id[tiles[150].id]["status"] == "empty"
    again = write_record_index(layout)
    assert (again.rows, again.from_index, again.fetched) == (100, 97, 3)
    assert _plan(layout, tiles)[1].reads == 1

    # a corrupt index: every record read, with a warning, the same answer
    put_atomic(layout.at(layout.record_index_url()), b"PAR1 not a parquet file PAR1")
    with caplog.at_level(logging.WARNING, logger="geoxai.io.json_index"):
        todo2, listing = _plan(layout, tiles)
    assert todo2 == _plan_without_index(layout, tiles)
    assert listing.reads == 1 + 100 and "unreadable" in caplog.text


def _plan_without_index(layout, tiles) -> list[str]:
    fs = layout.location.filesystem()
    fs.rm_file(layout.at(layout.record_index_url()).path)
    todo, listing = _plan(layout, tiles)
    assert listing.reads == 100
    return todo


def test_the_drivers_periodic_index_rewrites(tmp_path):
    layout, tiles, _ = _stopped_run(str(tmp_path), N)
    now = [0.0]
    checkpoints = IndexCheckpoints(layout, every_s=600.0, clock=lambda: now[0])
    assert not checkpoints.tick(50)  # too early
    now[0] = 601.0
    assert checkpoints.tick(50)
    checkpoints.close()
    assert checkpoints.written == 1
    assert _plan(layout, tiles)[1].reads == 1  # a rerun after a kill: the index only
    write_status(layout, tiles[150], "empty", "no-op tile", {"config_hash": "h"})
    now[0] = 1300.0
    assert not checkpoints.tick(50)  # no tile finished since
    assert checkpoints.tick(51)
    checkpoints.close()
    assert checkpoints.written == 2 and _plan(layout, tiles)[1].reads == 1


def test_the_index_is_also_rewritten_at_1000_finished_tiles_and_each_doubling(tmp_path):
    layout, _, _ = _stopped_run(str(tmp_path), N)
    now = [0.0]  # the clock never reaches every_s: only the counts start rewrites
    checkpoints = IndexCheckpoints(layout, every_s=600.0, clock=lambda: now[0])
    started = []
    for finished in (1, 500, 999, 1000, 1001, 1999, 2000, 2500, 3999, 4000, 4001, 9000, 9001):
        if checkpoints.tick(finished):
            started.append(finished)
        checkpoints.close()
    # 9000 is past 8000 (4000's doubling): written once there, the next at 16,000
    assert started == [1000, 2000, 4000, 9000]
    assert checkpoints.written == 4
    # a count reached while a rewrite runs starts one at the next tick
    now[0] = 10.0
    busy = IndexCheckpoints(layout, every_s=600.0, first_at=10, clock=lambda: now[0])
    gate = threading.Event()
    real = busy._write

    def held() -> None:
        gate.wait()
        real()

    busy._write = held  # type: ignore[method-assign]
    assert busy.tick(10)
    assert not busy.tick(20)  # due, but one is running
    gate.set()
    busy.close()
    assert busy.tick(21)
    busy.close()
    assert busy.written == 2
