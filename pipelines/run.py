"""The driver of a mapping run: Ray tasks build cubes, Ray actors map tiles, the driver keeps
the books.

Only chaining happens here; every step is a function of :mod:`geoxai.mapping`:

    plan_run ──► cube tasks (CPU, I/O bound, retried)  ──► TileWorker actors (GPU or CPU slot,
                 stage_cube(): STAC search, stackstac       each holding the models):
                 cube, Zarr on the store                    map_tile(): smooth -> predict -> ASOS,
                                                            write_tile(): chunks, verify, record
    ──► finish_run(): mosaics, STAC catalog, report.html

Backpressure: at most ``cube_tasks_in_flight`` cube builds run at once and at most
``num_workers * (1 + tiles_per_worker_in_flight)`` built cubes wait for an actor, so a
2,000-tile country never holds more than a few cubes; cubes live in the object store (Zarr),
not in Ray's object store, so only small references travel. While an actor maps one tile its
next tile's cube is already built (the GPU never waits for a download when work is queued).

Fault tolerance: cube tasks retry transient STAC/S3 errors with backoff (``max_retries``);
actors are restartable, and a tile whose actor or node died is re-queued (up to
``max_retries``) on another actor; a data failure (no scenes, corrupt asset) is recorded for
the tile and the run goes on. Killing the driver loses only tiles in flight: a rerun skips
every tile whose record is valid.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    NodeDiedError,
    ObjectLostError,
    OwnerDiedError,
    RayActorError,
    RayTaskError,
    WorkerCrashedError,
)

from geoxai import mapping
from geoxai.config import RunConfig
from geoxai.errors import GeoXAIError, StacError, StoreError
from geoxai.geo.grid import TileSpec
from geoxai.io.layout import RunLayout
from geoxai.io.lease import DEFAULT_TTL_S, RunLease
from geoxai.mapping.outcomes import CubeStage, TileOutcome
from geoxai.mapping.protocol import STAGES, RunStages
from geoxai.mapping.record_index import IndexCheckpoints
from geoxai.mapping.report import write_local_report

__all__ = ["RunSummary", "run", "init_ray", "wait_line"]

log = logging.getLogger("geoxai.run")

_LOST = (
    RayActorError,
    ActorDiedError,
    ActorUnavailableError,
    NodeDiedError,
    ObjectLostError,
    OwnerDiedError,
    WorkerCrashedError,
)
"""Failures of the machinery, not of the tile: the tile is re-queued elsewhere."""


@dataclass
class RunSummary:
    """What a run did. ``outcomes`` maps tile id -> :class:`TileOutcome` (status, reason,
    timings; the record itself is on the store: :meth:`TileOutcome.compact`)."""

    run_root: str
    total: int
    skipped: int
    outcomes: dict[str, TileOutcome] = field(default_factory=dict)
    requeued: int = 0
    wall_s: float = 0.0
    report: str | None = None
    error: str | None = None
    """What stopped the run or its report (e.g. the store went away), one line; None if nothing."""
    report_is_local: bool = False
    """True when ``report`` is a local fallback file (the store could not take the report)."""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)

    @property
    def processed(self) -> int:
        """Tiles processed in this invocation (not skipped as already done)."""
        return len(self.outcomes)


def init_ray(address: str | None, *, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start a closed local Ray (:mod:`pipelines.ray_local`).

    The local instance has token auth on with a fresh random token, binds every socket to
    127.0.0.1 and keeps its temp dir private (0700, under ``GEOXAI_RAY_TMPDIR``);
    ``GEOXAI_RAY_NODE_IP`` overrides its node address. A remote cluster's token comes from the
    environment (``RAY_AUTH_TOKEN``) or Ray's token file, as for any Ray client.

    No credential travels in the runtime env (Ray writes it to its logs): workers of a local
    cluster inherit this process's environment, cluster nodes use their own (instance role,
    Kubernetes secret). Only non-secret ``AWS_*`` (endpoint, region), ``GDAL_*``, ``CPL_*``
    and ``GEOXAI_*`` variables are forwarded.
    """
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": _forwarded_env()}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    from pipelines.ray_local import init_local

    init_local(num_cpus=num_cpus, runtime_env=runtime_env)


def _forwarded_env() -> dict[str, str]:
    """Non-secret environment the workers need to reach the same stores."""
    from geoxai.secrets import non_secret_env

    return non_secret_env(os.environ, ("AWS_", "GDAL_", "CPL_", "GEOXAI_", "PC_SDK_"))


# ---- remote pieces -------------------------------------------------------------------------------


@ray.remote(num_cpus=1, max_retries=3, retry_exceptions=[StacError, StoreError])
def _cube_task(tile: TileSpec, config: RunConfig, stages: RunStages) -> mapping.CubeStage:
    return stages.stage_cube(tile, config)


@ray.remote(max_restarts=-1, max_task_retries=0)
class TileWorker:
    """Holds the models on its device; maps one tile per call."""

    def __init__(self, config: RunConfig, stages: RunStages) -> None:
        self.config = config
        self.stages = stages
        self.models = stages.load_models(config)

    def device(self) -> str:
        return str(getattr(self.models, "device", "cpu"))

    def process(self, tile: TileSpec, cube: mapping.CubeStage) -> TileOutcome:
        return self.stages.map_and_write(tile, cube, self.models, self.config)


# ---- driver --------------------------------------------------------------------------------------


def run(
    config: RunConfig,
    *,
    force: bool = False,
    progress: bool = True,
    finish: bool = True,
    stages: RunStages = STAGES,
    lease_ttl_s: float = DEFAULT_TTL_S,
) -> RunSummary:
    """Map every tile of ``config`` that is not already done; return the summary.

    The driver holds the run root's lease (:mod:`geoxai.io.lease`) from before planning to
    the end: a second driver on the same root stops with :class:`RunLockedError`.

    Args:
        config: the validated run config.
        force: redo every tile even when its record says done.
        progress: show a live progress bar.
        finish: write mosaics, the STAC catalog and report.html at the end.
        stages: the stage functions (:class:`~geoxai.mapping.protocol.RunStages`); default
            :data:`~geoxai.mapping.protocol.STAGES`, geoxai's own. Benchmarks pass no-op
            stages to time the scheduling.
        lease_ttl_s: seconds the root's lease outlives a killed driver.
    """
    layout = RunLayout(config.run_root(), config.store.storage_options or None)
    with RunLease(layout, lease_ttl_s):
        return _run_held(config, force, progress, finish, stages)


def _run_held(
    config: RunConfig, force: bool, progress: bool, finish: bool, stages: RunStages
) -> RunSummary:
    t0 = time.monotonic()
    plan = stages.plan_run(config, force=force)
    summary = RunSummary(run_root=plan.run_root, total=len(plan.tiles), skipped=len(plan.done))
    res = config.resources
    init_ray(res.address)
    if plan.todo:
        n_workers = res.num_workers or _default_workers(res.gpus_per_worker)
        n_workers = max(1, min(n_workers, len(plan.todo)))
        n_workers, cube_cpus = _fit_to_cluster(n_workers, res.cpus_per_worker)
        try:
            _drive(plan.todo, config, n_workers, summary, progress, stages, cube_cpus)
        except OSError as exc:  # StoreError/DataAccessError: the store died under the driver
            summary.error = _short(exc, "the run stopped")
            log.error("%s", summary.error)
    summary.wall_s = time.monotonic() - t0
    if finish:
        _ensure_cwd()
        try:
            summary.report = stages.finish_run(
                config, plan, summary.outcomes, wall_s=summary.wall_s
            )
        except Exception as exc:  # noqa: BLE001 - whatever failed, the summary still comes out
            summary.error = summary.error or _short(exc, "mosaics/catalog/report not written")
            log.error("%s", summary.error)
            _local_report(config, plan, summary)
    return summary


def _local_report(config: RunConfig, plan: mapping.RunPlan, summary: RunSummary) -> None:
    """The store did not take the report: write it from the driver's outcomes to a local file
    (:func:`geoxai.mapping.report.write_local_report`) and say where."""
    layout = RunLayout(config.run_root(), config.store.storage_options or None)
    try:
        summary.report = write_local_report(
            layout,
            config,
            plan,
            {k: o.to_dict() for k, o in summary.outcomes.items()},
            wall_s=summary.wall_s,
            store_error=summary.error or "",
        )
        summary.report_is_local = True
        log.warning("the store did not take the report; it is at %s", summary.report)
    except Exception as exc:  # noqa: BLE001 - the summary still comes out
        log.error("%s", _short(exc, "no local report either"))


def _short(exc: BaseException, what: str) -> str:
    """``what: ErrorName: first line of the message`` (no traceback, at most 400 characters)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{what}: {type(exc).__name__}: {first}"[:400]


def _ensure_cwd() -> None:
    """A Ray job's working dir can be garbage-collected under a long-running driver (seen after
    a node died); pystac resolves hrefs against the cwd, so move to a directory that exists."""
    try:
        os.getcwd()
    except FileNotFoundError:
        log.warning("the working directory was removed; continuing in %s", tempfile.gettempdir())
        os.chdir(tempfile.gettempdir())


def _default_workers(gpus_per_worker: float) -> int:
    resources = ray.cluster_resources()
    if gpus_per_worker > 0 and resources.get("GPU", 0) > 0:
        return max(1, int(resources["GPU"] // gpus_per_worker))
    return max(1, int(resources.get("CPU", 2) // 2))


def _fit_to_cluster(n_workers: int, cpus_per_worker: float) -> tuple[int, float]:
    """Actors hold their CPUs for the whole run, so never ask for more than the cluster has.

    Cube tasks reserve no CPU (``num_cpus=0``): they are I/O bound, their concurrency is
    bounded by the driver (``cube_tasks_in_flight``), and a reservation could deadlock a run
    whose actors hold every CPU left after a node died. Returns ``(actors, CPUs per cube task)``.
    """
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    fit = max(1, int(cpus // cpus_per_worker))
    if n_workers > fit:
        log.warning(
            "%d tile actors of %.2g CPU do not fit a cluster of %.3g CPUs; using %d",
            n_workers,
            cpus_per_worker,
            cpus,
            fit,
        )
        n_workers = fit
    return n_workers, 0.0


def _worker_options(config: RunConfig) -> dict[str, Any]:
    res = config.resources
    return {"num_cpus": res.cpus_per_worker, "num_gpus": res.gpus_per_worker}


class _Books:
    """The driver's bookkeeping of outcomes: the summary, the progress bar, and the failed
    record written for every tile the driver sees fail (so no older ``done`` record of the tile
    stays on the store while the run reports it failed)."""

    def __init__(
        self, summary: RunSummary, bar: _Progress, stages: RunStages, config: RunConfig
    ) -> None:
        self.summary, self.bar, self.stages, self.config = summary, bar, stages, config
        self.store_ok = True

    def record(self, outcome: TileOutcome) -> None:
        """Keep ``outcome`` without its record (status, reason, timings: the record is on the
        store; 240,000 records of several kB would not fit a laptop-sized driver)."""
        self.summary.outcomes[outcome.tile_id] = outcome.compact()
        self.bar.advance(outcome.status)

    def fail(self, tile: TileSpec, exc: BaseException) -> None:
        """Record ``tile`` failed with the cause of ``exc``, on the store when it answers."""
        cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
        reason = f"{type(cause).__name__}: {cause}".strip()[:2000]
        outcome = TileOutcome(tile.id, "failed", reason)
        if self.store_ok:
            try:
                cube = CubeStage(tile.id, "failed", reason=reason)
                outcome = self.stages.record_empty_or_failed(tile, cube, self.config)
            except Exception as err:  # noqa: BLE001 - the store may be gone; the summary stays
                self.store_ok = False
                log.warning(
                    "%s", _short(err, f"the failed record of tile {tile.id} was not written")
                )
        self.record(outcome)


def _drive(
    todo: list[TileSpec],
    config: RunConfig,
    n_workers: int,
    summary: RunSummary,
    progress: bool,
    stages: RunStages,
    cube_cpus: float = 1.0,
) -> None:
    """Schedule cube tasks and actor calls until every tile has an outcome.

    An actor gets tiles only while it is known to be up: each one is probed (``device()``)
    at start and again after a call on it was lost. A probe that never answers (an actor
    restarted after its node died, waiting for resources the surviving nodes do not have)
    just keeps that actor out of the rotation; tiles go to the others. A probe that fails
    (the actor is gone for good) replaces the actor, at most ``max_retries`` times in a row
    (an actor that can never start, e.g. a bundle that fails to load on the device, stops the
    run with the cause instead of being replaced forever). Every tile that fails gets a
    ``failed`` record (:class:`_Books`). The record index is rewritten in the background every
    10 minutes and at 1,000 finished tiles and each doubling after (:class:`IndexCheckpoints`),
    so a rerun after a kill plans with few GETs.
    After :data:`_STALL_LOG_S` without any event the driver logs what it waits for
    (:func:`wait_line`).
    """
    res = config.resources
    opts = _worker_options(config)
    # What every task and actor gets: the config without its tile list (a run restricted to
    # 100,000 listed tiles would ship them with every task) and the stages, each put in the
    # object store once for the cube tasks (not serialised per task); actors get them by value.
    shipped = config.model_copy(update={"tiles": None})
    config_ref, stages_ref = ray.put(shipped), ray.put(stages)
    workers = [TileWorker.options(**opts).remote(shipped, stages) for _ in range(n_workers)]
    capacity = 1 + res.tiles_per_worker_in_flight
    load: dict[int, int] = dict.fromkeys(range(n_workers), 0)
    up: set[int] = set()
    starts: dict[int, int] = dict.fromkeys(range(n_workers), 0)  # replacements since last up
    probes: dict[ray.ObjectRef, int] = {w.device.remote(): i for i, w in enumerate(workers)}
    pending: deque[tuple[TileSpec, int]] = deque((t, 0) for t in todo)
    built: deque[tuple[TileSpec, int, mapping.CubeStage]] = deque()
    cube_refs: dict[ray.ObjectRef, tuple[TileSpec, int]] = {}
    proc_refs: dict[ray.ObjectRef, tuple[TileSpec, int, int, mapping.CubeStage]] = {}
    since: dict[ray.ObjectRef, float] = {}  # submission time of each cube task / actor call
    max_buffer = n_workers * capacity
    last_event = time.monotonic()
    dead_before = _dead_nodes()  # nodes a long-lived cluster lost before this run

    bar = _Progress(len(todo), enabled=progress)
    books = _Books(summary, bar, stages, config)
    index = IndexCheckpoints(RunLayout(config.run_root(), config.store.storage_options or None))
    try:
        while pending or built or cube_refs or proc_refs:
            # 1. keep the cube stage busy, bounded by what the actors can absorb soon
            while (
                pending
                and len(cube_refs) < res.cube_tasks_in_flight
                and len(built) + len(cube_refs) < max_buffer
            ):
                tile, attempt = pending.popleft()
                # no per-tile task name: Ray keeps per-name metrics in the driver (17 kB/tile)
                ref = _cube_task.options(num_cpus=cube_cpus, scheduling_strategy="SPREAD").remote(
                    tile, config_ref, stages_ref
                )
                cube_refs[ref] = (tile, attempt)
                since[ref] = time.monotonic()
            # 2. hand built cubes to the least-loaded live actor with room
            while built and up:
                w = min(up, key=lambda i: load[i])
                if load[w] >= capacity:
                    break
                tile, attempt, cube = built.popleft()
                ref = workers[w].process.remote(tile, cube)
                proc_refs[ref] = (tile, attempt, w, cube)
                since[ref] = time.monotonic()
                load[w] += 1
            waiting = list(cube_refs) + list(proc_refs) + list(probes)
            if not waiting:
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            now = time.monotonic()
            if ready:
                last_event = now
            elif now - last_event > _STALL_LOG_S:
                last_event = now
                running = [("cube", t.id, since[r], None) for r, (t, _) in cube_refs.items()]
                running += [("map", t.id, since[r], w) for r, (t, _, w, _) in proc_refs.items()]
                log.warning(
                    "%s",
                    wait_line(
                        now,
                        running,
                        len(built),
                        len(pending),
                        len(up),
                        n_workers,
                        _dead_nodes() - dead_before,
                    ),
                )
            for ref in ready:
                since.pop(ref, None)
                if ref in probes:
                    w = probes.pop(ref)
                    try:
                        ray.get(ref)
                        up.add(w)
                        starts[w] = 0
                    except _LOST as exc:
                        starts[w] += 1
                        if starts[w] > res.max_retries:
                            raise GeoXAIError(
                                f"tile actor {w} died {starts[w]} times in a row before it "
                                f"answered (last: {type(exc).__name__}: {exc}); check that the "
                                "model bundles load on resources.device and that the nodes "
                                "have the CPUs/GPUs resources.* asks for."
                            ) from exc
                        log.warning("tile actor %d is gone (%s); starting a new one", w, exc)
                        ray.kill(workers[w], no_restart=True)
                        workers[w] = TileWorker.options(**opts).remote(shipped, stages)
                        probes[workers[w].device.remote()] = w
                elif ref in cube_refs:
                    tile, attempt = cube_refs.pop(ref)
                    try:
                        cube = ray.get(ref)
                    except _LOST as exc:
                        _requeue(pending, tile, attempt, exc, books, res.max_retries)
                        continue
                    except RayTaskError as exc:
                        books.fail(tile, exc)
                        continue
                    if cube.status != "ok":
                        books.record(stages.record_empty_or_failed(tile, cube, config))
                    else:
                        built.append((tile, attempt, cube))
                else:
                    tile, attempt, w, cube = proc_refs.pop(ref)
                    load[w] -= 1
                    try:
                        outcome = ray.get(ref)
                    except _LOST as exc:
                        if w in up:  # first loss seen on this actor: probe it before reuse
                            up.discard(w)
                            probes[workers[w].device.remote()] = w
                        _requeue_built(built, tile, attempt, cube, exc, books, res.max_retries)
                        continue
                    except RayTaskError as exc:
                        books.fail(tile, exc)
                        continue
                    books.record(outcome)
            index.tick(len(summary.outcomes))
    finally:
        index.close()
        bar.close()
        for w in workers:
            ray.kill(w, no_restart=True)


_STALL_LOG_S = 60.0
"""Seconds without any finished task or probe before the driver logs what it waits for."""


_STAGE_WORDS = {"cube": "cube (STAC search, download)", "map": "map (smooth, predict, write)"}


def wait_line(
    now: float,
    running: list[tuple[str, str, float, int | None]],
    n_built: int,
    n_pending: int,
    n_up: int,
    n_workers: int,
    dead_nodes: int = 0,
) -> str:
    """The driver's periodic "still waiting" line: what runs, for how long, what queues.

    Args:
        now: ``time.monotonic()``.
        running: one ``(stage, tile id, started, actor or None)`` per cube task (``"cube"``)
            and actor call (``"map"``) in flight; ``started`` on the ``now`` clock.
        n_built: committed cubes waiting for an actor. n_pending: tiles not started.
        n_up: tile actors known to be up, of ``n_workers``.
        dead_nodes: cluster nodes that died during the run; node loss is mentioned only then.

    Returns:
        e.g. ``waiting for 3 tiles on 2 actors and 1 cube build; longest running: tile X for
        75 s in stage map (smooth, predict, write); 0 cubes queued, 4 tiles not started; 2 of 2
        tile actors up``.
    """
    maps = [r for r in running if r[0] == "map"]
    cubes = [r for r in running if r[0] == "cube"]
    what = []
    if maps:
        n_act = len({r[3] for r in maps})
        what.append(
            f"{len(maps)} tile{'s' * (len(maps) != 1)} on {n_act} actor{'s' * (n_act != 1)}"
        )
    if cubes:
        what.append(f"{len(cubes)} cube build{'s' * (len(cubes) != 1)}")
    line = f"waiting for {' and '.join(what) or 'a tile actor to come up'}"
    if running:  # an actor runs its calls in order: the oldest call of all is running
        stage, tile_id, t0, _ = min(running, key=lambda r: r[2])
        line += (
            f"; longest running: tile {tile_id} for {now - t0:.0f} s in stage {_STAGE_WORDS[stage]}"
        )
    line += f"; {n_built} cubes queued, {n_pending} tiles not started"
    line += f"; {n_up} of {n_workers} tile actors up"
    if n_up < n_workers:
        if dead_nodes:
            line += (
                f" ({dead_nodes} node{'s' * (dead_nodes != 1)} lost during the run: an actor "
                "restarted after a node loss waits for free resources, check `ray status`)"
            )
        else:
            line += " (the others are starting: loading their models)"
    return line


def _dead_nodes() -> int:
    """Nodes of the cluster that are no longer alive (0 if Ray cannot say)."""
    try:
        return sum(1 for n in ray.nodes() if not n.get("Alive", True))
    except Exception:  # noqa: BLE001 - a log line must not stop the run
        return 0


def _requeue(pending, tile, attempt, exc, books: _Books, max_retries: int) -> None:
    books.summary.requeued += 1
    if attempt + 1 > max_retries:
        books.fail(tile, exc)
        return
    log.warning(
        "tile %s lost (%s); re-queued (attempt %d)", tile.id, type(exc).__name__, attempt + 1
    )
    pending.appendleft((tile, attempt + 1))


def _requeue_built(built, tile, attempt, cube, exc, books: _Books, max_retries: int) -> None:
    """A mapping call died with its actor/node: redo it; the cube is still in the store."""
    books.summary.requeued += 1
    if attempt + 1 > max_retries:
        books.fail(tile, exc)
        return
    log.warning("tile %s lost with its worker (%s); re-queued", tile.id, type(exc).__name__)
    built.appendleft((tile, attempt + 1, cube))


class _Progress:
    """A rich progress bar: tiles done/failed/empty of total, tiles/min, ETA."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.counts = {"done": 0, "failed": 0, "empty": 0}
        self.t0 = time.monotonic()
        self.total = total
        self.progress = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]tiles"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("tiles", total=total, stats=self._stats())
        self.progress.start()

    def _stats(self) -> str:
        n = sum(self.counts.values())
        minutes = max((time.monotonic() - self.t0) / 60, 1e-9)
        c = self.counts
        counts = f"done {c['done']} failed {c['failed']} empty {c['empty']}"
        return f"{counts} | {n / minutes:.1f} tiles/min"

    def advance(self, status: str) -> None:
        self.counts[status if status in self.counts else "failed"] += 1
        if self.progress is not None:
            self.progress.update(self.task, advance=1, stats=self._stats())

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
