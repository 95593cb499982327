"""Resume at scale (issue 17): a 10,000-tile run stopped halfway is planned again with one listing
per prefix and one GET per existing record: no chunk or COG is read, and the list requests do
not grow with the tiles (counted through the store layer's filesystem, a counting wrapper of the
real one)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from geoxai.geo.grid import TileSpec
from geoxai.io import listing as listing_mod
from geoxai.io.cog import write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.location import StoreLocation
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.records import check_tiles, delete_record, write_status, write_tile

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


def test_a_run_stopped_halfway_plans_with_one_listing_per_prefix(tmp_path, monkeypatch):
    layout, tiles, unfinished = _stopped_run(str(tmp_path))
    real = StoreLocation.filesystem
    counters: list[CountingFS] = []

    def counting(self: StoreLocation) -> Any:
        counters.append(CountingFS(real(self)))
        return counters[-1]

    monkeypatch.setattr(StoreLocation, "filesystem", counting)
    listed: list[str] = []  # the store layer's listing primitive (local: os.scandir, S3: find)
    real_list = listing_mod.list_sizes

    def list_counted(loc: StoreLocation) -> dict[str, int]:
        listed.append(loc.path)
        return real_list(loc)

    monkeypatch.setattr(listing_mod, "list_sizes", list_counted)

    def plan(ts: list[TileSpec]) -> tuple[Any, list[str], list[str]]:
        counters.clear()
        listed.clear()
        found = check_tiles(layout, ts, "h")
        assert not [p for c in counters for p in c.lists]  # every listing is list_sizes'
        return found, list(listed), [p for c in counters for p in c.reads]

    found, lists, reads = plan(tiles)
    # redoes only the unfinished tiles, in order; the done ones (chunks, COGs) and the empty
    # ones are skipped
    assert [t.id for t in found.todo] == [t.id for t in tiles if t.id in unfinished]
    assert len(found.done) == 10_000 - len(unfinished)
    assert found.invalidated == {}
    # one listing per prefix: the records, each zone layer's chunks, each COG layer's folder
    prefixes = {"records", "prediction", "quality", "cogs/prediction", "cogs/quality"}
    assert len(lists) == len(prefixes) == len(set(lists))
    assert {p.split("/2024/", 1)[1].replace("zone=32631/outputs.zarr/", "") for p in lists} == (
        prefixes
    )
    # reads: one per existing record, none of a chunk or COG, none for tiles without a record
    assert all("/records/" in p for p in reads)
    assert len(reads) == len(set(reads)) == 4_999
    # linear: a tenth of the tiles, the same listings and a tenth of the record reads
    small, lists_small, reads_small = plan(tiles[:1000])
    assert len(small.todo) == 2 and len(lists_small) == len(lists)
    assert len(reads_small) == 999


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
