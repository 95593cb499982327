"""``report.html``: one self-contained page that says what a run made, how fast, and what failed.

Sections (each a ``<section id=...>``): ``summary`` (tiles total/done/skipped/empty/failed/
pending, tiles per minute, wall time, config hash, code version, AOI, year, and the counts per
zone and status), ``failures`` (the reasons grouped, most frequent first, with counts and example
tiles; then the failed and empty tiles one per row up to :data:`MAX_ROWS`), ``timings``
(per stage across tiles: mean, p50/p90/p95/p99, max and total seconds, and a bar chart),
``smoothing`` (held-out RMSE of the smoothing against four baselines, pooled over the tiles,
:mod:`geoxai.temporal.heldout`, and per tile up to :data:`MAX_ROWS`, the worst first),
``quicklooks`` (prediction and ASOS sensitivity per zone, downsampled, with colourbars),
``tile-status`` (an image per zone of every tile of the plan coloured by status, one cell per
tile, in zone coordinates), ``accuracy`` (when ``geoxai assess`` left its section in
``assessment.html``: error matrix, accuracies and areas with 95 % intervals,
:mod:`geoxai.mapping.assess_report`) and ``provenance`` (the run config). Images are PNGs
embedded as base64, so the file can be mailed or opened from S3 as is. Matplotlib runs with the
Agg backend. Nothing in the page grows with the number of tiles beyond those bounds
(:mod:`geoxai.mapping.report_summary`): a 240,000-tile report stays a few MB.

Quicklooks: :mod:`geoxai.mapping.quicklook`. Tiles whose outputs did not check out are listed
in an ``invalidated`` section (found at planning: redone in this run; found after the tile
phase: their record was deleted and a rerun redoes them). When the store cannot be read at the
end of a run, :func:`write_local_report` writes the page from the driver's outcomes to a local
file instead.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from geoxai.geo.grid import TILE_SIZE_M, TileSpec, tile_from_id
from geoxai.io.layout import ACCURACY_SECTION_FILE, RunLayout
from geoxai.io.store import upload_file
from geoxai.mapping.quicklook import quicklook
from geoxai.mapping.report_digest import RecordDigest, digest_of, smoothing_section, stage_timings
from geoxai.mapping.report_summary import (
    MAX_GROUPS,
    MAX_ROWS,
    STATUS_COLOURS,
    failure_groups,
    status_map_png,
    timings_chart,
    zone_counts,
)
from geoxai.provenance import code_version
from geoxai.secrets import scrub

__all__ = [
    "ACCURACY_SECTION_FILE",
    "STATUS_COLOURS",
    "tile_statuses",
    "stage_timings",
    "render_report",
    "write_report",
    "write_local_report",
]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1f2933;
background:#f5f7fa}
header{background:#12343b;color:#fff;padding:22px 36px}
header h1{margin:0;font-size:24px;font-weight:600}
header p{margin:6px 0 0;opacity:.85;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:12px 36px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);
margin:18px 0;padding:18px 24px}
h2{font-size:18px;margin:0 0 12px;color:#12343b}
table{border-collapse:collapse;font-size:14px;width:100%}
th,td{padding:6px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f0f4f8;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:14px}
.kpi{flex:1 1 130px;border-radius:6px;padding:10px 14px;background:#f0f4f8}
.kpi b{display:block;font-size:24px}
.kpi span{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#52606d}
.swatch{display:inline-block;width:11px;height:11px;border:1px solid #888;margin-right:6px;
vertical-align:-1px}
figure{margin:10px 0}
figure img{max-width:100%;border:1px solid #e4e7eb;border-radius:4px}
figcaption{font-size:13px;color:#52606d}
code,pre{font-family:SFMono-Regular,Consolas,monospace;font-size:12px}
pre{background:#f0f4f8;padding:12px;border-radius:6px;overflow:auto;max-height:420px}
.ok{color:#2e7d32}.bad{color:#c62828}
"""


def tile_statuses(
    tiles: Sequence[TileSpec],
    records: Iterable[Mapping[str, Any]] | RecordDigest,
    this_run: Mapping[str, Mapping[str, Any]] | None = None,
    done_before: Sequence[TileSpec] = (),
) -> dict[str, dict[str, Any]]:
    """Status of every planned tile: ``done`` (this run), ``skipped`` (done before), ``empty``,
    ``failed`` or ``pending`` (not reached: interrupted run), with the reason where there is one.

    ``records``: the stored records (read once) or their :class:`RecordDigest`. ``this_run``
    (tile id -> outcome of this invocation) wins over the stored records: it also holds
    failures the driver could not write a record for (a worker that died).
    """
    by_id = digest_of(records).by_id
    before = {t.id for t in done_before}
    out: dict[str, dict[str, Any]] = {}
    for t in tiles:
        rec = (this_run or {}).get(t.id)
        if rec is not None:
            status, reason = str(rec.get("status", "failed")), str(rec.get("reason", "") or "")
        elif t.id in before:
            status, reason = "skipped", by_id.get(t.id, ("", ""))[1]
        elif t.id in by_id:
            status, reason = by_id[t.id]
            if status == "done" and this_run is not None:
                status = "skipped"
        else:
            status, reason = "pending", ""
        if status not in STATUS_COLOURS:
            status = "failed"
        out[t.id] = {"tile": t, "status": status, "reason": reason}
    return out


def _accuracy(layout: RunLayout) -> str:
    """The ``accuracy`` section that ``geoxai assess`` left in ``<root>/assessment.html`` (an
    HTML fragment, see :mod:`geoxai.mapping.assess_report`), or nothing."""
    loc = layout.at(layout.accuracy_section_url())
    try:
        return bytes(loc.filesystem().cat_file(loc.path)).decode("utf-8")
    except FileNotFoundError:
        return ""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _config_doc(config: Any) -> dict[str, Any]:
    if hasattr(config, "model_dump"):
        return scrub(config.model_dump(mode="json"))
    return scrub(dict(config)) if isinstance(config, Mapping) else {"config": str(config)}


def render_report(
    layout: RunLayout,
    config: Any,
    records: Iterable[Mapping[str, Any]] | RecordDigest,
    *,
    tiles: Sequence[TileSpec] | None = None,
    done_before: Sequence[TileSpec] = (),
    this_run: Mapping[str, Mapping[str, Any]] | None = None,
    wall_s: float | None = None,
    mosaics: Mapping[int, Mapping[str, str]] | None = None,
    invalidated: Mapping[str, str] | None = None,
    invalidated_late: Mapping[str, str] | None = None,
    store_error: str | None = None,
) -> str:
    """The report as an HTML string (see the module docstring for its sections).

    Args:
        layout: the run's layout (zone stores are read for the quicklooks).
        config: the RunConfig (or a dict with ``name``, ``year``, ``aoi``, ``config_hash``).
        records: the stored tile records (:func:`geoxai.mapping.records.read_records`), read
            once (an iterator will do), or their :class:`RecordDigest`.
        tiles: every tile of the plan; default the tiles of the records.
        done_before: tiles skipped because they were already done.
        this_run: tile id -> outcome of this invocation (wins over ``records``).
        wall_s: wall time of the run, seconds (for tiles/min).
        mosaics: epsg -> layer -> VRT URL (:func:`geoxai.io.mosaic.build_mosaics`).
        invalidated: tile id -> why its stored outputs did not check out at planning (its
            record was deleted and the tile redone in this run).
        invalidated_late: tile id -> why its outputs did not check out after the tile phase
            (record deleted; the tile shows as failed and a rerun redoes it).
        store_error: the store could not be read at the end of the run (one line): no
            quicklooks or accuracy section are read from it, and the summary says so.
    """

    cfg = _config_doc(config)
    name, year, aoi = cfg.get("name", "run"), cfg.get("year", ""), cfg.get("aoi", "")
    chash = config.output_hash() if hasattr(config, "output_hash") else cfg.get("config_hash", "")
    digest = digest_of(records)
    if tiles is None:
        tiles = [
            tile_from_id(t, tile_size_m=digest.sizes.get(t, TILE_SIZE_M)) for t in digest.by_id
        ]
    status = tile_statuses(tiles, digest, this_run, done_before)
    late = dict(invalidated_late or {})
    for tile_id, why in late.items():
        if tile_id in status:
            status[tile_id]["status"] = "failed"
            status[tile_id]["reason"] = f"outputs invalidated ({why}); a rerun redoes the tile"
    counts = {s: sum(1 for d in status.values() if d["status"] == s) for s in STATUS_COLOURS}
    processed = counts["done"] + counts["failed"] + counts["empty"]
    minutes = (wall_s or 0.0) / 60
    rate = f"{processed / minutes:.1f}" if minutes > 0 else "n/a"
    versions = sorted(digest.versions)
    timings = digest.stage_timings()
    zones = sorted({t.epsg for t in tiles})
    done_tiles = [d["tile"] for d in status.values() if d["status"] in ("done", "skipped")]
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>geoxai report — {_e(name)} {_e(year)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{_e(name)} · {_e(year)}</h1><p>geoxai mapping run · AOI {_e(aoi)} · "
        f"{len(tiles)} tiles in {len(zones)} UTM zone(s) · generated {now}</p></header><main>",
    ]
    # summary
    kpi = [
        ("tiles total", len(tiles), None),
        ("done", counts["done"], "done"),
        ("skipped (done before)", counts["skipped"], "skipped"),
        ("empty", counts["empty"], "empty"),
        ("failed", counts["failed"], "failed"),
        ("pending", counts["pending"], "pending"),
    ]
    parts.append("<section id='summary'><h2>Run summary</h2><div class='kpis'>")
    for label, value, key in kpi:
        sw = f"<i class='swatch' style='background:{STATUS_COLOURS[key]}'></i>" if key else ""
        parts.append(f"<div class='kpi'><b>{value}</b><span>{sw}{_e(label)}</span></div>")
    parts.append("</div><table>")
    rows = [
        ("run", name),
        ("year", year),
        ("AOI", aoi),
        (
            "tiles total / done / skipped / empty / failed / pending",
            " / ".join(
                str(v)
                for v in (
                    len(tiles),
                    counts["done"],
                    counts["skipped"],
                    counts["empty"],
                    counts["failed"],
                    counts["pending"],
                )
            ),
        ),
        ("tiles per minute (this run)", rate),
        ("wall time", _fmt_s(wall_s) if wall_s is not None else "n/a"),
        ("config hash", chash),
        ("code version (tiles)", ", ".join(versions) or "n/a"),
        ("code version (report)", code_version()),
        ("UTM zones", ", ".join(f"EPSG:{z}" for z in zones)),
        ("run root", layout.root),
    ]
    if store_error:
        rows.append(("store", f"not readable at the end of the run: {store_error}"))
    for k, v in rows:
        parts.append(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>")
    parts.append("</table>")
    if len(zones) > 1:
        head = "".join(f"<th>{_e(st)}</th>" for st in STATUS_COLOURS)
        parts.append(f"<table id='zone-counts'><tr><th>UTM zone</th>{head}<th>total</th></tr>")
        for epsg, c in zone_counts(status).items():
            cells = "".join(f"<td class='num'>{c[st]:,}</td>" for st in STATUS_COLOURS)
            parts.append(
                f"<tr><td>EPSG:{epsg}</td>{cells}<td class='num'>{sum(c.values()):,}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section>")
    # failures
    parts.append(_failures_section(status))
    parts.append(_invalidated_section(dict(invalidated or {}), late, status))
    # timings
    parts.append("<section id='timings'><h2>Timing per stage</h2>")
    if timings:
        parts.append(
            "<table><tr><th>stage</th><th>tiles</th><th>mean (s)</th><th>p50 (s)</th>"
            "<th>p90 (s)</th><th>p95 (s)</th><th>p99 (s)</th><th>max (s)</th><th>total</th></tr>"
        )
        for stage, t in sorted(timings.items(), key=lambda kv: -kv[1]["total"]):
            cells = "".join(
                f"<td class='num'>{t[k]:.2f}</td>"
                for k in ("mean", "p50", "p90", "p95", "p99", "max")
            )
            parts.append(
                f"<tr><td>{_e(stage)}</td><td class='num'>{int(t['n'])}</td>{cells}"
                f"<td class='num'>{_fmt_s(t['total'])}</td></tr>"
            )
        parts.append("</table>")
        parts.append(
            f"<figure><img alt='time per stage' src='data:image/png;base64,"
            f"{timings_chart(timings)}'><figcaption>Median seconds per tile (bars), 90th "
            "(orange) and 99th percentile (red) of each stage, over the tiles done."
            "</figcaption></figure>"
        )
    else:
        parts.append("<p>No timings recorded (no tile done).</p>")
    parts.append("</section>")
    parts.append(smoothing_section(digest))
    # quicklooks
    parts.append(
        "<section id='quicklooks'><h2>Quicklooks</h2><p id='viewer'>Pan and zoom every layer at "
        "full resolution, toggle the explanations over the prediction and inspect a pixel "
        "(values, quality, smoothed series, tile record) in the viewer on your machine: "
        f"<code>geoxai view {_e(layout.root)}</code> (add <code>--write-cogs</code> for a run "
        "written with <code>write_cogs: false</code>).</p>"
    )
    n_ql = 0
    for epsg in zones if not store_error else ():
        for layer in ("prediction", "asos_sensitivity", "spacex_attribution"):
            ql = quicklook(layout, epsg, layer, done_tiles, mosaics or {})
            if ql is None:
                continue
            png, caption = ql
            n_ql += 1
            parts.append(
                f"<figure class='quicklook' data-layer='{_e(layer)}' data-epsg='{epsg}'>"
                f"<img alt='{_e(layer)} EPSG:{epsg}' src='data:image/png;base64,{png}'>"
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    if store_error:
        parts.append("<p class='bad'>The store could not be read; no quicklooks.</p>")
    elif not n_ql:
        parts.append("<p>No outputs to show yet.</p>")
    parts.append("</section>")
    # tile status
    parts.append("<section id='tile-status'><h2>Tile status</h2>")
    by_zone: dict[int, list[dict[str, Any]]] = {}
    for d in status.values():
        by_zone.setdefault(d["tile"].epsg, []).append(d)
    for epsg in zones:
        zt = by_zone[epsg]
        parts.append(
            f"<figure><img alt='tile status EPSG:{epsg}' src='data:image/png;base64,"
            f"{status_map_png(zt, epsg)}'><figcaption>Every tile of the plan in zone "
            f"EPSG:{epsg} ({len(zt):,} tiles), one cell per tile, coloured by status."
            "</figcaption></figure>"
        )
    parts.append("</section>")
    # accuracy from a reference sample (`geoxai assess`), when one was assessed
    parts.append(_accuracy(layout) if not store_error else "")
    # provenance
    parts.append(
        "<section id='provenance'><h2>Provenance</h2><p>Every output is reproducible from "
        "this config, the code version and the input STAC item ids in each tile record "
        "(<code>records/&lt;tile&gt;.json</code>) and the STAC catalog "
        "(<code>catalog/collection.json</code>).</p>"
        f"<pre>{_e(json.dumps(cfg, indent=2, sort_keys=True, default=str))}</pre></section>"
    )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(
    layout: RunLayout,
    config: Any,
    records: Iterable[Mapping[str, Any]] | RecordDigest,
    *,
    plan: Any = None,
    this_run: Mapping[str, Mapping[str, Any]] | None = None,
    wall_s: float | None = None,
    mosaics: Mapping[int, Mapping[str, str]] | None = None,
    invalidated: Mapping[str, str] | None = None,
    invalidated_late: Mapping[str, str] | None = None,
) -> str:
    """Render the report and write it to ``<run_root>/report.html``; return its URL.

    Args:
        layout: the run's layout.
        config: the RunConfig.
        records: the stored tile records (read once) or their :class:`RecordDigest`.
        plan: the run plan (``tiles`` and ``done`` attributes, e.g. ``geoxai.mapping.RunPlan``);
            None = the tiles of the records.
        this_run: tile id -> outcome of this invocation.
        wall_s: wall time of the run, seconds.
        mosaics: epsg -> layer -> VRT URL.
        invalidated, invalidated_late: as :func:`render_report`.
    """
    page = render_report(
        layout,
        config,
        records,
        tiles=list(plan.tiles) if plan is not None else None,
        done_before=list(plan.done) if plan is not None else (),
        this_run=this_run,
        wall_s=wall_s,
        mosaics=mosaics,
        invalidated=invalidated,
        invalidated_late=invalidated_late,
    )
    with tempfile.TemporaryDirectory(prefix="geoxai-report-") as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(page, encoding="utf-8")
        upload_file(path, layout.at(layout.report_url()))
    return layout.report_url()


def write_local_report(
    layout: RunLayout,
    config: Any,
    plan: Any,
    this_run: Mapping[str, Mapping[str, Any]],
    *,
    wall_s: float | None,
    store_error: str,
    directory: str | Path | None = None,
) -> str:
    """Write the report of a run whose store cannot be read to a local file; return its path.

    The page is rendered from the driver's own outcomes (``this_run``, the records it wrote)
    and the plan, without reading the store (no quicklooks, no accuracy section); its summary
    names the store error. The file is ``geoxai-report-<name>-<year>-<UTC time>.html`` in
    ``directory`` (default: the working directory if writable, else the system temp dir).
    """
    page = render_report(
        layout,
        config,
        [dict(r) for r in this_run.values()],
        tiles=list(plan.tiles) if plan is not None else None,
        done_before=list(plan.done) if plan is not None else (),
        this_run=this_run,
        wall_s=wall_s,
        invalidated=getattr(plan, "invalidated", None),
        store_error=store_error,
    )
    cfg = _config_doc(config)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"geoxai-report-{cfg.get('name', 'run')}-{cfg.get('year', '')}-{stamp}.html"
    folders = [str(directory)] if directory is not None else [".", tempfile.gettempdir()]
    err: OSError | None = None
    for folder in folders:
        try:
            path = (Path(folder) / name).resolve()
            path.write_text(page, encoding="utf-8")
            return str(path)
        except OSError as exc:  # a read-only or removed working directory: the next folder
            err = exc
    raise OSError(f"could not write the local report {name} to {folders}: {err}")


def _failures_section(status: Mapping[str, Mapping[str, Any]]) -> str:
    """Failed and empty tiles: the reasons grouped (most frequent first, with counts and example
    tiles), then one row per tile up to :data:`MAX_ROWS` (failed first)."""
    bad = sorted(
        (d for d in status.values() if d["status"] in ("failed", "empty")),
        key=lambda d: (d["status"] != "failed", d["tile"].id),
    )
    out = [f"<section id='failures'><h2>Failures and empty tiles ({len(bad):,})</h2>"]
    if not bad:
        return out[0] + "<p class='ok'>No tile failed and every tile had data.</p></section>"
    groups = failure_groups(status)
    out.append(
        "<table id='failure-reasons'><tr><th>status</th><th>tiles</th><th>reason (as written "
        "for the first tile; numbers and tile ids may differ)</th><th>example tiles</th></tr>"
    )
    for g in groups[:MAX_GROUPS]:
        cls = "bad" if g["status"] == "failed" else ""
        examples = " ".join(f"<code>{_e(t)}</code>" for t in g["tiles"])
        out.append(
            f"<tr><td class='{cls}'>{_e(g['status'])}</td><td class='num'>{g['count']:,}</td>"
            f"<td>{_e(g['reason'])}</td><td>{examples}</td></tr>"
        )
    out.append("</table>")
    if len(groups) > MAX_GROUPS:
        rest = sum(g["count"] for g in groups[MAX_GROUPS:])
        out.append(f"<p>{len(groups) - MAX_GROUPS:,} more reasons ({rest:,} tiles).</p>")
    out.append("<table id='failed-tiles'><tr><th>tile</th><th>status</th><th>reason</th></tr>")
    for d in bad[:MAX_ROWS]:
        cls = "bad" if d["status"] == "failed" else ""
        out.append(
            f"<tr><td><code>{_e(d['tile'].id)}</code></td><td class='{cls}'>"
            f"{_e(d['status'])}</td><td>{_e(d['reason'] or '(no reason recorded)')}</td></tr>"
        )
    out.append("</table>")
    if len(bad) > MAX_ROWS:
        out.append(
            f"<p>The first {MAX_ROWS} of {len(bad):,} tiles; every tile's reason is in its "
            "record (<code>records/&lt;tile&gt;.json</code>) and the STAC catalog.</p>"
        )
    return "".join(out) + "</section>"


def _invalidated_section(
    planned: Mapping[str, str], late: Mapping[str, str], status: Mapping[str, Any]
) -> str:
    """Tiles whose stored outputs (chunks, COGs, record) did not check out, and what became of
    them; nothing when there are none."""
    if not planned and not late:
        return ""
    out = [
        f"<section id='invalidated'><h2>Invalidated outputs ({len(planned) + len(late)})</h2>"
        "<p>Stored outputs that did not match their record (checksum, size or a missing "
        "object): the tile's record was deleted.</p><table><tr><th>tile</th><th>found</th>"
        "<th>problem</th><th>what happened</th></tr>"
    ]
    rows = [(t, "at planning", why) for t, why in planned.items()]
    rows += [(t, "after the tile phase", why) for t, why in late.items()]
    rows.sort()
    for tile_id, when, why in rows[:MAX_ROWS]:
        st = status.get(tile_id, {}).get("status", "pending")
        if when == "after the tile phase":
            action = "left out of the mosaics and catalog; a rerun redoes the tile"
        elif st == "done":
            action = "redone in this run"
        else:
            action = f"not redone in this run ({st}); a rerun redoes the tile"
        out.append(
            f"<tr><td><code>{_e(tile_id)}</code></td><td>{_e(when)}</td><td>{_e(why)}</td>"
            f"<td>{_e(action)}</td></tr>"
        )
    out.append("</table>")
    if len(rows) > MAX_ROWS:
        out.append(f"<p>The first {MAX_ROWS} of {len(rows):,} tiles.</p>")
    return "".join(out) + "</section>"
