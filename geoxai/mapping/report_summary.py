"""The summaries of ``report.html`` that stay bounded at country scale (240,000 tiles).

A report lists no row per tile: failures are grouped by reason (count, status, example tiles;
:func:`failure_groups`), stage timings are percentiles over the tiles (:func:`timing_stats`),
the tile status map is one image with a pixel per tile (:func:`status_map_png`: a raster of
the zone's tile lattice, not one drawn shape per tile), and per-tile lists (the held-out
smoothing scores, invalidated outputs) are cut at :data:`MAX_ROWS` rows with the total said.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geoxai.mapping.quicklook import figure_png, new_figure

__all__ = [
    "STATUS_COLOURS",
    "MAX_ROWS",
    "MAX_GROUPS",
    "timing_stats",
    "failure_groups",
    "zone_counts",
    "timings_chart",
    "status_map_png",
]

STATUS_COLOURS = {
    "done": "#2e7d32",
    "skipped": "#81c784",
    "empty": "#9e9e9e",
    "failed": "#c62828",
    "pending": "#ffffff",
}
"""Colour of each tile status in the tile map and the summary."""

MAX_ROWS = 50
"""Most rows of a per-tile table in the report (the rest are counted, not listed)."""

MAX_GROUPS = 20
"""Most failure reasons listed (the most frequent first)."""

EXAMPLES = 5
"""Example tiles named per failure reason."""

PERCENTILES = (50, 90, 95, 99)
"""Percentiles of the per-stage timings, in the report's column order."""

_TILE_ID = re.compile(r"\b\d{5}_E\d{4}_N\d{4}\b")
_NUMBER = re.compile(r"\d+(\.\d+)?")


def timing_stats(values: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Per stage, of its seconds per tile: ``n``, ``mean``, ``median`` (= p50), ``p50``,
    ``p90``, ``p95``, ``p99``, ``max`` and ``total``. Percentiles by linear interpolation
    (numpy's default); stages without a value are left out."""
    out = {}
    for stage, vs in values.items():
        a = np.asarray(vs, dtype=np.float64)
        if not a.size:
            continue
        pct = np.percentile(a, PERCENTILES)
        out[stage] = {
            "n": float(a.size),
            "mean": float(a.mean()),
            "median": float(pct[0]),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
            "max": float(a.max()),
            "total": float(a.sum()),
        }
    return out


def reason_key(reason: str) -> str:
    """What groups failure reasons: the first line, tile ids and numbers replaced by ``#``
    (``"NoDataError: 0 scenes"`` and ``"NoDataError: 3 scenes"`` are one reason)."""
    first = (reason.strip().splitlines() or [""])[0]
    return _NUMBER.sub("#", _TILE_ID.sub("<tile>", first))[:300]


def failure_groups(status: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The failed and empty tiles grouped by status and :func:`reason_key`, most frequent first.

    Args:
        status: tile id -> ``{"tile", "status", "reason"}`` (``report.tile_statuses``).

    Returns:
        One dict per group: ``status``, ``reason`` (the first tile's reason as written),
        ``count`` and ``tiles`` (the first :data:`EXAMPLES` tile ids, sorted).
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for tile_id in sorted(status):
        d = status[tile_id]
        if d["status"] not in ("failed", "empty"):
            continue
        reason = str(d.get("reason") or "") or "(no reason recorded)"
        g = groups.setdefault(
            (str(d["status"]), reason_key(reason)),
            {"status": d["status"], "reason": reason, "count": 0, "tiles": []},
        )
        g["count"] += 1
        if len(g["tiles"]) < EXAMPLES:
            g["tiles"].append(tile_id)
    return sorted(groups.values(), key=lambda g: (g["status"] != "failed", -g["count"]))


def zone_counts(status: Mapping[str, Mapping[str, Any]]) -> dict[int, dict[str, int]]:
    """epsg -> status -> number of tiles (every status of :data:`STATUS_COLOURS`)."""
    out: dict[int, dict[str, int]] = {}
    for d in status.values():
        z = out.setdefault(int(d["tile"].epsg), dict.fromkeys(STATUS_COLOURS, 0))
        z[d["status"]] += 1
    return dict(sorted(out.items()))


def timings_chart(timings: Mapping[str, Mapping[str, float]]) -> str:
    """Base64 PNG: median seconds per tile of each stage (bars), p90 and p99 (marks)."""
    stages = sorted(timings, key=lambda s: timings[s]["median"])
    fig, ax = new_figure(7.5, 0.45 * len(stages) + 1.2)
    y = np.arange(len(stages))
    ax.barh(y, [timings[s]["median"] for s in stages], color="#12343b", label="median")
    for key, colour in (("p90", "#e07a1f"), ("p99", "#c62828")):
        ax.scatter(
            [timings[s][key] for s in stages],
            y,
            color=colour,
            zorder=3,
            marker="|",
            s=220,
            linewidths=3,
            label=key,
        )
    ax.set_yticks(y, stages)
    ax.set_xlabel("seconds per tile")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", frameon=False)
    ax.set_title("Time per stage across tiles")
    return figure_png(fig)


def status_map_png(zone_tiles: Sequence[Mapping[str, Any]], epsg: int) -> str:
    """Base64 PNG of one zone's tiles coloured by status: one raster cell per tile of the
    lattice (``imshow`` of a ``(rows, cols)`` status-code array), white outside the plan,
    tile edges drawn only when the lattice is small (<= 60 x 60 tiles).

    Cost grows with the lattice's cells, not with drawn shapes: 240,000 tiles render in
    about a second.
    """
    from matplotlib.colors import ListedColormap  # lazy: matplotlib only for figures
    from matplotlib.patches import Patch  # lazy: matplotlib only for figures

    names = list(STATUS_COLOURS)
    tiles = [d["tile"] for d in zone_tiles]
    size_km = tiles[0].tile_size_m / 1000
    cols = np.fromiter((t.col for t in tiles), dtype=np.int64, count=len(tiles))
    rows = np.fromiter((t.row for t in tiles), dtype=np.int64, count=len(tiles))
    codes = np.fromiter(
        (names.index(d["status"]) for d in zone_tiles), dtype=np.int16, count=len(tiles)
    )
    c0, r0 = int(cols.min()), int(rows.min())
    nc, nr = int(cols.max()) - c0 + 1, int(rows.max()) - r0 + 1
    grid = np.full((nr, nc), -1, dtype=np.int16)  # -1: not in the plan
    grid[nr - 1 - (rows - r0), cols - c0] = codes  # row 0 of the image = northmost
    cmap = ListedColormap(["#ffffff00", *STATUS_COLOURS.values()])
    extent = (c0 * size_km, (c0 + nc) * size_km, r0 * size_km, (r0 + nr) * size_km)
    w = 7.5
    fig, ax = new_figure(w, min(w * nr / max(nc, 1), 14.0) + 0.8)
    ax.imshow(grid + 1, cmap=cmap, vmin=0, vmax=len(names), extent=extent, interpolation="nearest")
    if nc <= 60 and nr <= 60:
        ax.vlines(
            extent[0] + np.arange(nc + 1) * size_km, extent[2], extent[3], color="#52606d", lw=0.5
        )
        ax.hlines(
            extent[2] + np.arange(nr + 1) * size_km, extent[0], extent[1], color="#52606d", lw=0.5
        )
    ax.set_aspect("equal")
    ax.set_xlabel(f"easting, km (EPSG:{epsg})")
    ax.set_ylabel("northing, km")
    counts = np.bincount(codes, minlength=len(names))
    handles = [
        Patch(facecolor=STATUS_COLOURS[s], edgecolor="#52606d", label=f"{s} ({counts[i]:,})")
        for i, s in enumerate(names)
        if counts[i]
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"Tile status, UTM EPSG:{epsg} ({len(tiles):,} tiles)")
    return figure_png(fig)
