"""Benchmark of the main job on this machine: scheduling overhead, stage timings, scaling.

    .venv/bin/python benchmarks/bench_run.py [--tiles 4] [--revisit 10] [--noop-tiles 200]

1. **Scheduling overhead**: the Ray driver with no-op stages (cube stage, actor call and record
   do nothing) over ``--noop-tiles`` tiles; overhead per tile = wall / tiles (goal <= 50 ms).
2. **End to end**: a synthetic world (``--tiles`` of the 2 km test tiles, at most 4, 2024,
   ``--revisit`` days; a 6 km tile has 9x their pixels) served by a local
   rustac STAC API, mapped with the real stages and small seeded bundles, once with 1 tile actor
   and once with 2 (fresh stores, cubes rebuilt): tiles/hour, per-stage timings from the tile
   records, and the scaling efficiency ``(rate_2 / rate_1) / 2``. On 2 cores the cube stage
   competes with the actors, so expect well under 1.
Writes ``benchmarks/results/bench_run.json`` with the machine context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class NoopStages:
    """Stages that do nothing, so the run measures only Ray scheduling and bookkeeping."""

    n_tiles = 200

    @staticmethod
    def plan_run(config, force=False):
        from geoxai.geo.grid import TileSpec
        from geoxai.mapping.plan import RunPlan

        tiles = tuple(
            TileSpec(32631, 90 + i % 20, 930 + i // 20) for i in range(NoopStages.n_tiles)
        )
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


def _context() -> dict:
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "ram_gib": round(mem, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "load_avg": os.getloadavg(),
    }


def bench_noop(n_tiles: int, workers: int) -> dict:
    from geoxai.config import load_run_config
    from pipelines.run import run

    NoopStages.n_tiles = n_tiles
    cfg = load_run_config(
        {
            "name": "noop",
            "aoi": "4,50,4.1,50.1",
            "year": 2024,
            "stac": {"url": "noop"},
            "store": {"root": "noop"},
            "models": {"prediction": "noop"},
            "resources": {
                "num_workers": workers,
                "cpus_per_worker": 0.5,
                "cube_tasks_in_flight": 4,
            },
        }
    )
    t0 = time.perf_counter()
    s = run(cfg, progress=False, stages=NoopStages)
    wall = time.perf_counter() - t0
    return {
        "tiles": n_tiles,
        "workers": workers,
        "wall_s": wall,
        "ms_per_tile": 1e3 * wall / n_tiles,
        "done": s.count("done"),
    }


def bench_e2e(n_tiles: int, revisit: int, workdir: Path) -> dict:
    import numpy as np

    from geoxai.synthetic.world import make_world
    from pipelines.run import run
    from pipelines.services import local_stac_api
    from tests.fixtures.world import HALO, RunWorld, _tiny_bundles, test_tiles

    t0 = time.perf_counter()
    tiles = test_tiles()[:n_tiles]  # 2 km tiles (the test lattice): 1/9 of a 6 km tile's pixels
    world, archive = make_world(
        workdir / "world", tiles=tiles, year=2024, seed=1, revisit_days=revisit, margin_px=HALO
    )
    world_s = time.perf_counter() - t0
    out: dict = {
        "tiles": n_tiles,
        "revisit_days": revisit,
        "acquisitions": len(world.dates),
        "world_s": world_s,
    }
    with local_stac_api(archive.ndjson) as url:
        models = _tiny_bundles(workdir / "models", world, url)
        rw = RunWorld(world, url, models, workdir)
        for workers in (1, 2):
            cfg = rw.config(
                workdir / f"store{workers}",
                resources={"num_workers": workers, "cube_tasks_in_flight": 1},
            )
            t0 = time.perf_counter()
            s = run(cfg, progress=False, finish=False)
            wall = time.perf_counter() - t0
            stages: dict[str, list[float]] = {}
            for rec in s.outcomes.values():
                for k, v in rec.timings.items():
                    stages.setdefault(k, []).append(float(v))
            out[f"workers_{workers}"] = {
                "wall_s": wall,
                "tiles_per_hour": 3600 * s.count("done") / wall,
                "stage_median_s": {k: statistics.median(v) for k, v in stages.items()},
                "done": s.count("done"),
            }
            failed = {t: o.reason for t, o in s.outcomes.items() if o.status != "done"}
            if failed:
                raise SystemExit(f"{workers} actor(s): tiles not done: {failed}")
    r1, r2 = out["workers_1"]["tiles_per_hour"], out["workers_2"]["tiles_per_hour"]
    out["scaling_efficiency"] = float(np.round((r2 / r1) / 2, 3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--revisit", type=int, default=10)
    ap.add_argument("--noop-tiles", type=int, default=200)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()

    from pipelines.run import init_ray

    os.environ.setdefault("GEOXAI_RAY_TMPDIR", f"/tmp/gxb-{os.getpid()}")
    init_ray(None)
    result = {"context": _context()}
    result["noop_1"] = bench_noop(args.noop_tiles, 1)
    result["noop_2"] = bench_noop(args.noop_tiles, 2)
    for k in ("noop_1", "noop_2"):
        r = result[k]
        print(
            f"scheduling overhead, {r['workers']} actor(s): {r['ms_per_tile']:.1f} ms/tile "
            f"({r['tiles']} no-op tiles; goal <= 50 ms)"
        )
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory(prefix="geoxai-bench-run-") as tmp:
            e2e = bench_e2e(args.tiles, args.revisit, Path(tmp))
        result["e2e"] = e2e
        print(
            f"synthetic world: {e2e['tiles']} tiles x {e2e['acquisitions']} dates "
            f"written in {e2e['world_s']:.0f} s"
        )
        for w in (1, 2):
            r = e2e[f"workers_{w}"]
            st = ", ".join(f"{k} {v:.1f}s" for k, v in r["stage_median_s"].items())
            print(
                f"{w} actor(s): {r['tiles_per_hour']:.0f} tiles/hour ({r['wall_s']:.0f} s); "
                f"median per tile: {st}"
            )
        print(f"scaling 1 -> 2 actors: efficiency {e2e['scaling_efficiency']:.2f}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_run.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {out / 'bench_run.json'}")


if __name__ == "__main__":
    main()
