"""Stored COGs are checked against the SHA-256 and size their record holds, by the same rule as
the zone chunks (issue 21): planning finds a truncated or altered COG, deletes the stale record
and plans the tile again; the check reads each COG once per process."""

from __future__ import annotations

import os

from geoxai.io import cog
from geoxai.io.cog import check_cog, write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.records import (
    check_tiles,
    plan_tiles,
    read_record,
    tile_state,
    write_tile,
)
from tests.fixtures.zones import layers_for, small_tiles


def _run(root: str, tiles):
    layout = RunLayout(root + "/run/2024")
    zone = ZoneStore.create(
        layout, ZoneGrid.from_tiles(tiles)[32631], default_layers(("tree", "crop"))
    )
    for t in tiles:
        layers = layers_for(t)
        write_tile(
            zone, t, layers, {"config_hash": "h", "cogs": write_tile_cogs(layout, zone, t, layers)}
        )
    return layout, zone


def test_planning_finds_damaged_cogs_deletes_their_records_and_redo_restores_them(store_root):
    tiles = small_tiles()[:3]
    a, b, c = tiles
    layout, zone = _run(store_root, tiles)
    before = {t.id: read_record(layout, t.id)["cogs"] for t in tiles}
    fs = layout.location.filesystem()
    # a: the prediction COG is truncated (a killed copy, a full disk)
    pa = layout.loc("cogs", "prediction", f"{a.id}.tif").path
    raw = fs.cat_file(pa)
    fs.pipe_file(pa, raw[: len(raw) // 2])
    # b: one flipped byte in the quality COG (same size: only the checksum can tell)
    pb = layout.loc("cogs", "quality", f"{b.id}.tif").path
    raw = bytearray(fs.cat_file(pb))
    raw[len(raw) // 2] ^= 0x01
    fs.pipe_file(pb, bytes(raw))
    fs.invalidate_cache()

    sa, sb, sc = (tile_state(layout, t, "h") for t in tiles)
    assert (sa.state, sb.state, sc.state) == ("invalid", "invalid", "done")
    assert f"cogs/prediction/{a.id}.tif" in sa.reason and "recorded" in sa.reason
    assert f"cogs/quality/{b.id}.tif" in sb.reason and "checksum differs" in sb.reason
    # a dry plan writes nothing
    assert plan_tiles(layout, tiles, "h") == ([a, b], [c])
    assert read_record(layout, a.id) is not None
    # the run's planning deletes the stale done records and says why
    found = check_tiles(layout, tiles, "h", repair=True)
    assert found.todo == [a, b] and found.done == [c]
    assert set(found.invalidated) == {a.id, b.id}
    assert "checksum differs" in found.invalidated[b.id]
    assert read_record(layout, a.id) is None and read_record(layout, b.id) is None
    assert read_record(layout, c.id)["status"] == "done"
    # redoing the tiles writes the same COGs again (byte for byte) and they check out
    for t in (a, b):
        layers = layers_for(t)
        cogs = write_tile_cogs(layout, zone, t, layers)
        write_tile(zone, t, layers, {"config_hash": "h", "cogs": cogs})
        assert {k: v["sha256"] for k, v in cogs.items()} == {
            k: v["sha256"] for k, v in before[t.id].items()
        }
    assert plan_tiles(layout, tiles, "h") == ([], tiles)


def test_a_cog_is_read_once_per_process_until_it_changes(tmp_path, monkeypatch):
    t = small_tiles()[0]
    layout, _ = _run(str(tmp_path), [t])
    meta = read_record(layout, t.id)["cogs"]["prediction"]
    url = layout.url(meta["href"])
    reads: list[str] = []
    real = cog.hashlib.sha256

    def counting(*args):
        reads.append(url)
        return real(*args)

    monkeypatch.setattr(cog.hashlib, "sha256", counting)
    assert check_cog(url, meta["sha256"], meta["bytes"]) is None
    assert check_cog(url, meta["sha256"], meta["bytes"]) is None
    assert len(reads) == 1  # the second check trusts the unchanged file
    # same size, other bytes, a new modification time: read again, and caught
    path = layout.at(url).path
    raw = bytearray(open(path, "rb").read())
    raw[-100] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert check_cog(url, meta["sha256"], meta["bytes"]) == "checksum differs from its record"
    assert len(reads) == 2
    assert check_cog(url + ".gone", meta["sha256"]) == "missing"
