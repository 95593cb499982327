"""Stored COGs are checked by the same rule as the zone chunks (issues 21, 17): planning finds a
missing or truncated COG by its size (one listing, no COG read), deletes the stale record and
plans the tile again; `geoxai verify` (:func:`verify_tiles`) finds a flipped byte by its
SHA-256."""

from __future__ import annotations

from geoxai.io import cog
from geoxai.io.cog import check_cog, write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.records import (
    check_tiles,
    delete_record,
    plan_tiles,
    read_record,
    tile_state,
    write_tile,
)
from geoxai.mapping.verify import verify_tiles
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
    # b: the quality COG is gone
    fs.rm_file(layout.loc("cogs", "quality", f"{b.id}.tif").path)
    # c: one flipped byte in the quality COG (same size: only the checksum can tell)
    pc = layout.loc("cogs", "quality", f"{c.id}.tif").path
    raw = bytearray(fs.cat_file(pc))
    raw[len(raw) // 2] ^= 0x01
    fs.pipe_file(pc, bytes(raw))
    fs.invalidate_cache()

    sa, sb, sc = (tile_state(layout, t, "h") for t in tiles)
    assert (sa.state, sb.state, sc.state) == ("invalid", "invalid", "done")
    assert f"cogs/prediction/{a.id}.tif" in sa.reason and "recorded" in sa.reason
    assert f"cogs/quality/{b.id}.tif" in sb.reason and "missing" in sb.reason
    # a dry plan writes nothing
    assert plan_tiles(layout, tiles, "h") == ([a, b], [c])
    assert read_record(layout, a.id) is not None
    # the run's planning deletes the stale done records and says why
    found = check_tiles(layout, tiles, "h", repair=True)
    assert found.todo == [a, b] and found.done == [c]
    assert set(found.invalidated) == {a.id, b.id}
    assert "missing" in found.invalidated[b.id]
    assert read_record(layout, a.id) is None and read_record(layout, b.id) is None
    assert read_record(layout, c.id)["status"] == "done"
    # full verification reads c's COG and finds the flipped byte
    found_c = verify_tiles(layout, [c.id])
    assert found_c.checked == 1
    assert "checksum differs" in found_c.problems[c.id] and "quality" in found_c.problems[c.id]
    delete_record(layout, c.id)
    # redoing the tiles writes the same COGs again (byte for byte) and they check out
    for t in (a, b, c):
        layers = layers_for(t)
        cogs = write_tile_cogs(layout, zone, t, layers)
        write_tile(zone, t, layers, {"config_hash": "h", "cogs": cogs})
        assert {k: v["sha256"] for k, v in cogs.items()} == {
            k: v["sha256"] for k, v in before[t.id].items()
        }
    assert plan_tiles(layout, tiles, "h") == ([], tiles)
    assert verify_tiles(layout, [t.id for t in tiles]).problems == {}


def test_planning_reads_no_cog_and_verify_reads_each_every_time(tmp_path, monkeypatch):
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
    assert plan_tiles(layout, [t], "h") == ([], [t])
    assert reads == []  # planning compares sizes from a listing
    assert check_cog(url, meta["sha256"], meta["bytes"]) is None
    assert check_cog(url, meta["sha256"], meta["bytes"]) is None
    assert len(reads) == 2  # verification reads the bytes every time: no trust by mtime
    path = layout.at(url).path
    raw = bytearray(open(path, "rb").read())
    raw[-100] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    assert check_cog(url, meta["sha256"], meta["bytes"]) == "checksum differs from its record"
    assert check_cog(url, meta["sha256"], meta["bytes"] + 1).startswith(f"{meta['bytes']} bytes")
    assert check_cog(url + ".gone", meta["sha256"]) == "missing"
