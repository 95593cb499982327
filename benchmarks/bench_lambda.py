"""Cost of the per-pixel lambda choice and of the held-out score, per tile, in one run.

Run: ``.venv/bin/python benchmarks/bench_lambda.py [--quick] [--threads N]``

A 6 km tile with its halo (610 x 610 px; ``--quick``: 200 x 200), 73 acquisitions over the
year and its margins, 10 bands + SCL with 30 % clouds in 200 m cells, per-pixel seasonal
curves with noise, is preprocessed (:func:`geoxai.temporal.smoothing.preprocess`, 10 bands +
5 indices) three times, timed round-robin (best of ``--repeats``):

* ``fixed``: the reference's fixed lambda (100): the fixed-lambda smoothing stage;
* ``auto``: the default, ``(order, lambda)`` chosen per pixel by leave-one-out CV
  (:mod:`geoxai.temporal.lambda_select`), pooled over 3 x 3;
* ``auto+heldout``: the same plus the run's held-out score of a pixel sample
  (:class:`geoxai.temporal.heldout.TileHeldout`).

Inside each run the Whittaker kernel calls, the choice's first pass (read, weights, binning
and the CV kernel) and the CV kernel alone are timed by wrapping the functions, so the printed
ratios (choice / kernel, auto stage / fixed stage) come from the same run.
Results go to ``benchmarks/results/bench_lambda.json`` with the machine context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import geoxai.temporal.lambda_select as ls  # noqa: E402
import geoxai.temporal.smoothing as tp  # noqa: E402
from geoxai.geo.bands import CUBE_BANDS  # noqa: E402
from geoxai.temporal.heldout import TileHeldout  # noqa: E402

CLOCK: dict[str, float] = defaultdict(float)


def _timed(name: str, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            CLOCK[name] += time.perf_counter() - t

    return wrapper


def instrument() -> None:
    """Wrap the kernels where preprocess looks them up (module globals)."""
    tp.whittaker = _timed("kernel_fixed_s", tp.whittaker)
    ls.whittaker = _timed("kernel_selected_s", ls.whittaker)
    tp.lambda_cv = _timed("cv_kernel_s", tp.lambda_cv)
    tp._lambda_choice = _timed("choice_pass_s", tp._lambda_choice)
    TileHeldout.add = _timed("heldout_s", TileHeldout.add)


def make_cube(side: int, seed: int = 0):
    import xarray as xr

    rng = np.random.default_rng(seed)
    t_count = 73
    days = np.sort(rng.choice(np.arange(-40, 400), size=t_count, replace=False)).astype(float)
    amp = rng.uniform(0.05, 0.3, (1, side, side)).astype(np.float32)
    phase = rng.uniform(-30, 30, (1, side, side)).astype(np.float32)
    base = np.linspace(0.03, 0.3, 10, dtype=np.float32)[:, None, None]
    data = np.empty((t_count, 11, side, side), np.float32)
    cells = -(-side // 20)  # 200 m cells covering the tile
    for t in range(t_count):
        season = np.sin(np.pi * np.clip(days[t] - phase, 0, 365) / 365.0)
        data[t, :10] = base + amp * season + rng.normal(0, 0.01, (10, side, side))
        clouds = (rng.random((cells, cells)) < 0.3).repeat(20, 0).repeat(20, 1)[:side, :side]
        data[t, 10] = np.where(clouds, 9.0, 4.0)
    times = np.datetime64("2021-01-01", "ns") + (days * 86400e9).astype("timedelta64[ns]")
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": list(CUBE_BANDS),
            "y": 5_600_000.0 - 10.0 * np.arange(side),
            "x": 500_000.0 + 10.0 * np.arange(side),
        },
        attrs={"resolution_m": 10, "halo_px": 5},
    )


def run_once(raw, name: str) -> dict[str, float]:
    lam = 100.0 if name == "fixed" else None
    params = tp.PreprocessParams(smoothing=tp.SmoothingParams(year=2021, lambda_=lam))
    hook = TileHeldout(raw, params.smoothing).add if name == "auto+heldout" else None
    CLOCK.clear()
    t = time.perf_counter()
    tp.preprocess(raw, params, block_hook=hook)
    out = {"stage_s": time.perf_counter() - t, **CLOCK}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 x 200 px instead of 610 x 610")
    ap.add_argument("--repeats", type=int, default=2, help="round-robin rounds (best kept)")
    ap.add_argument("--threads", type=int, default=1, help="numba threads (default 1)")
    args = ap.parse_args()
    import numba

    numba.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the kernels read it
    side = 200 if args.quick else 610
    raw = make_cube(side)
    instrument()
    run_once(make_cube(40, seed=1), "auto+heldout")  # compile / warm the kernels
    run_once(make_cube(40, seed=1), "fixed")
    best: dict[str, dict[str, float]] = {}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name in ("fixed", "auto", "auto+heldout"):
            r = run_once(raw, name)
            if name not in best or r["stage_s"] < best[name]["stage_s"]:
                best[name] = r
    load1 = os.getloadavg()[0]
    f, a, h = best["fixed"], best["auto"], best["auto+heldout"]
    kernel = f["kernel_fixed_s"]
    ratios = {
        "choice_pass_over_kernel": a["choice_pass_s"] / kernel,
        "cv_kernel_over_kernel": a["cv_kernel_s"] / kernel,
        "selected_smoothing_over_kernel": a["kernel_selected_s"] / kernel,
        "auto_stage_over_fixed_stage": a["stage_s"] / f["stage_s"],
        "heldout_over_fixed_stage": h["heldout_s"] / f["stage_s"],
        "auto_heldout_stage_over_fixed_stage": h["stage_s"] / f["stage_s"],
    }
    print(
        f"{side}x{side} px, 73 acquisitions, 10 bands + 5 indices, {args.threads} thread(s); "
        f"load avg {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores"
    )
    for name, r in best.items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r.items())
        print(f"  {name:13s} {parts}")
    for k, v in ratios.items():
        print(f"  {k:38s} {v:5.2f}x")
    results = {
        "tile_px": [side, side],
        "threads": args.threads,
        "best": best,
        "ratios": ratios,
        "load_avg_1min": [load0, load1],
        "context": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "numba_threading_layer": numba.threading_layer(),
        },
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_lambda.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'bench_lambda.json'}")


if __name__ == "__main__":
    main()
