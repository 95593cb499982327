"""``geoxai plan``: a dry run that says what a run will take, touching none of its outputs.

Steps (each figure's line says which source it came from):

1. the tiles (:func:`geoxai.mapping.plan.check_run`: every check of a run that needs no
   store), per UTM zone;
2. what is already done: the run root's records (:func:`geoxai.mapping.records.plan_tiles`),
   read only; a root that cannot be listed makes that unknown (a note), never an error;
3. scenes per tile: a STAC search on ``sample`` tiles spread over the AOI
   (:func:`~geoxai.mapping.estimate.spread_sample`), extrapolated with its spread;
4. bytes to read: per scene and band, the asset's stored size (``file:size``, a stat or a HEAD
   request) times the tile window's share of the asset's pixels; where no size is known, the
   decoded window (pixels x 2 bytes of uint16);
5. per-stage rates: ``calibrate`` K sample tiles mapped for real (in this process) into a
   scratch root that is deleted afterwards, or the records of an earlier run under the root;
6. CPU-/GPU-hours, storage (cubes, zone outputs, COGs, records), requests, the wall time on a
   cluster and, with prices, the bill (:mod:`geoxai.mapping.estimate`).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.config import RunConfig, StoreConfig
from geoxai.errors import NoDataError, StacError, StoreError
from geoxai.geo.bands import band
from geoxai.geo.grid import TileSpec
from geoxai.io.layout import RunLayout
from geoxai.io.sizes import asset_size, stored_size
from geoxai.io.stac import search
from geoxai.io.store import delete
from geoxai.mapping.cube_stage import stage_cube
from geoxai.mapping.estimate import (
    Figure,
    PlanEstimate,
    Prices,
    TileSample,
    actors_on,
    bill,
    compute_hours,
    extrapolate,
    scaled_total,
    spread_sample,
    storage_figures,
    wall_time,
)
from geoxai.mapping.plan import check_run, plan_run
from geoxai.mapping.records import plan_tiles, read_record, read_records
from geoxai.mapping.settings import cube_bands, date_range, run_layout
from geoxai.mapping.stages import load_models, map_and_write

__all__ = ["estimate_run", "calibrate", "samples_from_records"]

log = logging.getLogger(__name__)

MAX_SIZE_REQUESTS = 256
"""HEAD requests for asset sizes per plan at most (later assets use the mean of the same band)."""

READS_PER_ASSET = 2
"""Requests assumed per asset read (the COG header, then the window's blocks in one range)."""

MAX_RECORD_SAMPLES = 200
"""Earlier-run records taken as rates at most (evenly spread over the sorted tile ids)."""


def estimate_run(
    config: RunConfig,
    *,
    sample: int = 20,
    calibrate_tiles: int = 0,
    prices: Prices | None = None,
    cluster_cpus: float | None = None,
    cluster_gpus: float | None = None,
    months: float = 1.0,
    say: Callable[[str], None] = log.info,
) -> PlanEstimate:
    """Estimate a run of ``config`` without writing under its run root.

    Args:
        config: the run config.
        sample: tiles searched on the STAC API (spread over the AOI).
        calibrate_tiles: tiles mapped for real into a scratch root to measure stage rates
            (0: take the rates from the records of an earlier run under the root, if any).
        prices: prices (None: from the config's ``prices`` section, if any).
        cluster_cpus, cluster_gpus: size of the cluster for the wall time (default: the
            config's ``resources.num_workers`` actors).
        months: months the outputs are stored, for the bill.
        say: receives one line per step (progress, choices made).

    Raises:
        AOIError: the AOI yields no tile. ConfigError, ModelBundleError: as a run would.
        StacError: the STAC API cannot be searched.
    """
    tiles, _ = check_run(config)
    per_zone: dict[int, int] = {}
    for t in tiles:
        per_zone[t.epsg] = per_zone.get(t.epsg, 0) + 1
    est = PlanEstimate(config.name, run_layout(config).root, len(tiles), per_zone, None, len(tiles))
    layout = run_layout(config)
    done = _done(layout, tiles, config.output_hash(), est.notes)
    if done is not None:
        est.done, est.todo = len(done), len(tiles) - len(done)
    say(f"{len(tiles)} tiles in {len(per_zone)} zone(s); done: {est.done}, to do: {est.todo}")

    chosen = spread_sample(tiles, sample)
    est.sample = [t.id for t in chosen]
    say(f"searching STAC for {len(chosen)} sample tiles")
    scenes, reads, how_read, items_by_tile = _search_sample(config, chosen)
    est.figures["scenes"] = extrapolate(
        scenes, len(tiles), "scenes", "scenes (S2 items) per tile, STAC search"
    )
    n_todo = est.todo
    if n_todo == 0:
        est.notes.append("every tile is done: the run has nothing to do (hours and bytes are 0)")
    scenes_fig = est.figures["scenes"]
    todo_scenes = scenes_fig.scaled(n_todo / len(tiles), "scenes")
    if n_todo:
        est.figures["read_bytes"] = extrapolate(
            [r for r in reads], len(tiles), "B", f"bytes to read ({how_read})"
        ).scaled(n_todo / len(tiles), "B")
    else:
        est.figures["read_bytes"] = Figure(0, 0, 0, "B", "nothing to do")

    samples: list[TileSample] = []
    warmup: dict[str, float] = {}
    if calibrate_tiles > 0:
        order = sorted(range(len(chosen)), key=lambda i: scenes[i] == 0)  # tiles with scenes first
        samples, warmup = calibrate(
            config,
            [chosen[i] for i in order],
            calibrate_tiles,
            notes=est.notes,
            say=say,
        )
        est.calibrated = [s.tile_id for s in samples]
        est.rates_from = f"calibration: {len(samples)} tile(s) mapped into a scratch root"
    elif done:
        samples = samples_from_records(layout)
        est.rates_from = f"records of the earlier run under {layout.root} ({len(samples)} tiles)"
    if not samples:
        est.rates_from = est.rates_from or "none"
        est.notes.append(
            "no stage rates: pass --calibrate K (maps K sample tiles into a scratch root) or "
            "plan a root with finished tiles; hours, storage and the bill are not estimated"
        )
    _figures_from_rates(
        est, config, samples, warmup, n_todo, todo_scenes, scenes, cluster_cpus, cluster_gpus
    )
    if prices is None:
        p = config.prices
        prices = Prices(**p.model_dump()) if p is not None else Prices()
    if not prices.any:
        est.notes.append("no prices (config 'prices' or --price-*): hours without a bill")
    else:
        est.bill = bill(est.figures, prices, months=months)
        missing = [
            k
            for k, v in (
                ("CPU-hour", prices.cpu_hour),
                ("GPU-hour", prices.gpu_hour),
                ("GB-month", prices.gb_month),
                ("1k requests", prices.requests_1k),
            )
            if v is None
        ]
        if missing:
            est.notes.append(f"not priced, left out of the bill: {', '.join(missing)}")
    return est


def _done(
    layout: RunLayout, tiles: Sequence[TileSpec], config_hash: str, notes: list[str]
) -> list[TileSpec] | None:
    """Tiles already done under the root (read only); None when the root cannot be listed."""
    try:
        n_records, _ = stored_size(layout.records_url(), layout.storage_options)
        if n_records == 0:
            return []
        _, done = plan_tiles(layout, tiles, config_hash)
        return done
    except StoreError as exc:
        notes.append(
            f"the run root cannot be listed ({' '.join(str(exc).split())[:300]}): what is "
            "already done is unknown, every tile is counted as to do"
        )
        return None


def _window_px(tile: TileSpec, res_m: float) -> float:
    side = (tile.tile_size_m + 2 * tile.halo_px * tile.resolution_m) / res_m
    return float(math.ceil(side) ** 2)


def _search_sample(
    config: RunConfig, tiles: Sequence[TileSpec]
) -> tuple[list[int], list[float], str, dict[str, list[Any]]]:
    """Scenes and bytes to read per sample tile; how the bytes were found (one line)."""
    start, end = date_range(config)
    bands = cube_bands(config)
    scenes: list[int] = []
    reads: list[float] = []
    items_by: dict[str, list[Any]] = {}
    counts = {"file:size": 0, "stat": 0, "head": 0, "decoded": 0}
    band_mean: dict[str, list[float]] = {}
    heads = 0
    for t in tiles:
        try:
            items = search(
                config.stac.url,
                collections=config.stac.collection,
                bbox=t.lonlat_bbox(halo=True),
                datetime=(start, end),
                max_cloud=config.stac.max_cloud,
            )
        except NoDataError:
            items = []
        except StacError as exc:
            raise StacError(f"plan: searching sample tile {t.id}: {exc}") from None
        items_by[t.id] = items
        scenes.append(len(items))
        total = 0.0
        for it in items:
            for b in bands:
                asset = it.assets.get(b)
                res = band(b).resolution_m
                window = _window_px(t, res)
                decoded = window * (1 if b == "SCL" else 2)
                if asset is None:
                    continue
                size, how = asset_size(asset, head=heads < MAX_SIZE_REQUESTS)
                heads += how == "head"
                shape = asset.extra_fields.get("proj:shape")
                if size is not None and shape and len(shape) == 2 and all(shape):
                    share = min(1.0, window / float(shape[0] * shape[1]))
                    band_mean.setdefault(b, []).append(size * share / decoded)
                    total += size * share
                    counts[how] += 1
                elif b in band_mean:  # same band's ratio of stored to decoded bytes so far
                    total += decoded * float(np.mean(band_mean[b]))
                    counts["decoded"] += 1
                else:
                    total += decoded
                    counts["decoded"] += 1
        reads.append(total)
    n = sum(counts.values())
    parts = [f"{k} {v / n:.0%}" for k, v in counts.items() if v] if n else ["no assets"]
    how = (
        "per asset: stored size x the window's share of its pixels (COG blocks are read whole: "
        "a lower bound), else the decoded window as uint16; sizes from " + ", ".join(parts)
    )
    return scenes, reads, how, items_by


def calibrate(
    config: RunConfig,
    candidates: Sequence[TileSpec],
    k: int,
    *,
    notes: list[str],
    say: Callable[[str], None] = log.info,
    scratch: str | Path | None = None,
) -> tuple[list[TileSample], dict[str, float]]:
    """Map ``k`` of ``candidates`` (in order) for real into a scratch root.

    The scratch root (a fresh temporary directory unless given) holds the same config with
    ``store.root`` replaced; it is deleted afterwards. A candidate whose cube has no scenes
    (or whose mapping comes back empty/failed) is skipped and another taken, with a note.
    The first tile is mapped twice (its cube deleted and rebuilt): the second pass gives the
    steady per-tile rate, the difference the warm-up a fresh process pays once (imports,
    GDAL/torch set-up). The run's own root is never touched; no baseline (change layer).

    Returns:
        ``(samples, warmup)``: one :class:`TileSample` per mapped tile (from its record and
        the scratch store), and stage -> warm-up seconds.
    """
    own = scratch is None
    root = Path(tempfile.mkdtemp(prefix="geoxai-plan-") if scratch is None else scratch)
    cfg = config.model_copy(
        update={
            "store": StoreConfig(root=str(root)),
            "tiles": [t.id for t in candidates],
            "baseline": None,
        }
    )
    try:
        plan = plan_run(cfg)
        by_id = {t.id: t for t in plan.tiles}
        models = load_models(cfg)
        layout = run_layout(cfg)
        out: list[TileSample] = []
        warmup: dict[str, float] = {}
        for cand in candidates:
            if len(out) >= k:
                break
            tile = by_id[cand.id]
            say(f"calibrating on tile {tile.id} ({len(out) + 1} of {k})")
            outcome = _map_one(tile, cfg, models, notes)
            if outcome is None:
                continue
            if not out:  # again, warm: the steady rate; the difference is the warm-up
                first = dict(outcome.timings)
                delete(layout.cube_url(tile.id), storage_options=layout.storage_options)
                again = _map_one(tile, cfg, models, notes)
                if again is not None:
                    warmup = {s: max(0.0, v - again.timings.get(s, v)) for s, v in first.items()}
            out.append(_sample(layout, tile.id))
        if len(out) < k:
            notes.append(
                f"calibration asked for {k} tiles, {len(out)} of the {len(candidates)} sample "
                "tiles could be mapped (sample more tiles with --sample)"
            )
        return out, warmup
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def _map_one(tile: TileSpec, cfg: RunConfig, models: Any, notes: list[str]) -> Any:
    """The tile mapped into the scratch root (its outcome), or None with a note."""
    cube = stage_cube(tile, cfg)
    if cube.status != "ok":
        notes.append(
            f"calibration tile {tile.id} has no usable scenes ({cube.status}: "
            f"{cube.reason[:200]}); picked another"
        )
        return None
    outcome = map_and_write(tile, cube, models, cfg)
    if outcome.status != "done":
        notes.append(
            f"calibration tile {tile.id} came back {outcome.status} ({outcome.reason[:200]}); "
            "picked another"
        )
        return None
    return outcome


def _sample(layout: RunLayout, tile_id: str, *, n_s2: int | None = None) -> TileSample:
    """A tile's costs from its record and the store under ``layout``."""
    rec = read_record(layout, tile_id) or {}
    so = layout.storage_options
    cube_objects, cube_bytes = 0, 0
    for url in (
        layout.cube_url(tile_id),
        layout.cube_layer_url(tile_id, "s1"),
        layout.cube_layer_url(tile_id, "dem"),
    ):
        o, b = stored_size(url, so)
        cube_objects, cube_bytes = cube_objects + o, cube_bytes + b
    layers = rec.get("layers") or {}
    cogs = rec.get("cogs") or {}
    _, rec_bytes = stored_size(layout.record_url(tile_id), so)
    if n_s2 is None:
        ancillary = {str(i) for key in ("s1_items", "dem_items") for i in rec.get(key) or ()}
        n_s2 = len([i for i in rec.get("input_items") or () if i not in ancillary])
    return TileSample(
        tile_id=tile_id,
        scenes=int(n_s2),
        seconds={k: float(v) for k, v in (rec.get("timings") or {}).items()},
        cube_bytes=cube_bytes,
        cube_objects=cube_objects,
        output_bytes=sum(int(m.get("chunk_bytes", 0)) for m in layers.values()),
        cog_bytes=sum(int(c.get("bytes", 0)) for c in cogs.values()),
        record_bytes=rec_bytes,
        objects=cube_objects + len(layers) + len(cogs) + 1,
    )


def samples_from_records(layout: RunLayout) -> list[TileSample]:
    """Samples of the ``done`` tiles recorded under ``layout`` (at most
    :data:`MAX_RECORD_SAMPLES`, evenly spread), for rates without a calibration."""
    done = [r["tile_id"] for r in read_records(layout) if r.get("status") == "done"]
    if len(done) > MAX_RECORD_SAMPLES:
        idx = np.linspace(0, len(done) - 1, MAX_RECORD_SAMPLES).round().astype(int)
        done = [done[i] for i in idx]
    return [_sample(layout, t) for t in done]


def _figures_from_rates(
    est: PlanEstimate,
    config: RunConfig,
    samples: Sequence[TileSample],
    warmup: dict[str, float],
    n_todo: int,
    todo_scenes: Figure,
    sample_scenes: Sequence[int],
    cluster_cpus: float | None,
    cluster_gpus: float | None,
) -> None:
    res = config.resources
    reads_per_tile = [
        math.ceil(max(s, 1) / 100) + s * len(cube_bands(config)) * READS_PER_ASSET
        for s in sample_scenes
    ]
    reads = extrapolate(
        reads_per_tile,
        max(est.tiles, len(reads_per_tile)),
        "requests",
        f"read requests (STAC pages + {READS_PER_ASSET} per asset, assumed)",
    ).scaled(n_todo / max(est.tiles, 1), "requests")
    if not samples or n_todo == 0:
        if n_todo == 0:
            for key in ("cpu_hours", "gpu_hours", "storage_bytes", "requests"):
                est.figures[key] = Figure(0, 0, 0, "", "nothing to do")
        return
    source = est.rates_from.split(":")[0]
    dev = "device of this machine"
    cpus = cluster_cpus
    gpus = cluster_gpus if cluster_gpus is not None else 0.0
    if cpus is None and res.num_workers:
        cpus = res.num_workers * res.cpus_per_worker
        gpus = cluster_gpus if cluster_gpus is not None else res.num_workers * res.gpus_per_worker
    actors = (
        actors_on(cpus, gpus, res.cpus_per_worker, res.gpus_per_worker, res.num_workers)
        if cpus is not None
        else (res.num_workers or 1)
    )
    hours = compute_hours(
        samples,
        n_todo,
        todo_scenes,
        cpus_per_worker=res.cpus_per_worker,
        gpus_per_worker=res.gpus_per_worker,
        source=source,
        warmup=warmup,
        actors=actors,
        cube_processes=res.cube_tasks_in_flight,
    )
    est.figures.update(hours)
    if res.gpus_per_worker > 0:
        est.notes.append(
            f"GPU-hours from stage seconds timed on the {dev}; on another device they differ"
        )
    storage = storage_figures(samples, n_todo, todo_scenes, source=source)
    for k, f in storage.items():
        est.figures[f"storage_{k}_bytes"] = f
    est.figures["storage_bytes"] = storage["total"]
    writes = scaled_total(
        samples,
        n_todo,
        todo_scenes,
        lambda s: s.objects,
        lambda s: s.cube_objects,
        "requests",
        f"write requests (objects written, {source})",
    )
    est.figures["requests"] = Figure(
        reads.value + writes.value,
        reads.low + writes.low,
        reads.high + writes.high,
        "requests",
        f"{reads.how}; {writes.how}",
    )
    if cpus is None:
        est.notes.append("no cluster size (--cluster-cpus/--cluster-gpus): no wall time")
        return
    est.figures["wall_seconds"] = wall_time(
        samples,
        n_todo,
        todo_scenes,
        cluster_cpus=cpus,
        cluster_gpus=gpus,
        cpus_per_worker=res.cpus_per_worker,
        gpus_per_worker=res.gpus_per_worker,
        num_workers=res.num_workers,
        cube_tasks_in_flight=res.cube_tasks_in_flight,
        warmup=warmup,
    )
