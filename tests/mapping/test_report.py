"""report.html: the expected sections, counts, failure reasons, timings and embedded images."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest

from geoxai.io.cog import write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.mosaic import build_mosaics
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.records import read_records, write_status, write_tile
from geoxai.mapping.report import render_report, stage_timings, tile_statuses, write_report
from geoxai.temporal.heldout import heldout_score
from geoxai.temporal.smoothing import SmoothingParams
from tests.fixtures.zones import layers_for, small_tile

CONFIG = {"name": "demo-run", "year": 2024, "aoi": "4.0,50.0,5.0,51.0", "config_hash": "c0ffee"}


class _Page(HTMLParser):
    """Collects section ids, table cells per section, images and figure attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.cells: dict[str, list[str]] = {}
        self.images: dict[str, list[bytes]] = {}
        self.figures: list[dict[str, str]] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        elif tag in ("td", "th"):
            self._in_cell = True
            self.cells.setdefault(self.sections[-1], []).append("")
        elif tag == "img":
            src = a["src"]
            assert src.startswith("data:image/png;base64,")
            data = base64.b64decode(src.split(",", 1)[1])
            self.images.setdefault(self.sections[-1], []).append(data)
        elif tag == "figure" and "data-layer" in a:
            self.figures.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[self.sections[-1]][-1] += data


def _heldout(seed: int):
    """A real held-out score of a small noisy seasonal series (3 bands, 50 pixels)."""
    rng = np.random.default_rng(seed)
    days = np.sort(rng.uniform(-40, 400, 70))
    season = 0.2 + 0.15 * np.sin(2 * np.pi * days / 365.0)
    vals = season[:, None, None] + rng.normal(0, 0.01, (70, 3, 50))
    w = (rng.random((70, 50)) > 0.3).astype(float)
    sp = SmoothingParams(year=2024)
    return heldout_score(vals, w, days, sp, channels=("B04", "B08", "B11"))


def make_run(root: str, *, cogs: bool):
    layout = RunLayout(root + "/demo-run/2024")
    tiles = [small_tile(c, r) for r in (20, 21) for c in (10, 11, 12)]
    zone = ZoneStore.create(layout, ZoneGrid.from_tiles(tiles)[32631], default_layers(("tree",)))
    done = tiles[:3]
    for i, t in enumerate(done):
        layers = layers_for(t)
        layers["prediction"] = layers["prediction"][:1]
        record = {
            "config_hash": "c0ffee",
            "timings": {"cube_s": 10.0 + i, "predict_s": 2.0 * (i + 1), "asos_s": 5.0},
        }
        if i < 2:  # two tiles with a held-out score of their smoothing
            record["info"] = {"heldout": _heldout(i).to_dict()}
        if cogs:
            record["cogs"] = write_tile_cogs(layout, zone, t, layers)
        write_tile(zone, t, layers, record)
    write_status(
        layout, tiles[3], "failed", "CorruptDataError: truncated B04", {"config_hash": "x"}
    )
    write_status(layout, tiles[4], "empty", "NoDataError: 0 scenes", {"config_hash": "x"})
    mosaics = build_mosaics(layout, done, list(zone.layers.values())) if cogs else {}
    plan = SimpleNamespace(tiles=tiles, done=done[:1])  # tiles[0] was done by an earlier run
    records = list(read_records(layout))
    this_run = {r["tile_id"]: r for r in records if r["tile_id"] != tiles[0].id}
    return layout, tiles, plan, records, this_run, mosaics


def _png_shape(data: bytes) -> tuple[int, ...]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(io.BytesIO(data), format="png").shape


@pytest.mark.parametrize("cogs", [True, False], ids=["from-vrt", "from-zarr"])
def test_report_sections_counts_and_images(tmp_path, cogs):
    layout, tiles, plan, records, this_run, mosaics = make_run(str(tmp_path), cogs=cogs)
    url = write_report(
        layout, CONFIG, records, plan=plan, this_run=this_run, wall_s=120.0, mosaics=mosaics
    )
    assert url == layout.report_url()
    page = _Page()
    page.feed(open(url, encoding="utf-8").read())
    assert page.sections == [
        "summary",
        "failures",
        "timings",
        "smoothing",
        "quicklooks",
        "tile-status",
        "provenance",
    ]
    smoothing = page.cells["smoothing"]
    assert tiles[0].id in smoothing and tiles[1].id in smoothing and tiles[2].id not in smoothing
    pooled = _heldout(0) + _heldout(1)
    i = smoothing.index("all tiles")
    assert smoothing[i + 2] == str(pooled.n_held)  # after the empty pixels cell
    assert smoothing[i + 3] == f"{pooled.mean_rmse('smooth'):.4f}"
    assert smoothing[i + 6] == f"{pooled.mean_rmse('linear'):.4f}"
    summary = page.cells["summary"]
    row = summary[summary.index("tiles total / done / skipped / empty / failed / pending") + 1]
    assert row == "6 / 2 / 1 / 1 / 1 / 1"
    assert summary[summary.index("config hash") + 1] == "c0ffee"
    assert summary[summary.index("tiles per minute (this run)") + 1] == "2.0"  # 4 tiles in 2 min
    assert summary[summary.index("year") + 1] == "2024"
    assert summary[summary.index("AOI") + 1] == CONFIG["aoi"]
    assert summary[summary.index("code version (tiles)") + 1].startswith("geoxai ")

    failures = page.cells["failures"]
    assert "CorruptDataError: truncated B04" in failures and "NoDataError: 0 scenes" in failures
    assert tiles[3].id in failures and tiles[4].id in failures

    timings = page.cells["timings"]
    for stage in ("cube", "predict", "asos"):
        assert stage in timings
    i = timings.index("predict")  # n, mean, p50, p90, p95, p99, max of 2, 4, 6 s
    assert timings[i + 1 : i + 8] == ["3", "4.00", "4.00", "5.60", "5.80", "5.96", "6.00"]

    assert {(f["data-layer"], f["data-epsg"]) for f in page.figures} == {
        ("prediction", "32631"),
        ("asos_sensitivity", "32631"),
    }
    for section in ("timings", "quicklooks", "tile-status"):
        for data in page.images[section]:
            h, w = _png_shape(data)[:2]
            assert h > 100 and w > 100
    assert len(page.images["quicklooks"]) == 2 and len(page.images["tile-status"]) == 1
    html_text = open(url, encoding="utf-8").read()
    assert f"<code>geoxai view {layout.root}</code>" in html_text  # the viewer command


def test_report_on_each_store(store_root):
    layout, tiles, plan, records, this_run, mosaics = make_run(store_root, cogs=False)
    url = write_report(layout, CONFIG, records, plan=plan, this_run=this_run, wall_s=60.0)
    fs = layout.location.filesystem()
    fs.invalidate_cache()
    text = fs.cat_file(layout.loc("report.html").path).decode()
    assert url.endswith("/demo-run/2024/report.html") and "<section id='tile-status'>" in text


def test_statuses_and_timings_helpers():
    a, b, c, d = (small_tile(i, 0) for i in range(4))
    records = [
        {"tile_id": a.id, "status": "done", "timings": {"cube_s": 1.0, "bad": "x"}},
        {"tile_id": b.id, "status": "done", "timings": {"cube_s": 3.0}},
        {"tile_id": c.id, "status": "failed", "reason": "boom", "timings": {"cube_s": 99.0}},
    ]
    st = tile_statuses([a, b, c, d], records, {b.id: records[1]}, done_before=[a])
    assert {k: v["status"] for k, v in st.items()} == {
        a.id: "skipped",
        b.id: "done",
        c.id: "failed",
        d.id: "pending",
    }
    assert st[c.id]["reason"] == "boom"
    t = stage_timings(records)
    assert set(t) == {"cube"}  # failed tiles and non-numbers do not count
    assert t["cube"]["mean"] == 2.0 and t["cube"]["n"] == 2


def test_report_without_outputs_says_so(tmp_path):
    layout = RunLayout(str(tmp_path / "empty" / "2024"))
    tiles = [small_tile(1, 1)]
    html = render_report(layout, CONFIG, [], tiles=tiles, wall_s=None)
    assert "No outputs to show yet." in html and "No timings recorded" in html
    assert "pending" in html


def _finish_config(root: str):
    from geoxai.config import load_run_config

    return load_run_config(
        {
            "name": CONFIG["name"],
            "year": CONFIG["year"],
            "aoi": CONFIG["aoi"],
            "stac": {"url": "http://127.0.0.1:9/", "collection": "sentinel-2-l2a"},
            "store": {"root": root},
            "models": {"prediction": "bundle"},
        }
    )


def test_a_cog_damaged_after_the_tile_phase_is_named_by_the_report(tmp_path, caplog):
    """A done tile's COG truncated after the tile phase, found by its size when the run's finish
    lists the COGs (a flipped byte is `geoxai verify`'s, tests/mapping/test_cog_checks.py): the
    report is written, names the tile and says a rerun redoes it; the record is gone, the
    mosaics and the catalog leave the tile out, and the next planning redoes it."""
    from geoxai.mapping.outcomes import TileOutcome
    from geoxai.mapping.plan import RunPlan
    from geoxai.mapping.records import plan_tiles
    from geoxai.mapping.stages import finish_run

    layout, tiles, plan, records, this_run, _ = make_run(str(tmp_path), cogs=True)
    bad = tiles[1]
    path = tmp_path / "demo-run" / "2024" / "cogs" / "prediction" / f"{bad.id}.tif"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    cfg = _finish_config(str(tmp_path))
    run_plan = RunPlan(layout.root, "c0ffee", tuple(tiles), [], list(plan.done))
    outcomes = {k: TileOutcome.from_dict(v) for k, v in this_run.items()}
    url = finish_run(cfg, run_plan, outcomes, wall_s=60.0)
    text = open(url, encoding="utf-8").read()
    assert "Traceback" not in text
    page = _Page()
    page.feed(text)
    assert "invalidated" in page.sections
    cells = page.cells["invalidated"]
    assert bad.id in cells and "after the tile phase" in cells
    assert any("truncated or replaced" in c for c in cells)
    assert any("a rerun redoes the tile" in c for c in cells)
    failures = page.cells["failures"]
    assert bad.id in failures and any("outputs invalidated" in c for c in failures)
    assert any(bad.id in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "demo-run" / "2024" / "records" / f"{bad.id}.json").exists()
    vrt = (tmp_path / "demo-run" / "2024" / "mosaics" / "zone=32631" / "prediction.vrt").read_text()
    assert bad.id not in vrt and tiles[0].id in vrt
    catalog = " ".join(p.name for p in (tmp_path / "demo-run" / "2024" / "catalog").rglob("*"))
    assert bad.id not in catalog and tiles[0].id in catalog
    todo, _ = plan_tiles(layout, tiles[:3], "c0ffee")
    assert todo == [bad]


def test_a_mosaic_that_cannot_be_decoded_falls_back_to_the_zone_store(tmp_path):
    """A COG truncated behind the checks' back: the quicklook says the mosaic could not be
    decoded and shows the zone store instead; no traceback."""
    layout, tiles, plan, records, this_run, mosaics = make_run(str(tmp_path), cogs=True)
    path = tmp_path / "demo-run" / "2024" / "cogs" / "prediction" / f"{tiles[1].id}.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    html_text = render_report(
        layout, CONFIG, records, tiles=tiles, this_run=this_run, mosaics=mosaics
    )
    assert "the VRT mosaic could not be decoded: RasterioIOError" in html_text
    assert "data-layer='prediction'" in html_text


def test_local_report_when_the_store_cannot_be_read(tmp_path):
    """The store is gone at the end of a run: the page comes from the driver's outcomes,
    reads nothing from the store and names the error."""
    from geoxai.mapping.report import write_local_report

    a, b, c = (small_tile(i, 0) for i in range(3))
    layout = RunLayout("s3://no-such-bucket-i21/run/2024")
    plan = SimpleNamespace(tiles=[a, b, c], done=[], invalidated={b.id: "chunk x missing"})
    this_run = {
        a.id: {"tile_id": a.id, "status": "done", "timings": {"cube_s": 2.0}},
        b.id: {"tile_id": b.id, "status": "failed", "reason": "StoreError: endpoint gone"},
    }
    path = write_local_report(
        layout,
        CONFIG,
        plan,
        this_run,
        wall_s=30.0,
        store_error="the run stopped: StoreError: Could not write to s3://no-such-bucket-i21",
        directory=tmp_path,
    )
    assert path.startswith(str(tmp_path)) and "demo-run-2024" in path
    page = _Page()
    page.feed(open(path, encoding="utf-8").read())
    summary = page.cells["summary"]
    assert summary[
        summary.index("tiles total / done / skipped / empty / failed / pending") + 1
    ] == ("3 / 1 / 0 / 0 / 1 / 1")
    assert "Could not write to s3://no-such-bucket-i21" in summary[summary.index("store") + 1]
    assert "StoreError: endpoint gone" in page.cells["failures"]
    assert b.id in page.cells["invalidated"]
