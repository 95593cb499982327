"""report.html at scale: a synthetic 10,000-tile run gives a bounded page whose tables summarise
(failure reasons with counts and examples, timing percentiles, counts per zone), not one row per
tile, and whose tile status map is one image per zone."""

from __future__ import annotations

import numpy as np

from geoxai.geo.grid import TileSpec
from geoxai.io.layout import RunLayout
from geoxai.mapping.report import render_report
from geoxai.mapping.report_summary import MAX_ROWS, failure_groups, reason_key
from tests.mapping.test_report import CONFIG, _Page, _png_shape

N = 10_000


def _records() -> tuple[list[TileSpec], list[dict]]:
    """100 x 50 tiles in each of two zones: 9,000 done with cube_s = 1 .. 9000 s (shuffled),
    600 failed 'NoDataError: <k> scenes', 300 failed with a store timeout naming the tile,
    100 empty."""
    tiles = [
        TileSpec(epsg, c, r, 0) for epsg in (32722, 32723) for r in range(50) for c in range(100)
    ]
    order = np.random.default_rng(0).permutation(N)
    records = []
    for k, i in enumerate(order):
        t = tiles[i]
        if k < 9000:
            rec = {"status": "done", "timings": {"cube_s": float(k + 1), "predict_s": 2.0}}
        elif k < 9600:
            rec = {"status": "failed", "reason": f"NoDataError: {k % 7} scenes"}
        elif k < 9900:
            rec = {"status": "failed", "reason": f"StoreError: timeout after 30 s on {t.id}"}
        else:
            rec = {"status": "empty", "reason": "NoDataError: every scene cloudy"}
        records.append({"tile_id": t.id, **rec})
    return tiles, records


def test_a_10000_tile_report_is_bounded_and_summarises(tmp_path):
    tiles, records = _records()
    layout = RunLayout(str(tmp_path / "big" / "2024"))
    text = render_report(layout, CONFIG, records, tiles=tiles, wall_s=3600.0)
    assert len(text.encode()) < 1_000_000, len(text)  # ~0.3 MB; no row or shape per tile
    page = _Page()
    page.feed(text)
    # failures: grouped reasons, most frequent first, with counts and example tiles
    cells = page.cells["failures"]
    head = cells.index("example tiles")
    rows = [cells[j : j + 4] for j in range(head + 1, head + 1 + 3 * 4, 4)]
    assert [(r[0], r[1]) for r in rows] == [("failed", "600"), ("failed", "300"), ("empty", "100")]
    assert rows[0][2].startswith("NoDataError: ") and rows[0][2].endswith(" scenes")
    assert rows[1][2].startswith("StoreError: timeout after 30 s on ")
    assert len(rows[0][3].split()) == 5  # five example tiles
    assert text.count("<table id='failed-tiles'>") == 1
    assert cells.count("failed") + cells.count("empty") == 3 + MAX_ROWS  # groups + cut list
    assert f"The first {MAX_ROWS} of 1,000 tiles" in text
    # timings: percentiles of 1 .. 9000 s (linear interpolation)
    t = page.cells["timings"]
    i = t.index("cube")
    want = np.percentile(np.arange(1, 9001), [50, 90, 95, 99])
    assert t[i + 1] == "9000" and t[i + 2] == "4500.50"
    assert (
        t[i + 3 : i + 7]
        == [f"{v:.2f}" for v in want]
        == [
            "4500.50",
            "8100.10",
            "8550.05",
            "8910.01",
        ]
    )
    assert t[i + 7] == "9000.00"
    # counts per zone and status
    s = page.cells["summary"]
    j = s.index("EPSG:32722")
    per_status = [int(v.replace(",", "")) for v in s[j + 1 : j + 7]]
    assert sum(per_status[:5]) == 5000 == per_status[5]
    # one status image per zone, one cell per tile
    assert len(page.images["tile-status"]) == 2
    for data in page.images["tile-status"]:
        h, w = _png_shape(data)[:2]
        assert h > 100 and w > 100


def test_reasons_group_by_their_text_without_numbers_and_tile_ids():
    assert reason_key("NoDataError: 0 scenes") == reason_key("NoDataError: 12 scenes")
    assert reason_key("x on 32722_E0001_N0002\nTraceback ...") == "x on <tile>"
    a, b = TileSpec(32722, 1, 1, 0), TileSpec(32722, 2, 1, 0)
    status = {
        a.id: {"tile": a, "status": "empty", "reason": "NoDataError: 0 scenes"},
        b.id: {"tile": b, "status": "failed", "reason": ""},
    }
    groups = failure_groups(status)
    assert [(g["status"], g["count"], g["reason"]) for g in groups] == [
        ("failed", 1, "(no reason recorded)"),
        ("empty", 1, "NoDataError: 0 scenes"),
    ]
