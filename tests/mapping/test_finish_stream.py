"""The end of a run reads the records as a stream: the report, the catalog and ``finish_run``
take a one-shot iterator (or a callable giving a fresh one) and keep a few fields per tile,
not the records."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq

import geoxai.mapping.records as records_mod
import geoxai.mapping.stages as stages
from geoxai.mapping.catalog import write_catalog
from geoxai.mapping.outcomes import TileOutcome
from geoxai.mapping.plan import RunPlan
from geoxai.mapping.records import read_records
from geoxai.mapping.report import render_report
from geoxai.mapping.report_digest import digest_of
from tests.mapping import test_catalog, test_report, test_report_scale

_STAMP = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")


def _page(text: str) -> str:
    return _STAMP.sub("generated <time>", text)


def test_report_from_a_one_shot_iterator_equals_the_one_from_a_list(tmp_path):
    """Every section (held-out scores, quicklooks, timings, failures) comes out the same."""
    layout, tiles, plan, records, this_run, mosaics = test_report.make_run(str(tmp_path), cogs=True)
    kw = {"tiles": tiles, "this_run": this_run, "wall_s": 60.0, "mosaics": mosaics}
    from_list = render_report(layout, test_report.CONFIG, records, **kw)
    from_iter = render_report(layout, test_report.CONFIG, iter(records), **kw)
    assert _page(from_iter) == _page(from_list)
    assert "all tiles" in from_list  # the pooled held-out row is there
    tiles, big = test_report_scale._records()  # 10,000 tiles: the smoothing table is cut
    for i, rec in enumerate(big[:120]):
        rec["info"] = {"heldout": test_report._heldout(i % 3).to_dict()}
    a = render_report(layout, test_report.CONFIG, big, tiles=tiles, wall_s=1.0)
    b = render_report(layout, test_report.CONFIG, (r for r in big), wall_s=1.0)
    assert _page(a) == _page(b)
    assert "tiles with the highest smoothing error of 120" in a


def test_the_digest_keeps_a_few_hundred_bytes_per_tile_whatever_the_record_size():
    """5,000 records of a real run's size (80 input item ids, timings, chunk checksums):
    the digest holds < 400 bytes per tile, the records themselves > 5 kB."""
    n = 5000

    def recs():
        for i in range(n):
            yield {
                "tile_id": f"32723_E{i % 1000:04d}_N{i // 1000:04d}",
                "status": "done" if i % 10 else "failed",
                "reason": "" if i % 10 else f"NoDataError: {i % 7} scenes",
                "code_version": "geoxai 1.0",
                "input_items": [f"S2B_MSIL2A_2024{k:04d}T133149_R081_T22KHG" for k in range(80)],
                "timings": {"cube_s": 1.0 + i, "smooth_s": 2.0, "predict_s": 3.0},
                "layers": {k: {"chunk": f"{k}/0.{i}.0", "sha256": "ab" * 32} for k in "abcd"},
            }

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        digest = digest_of(recs())
        held = tracemalloc.get_traced_memory()[0] - base
        full = list(recs())
        full_bytes = tracemalloc.get_traced_memory()[0] - base - held
    finally:
        tracemalloc.stop()
    assert len(digest) == n and digest.stage_timings()["cube"]["n"] == n - n // 10
    assert held / n < 400, held / n
    assert full_bytes / len(full) > 5_000, full_bytes / len(full)


def test_catalog_from_a_callable_streams_two_passes_and_equals_the_list_one(tmp_path):
    config, layout, done = test_catalog.make_run(str(tmp_path / "a"))
    calls = []

    def source():
        calls.append(1)
        return (r for r in read_records(layout))

    a = Path(write_catalog(layout, config, read_records(layout), items_json=False))
    table_a = pq.read_table(a.parent / "items.parquet").to_pylist()
    b = Path(write_catalog(layout, config, source, items_json=False))
    table_b = pq.read_table(b.parent / "items.parquet").to_pylist()
    assert len(calls) == 2  # the shapes, then the Items
    assert [r["id"] for r in table_b] == [r["id"] for r in table_a] == sorted(t.id for t in done)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("created", "updated")} for r in rows]

    assert strip(table_a) == strip(table_b)
    c = Path(write_catalog(layout, config, iter(read_records(layout)), items_json=False))
    assert pq.read_table(c.parent / "items.parquet").num_rows == len(done)


def test_finish_run_reads_records_as_a_one_shot_stream_and_drops_a_broken_tile(
    tmp_path, monkeypatch
):
    """``read_records`` returning a generator (the records index contract): ``finish_run``
    reads it three times (COG check + report; the catalog's shapes, then its Items); a tile
    whose COG was truncated is out of the catalog, named by the report, and its record is
    deleted."""
    layout, tiles, plan, _, this_run, _ = test_report.make_run(str(tmp_path), cogs=True)
    bad = tiles[1]
    path = tmp_path / "demo-run" / "2024" / "cogs" / "prediction" / f"{bad.id}.tif"
    path.write_bytes(path.read_bytes()[:100])
    passes = []

    def one_shot(lay):
        passes.append(1)
        return (r for r in records_mod.read_records(lay))

    monkeypatch.setattr(stages, "read_records", one_shot)
    cfg = test_report._finish_config(str(tmp_path))
    run_plan = RunPlan(layout.root, "c0ffee", tuple(tiles), [], list(plan.done))
    outcomes = {k: TileOutcome.from_dict(v) for k, v in this_run.items()}
    url = stages.finish_run(cfg, run_plan, outcomes, wall_s=60.0)
    assert len(passes) == 3  # COG check + report; catalog: Item shapes, then Items
    text = open(url, encoding="utf-8").read()
    assert bad.id in text and "after the tile phase" in text
    items = pq.read_table(Path(layout.root) / "catalog" / "items.parquet").to_pylist()
    assert sorted(r["id"] for r in items) == sorted(t.id for t in (tiles[0], tiles[2]))
    assert bad.id not in {r["tile_id"] for r in read_records(layout)}
