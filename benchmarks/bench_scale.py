"""Scale simulation: Brazil's real tile list (240,346 tiles of 6 km) through planning, resume and
the driver, on this machine with a local store; time and peak memory per step.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000,10000,100000,240346]
        [--drive-sizes 1000,10000] [--only outputs,plan,...] [--s3] [--work DIR] [--keep]
        [--reuse]

Steps (each a function ``step_<name>(ctx) -> dict`` in :data:`STEPS`, run in a forked child so
its peak RSS is its own; ``ctx`` carries the tile list and the work folder between steps; other
benchmark files add steps to the list, e.g. ``bench_scale_outputs.py``):

1. ``cover``: ``cover_aoi("BRA")``, the tiles a run of Brazil plans (the driver's first step;
   ``--reuse`` takes the list a ``--keep`` run left).
2. per tile count N (the first N of the list taken evenly over it, so every zone is in):
   ``outputs_N``: synthetic outputs of N done tiles in a fresh run root: one real tile
   written by ``write_tile`` (chunks verified, COGs by GDAL, the record), then for every other
   tile a copy of its chunk and COG bytes at the tile's keys and its record with the tile's
   ids, sizes and 80 input item ids (a record of a real run's size). Written with plain file
   writes, or batches of concurrent PUTs on S3 (set-up, not a geoxai code path); then the
   record index, as a finished run writes it (``write_record_index``, timed apart: ``index_s``).
   ``plan_N``: ``check_tiles`` over the N tiles (the resume decision: one listing per prefix,
   one read of the record index, no record, chunk or COG read); prints the listings and the
   object reads made.
   ``rerun_N``: ``pipelines.run.run`` on the run root with nothing left to do: the real
   planning (``cover_aoi`` of Brazil, config saved, zone stores opened, ``check_tiles``), Ray
   started, no tile driven; no-op finish.
   ``finish_N``: ``finish_run`` over the N records (COG check by listing, report,
   stac-geoparquet catalog), the records streamed; mosaics and quicklooks left out (they read
   pixels: ``bench_scale_outputs.py``).
3. ``drive_N`` (``--drive-sizes``): the driver with no-op stages over N tiles to do (Ray task
   and actor call per tile, no I/O): ``drive_s`` (``run()`` once Ray is up),
   ``steady_ms_per_tile`` (first to last outcome) and the driver's ``rss_growth_mb``.

``--only`` runs some step kinds (``cover`` always runs). ``--s3``: the run roots live on a
local S3 server (``moto_server`` on 127.0.0.8, in memory, stopped at the end; fake keys in the
environment) and every step says the S3 requests it made (``list`` pages, ``get``, ``head``,
``put``, ``delete``), counted from the server's request log; results go to
``bench_scale_s3.json``.

Prints a table and per-tile costs with their ratio between the smallest and the largest N
(goal <= 1.5), and writes ``benchmarks/results/bench_scale.json`` with the machine context.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from bench_scale_store import S3Server, Writer  # noqa: E402

AOI = "BRA"
NAME = "geoxai-scale"
YEAR = 2024


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tiles(arr: np.ndarray) -> list:
    from geoxai.geo.grid import TileSpec

    return [TileSpec(int(e), int(c), int(r)) for e, c, r in arr]


def _subset(ctx: dict, n: int) -> np.ndarray:
    arr = np.load(ctx["tiles_npy"])
    if n >= len(arr):
        return arr
    return arr[np.linspace(0, len(arr) - 1, n).round().astype(int)]


def _config(ctx: dict, n: int, root: str) -> Any:
    from geoxai.config import load_run_config

    sub = _subset(ctx, n)
    tiles = None if len(sub) == ctx["n_tiles"] else [t.id for t in _tiles(sub)]
    return load_run_config(
        {
            "name": NAME,
            "aoi": AOI,
            "year": YEAR,
            "tiles": tiles,
            "stac": {"url": "http://127.0.0.1:9/"},
            "store": {"root": root},
            "models": {"prediction": "noop"},
            "resources": {"num_workers": 1, "cpus_per_worker": 0.5},
        }
    )


# ---- steps ---------------------------------------------------------------------------------------


def step_cover(ctx: dict) -> dict:
    """``cover_aoi("BRA")``: the run's tile list (kept in ``ctx["tiles_npy"]``)."""
    from geoxai.geo.aoi import cover_aoi

    tiles = cover_aoi(AOI)
    arr = np.array([(t.epsg, t.col, t.row) for t in tiles], dtype=np.int32)
    np.save(ctx["tiles_npy"], arr)
    return {"tiles": len(tiles), "zones": len({t.epsg for t in tiles})}


def _layers() -> list:
    from geoxai.io.zonestore import default_layers

    return [s for s in default_layers() if s.name in ("prediction", "quality")]


def step_outputs(ctx: dict, n: int) -> dict:
    """Synthetic outputs and records of ``n`` done tiles (see the module docstring)."""
    from geoxai.io.cog import write_tile_cogs
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneGrid, ZoneStore
    from geoxai.mapping.record_index import write_record_index
    from geoxai.mapping.records import write_tile

    root = _root(ctx, n)
    out = Writer(root)
    cfg = _config(ctx, n, root)
    layout = RunLayout(cfg.run_root())
    tiles = _tiles(_subset(ctx, n))
    layers = _layers()
    zones = {e: ZoneStore.create(layout, g, layers) for e, g in ZoneGrid.from_tiles(tiles).items()}
    t0 = tiles[0]
    px = t0.core_px
    ramp = np.full((px, px), 0.5, np.float32)  # compresses: small files (disk)
    values = {"prediction": ramp, "quality": np.ones((px, px), np.uint8)}
    items = [f"S2B_MSIL2A_2024{i:04d}T133149_R081_T22KHG_2024{i:04d}T165000" for i in range(80)]
    rec0 = write_tile(
        zones[t0.epsg],
        t0,
        values,
        {
            "config_hash": cfg.output_hash(),
            "input_items": items,
            "cogs": write_tile_cogs(layout, zones[t0.epsg], t0, values),
            "timings": {"cube_s": 30.0, "read_s": 1.0, "map_s": 20.0, "cog_s": 2.0},
        },
    )
    names = list(rec0["layers"])
    chunk = {k: out.read(zones[t0.epsg].loc.child(rec0["layers"][k]["chunk"]).path) for k in names}
    cog = {k: out.read(layout.url(m["href"])) for k, m in rec0["cogs"].items()}
    # the record as a text template: the tile's id, zone and chunk keys are filled in per tile
    text = json.dumps(rec0).replace(t0.id, "{tid}").replace(f'"epsg": {t0.epsg}', '"epsg": {epsg}')
    text = text.replace(f"zone={t0.epsg}", "zone={epsg}").replace("{", "{{").replace("}", "}}")
    for a in ("tid", "epsg"):
        text = text.replace("{{" + a + "}}", "{" + a + "}")
    for k in names:
        text = text.replace(f'"{rec0["layers"][k]["chunk"]}"', '"{ck_' + k + '}"')
    for t in tiles[1:]:
        zone = zones[t.epsg]
        keys = {f"ck_{k}": zone.chunk_key(k, t) for k in names}
        for k in names:
            out.write(zone.loc.child(keys[f"ck_{k}"]).path, chunk[k])
        for k, raw in cog.items():
            out.write(layout.cog_url(k, t.id), raw)
        out.write(layout.record_url(t.id), text.format(tid=t.id, epsg=t.epsg, **keys).encode())
    out.flush()
    files = len(tiles) * (1 + len(rec0["layers"]) + len(rec0["cogs"]))
    nbytes = len(text) + sum(map(len, chunk.values())) + sum(map(len, cog.values()))
    t = time.perf_counter()
    idx = write_record_index(layout)
    index_s = time.perf_counter() - t
    if idx.rows != n:
        raise RuntimeError(f"outputs_{n}: the record index holds {idx.rows} of {n} records")
    return {
        "tiles": n,
        "files": files,
        "bytes_per_tile": nbytes,
        "index_s": round(index_s, 2),
        "index_mb": round(idx.nbytes / 2**20, 1),
    }


def _root(ctx: dict, n: int) -> str:
    """The run root of the ``n``-tile steps: under the work folder, or on the local S3 server
    (``--s3``: ``ctx["s3_base"]``)."""
    return f"{ctx.get('s3_base') or ctx['work']}/n{n}"


def step_plan(ctx: dict, n: int) -> dict:
    """``check_tiles`` over ``n`` done tiles: the resume decision."""
    from geoxai.io.layout import RunLayout
    from geoxai.io.listing import Listing
    from geoxai.mapping.records import check_tiles

    cfg = _config(ctx, n, _root(ctx, n))
    tiles = _tiles(_subset(ctx, n))
    listing = Listing()
    t = time.perf_counter()
    found = check_tiles(RunLayout(cfg.run_root()), tiles, cfg.output_hash(), listing=listing)
    wall = time.perf_counter() - t
    if len(found.done) != n:
        raise RuntimeError(f"plan_{n}: {len(found.done)} of {n} tiles done; {found.invalidated}")
    return {
        "tiles": n,
        "done": len(found.done),
        "listings": listing.listings,
        "reads": listing.reads,
        "check_s": wall,
    }


def step_finish(ctx: dict, n: int) -> dict:
    """``finish_run`` over the records of ``n`` done tiles: the COG check by listing, the
    report and the stac-geoparquet catalog, streamed from the records; the mosaics and the
    quicklooks are left out here (they read pixels: ``bench_scale_outputs.py``)."""
    import geoxai.mapping.report as report
    import geoxai.mapping.stages as stages
    from geoxai.mapping.plan import RunPlan

    cfg = _config(ctx, n, _root(ctx, n))
    tiles = _tiles(_subset(ctx, n))
    stages.build_mosaics = lambda *a, **k: {}  # this step's child process only
    report.quicklook = lambda *a, **k: None
    plan = RunPlan(cfg.run_root(), cfg.output_hash(), tuple(tiles), [], list(tiles))
    url = stages.finish_run(cfg, plan, {}, wall_s=1.0)
    if not url.endswith("report.html"):
        raise RuntimeError(f"finish_{n}: no report ({url})")
    return {"tiles": n}


class _NoopFinish:
    """geoxai's planning (without the bundle checks), no tile work, no finish."""

    @staticmethod
    def plan_run(config, force=False):
        from geoxai.geo.aoi import cover_aoi
        from geoxai.geo.grid import tile_from_id
        from geoxai.mapping.plan import resume_plan

        tiles = cover_aoi(config.aoi)
        if config.tiles:
            wanted = {tile_from_id(t).id for t in config.tiles}
            tiles = [t for t in tiles if t.id in wanted]
        return resume_plan(config, tiles, _layers(), force=force)

    @staticmethod
    def stage_cube(tile, config):
        raise RuntimeError("a no-op rerun drives no tile")

    load_models = map_and_write = record_empty_or_failed = stage_cube

    @staticmethod
    def finish_run(config, plan, outcomes, wall_s):
        return None


def step_rerun(ctx: dict, n: int) -> dict:
    """``pipelines.run.run`` with nothing to do over ``n`` done tiles."""
    import ray

    from pipelines.run import run

    cfg = _config(ctx, n, _root(ctx, n))
    s = run(cfg, progress=False, stages=_NoopFinish)
    ray.shutdown()
    if s.skipped != n or s.processed:
        raise RuntimeError(f"rerun_{n}: skipped {s.skipped}, processed {s.processed} of {n}")
    return {"tiles": n, "skipped": s.skipped}


class _NoopStages:
    """Stages that do nothing, over the tiles of ``plan_tiles`` (no store)."""

    plan_tiles: tuple = ()

    @staticmethod
    def plan_run(config, force=False):
        from geoxai.mapping.plan import RunPlan

        # hand the list over once: this class travels by value (cloudpickle) with every task
        tiles, _NoopStages.plan_tiles = _NoopStages.plan_tiles, ()
        return RunPlan("noop://", "0", tiles, list(tiles), [])

    @staticmethod
    def stage_cube(tile, config):
        from geoxai.mapping.outcomes import CubeStage

        return CubeStage(tile.id, "ok", "noop://", ())

    @staticmethod
    def load_models(config):
        return None

    @staticmethod
    def map_and_write(tile, cube, models, config):
        from geoxai.mapping.outcomes import TileOutcome

        return TileOutcome(tile.id, "done")

    @staticmethod
    def record_empty_or_failed(tile, cube, config):
        from geoxai.mapping.outcomes import TileOutcome

        return TileOutcome(tile.id, cube.status)

    @staticmethod
    def finish_run(config, plan, outcomes, wall_s):
        return None


def step_drive(ctx: dict, n: int) -> dict:
    """The Ray driver with no-op stages over ``n`` tiles to do.

    ``drive_s``: ``run()`` once Ray is up (planning, actors starting, every tile);
    ``steady_ms_per_tile``: from the first tile's outcome to the last one's (the per-tile cost
    without the actors' start); ``rss_growth_mb``: the driver's RSS after ``run()`` minus
    before (what the run keeps per tile), next to the step's peak RSS."""
    import ray

    from pipelines import run as driver

    _NoopStages.plan_tiles = tuple(_tiles(_subset(ctx, n)))
    cfg = _config(ctx, ctx["n_tiles"], str(Path(ctx["work"]) / "drive"))
    cfg = cfg.model_copy(
        update={
            "resources": cfg.resources.model_copy(
                update={"num_workers": 2, "cpus_per_worker": 0.5, "cube_tasks_in_flight": 8}
            )
        }
    )
    marks: dict[str, float] = {}
    record = driver._Books.record

    def timed(books: Any, outcome: Any) -> None:  # patched in the step's own child process
        marks.setdefault("first", time.perf_counter())
        marks["last"] = time.perf_counter()
        record(books, outcome)

    driver._Books.record = timed  # type: ignore[method-assign]
    driver.init_ray(None)
    rss0 = _statm_mb()
    t = time.perf_counter()
    s = driver.run(cfg, progress=False, stages=_NoopStages)
    drive_s = time.perf_counter() - t
    growth = _statm_mb() - rss0
    ray.shutdown()
    if s.count("done") != n:
        raise RuntimeError(f"drive_{n}: {s.count('done')} of {n} done")
    steady = 1e3 * (marks["last"] - marks["first"]) / max(1, n - 1)
    return {
        "tiles": n,
        "done": s.count("done"),
        "drive_s": round(drive_s, 2),
        "steady_ms_per_tile": round(steady, 3),
        "rss_growth_mb": round(growth, 1),
    }


def _statm_mb() -> float:
    """This process's current RSS, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


Step = tuple[str, Callable[[dict], dict]]


def steps(sizes: list[int], drive_sizes: list[int]) -> list[Step]:
    """The steps in order (name, function of ctx)."""
    out: list[Step] = [("cover", step_cover)]
    for n in sizes:
        out += [
            (f"outputs_{n}", lambda ctx, n=n: step_outputs(ctx, n)),
            (f"plan_{n}", lambda ctx, n=n: step_plan(ctx, n)),
            (f"rerun_{n}", lambda ctx, n=n: step_rerun(ctx, n)),
            (f"finish_{n}", lambda ctx, n=n: step_finish(ctx, n)),
        ]
    out += [(f"drive_{n}", lambda ctx, n=n: step_drive(ctx, n)) for n in drive_sizes]
    return out


STEPS = steps
"""Callable building the step list; other benchmark files extend what it returns."""


def _child(fn: Callable[[dict], dict], ctx: dict, conn: Any) -> None:
    try:
        t = time.perf_counter()
        out = fn(ctx)
        out["wall_s"] = time.perf_counter() - t
        out["peak_rss_mb"] = _rss_mb()
        conn.send(out)
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"[:500]})
    finally:
        conn.close()


def run_step(name: str, fn: Callable[[dict], dict], ctx: dict) -> dict:
    """Run one step in a forked child; its result with ``wall_s`` and ``peak_rss_mb``."""
    fork = mp.get_context("fork")
    parent, child = fork.Pipe(duplex=False)
    p = fork.Process(target=_child, args=(fn, ctx, child), name=f"bench_scale:{name}")
    p.start()
    child.close()
    out = parent.recv() if parent.poll(None) else {"error": "no result"}
    p.join()
    return out


def _context() -> dict:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "ram_gib": round(mem, 1),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
        "parent_rss_mb_at_fork": round(_rss_mb(), 1),
    }


def per_tile(results: dict, prefix: str, key: str = "wall_s") -> dict:
    """``{N: seconds per tile}`` of the steps ``<prefix>_<N>`` and the ratio largest/smallest N."""
    got = {
        int(k.rsplit("_", 1)[1]): v[key] / int(k.rsplit("_", 1)[1])
        for k, v in results.items()
        if k.startswith(prefix + "_") and key in v
    }
    if len(got) < 2:
        return {"per_tile_s": got}
    ns = sorted(got)
    return {"per_tile_s": got, "ratio_last_first": got[ns[-1]] / got[ns[0]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000,240346")
    ap.add_argument("--drive-sizes", default="1000,10000")
    ap.add_argument("--work", default=None, help="work folder (default a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument(
        "--reuse", action="store_true", help="reuse the tile list and run roots of a --keep run"
    )
    ap.add_argument(
        "--s3",
        action="store_true",
        help="outputs, plan and rerun on a local S3 server (moto_server on 127.0.0.8, in "
        "memory, stopped after) instead of the work folder; counts its requests per step",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated step kinds to run (e.g. outputs,finish; cover always runs)",
    )
    args = ap.parse_args()
    only = {v for v in args.only.split(",") if v}
    work = Path(args.work or tempfile.mkdtemp(prefix="geoxai-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, Any] = {"work": str(work), "tiles_npy": str(work / "bra_tiles.npy")}
    sizes = [int(v) for v in args.sizes.split(",") if v]
    drive = [int(v) for v in args.drive_sizes.split(",") if v]
    results: dict[str, dict] = {}
    s3 = S3Server(work) if args.s3 else None
    if s3 is not None:
        ctx["s3_base"] = s3.base
    print(f"{'step':<16} {'wall s':>9} {'ms/tile':>9} {'peak RSS MB':>12}  details", flush=True)
    try:
        for name, fn in STEPS(sizes, drive):
            if only and name != "cover" and name.rsplit("_", 1)[0] not in only:
                continue
            kept = s3 is None and (work / f"n{name[8:]}").exists()
            if args.reuse and name.startswith("outputs_") and kept:
                continue
            if args.reuse and name == "cover" and Path(ctx["tiles_npy"]).exists():
                ctx["n_tiles"] = len(np.load(ctx["tiles_npy"]))  # the kept run's tile list
                continue
            mark = s3.mark() if s3 is not None else 0
            out = run_step(name, fn, ctx)
            if s3 is not None:
                out["s3_requests"] = s3.requests_since(mark)
            results[name] = out
            if name == "cover" and "tiles" in out:
                ctx["n_tiles"] = out["tiles"]
                sizes[:] = [min(n, out["tiles"]) for n in sizes]
            n = out.get("tiles") or 0
            ms = f"{1e3 * out['wall_s'] / n:9.3f}" if n and "wall_s" in out else " " * 9
            extra = {k: v for k, v in out.items() if k not in ("wall_s", "peak_rss_mb", "tiles")}
            print(
                f"{name:<16} {out.get('wall_s', float('nan')):9.1f} {ms} "
                f"{out.get('peak_rss_mb', float('nan')):12.0f}  {extra}",
                flush=True,
            )
    finally:
        if s3 is not None:
            s3.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = {
        p: per_tile(results, p)
        for p in ("outputs", "plan", "rerun", "finish", "drive")
        if len(results)
    }
    summary["plan"]["check_per_tile"] = per_tile(results, "plan", "check_s")
    summary["drive"]["run_per_tile"] = per_tile(results, "drive", "drive_s")
    steady = {int(k[6:]): v["steady_ms_per_tile"] for k, v in results.items()
              if k.startswith("drive_") and "steady_ms_per_tile" in v}  # fmt: skip
    if len(steady) > 1:
        summary["drive"]["steady_ratio_last_first"] = steady[max(steady)] / steady[min(steady)]
    for p, v in summary.items():
        print(f"{p}: per tile {v}")
    out = {"context": _context(), "store": "s3" if s3 else "local", "steps": results,
           "summary": summary}  # fmt: skip
    dest = ROOT / "benchmarks" / "results" / f"bench_scale{'_s3' if s3 else ''}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
