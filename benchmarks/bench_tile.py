"""One tile-year through the real stages on one process: per-stage seconds and floor ratios.

    .venv/bin/python benchmarks/bench_tile.py [--quick] [--ref main] [--no-old]
    .venv/bin/python benchmarks/bench_tile.py --memory [--tile-m 6000]

A synthetic world of one tile (6 km + 64 px halo, 5-day revisit: ~86 dates; ``--quick``: a
2 km tile, 20-day revisit) is written once and served by a local STAC API. Then the same
child process (``--child``) runs, once with this tree's ``geoxai`` and once with the
``--ref`` tree's (checked out into a temporary ``git worktree``), each stage timed in wall
and CPU seconds (``time.process_time``: all threads of the process) with its peak RSS (the
high-water mark is reset before each stage through ``/proc/self/clear_refs``):

* ``cube``: :func:`geoxai.mapping.stage_cube` (search, read the COG windows, write the cube);
* ``read``: the stored cube read back (``store.read_cube(...).load()``);
* ``smooth``: :func:`geoxai.temporal.preprocess` of that cube with the run's parameters;
* ``kernel``: the floor of ``smooth``: the compiled kernels alone (leave-one-out criterion of
  the lambda candidates + Whittaker solve of every pixel at its chosen candidate) on the same
  binned arrays, block by block (binning and gathers untimed);
* ``tile``: the whole tile as a tile actor runs it: ``cube`` + :func:`geoxai.mapping.
  map_and_write` (read, smooth, predict, ASOS, quality, write), with the tiny seeded bundles
  of the run tests (tests/fixtures/world.py: prediction and ASOS are small networks here).

``--memory`` is the bounded-memory check instead: a 2-day revisit with 45 days of pad (an
orbit-overlap area: ~228 acquisitions, all inside the axis + margins), this tree only, stages

* ``cube`` as above;
* ``stream``: :func:`geoxai.mapping.tile_features` (preprocess + held-out scoring, as the tile
  actor runs them) of the *lazy* stored cube, read row block by row block;
* ``map``: :func:`geoxai.mapping.map_and_write` of that committed cube (read, smooth, predict,
  ASOS, quality, write);

each with its peak RSS (goal for a 6 km tile: <= 4 GB). ``--tile-m`` sets a smaller tile to
show how the peak scales with width (it follows block rows x width x dates, not the cube).
``--superres GRAPH`` turns ``processing.super_resolution`` on (WRI's ``superresolve_graph.pb``,
imported into a bundle in the temporary folder): the cube keeps the 20 m bands as read and
``stream``/``map`` run the network on each row block (+ its halo) as it is read.

Printed and written to ``benchmarks/results/bench_tile[_quick|_memory_<m>].json``: the ratios
``smooth / kernel`` (goal <= 1.5) and ``old tile CPU / new tile CPU`` (goal >= 3), measured
in the same invocation. Each stage is one function ``stage_<name>(ctx) -> dict`` in the
child, so further stages (e.g. cube bytes against the source COGs) are one function more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- child: the stages of one tree


def _hwm_gb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb / 2**20


def _reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (Linux >= 4.0)
    except OSError:
        pass


def measured(fn: Callable[[dict], Any], ctx: dict) -> dict:
    """Run one stage: wall and CPU seconds, peak RSS during it."""
    _reset_hwm()
    w0, c0 = time.perf_counter(), time.process_time()
    extra = fn(ctx) or {}
    return {
        "wall_s": time.perf_counter() - w0,
        "cpu_s": time.process_time() - c0,
        "peak_rss_gb": _hwm_gb(),
        **extra,
    }


def stage_cube(ctx: dict) -> dict:
    from geoxai import mapping

    ctx["cube"] = mapping.stage_cube(ctx["tile"], ctx["config"])
    return {"status": str(ctx["cube"].status)}


def stage_read(ctx: dict) -> dict:
    from geoxai.io import store

    ctx["raw"] = store.read_cube(ctx["cube"].url).load()
    return {"shape": list(ctx["raw"].shape), "dtype": str(ctx["raw"].dtype)}


def stage_smooth(ctx: dict) -> dict:
    from geoxai import mapping
    from geoxai.temporal.smoothing import preprocess

    ctx["smoothed"] = preprocess(ctx["raw"], mapping.preprocess_params(ctx["config"]))
    return {"valid_fraction": float(ctx["smoothed"]["valid"].mean())}


def stage_kernel(ctx: dict) -> dict:
    """The compiled kernels alone on the arrays ``smooth`` solved (timed inside); skipped for
    an old tree whose kernels take observations snapped to nodes (before issue 15's exact
    times): the floor of both trees is this tree's kernels."""
    import numpy as np

    try:
        import geoxai.temporal.binning as binning
    except ImportError:  # a tree before the smoothing stage's row blocks (issue 14)
        binning = None
    if not hasattr(binning, "obs_nodes"):
        return {"skipped": "kernels before exact-time observations"}
    from geoxai import mapping
    from geoxai.temporal.binning import obs_nodes
    from geoxai.temporal.indices import compute_indices
    from geoxai.temporal.lambda_select import lambda_cv
    from geoxai.temporal.smoothing import bin_series, criterion_channels, observation_weights
    from geoxai.temporal.whittaker import whittaker

    params = mapping.preprocess_params(ctx["config"])
    sp = params.smoothing
    raw = ctx["raw"]
    choice = ctx["smoothed"]["lambda_choice"].values if sp.lambda_ is None else None
    days = (raw["time"].values - sp.axis_start()) / np.timedelta64(1, "D")
    weights = observation_weights(raw, params)
    crit = criterion_channels(params.bands)
    scale = sp.lambda_step_days / sp.grid_days
    t_kernel = 0.0
    c_kernel = 0.0
    ny = raw.sizes["y"]
    for r0 in range(0, ny, 64):
        r1 = min(r0 + 64, ny)
        blk = raw.isel(y=slice(r0, r1)).sel(band=list(params.bands)).values
        refl = blk.reshape(blk.shape[0], blk.shape[1], -1)
        w = weights[:, r0:r1].reshape(blk.shape[0], -1) * np.isfinite(refl).all(axis=1)
        refl = np.where(w[:, None] > 0, refl, 0.0).astype(np.float32)
        idx = compute_indices(refl, params.bands, params.indices, axis=1)
        nodes, binned = bin_series(np.concatenate([refl, idx], axis=1), w, days, sp)
        ybar, wsum, woff = binned.ybar.astype(np.float32), binned.wsum, binned.woff
        at = obs_nodes(days, nodes)
        groups = []
        if choice is None:
            groups.append((None, sp.order, sp.lambda_ * scale ** (2 * sp.order - 1)))
        else:
            pick = choice[r0:r1].ravel()
            for k, (o, lam) in enumerate(sp.lambda_candidates):
                sel = np.nonzero(pick == k)[0]
                if sel.size:
                    groups.append((sel, o, lam * scale ** (2 * o - 1)))
        w0, c0 = time.perf_counter(), time.process_time()
        if choice is not None:
            lambda_cv(
                refl,
                w,
                sp.lambda_candidates,
                at=at,
                n_nodes=nodes.size,
                scale=scale,
                channels=crit,
            )
        for sel, o, lam in groups:
            whittaker(ybar, wsum, lam, o, pixels=sel, off=woff)
        t_kernel += time.perf_counter() - w0
        c_kernel += time.process_time() - c0
    return {"kernel_wall_s": t_kernel, "kernel_cpu_s": c_kernel}


def stage_tile(ctx: dict) -> dict:
    """cube + map_and_write: the whole tile as an actor runs it (fresh store)."""
    from geoxai import mapping

    cfg = ctx["config_fresh"]
    cube = mapping.stage_cube(ctx["tile"], cfg)
    models = ctx["models"]
    out = mapping.map_and_write(ctx["tile"], cube, models, cfg)
    return {"status": str(out.status), "timings": {k: float(v) for k, v in out.timings.items()}}


def stage_stream(ctx: dict) -> dict:
    """tile_features of the lazy stored cube: row blocks streamed from the store."""
    from geoxai import mapping
    from geoxai.io import store

    raw = store.read_cube(ctx["cube"].url)
    feats = list(ctx["models"].prediction.spec.inputs.features)
    ds, _ = mapping.tile_features(
        raw, ctx["tile"], ctx["config"], feats, superres=ctx["models"].superres
    )
    return {
        "raw_shape": list(raw.shape),
        "raw_float32_gb": raw.size * 4 / 2**30,
        "features_gb": ds["features"].nbytes / 2**30,
        "valid_fraction": float(ds["valid"].mean()),
    }


def stage_map(ctx: dict) -> dict:
    """map_and_write of the committed cube of ``cube`` (read lazily, smooth, predict, write)."""
    from geoxai import mapping

    out = mapping.map_and_write(ctx["tile"], ctx["cube"], ctx["models"], ctx["config_fresh"])
    return {"status": str(out.status), "timings": {k: float(v) for k, v in out.timings.items()}}


STAGES = ("cube", "read", "smooth", "kernel", "tile")
MEMORY_STAGES = ("cube", "stream", "map")


def warm_up(ctx: dict, rows: int = 136) -> None:
    """Compile (or load from numba's cache) every kernel ``smooth``, ``kernel`` and the tile's
    held-out scoring call, on the first ``rows`` rows (several row blocks, so the per-candidate
    and pooling paths run too), outside the timings: a tile actor pays this once per process,
    not per tile."""
    from geoxai import mapping
    from geoxai.temporal.heldout import TileHeldout
    from geoxai.temporal.smoothing import preprocess

    small = {**ctx, "raw": ctx["raw"].isel(y=slice(0, rows))}
    stage_smooth(small)
    stage_kernel(small)
    params = mapping.preprocess_params(ctx["config"])
    held = TileHeldout(small["raw"], params.smoothing)
    preprocess(small["raw"], params, block_hook=held.add)


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.tree)
    sys.path.insert(1, str(ROOT))  # tests.fixtures (the bundles' config helper) from this tree
    from geoxai import mapping
    from geoxai.geo.grid import TileSpec

    spec = json.loads(args.child)
    tile = TileSpec(**spec["tile"])
    from geoxai.synthetic.world import load_world
    from tests.fixtures.world import RunWorld

    world = load_world(spec["world"])
    rw = RunWorld(world, spec["stac_url"], spec["models"], Path(spec["workdir"]))
    over: dict[str, Any] = {"processing": {"halo_px": spec["halo"], "tile_size_m": spec["tile_m"]}}
    if spec.get("superres"):  # super-resolution on (--superres)
        over["processing"]["super_resolution"] = {"bundle": spec["superres"]}
    if spec.get("stac_margin_days"):  # read the archive's whole pad (--memory)
        over["stac"] = {"margin_days": spec["stac_margin_days"]}
    ctx: dict[str, Any] = {
        "tile": tile.with_halo(spec["halo"]),
        "config": rw.config(Path(spec["workdir"]) / "store_stages", **over),
        "config_fresh": rw.config(Path(spec["workdir"]) / "store_tile", **over),
    }
    mapping.plan_run(ctx["config_fresh"])  # creates the zone stores the tile writes into
    ctx["models"] = mapping.load_models(ctx["config_fresh"])
    res: dict[str, Any] = {"tree": args.tree}
    _reset_hwm()
    res["baseline_rss_gb"] = _hwm_gb()  # interpreter, geoxai, torch and the models
    for name in spec.get("stages", STAGES):
        if name == "smooth":
            warm_up(ctx)
        if name == "stream":  # compile the kernels on a few lazily read rows first
            from geoxai.io import store

            warm_up({**ctx, "raw": store.read_cube(ctx["cube"].url).isel(y=slice(0, 136))})
        res[name] = measured(globals()[f"stage_{name}"], ctx)
        print(f"  {name}: {res[name]}", file=sys.stderr, flush=True)
    print(json.dumps(res))


# ---------------------------------------------------------------- parent


def _context() -> dict:
    return {
        "cores": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _old_tree(ref: str, tmp: Path) -> Path:
    path = tmp / "old_tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    return path


def run_child(tree: Path, spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    res = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec), "--tree", str(tree)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tree),
    )
    sys.stderr.write(res.stderr[-4000:])
    if res.returncode:
        raise SystemExit(f"child for {tree} failed ({res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 2 km tile, 20-day revisit")
    ap.add_argument("--ref", default="main", help="git ref of the old path (default main)")
    ap.add_argument("--no-old", action="store_true", help="this tree only")
    ap.add_argument(
        "--memory", action="store_true", help="peak RSS of a ~228-date tile streamed from the store"
    )
    ap.add_argument("--tile-m", type=int, help="tile size, m (default 6000; --quick 2000)")
    ap.add_argument("--superres", help="WRI's superresolve_graph.pb: super-resolution on")
    ap.add_argument("--stages", help="comma-separated subset of the stages (default: all)")
    ap.add_argument("--revisit", type=int, help="days between acquisitions (--memory: 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT))
    from geoxai.geo.grid import TileSpec
    from geoxai.synthetic.world import make_world
    from pipelines.services import local_stac_api
    from tests.fixtures.world import _tiny_bundles

    tile_m, halo = (2000, 64) if args.quick else (6000, 64)
    tile_m = args.tile_m or tile_m
    revisit = 20 if args.quick else 5
    world_kw: dict[str, Any] = {"revisit_days": revisit}
    if args.memory:  # orbit overlap: every 2 days over the axis and its 45-day margins
        world_kw = {"revisit_days": args.revisit or 2, "pad_days": 45}
        args.no_old = True
    stages = MEMORY_STAGES if args.memory else STAGES
    if args.stages:
        stages = tuple(n for n in stages if n in args.stages.split(","))
    # one origin (576 km E, 5628 km N) whatever the size
    tile = TileSpec(32631, 576_000 // tile_m, 5_628_000 // tile_m, 0, tile_m)
    with tempfile.TemporaryDirectory(prefix="bench_tile_") as tmpd:
        tmp = Path(tmpd)
        t0 = time.perf_counter()
        world, archive = make_world(
            tmp / "world", tiles=[tile], year=2024, seed=2, margin_px=halo, **world_kw
        )
        world_s = time.perf_counter() - t0
        print(f"world: {len(world.dates)} dates, {world_s:.0f} s", flush=True)
        with local_stac_api(archive.ndjson) as url:
            models = _tiny_bundles(tmp / "models", world, url)
            superres = None
            if args.superres:
                from geoxai.models.dsen2 import import_dsen2_lite

                superres = str(import_dsen2_lite(args.superres, tmp / "models" / "dsen2"))
            spec = {
                "tile": {
                    "epsg": tile.epsg,
                    "col": tile.col,
                    "row": tile.row,
                    "halo_px": 0,
                    "tile_size_m": tile_m,
                },
                "halo": halo,
                "tile_m": tile_m,
                "world": str(tmp / "world"),
                "stac_url": url,
                "models": models,
                "stages": stages,
                "stac_margin_days": world_kw.get("pad_days"),
                "superres": superres,
            }
            trees = {"new": ROOT}
            if not args.no_old:
                trees["old"] = _old_tree(args.ref, tmp)
            results: dict[str, Any] = {}
            try:
                for name, tree in trees.items():
                    (tmp / name).mkdir()
                    print(f"{name} ({tree}) ...", flush=True)
                    results[name] = run_child(tree, {**spec, "workdir": str(tmp / name)})
            finally:
                if "old" in trees:
                    subprocess.run(
                        [
                            "git",
                            "-C",
                            str(ROOT),
                            "worktree",
                            "remove",
                            "--force",
                            str(trees["old"]),
                        ],
                        check=False,
                        capture_output=True,
                    )
    out: dict[str, Any] = {
        "context": _context(),
        "tile_m": tile_m,
        "halo_px": halo,
        "dates": len(world.dates),
        "world_s": world_s,
        "ref": None if args.no_old else args.ref,
        "superres": bool(args.superres),
        **results,
    }
    ratios: dict[str, float] = {}
    for name, r in results.items():
        if args.memory or not all(st in r for st in ("smooth", "kernel", "tile")):
            continue
        k = r["kernel"]
        if "kernel_cpu_s" not in k:  # an old tree's kernels: not measured
            ratios[f"{name}_tile_cpu_s"] = r["tile"]["cpu_s"]
            continue
        ratios[f"{name}_smooth_over_kernel_cpu"] = r["smooth"]["cpu_s"] / k["kernel_cpu_s"]
        ratios[f"{name}_smooth_over_kernel_wall"] = r["smooth"]["wall_s"] / k["kernel_wall_s"]
        ratios[f"{name}_tile_cpu_s"] = r["tile"]["cpu_s"]
    full = all(st in r for r in results.values() for st in ("smooth", "kernel", "tile"))
    if "old" in results and full and "kernel_cpu_s" in results["new"]["kernel"]:
        # the same floor for both: this tree's kernels (today's are slower)
        ratios["old_smooth_over_new_kernel_cpu"] = (
            results["old"]["smooth"]["cpu_s"] / results["new"]["kernel"]["kernel_cpu_s"]
        )
        ratios["old_over_new_tile_cpu"] = (
            results["old"]["tile"]["cpu_s"] / results["new"]["tile"]["cpu_s"]
        )
        ratios["old_over_new_smooth_cpu"] = (
            results["old"]["smooth"]["cpu_s"] / results["new"]["smooth"]["cpu_s"]
        )
    out["ratios"] = ratios
    print(f"{'stage':8s} " + " ".join(f"{n + ' wall/cpu/rss':>28s}" for n in results))
    for st in stages:
        cells = [
            f"{results[n][st]['wall_s']:8.1f}s {results[n][st]['cpu_s']:8.1f}s "
            f"{results[n][st]['peak_rss_gb']:6.2f}GB"
            for n in results
        ]
        print(f"{st:8s} " + " ".join(f"{c:>28s}" for c in cells))
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    if args.memory:
        for name, r in results.items():
            print(f"{name}: baseline RSS (imports + models) {r['baseline_rss_gb']:.2f} GB")
        path = dest / f"bench_tile_memory_{tile_m}{'_superres' if args.superres else ''}.json"
    else:
        sr = "_superres" if args.superres else ""
        path = dest / (f"bench_tile_quick{sr}.json" if args.quick else f"bench_tile{sr}.json")
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
