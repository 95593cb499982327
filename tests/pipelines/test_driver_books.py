"""The driver's bookkeeping without a cluster: a tile the driver sees fail gets a failed record
over any older done one (issue 21), and the periodic wait line says what the run waits for,
mentioning node loss only after a node was lost (issue 17)."""

from __future__ import annotations

import pytest

from geoxai.config import load_run_config
from geoxai.errors import StoreError
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.protocol import STAGES
from geoxai.mapping.records import read_record, write_tile
from geoxai.mapping.settings import run_layout
from pipelines.run import RunSummary, _Books, _Progress, wait_line
from tests.fixtures.zones import layers_for, small_tile


def _config(root: str):
    return load_run_config(
        {
            "name": "books",
            "year": 2024,
            "aoi": "4,50,4.1,50.1",
            "stac": {"url": "http://127.0.0.1:9/"},
            "store": {"root": root},
            "models": {"prediction": "bundle"},
        }
    )


def test_a_failed_tile_never_keeps_its_older_done_record(tmp_path):
    cfg = _config(str(tmp_path))
    layout = run_layout(cfg)
    t = small_tile(10, 20)
    zone = ZoneStore.create(layout, ZoneGrid.from_tiles([t])[32631], default_layers(("a", "b")))
    write_tile(zone, t, layers_for(t), {"config_hash": "an-earlier-config"})
    assert read_record(layout, t.id)["status"] == "done"
    summary = RunSummary(layout.root, 1, 0)
    books = _Books(summary, _Progress(1, enabled=False), STAGES, cfg)
    books.fail(t, RuntimeError("Zstd decompression error"))
    rec = read_record(layout, t.id)
    assert rec["status"] == "failed" and rec["config_hash"] == cfg.output_hash()
    assert rec["reason"] == "RuntimeError: Zstd decompression error"
    assert summary.outcomes[t.id].status == "failed" and books.bar.counts["failed"] == 1


def test_the_books_keep_each_outcome_without_its_record(tmp_path):
    """A done tile's record (80 input item ids here) stays on the store; the summary keeps its
    status, reason and timings only, and its local-report form still carries the timings."""
    from geoxai.mapping.outcomes import TileOutcome

    cfg = _config(str(tmp_path))
    summary = RunSummary("s3://x", 1, 0)
    books = _Books(summary, _Progress(1, enabled=False), STAGES, cfg)
    t = small_tile(3, 4)
    rec = {
        "tile_id": t.id,
        "status": "done",
        "timings": {"cube_s": 3.0, "map_s": 1.5},
        "input_items": [f"S2B_MSIL2A_2024{i:04d}" for i in range(80)],
    }
    books.record(TileOutcome.from_dict(rec))
    kept = summary.outcomes[t.id]
    assert (kept.tile_id, kept.status, kept.reason) == (t.id, "done", "")
    assert not kept.record and dict(kept.timings) == rec["timings"]
    assert kept.to_dict() == {
        "tile_id": t.id,
        "status": "done",
        "reason": "",
        "timings": rec["timings"],
    }
    assert kept.compact() is kept


class _DeadStore:
    calls = 0

    def record_empty_or_failed(self, tile, cube, config):
        _DeadStore.calls += 1
        raise StoreError("Could not write to s3://gone: connection refused")


def test_a_dead_store_still_leaves_the_failure_in_the_summary(tmp_path, caplog):
    cfg = _config(str(tmp_path))
    summary = RunSummary("s3://gone", 2, 0)
    books = _Books(summary, _Progress(2, enabled=False), _DeadStore(), cfg)
    a, b = small_tile(1, 1), small_tile(2, 1)
    books.fail(a, ValueError("x"))
    books.fail(b, ValueError("y"))
    assert [o.status for o in summary.outcomes.values()] == ["failed", "failed"]
    assert summary.outcomes[b.id].reason == "ValueError: y"
    assert _DeadStore.calls == 1  # the store is not asked again once it is known to be gone
    assert "was not written" in caplog.text


def test_wait_line_says_what_runs_and_for_how_long():
    running = [
        ("map", "T1", 25.0, 0),
        ("map", "T2", 50.0, 0),  # queued on actor 0 behind T1
        ("map", "T3", 40.0, 1),
        ("cube", "T4", 60.0, None),
    ]
    line = wait_line(100.0, running, n_built=1, n_pending=4, n_up=2, n_workers=2)
    assert line.startswith("waiting for 3 tiles on 2 actors and 1 cube build;")
    assert "longest running: tile T1 for 75 s in stage map (smooth, predict, write)" in line
    assert "1 cubes queued, 4 tiles not started; 2 of 2 tile actors up" in line
    assert "node" not in line


@pytest.mark.parametrize("dead", [0, 1])
def test_wait_line_mentions_node_loss_only_after_one(dead):
    line = wait_line(100.0, [("cube", "T4", 90.0, None)], 2, 0, 1, 3, dead_nodes=dead)
    assert "1 of 3 tile actors up" in line
    assert ("node loss" in line) == bool(dead)
    if dead:
        assert "1 node lost during the run" in line and "ray status" in line
    else:
        assert "the others are starting" in line
