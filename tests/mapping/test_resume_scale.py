"""Resume at scale (issue 17): a 10,000-tile run stopped halfway is planned again with one listing
per prefix and, without a record index, one GET per existing record; with a fresh record index
(:mod:`geoxai.mapping.record_index`) no record GET at all, only the listings and one read of the
index. No chunk or COG is read, and the list requests do not grow with the tiles (counted
through the store layer's filesystem, a counting wrapper of the real one). A record rewritten,
deleted or added after the index was written, and a corrupt index, are honoured."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoxai.geo.grid import TileSpec
from geoxai.io import listing as listing_mod
from geoxai.io.cog import write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.listing import Listing
from geoxai.io.location import StoreLocation
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.record_index import iter_records, write_record_index
from geoxai.mapping.records import (
    check_tiles,
    delete_record,
    read_records,
    write_status,
    write_tile,
)

LIST_OPS = {"ls", "find", "walk", "glob", "du"}
READ_OPS = {"cat", "cat_file", "cat_ranges", "open", "info", "size", "exists", "isfile", "head"}


class CountingFS:
    """A real fsspec filesystem that counts the requests made through it."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.lists: list[str] = []
        self.reads: list[str] = []
        self.other: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fs, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            target = args[0] if args else kwargs.get("path")
            if name in LIST_OPS:
                self.lists.append(str(target))
            elif name in READ_OPS:
                paths = target if isinstance(target, list) else [target]
                self.reads.extend(str(p) for p in paths)
            else:
                self.other[name] += 1
            return attr(*args, **kwargs)

        return counted


def _stopped_run(root: str, n_tiles: int = 10_000) -> tuple[RunLayout, list[TileSpec], set[str]]:
    """``n_tiles`` (>= 200) tiles of which the first half finished before the driver stopped:
    9 ``done`` with real chunks and COGs, the others no-op tiles recorded ``empty``; plus one
    ``failed`` tile and one whose record the killed driver had already deleted (chunks
    written)."""
    tiles = [TileSpec(32631, 100 + i % 100, 5000 + i // 100) for i in range(n_tiles)]
    layout = RunLayout(root + "/run/2024")
    zone = ZoneStore.create(
        layout, ZoneGrid.from_tiles(tiles)[32631], default_layers()[::2]
    )  # prediction, quality
    n = tiles[0].core_px
    for t in tiles[:9]:
        layers = {"prediction": np.full((n, n), 0.25, "float32"), "quality": np.ones((n, n), "u1")}
        cogs = write_tile_cogs(layout, zone, t, layers)
        write_tile(zone, t, layers, {"config_hash": "h", "cogs": cogs})
    for t in tiles[9 : n_tiles // 2]:
        write_status(layout, t, "empty", "no-op tile", {"config_hash": "h"})
    write_status(layout, tiles[100], "failed", "StacError: timeout", {"config_hash": "h"})
    delete_record(layout, tiles[5].id)  # in flight when the driver died
    unfinished = {t.id for t in tiles[n_tiles // 2 :]} | {tiles[5].id, tiles[100].id}
    return layout, tiles, unfinished


N_TILES = 10_000
PREFIXES = {"records", "prediction", "quality", "cogs/prediction", "cogs/quality"}


@pytest.fixture(scope="module")
def stopped_10k(tmp_path_factory) -> tuple[Path, list[TileSpec], set[str]]:
    """The 10,000-tile stopped run, built once; tests work on copies (:func:`_copy`)."""
    base = tmp_path_factory.mktemp("stopped")
    _, tiles, unfinished = _stopped_run(str(base))
    return base, tiles, unfinished


def _copy(stopped: tuple[Path, list[TileSpec], set[str]], dest: Path) -> RunLayout:
    shutil.copytree(stopped[0] / "run", dest / "run")
    return RunLayout(str(dest / "run" / "2024"))


@pytest.fixture
def counted(monkeypatch):
    """``plan(layout, tiles) -> (found, listed prefixes, object paths read)`` counted through
    the store layer: its listing primitives and every read of the filesystem."""
    real = StoreLocation.filesystem
    counters: list[CountingFS] = []

    def counting(self: StoreLocation) -> Any:
        counters.append(CountingFS(real(self)))
        return counters[-1]

    monkeypatch.setattr(StoreLocation, "filesystem", counting)
    listed: list[str] = []  # the store layer's listing primitives (local: os.scandir, S3: find)
    for name in ("list_sizes", "list_stamped"):
        real_list = getattr(listing_mod, name)

        def list_counted(loc: StoreLocation, real_list: Any = real_list) -> Any:
            listed.append(loc.path)
            return real_list(loc)

        monkeypatch.setattr(listing_mod, name, list_counted)

    def plan(layout: RunLayout, ts: list[TileSpec]) -> tuple[Any, list[str], list[str]]:
        counters.clear()
        listed.clear()
        found = check_tiles(layout, ts, "h")
        assert not [p for c in counters for p in c.lists]  # every listing is the primitives'
        return found, list(listed), [p for c in counters for p in c.reads]

    return plan


def _prefixes(lists: list[str]) -> set[str]:
    return {p.split("/2024/", 1)[1].replace("zone=32631/outputs.zarr/", "") for p in lists}


def test_a_run_stopped_halfway_plans_with_one_listing_per_prefix(stopped_10k, tmp_path, counted):
    layout = _copy(stopped_10k, tmp_path)
    _, tiles, unfinished = stopped_10k
    found, lists, reads = counted(layout, tiles)
    # redoes only the unfinished tiles, in order; the done ones (chunks, COGs) and the empty
    # ones are skipped
    assert [t.id for t in found.todo] == [t.id for t in tiles if t.id in unfinished]
    assert len(found.done) == N_TILES - len(unfinished)
    assert found.invalidated == {}
    # one listing per prefix: the records, each zone layer's chunks, each COG layer's folder
    assert len(lists) == len(PREFIXES) == len(set(lists))
    assert _prefixes(lists) == PREFIXES
    # no index: one attempt at it, then one read per existing record, none of a chunk or COG,
    # none for tiles without a record
    index = [p for p in reads if p.endswith("_records_index.parquet")]
    assert len(index) == 1
    reads = [p for p in reads if p not in index]
    assert all("/records/" in p for p in reads)
    assert len(reads) == len(set(reads)) == 4_999
    # linear: a tenth of the tiles, the same listings and a tenth of the record reads
    small, lists_small, reads_small = counted(layout, tiles[:1000])
    assert len(small.todo) == 2 and len(lists_small) == len(lists)
    assert len([p for p in reads_small if "/records/" in p]) == 999


def test_with_a_fresh_index_the_rerun_plan_reads_no_record(stopped_10k, tmp_path, counted):
    layout = _copy(stopped_10k, tmp_path)
    _, tiles, unfinished = stopped_10k
    idx = write_record_index(layout)  # as the driver's finish writes it
    assert (idx.rows, idx.fetched, idx.skipped) == (4_999, 4_999, 0)
    found, lists, reads = counted(layout, tiles)
    assert [t.id for t in found.todo] == [t.id for t in tiles if t.id in unfinished]
    assert len(found.done) == N_TILES - len(unfinished) and found.invalidated == {}
    assert _prefixes(lists) == PREFIXES and len(lists) == len(PREFIXES)
    assert reads == [layout.location.path + "/_records_index.parquet"]  # 0 record GETs
    # the same through Listing's own counters, and read_records from the index too
    listing = Listing()
    assert check_tiles(layout, tiles, "h", listing=listing).todo == found.todo
    assert (listing.listings, listing.reads) == (len(PREFIXES), 1)
    listing = Listing()
    recs = list(iter_records(layout, listing))
    assert (listing.listings, listing.reads) == (1, 1)
    without = Listing()
    os.rename(layout.location.path + "/_records_index.parquet", tmp_path / "aside.parquet")
    assert recs == list(iter_records(layout, without)) and without.reads == 4_999  # no index
    assert [r["tile_id"] for r in recs] == sorted(t.id for t in tiles[:5000] if t != tiles[5])
    # a rewrite of the index copies every unchanged row from the old one
    os.rename(tmp_path / "aside.parquet", layout.location.path + "/_records_index.parquet")
    again = write_record_index(layout)
    assert (again.rows, again.from_index, again.fetched) == (4_999, 4_999, 0)


def test_records_rewritten_deleted_or_added_after_the_index_are_honoured(
    stopped_10k, tmp_path, counted
):
    layout = _copy(stopped_10k, tmp_path)
    _, tiles, unfinished = stopped_10k
    write_record_index(layout)
    # rewritten: same size, another status (atomically, as every record write is, at once)
    path = Path(layout.location.path) / "records" / f"{tiles[20].id}.json"
    text = path.read_text()
    assert '"status": "empty"' in text
    tmp = path.with_name("x.tmp")
    tmp.write_text(text.replace('"status": "empty"', '"status": "faild"'))
    os.replace(tmp, path)
    # rewritten with another size: a done tile now recorded failed
    write_status(layout, tiles[1], "failed", "ValueError: redone", {"config_hash": "h"})
    # deleted: a done tile and an empty one
    delete_record(layout, tiles[2].id)
    delete_record(layout, tiles[30].id)
    # added: a tile of the unfinished half now recorded empty
    write_status(layout, tiles[7000], "empty", "no-op tile", {"config_hash": "h"})
    found, _, reads = counted(layout, tiles)
    changed = {tiles[20].id, tiles[1].id, tiles[2].id, tiles[30].id}
    want = (unfinished | changed) - {tiles[7000].id}
    assert [t.id for t in found.todo] == [t.id for t in tiles if t.id in want]
    assert found.invalidated == {tiles[20].id: "unknown status 'faild'"}
    # the index once, then exactly the three records rewritten or added
    got = sorted(Path(p).name for p in reads)
    assert got == sorted(
        ["_records_index.parquet"] + [f"{t.id}.json" for t in (tiles[1], tiles[20], tiles[7000])]
    )
    recs = {r["tile_id"]: r for r in read_records(layout)}
    assert recs[tiles[1].id]["status"] == "failed" and recs[tiles[7000].id]["status"] == "empty"
    assert tiles[2].id not in recs and tiles[30].id not in recs


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_index_falls_back_to_reading_every_record(
    stopped_10k, tmp_path, counted, caplog, damage
):
    layout = _copy(stopped_10k, tmp_path)
    _, tiles, unfinished = stopped_10k
    write_record_index(layout)
    path = Path(layout.location.path) / "_records_index.parquet"
    raw = path.read_bytes()
    path.write_bytes(
        {"garbage": b"PAR1" + b"x" * 5000, "truncated": raw[: len(raw) // 2], "empty": b""}[damage]
    )
    with caplog.at_level(logging.WARNING, logger="geoxai.io.json_index"):
        found, _, reads = counted(layout, tiles)
    assert [t.id for t in found.todo] == [t.id for t in tiles if t.id in unfinished]
    assert found.invalidated == {}
    assert len([p for p in reads if "/records/" in p]) == 4_999
    assert "unreadable" in caplog.text and "_records_index.parquet" in caplog.text
    # the next write replaces it whole
    assert write_record_index(layout).fetched == 4_999
    assert counted(layout, tiles)[2] == [str(path)]


def test_planning_sees_a_missing_and_a_resized_chunk(tmp_path):
    layout, tiles, _ = _stopped_run(str(tmp_path), 400)
    zone = ZoneStore.open(layout, 32631)
    fs = layout.location.filesystem()
    a, b = tiles[0], tiles[1]
    fs.rm_file(zone.loc.child(zone.chunk_key("quality", a)).path)
    p = zone.loc.child(zone.chunk_key("prediction", b)).path
    fs.pipe_file(p, fs.cat_file(p) + b"\0")
    found = check_tiles(layout, tiles[:200], "h", repair=True)
    assert set(found.invalidated) == {a.id, b.id}
    assert "missing" in found.invalidated[a.id] and "recorded" in found.invalidated[b.id]
    assert [t.id for t in found.todo] == [a.id, b.id, tiles[5].id, tiles[100].id]
    assert not fs.exists(layout.loc("records", f"{a.id}.json").path)  # repaired: record gone
