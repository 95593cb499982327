"""Zone stores, exactly-once tile writes and planning, on the local filesystem and local S3."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from geoxai.errors import ConfigError, InvalidInputError, NoDataError, StoreError
from geoxai.geo.grid import TileSpec, tile_from_id
from geoxai.io.layout import RunLayout
from geoxai.io.zonestore import LayerSpec, ZoneGrid, ZoneStore, change_layer_specs, default_layers
from geoxai.mapping.change import change_layers
from geoxai.mapping.records import (
    plan_tiles,
    read_record,
    read_records,
    tile_is_done,
    tile_state,
    write_status,
    write_tile,
)
from geoxai.mapping.verify import verify_tiles
from tests.fixtures.zones import SMALL, layers_for, small_tile, small_tiles


def record_for(config_hash: str = "cfg-a") -> dict:
    return {
        "config_hash": config_hash,
        "input_items": ["S2A_31UFS_20240101_0_L2A", "S2B_31UFS_20240106_0_L2A"],
        "timings": {"cube": 1.5, "smooth": 0.2, "predict": 0.7},
    }


def make_zone(root: str, tiles=None) -> tuple[RunLayout, ZoneStore]:
    tiles = tiles or small_tiles()
    layout = RunLayout(root + "/run/2024")
    grid = ZoneGrid.from_tiles(tiles)[32631]
    return layout, ZoneStore.create(layout, grid, default_layers(("tree", "crop")))


# ---- grid and chunks ----------------------------------------------------------------------


def test_tile_core_is_exactly_one_chunk_of_every_layer(tmp_path):
    tiles = [tile_from_id("32631_E0096_N0938"), tile_from_id("32631_E0098_N0939")]
    layout, zone = make_zone(str(tmp_path), tiles)
    grid = zone.grid
    assert grid.shape == (2 * 600, 3 * 600)
    assert grid.transform == (10.0, 0.0, 576000.0, 0.0, -10.0, 5640000.0)
    for name in zone.layers:
        arr = zone.array(name)
        assert arr.chunks[-2:] == (600, 600)
        if zone.layers[name].bands:
            assert arr.chunks[0] == arr.shape[0]  # the band axis is one chunk
    for t in tiles:
        rows, cols = grid.region(t)
        assert rows.start % 600 == 0 and cols.start % 600 == 0
        assert rows.stop - rows.start == cols.stop - cols.start == 600
        # the region's pixel centres are the tile's own
        y, x = grid.coords()
        ty, tx = t.coords()
        np.testing.assert_array_equal(y[rows], ty)
        np.testing.assert_array_equal(x[cols], tx)
    # a write creates exactly one object per layer, the tile's chunk
    fs = layout.location.filesystem()
    before = set(fs.find(zone.loc.path))
    rec = write_tile(zone, tiles[1], layers_for(tiles[1]), record_for())
    new = {p[len(zone.loc.path) + 1 :] for p in set(fs.find(zone.loc.path)) - before}
    assert new == {m["chunk"] for m in rec["layers"].values()}
    assert len(new) == 3


def test_xarray_opens_zone_store_with_tile_coordinates(tmp_path):
    layout, zone = make_zone(str(tmp_path))
    t = small_tiles()[0]
    data = layers_for(t)
    write_tile(zone, t, data, record_for())
    ds = zone.to_xarray()
    assert ds.attrs["crs"] == "EPSG:32631"
    ty, tx = t.coords()
    sub = ds["prediction"].sel(y=ty, x=tx).values
    np.testing.assert_array_equal(sub, data["prediction"])
    other = ds["asos_sensitivity"].sel(
        y=small_tiles()[4].coords()[0], x=small_tiles()[4].coords()[1]
    )
    assert np.isnan(other.values).all()  # never written: fill value


def test_create_is_idempotent_and_race_safe(tmp_path):
    tiles = small_tiles()
    layout = RunLayout(str(tmp_path / "run" / "2024"))
    grid = ZoneGrid.from_tiles(tiles)[32631]
    errors: list[BaseException] = []

    def create():
        try:
            ZoneStore.create(layout, grid, default_layers(("tree", "crop")))
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    zone = ZoneStore.open(layout, 32631)
    t = tiles[0]
    data = layers_for(t)
    write_tile(zone, t, data, record_for())
    # creating again with the same spec keeps the data
    again = ZoneStore.create(layout, grid, default_layers(("tree", "crop")))
    np.testing.assert_array_equal(again.read_tile(t, "prediction"), data["prediction"])
    assert tile_is_done(layout, t, "cfg-a")
    np.testing.assert_array_equal(again.grid.coords()[1], grid.coords()[1])
    np.testing.assert_array_equal(np.asarray(again._group["x"][:]), grid.coords()[1])


def test_spec_mismatch_names_both(tmp_path):
    layout, zone = make_zone(str(tmp_path))
    other = ZoneGrid(32631, 10, 20, 1, 1, tile_size_m=SMALL)
    with pytest.raises(ConfigError) as exc:
        ZoneStore.create(layout, other, default_layers(("tree", "crop")))
    msg = str(exc.value)
    assert "cols 10..13 rows 20..21" in msg and "cols 10..10 rows 20..20" in msg
    with pytest.raises(ConfigError, match="'prediction'.*tree.*crop"):
        ZoneStore.create(layout, zone.grid, default_layers(("tree",)))
    assert isinstance(exc.value, ValueError)


def test_layers_can_be_added_later(tmp_path):
    layout, zone = make_zone(str(tmp_path))
    specs = change_layer_specs(zone.layers["prediction"])
    for s in specs:
        zone.ensure_layer(s)
    reopened = ZoneStore.open(layout, 32631)
    assert {"change", "change_flag"} <= set(reopened.layers)
    assert reopened.layers["change_flag"].fill == 0
    assert reopened.layers["change"].bands == ("tree", "crop")


# ---- writes and their errors -------------------------------------------------------------------


def test_write_rejects_bad_input_with_actionable_errors(tmp_path):
    layout, zone = make_zone(str(tmp_path))
    t = small_tiles()[0]
    good = layers_for(t)
    with pytest.raises(InvalidInputError, match=r"expected the core \(2, 60, 60\).*core_slice"):
        write_tile(zone, t, {"prediction": np.zeros((2, 70, 70), "float32")}, record_for())
    with pytest.raises(InvalidInputError, match="Did you mean 'prediction'"):
        write_tile(zone, t, {"predictoin": good["prediction"]}, record_for())
    with pytest.raises(InvalidInputError, match="config_hash"):
        write_tile(zone, t, good, {"input_items": []})
    with pytest.raises(InvalidInputError, match="not on the zone grid"):
        write_tile(zone, small_tile(30, 30), layers_for(small_tile(30, 30)), record_for())
    with pytest.raises(InvalidInputError, match="EPSG:32632"):
        write_tile(zone, small_tile(10, 20, 32632), good, record_for())
    q = np.full((60, 60), 1.5, dtype="float32")
    with pytest.raises(InvalidInputError, match="do not fit uint8"):
        write_tile(zone, t, {"quality": q}, record_for())
    assert read_record(layout, t.id) is None


def test_record_contents(store_root):
    layout, zone = make_zone(store_root)
    t = small_tiles()[0]
    data = layers_for(t)
    rec = write_tile(zone, t, data, {**record_for(), "model": "temporal_unet"})
    stored = read_record(layout, t.id)
    assert stored == json.loads(json.dumps(rec))
    assert stored["status"] == "done" and stored["tile_id"] == t.id
    assert stored["config_hash"] == "cfg-a" and stored["code_version"].startswith("geoxai ")
    assert stored["input_items"] == record_for()["input_items"]
    assert stored["timings"] == record_for()["timings"]
    assert stored["model"] == "temporal_unet"
    assert set(stored["layers"]) == {"prediction", "asos_sensitivity", "quality"}
    assert stored["layers"]["prediction"]["stats"]["valid_px"] == 2 * 60 * 60 - 2 * 9
    assert stored["created"].endswith("+00:00")
    np.testing.assert_array_equal(zone.read_tile(t, "prediction"), data["prediction"])


class _LyingStore(ZoneStore):
    """A zone store whose read-back returns other values (a silently corrupting backend)."""

    def read_tile(self, tile, layer):
        out = super().read_tile(tile, layer).copy()
        out.flat[0] = 7
        return out


def test_record_only_after_verified_chunks(tmp_path):
    layout, zone = make_zone(str(tmp_path))
    t = small_tiles()[0]
    write_tile(zone, t, layers_for(t), record_for())
    assert tile_is_done(layout, t, "cfg-a")
    lying = _LyingStore(layout, zone.grid, zone.layers)
    lying._group = zone._group
    with pytest.raises(StoreError, match="checksum mismatch"):
        write_tile(lying, t, layers_for(t, seed=1), record_for())
    # the old record was removed before the chunks were touched; no new one was written
    assert read_record(layout, t.id) is None
    assert not tile_is_done(layout, t, "cfg-a")
    assert plan_tiles(layout, [t], "cfg-a") == ([t], [])


def test_adjacent_concurrent_writers_never_corrupt_each_other(store_root):
    layout, zone = make_zone(store_root)
    tiles = small_tiles()[:4]  # a 2 x 2 block: every tile has neighbours
    errors: list[BaseException] = []

    def worker(tile: TileSpec):
        try:
            for seed in range(3):  # rewrites race with the neighbours' rewrites
                own = ZoneStore.open(layout, 32631)
                write_tile(own, tile, layers_for(tile, seed), record_for())
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in tiles]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for t in tiles:
        want = layers_for(t, 2)
        for name, values in want.items():
            np.testing.assert_array_equal(zone.read_tile(t, name), values)
        assert tile_is_done(layout, t, "cfg-a")
    assert [r["tile_id"] for r in read_records(layout)] == sorted(t.id for t in tiles)


# ---- planning ---------------------------------------------------------------------------------


def _chunk_path(zone: ZoneStore, layer: str, tile: TileSpec) -> str:
    return zone.loc.child(zone.chunk_key(layer, tile)).path


def test_plan_skips_done_and_replans_broken_tiles(store_root):
    layout, zone = make_zone(store_root)
    tiles = small_tiles()
    for t in tiles:
        write_tile(zone, t, layers_for(t), record_for())
    assert plan_tiles(layout, tiles, "cfg-a") == ([], tiles)
    fs = layout.location.filesystem()
    a, b, c, d, e = tiles
    # a: a chunk is missing
    fs.rm_file(_chunk_path(zone, "quality", a))
    # b: a chunk was replaced by an object of another size (a truncated copy)
    p = _chunk_path(zone, "prediction", b)
    fs.pipe_file(p, fs.cat_file(p)[:-1])
    # c: the record is corrupt JSON
    fs.pipe_file(layout.loc("records", f"{c.id}.json").path, b'{"status": "done", ')
    # d: the record belongs to another tile
    rec = read_record(layout, e.id)
    fs.pipe_file(layout.loc("records", f"{d.id}.json").path, json.dumps(rec).encode())
    # e: one flipped byte, same size: planning does not read chunks (geoxai verify does)
    p = _chunk_path(zone, "prediction", e)
    raw = bytearray(fs.cat_file(p))
    raw[-1] ^= 0xFF
    fs.pipe_file(p, bytes(raw))
    fs.invalidate_cache()
    states = {t.id: tile_state(layout, t, "cfg-a").state for t in tiles}
    assert states == {
        a.id: "invalid",
        b.id: "invalid",
        c.id: "invalid",
        d.id: "invalid",
        e.id: "done",
    }
    assert "missing" in tile_state(layout, a, "cfg-a").reason
    assert "recorded" in tile_state(layout, b, "cfg-a").reason
    todo, done = plan_tiles(layout, tiles, "cfg-a")
    assert todo == [a, b, c, d] and done == [e]
    found = verify_tiles(layout, [t.id for t in tiles])
    assert set(found.problems) == {a.id, b.id, c.id, d.id, e.id}
    assert "checksum" in found.problems[e.id] and "missing" in found.problems[a.id]
    # rewriting repairs them
    for t in [*todo, e]:
        write_tile(zone, t, layers_for(t), record_for())
    assert plan_tiles(layout, tiles, "cfg-a") == ([], tiles)
    assert verify_tiles(layout, [t.id for t in tiles]).problems == {}


def test_plan_config_change_force_and_statuses(tmp_path):
    layout, zone = make_zone(str(tmp_path))
    tiles = small_tiles()
    a, b, c, d, e = tiles
    for t in (a, b):
        write_tile(zone, t, layers_for(t), record_for())
    write_status(layout, c, "empty", "NoDataError: 0 scenes", record_for())
    write_status(layout, d, "failed", "CorruptDataError: truncated COG", record_for())
    assert plan_tiles(layout, tiles, "cfg-a") == ([d, e], [a, b, c])
    assert plan_tiles(layout, tiles, "cfg-a", redo_empty=True) == ([c, d, e], [a, b])
    assert plan_tiles(layout, tiles, "cfg-b") == (tiles, [])
    assert tile_state(layout, a, "cfg-b").state == "stale"
    assert plan_tiles(layout, tiles, "cfg-a", force=True) == (tiles, [])
    assert read_record(layout, d.id)["reason"] == "CorruptDataError: truncated COG"
    with pytest.raises(InvalidInputError, match="Did you mean 'failed'"):
        write_status(layout, e, "faild", "x", record_for())
    # a done record of the new config replaces the stale one
    write_tile(zone, a, layers_for(a), record_for("cfg-b"))
    assert tile_is_done(layout, a, "cfg-b") and not tile_is_done(layout, a, "cfg-a")


def test_plan_without_zone_store(tmp_path):
    layout = RunLayout(str(tmp_path / "nothing" / "2024"))
    tiles = small_tiles()
    assert plan_tiles(layout, tiles, "cfg-a") == (tiles, [])
    assert list(read_records(layout)) == []


# ---- change layer -----------------------------------------------------------------------------


def test_change_layer_against_previous_year(tmp_path):
    t = small_tiles()[0]
    prev_layout = RunLayout(str(tmp_path / "run" / "2023"))
    now_layout = RunLayout(str(tmp_path / "run" / "2024"))
    grid = ZoneGrid.from_tiles(small_tiles())[32631]
    prev = ZoneStore.create(prev_layout, grid, default_layers(("tree", "crop")))
    old = layers_for(t)
    write_tile(prev, t, old, record_for("cfg-2023"))

    new_pred = old["prediction"].copy()
    new_pred[0, 10, 10] += 0.5
    new_pred[1, 20, 20] -= 0.5
    new_pred[0, 30, 30] += 0.05
    out = change_layers(prev_layout, t, new_pred, threshold=0.2)
    assert out["change"].dtype == np.float32 and out["change_flag"].dtype == np.uint8
    np.testing.assert_allclose(out["change"][0, 10, 10], 0.5, rtol=1e-6)
    flag = out["change_flag"]
    assert flag[0, 10, 10] == 2 and flag[1, 20, 20] == 3 and flag[0, 30, 30] == 1
    assert (flag[:, :3, :3] == 0).all()  # NaN in both years: nodata
    assert set(np.unique(flag)) == {0, 1, 2, 3}
    assert (flag == 1).sum() == flag.size - 18 - 2

    now = ZoneStore.create(now_layout, grid, default_layers(("tree", "crop")))
    for spec in change_layer_specs(now.layers["prediction"]):
        now.ensure_layer(spec)
    write_tile(now, t, {"prediction": new_pred, **out}, record_for("cfg-2024"))
    assert tile_is_done(now_layout, t, "cfg-2024")
    np.testing.assert_array_equal(now.read_tile(t, "change_flag"), flag)

    with pytest.raises(NoDataError, match="no done record in the previous run"):
        change_layers(prev_layout, small_tiles()[1], new_pred, threshold=0.2)
    with pytest.raises(InvalidInputError, match="threshold"):
        change_layers(prev_layout, t, new_pred, threshold=-1)


def test_layer_spec_validation():
    with pytest.raises(ConfigError, match="reserved"):
        LayerSpec("x")
    with pytest.raises(ConfigError, match="letters, digits"):
        LayerSpec("my layer")
    with pytest.raises(ConfigError, match="unknown dtype"):
        LayerSpec("a", dtype="float33")
    spec = LayerSpec("p", bands=("a", "b"))
    assert LayerSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).same_as(spec)
