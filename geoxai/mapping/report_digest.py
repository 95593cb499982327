"""What ``report.html`` keeps of the tile records: a compact digest built in one pass.

A run's records are read as a stream (:func:`geoxai.mapping.records.read_records` may return a
generator); the report needs only a few fields per tile, so :class:`RecordDigest` keeps those
and drops the record: the tile's status and reason (for failed and empty tiles), the stage
timings of done tiles (8 bytes per value), the code versions, and for the held-out smoothing
scores the pooled sums plus the :data:`~geoxai.mapping.report_summary.MAX_ROWS` worst tiles.
Memory is ~200 bytes per tile, not the record's size (a record with 80 input item ids is
several kB as a dict).
"""

from __future__ import annotations

import heapq
import html
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from geoxai.geo.grid import TILE_SIZE_M
from geoxai.mapping.report_summary import MAX_ROWS, timing_stats
from geoxai.temporal.heldout import METHODS

__all__ = ["RecordDigest", "digest_of", "smoothing_section", "stage_timings"]


class RecordDigest:
    """The per-tile fields of the records that the report uses (see the module docstring).

    Attributes:
        by_id: tile id -> ``(status, reason)`` of every record (reason ``""`` when done).
        sizes: tile id -> ``tile_size_m`` of the records whose tiles are not 6,000 m.
        versions: the ``code_version`` of the records.
        timings: stage name (``_s`` dropped) -> seconds of each done record that timed it.
        heldout_tiles: records with a held-out smoothing score.
        heldout_rows: ``(tile id, heldout dict)`` of the :data:`MAX_ROWS` highest smoothing
            errors (all of them when there are at most that many).
        heldout_total: method -> sum over tiles of ``rmse ** 2 * n_held`` per channel.
        heldout_n: the hidden values pooled in ``heldout_total``.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[str, str]] = {}
        self.sizes: dict[str, int] = {}
        self.versions: set[str] = set()
        self.timings: dict[str, array] = {}
        self.heldout_tiles = 0
        self._worst: list[tuple[float, str, dict[str, Any]]] = []  # min-heap on the error
        self.heldout_total: dict[str, np.ndarray] = {}
        self.heldout_n = 0

    def add(self, rec: Mapping[str, Any]) -> None:
        """Take what the report needs of one record (a dict as written by ``write_tile``)."""
        tile_id = str(rec.get("tile_id"))
        status = str(rec.get("status"))
        reason = "" if status == "done" else str(rec.get("reason", "") or "")
        self.by_id[tile_id] = (status, reason)
        size = int(rec.get("tile_size_m", TILE_SIZE_M) or TILE_SIZE_M)
        if size != TILE_SIZE_M:
            self.sizes[tile_id] = size
        if rec.get("code_version"):
            self.versions.add(str(rec["code_version"]))
        if status == "done":
            for k, v in dict(rec.get("timings") or {}).items():
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    continue
                if np.isfinite(f):
                    self.timings.setdefault(str(k).removesuffix("_s"), array("d")).append(f)
        h = (rec.get("info") or {}).get("heldout")
        if isinstance(h, dict) and h.get("n_held"):
            self._add_heldout(tile_id, h)

    def _add_heldout(self, tile_id: str, h: dict[str, Any]) -> None:
        self.heldout_tiles += 1
        entry = (float(h["mean_rmse"]["smooth"]), tile_id, h)
        if len(self._worst) < MAX_ROWS:
            heapq.heappush(self._worst, entry)
        elif entry[:2] > self._worst[0][:2]:
            heapq.heapreplace(self._worst, entry)
        rm = {m: np.asarray(h["rmse"][m], dtype=np.float64) for m in METHODS}
        if not self.heldout_total:  # the first score fixes the channels pooled
            self.heldout_total = {m: np.zeros(len(h["channels"])) for m in METHODS}
        if all(self.heldout_total[m].shape == rm[m].shape for m in METHODS):
            for m in METHODS:
                self.heldout_total[m] += rm[m] ** 2 * int(h["n_held"])
            self.heldout_n += int(h["n_held"])

    @property
    def heldout_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """By tile id when all are kept, else the highest smoothing error first."""
        if self.heldout_tiles <= MAX_ROWS:
            return sorted((t, h) for _, t, h in self._worst)
        return [(t, h) for _, t, h in sorted(self._worst, key=lambda e: (-e[0], e[1]))]

    def stage_timings(self) -> dict[str, dict[str, float]]:
        """Per stage: ``n``, ``mean``, percentiles, ``max``, ``total`` (see
        :func:`geoxai.mapping.report_summary.timing_stats`)."""
        return timing_stats(self.timings)

    def __len__(self) -> int:
        return len(self.by_id)


def digest_of(records: Iterable[Mapping[str, Any]] | RecordDigest) -> RecordDigest:
    """``records`` digested in one pass (a digest is returned as is)."""
    if isinstance(records, RecordDigest):
        return records
    d = RecordDigest()
    for rec in records:
        d.add(rec)
    return d


def stage_timings(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, over the ``done`` records that timed it: ``n``, ``mean``, ``median`` (= p50),
    ``p50``, ``p90``, ``p95``, ``p99``, ``max`` and ``total``, seconds.

    Stage names drop a trailing ``_s`` (``cube_s`` -> ``cube``); values that are not finite
    numbers are ignored. ``records`` is read once (an iterator will do).
    """
    return digest_of(records).stage_timings()


def smoothing_section(digest: RecordDigest) -> str:
    """The report's ``smoothing`` section: held-out error of the temporal smoothing per tile
    (``info.heldout`` of the records), at most :data:`MAX_ROWS` rows (the worst first when
    there are more), and the error pooled over every tile."""
    e = html.escape
    out = [
        "<section id='smoothing'><h2>Smoothing: held-out error</h2><p>In each tile a lattice "
        "sample of pixels has every third clear observation hidden, the series smoothed "
        "without it and the hidden values predicted; RMSE in reflectance, mean over bands, "
        "against nearest acquisition (clouds included), nearest clear one, linear "
        "interpolation of clear dates and the reference lambda (100).</p>"
    ]
    if not digest.heldout_tiles:
        return "".join(out) + "<p>No held-out score recorded.</p></section>"
    head = "".join(f"<th>{e(m)}</th>" for m in METHODS)
    out.append(
        f"<table><tr><th>tile</th><th>pixels</th><th>hidden</th>{head}"
        "<th>bands better than linear</th></tr>"
    )
    for tile, h in digest.heldout_rows:
        rm = {m: np.asarray(h["rmse"][m], dtype=np.float64) for m in METHODS}
        wins = int((rm["smooth"] < rm["linear"]).sum())
        cells = "".join(f"<td class='num'>{h['mean_rmse'][m]:.4f}</td>" for m in METHODS)
        out.append(
            f"<tr><td><code>{e(tile)}</code></td><td class='num'>{int(h['n_pixels'])}</td>"
            f"<td class='num'>{int(h['n_held'])}</td>{cells}"
            f"<td class='num'>{wins}/{rm['smooth'].size}</td></tr>"
        )
    if digest.heldout_n:
        total, n_all = digest.heldout_total, digest.heldout_n
        cells = "".join(
            f"<td class='num'><b>{np.sqrt(total[m] / n_all).mean():.4f}</b></td>" for m in METHODS
        )
        out.append(
            f"<tr><th>all tiles</th><td></td><td class='num'>{n_all}</td>{cells}<td></td></tr>"
        )
    out.append("</table>")
    if digest.heldout_tiles > MAX_ROWS:
        out.append(
            f"<p>The {MAX_ROWS} tiles with the highest smoothing error of "
            f"{digest.heldout_tiles:,}; the last row pools every tile.</p>"
        )
    return "".join(out) + "</section>"
