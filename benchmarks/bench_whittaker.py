"""Weighted Whittaker throughput: our batched banded solve vs per-series peers, and memory.

Run: ``.venv/bin/python benchmarks/bench_whittaker.py [--quick] [--no-memory]``

1. Smoothing a 600 x 600 px tile, 10 bands, with per-pixel 0/1 weights (~40 % clouds), on
   ``n = 24`` steps (the issue's setting) and ``n = 91`` (the 5-day grid the pipeline solves
   on): pixels per second of

   * ours (whole tile, float64, output allocation included): the numba engine on all cores
     and on one thread, the numpy engine (the fallback when numba is missing), and the torch
     twin on CPU (subset) and CUDA when present;
   * ``whittaker-eilers`` (Rust), one series at a time: per pixel ``update_weights`` then one
     ``smooth`` per band (measured on a pixel subset, all pixels identical in cost);
   * scipy ``spsolve`` of the sparse system per pixel (subset).

   A memory floor is timed with them: ``y * w`` into a new array reads ``y`` and writes a
   float64 ``z`` of the same size, the least memory traffic any method returning ``z`` has
   (page faults of the new array included); a method at this floor is bandwidth-bound.

   Ours, the floor and the Rust peer are timed round-robin (best of ``--repeats`` rounds), so a load
   spike from other users of the machine hits all alike; the 1-minute load average before and
   after is recorded. Ratios are printed against the peers measured in the same run: the
   single-thread one is the like-for-like comparison with the single-threaded Rust peer.
2. Peak RSS of :func:`geoxai.temporal.preprocess` on a 660 x 660 x 10 x 73 raw cube (+ SCL),
   measured in a child process, the input cube included: the child's own high-water mark
   (``VmHWM`` of /proc/self/status; ``ru_maxrss`` would include the parent's peak, which
   Linux carries across fork + exec, i.e. the multi-GB arrays of part 1).

Results go to ``benchmarks/results/bench_whittaker.json`` with the machine context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoxai.temporal.whittaker import HAVE_NUMBA, whittaker, whittaker_torch  # noqa: E402

LAMBDA = 100.0
BANDS = 10


def context() -> dict:
    import torch

    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    numba_info: dict = {"numba": None}
    if HAVE_NUMBA:
        import numba

        numba_info = {
            "numba": numba.__version__,
            "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": _threading_layer(),
        }
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **numba_info,
        "ram_gb": round(mem_gb, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg": os.getloadavg(),
    }


def _threading_layer() -> str | None:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return None


def make(n: int, npx: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.0, 0.5, size=(n, BANDS, npx))
    w = (rng.random((n, npx)) > 0.4).astype(np.float64)
    w[:3] = 1.0  # every pixel valid
    return y, w


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def rust_runner(y: np.ndarray, w: np.ndarray):
    """The Rust peer over the subset ``y`` ``(n, B, npx)``; inputs converted beforehand."""
    from whittaker_eilers import WhittakerSmoother

    n, _, npx = y.shape
    ys = [[list(map(float, y[:, b, p])) for b in range(BANDS)] for p in range(npx)]
    ws = [list(map(float, w[:, p])) for p in range(npx)]
    sm = WhittakerSmoother(lmbda=LAMBDA, order=2, data_length=n, weights=ws[0])

    def run():
        for p in range(npx):
            sm.update_weights(ws[p])
            for b in range(BANDS):
                sm.smooth(ys[p][b])

    return run


def round_robin(fns: dict, pixels: dict, repeats: int) -> dict:
    """Pixels per second of each function, best of ``repeats`` round-robin rounds."""
    for fn in fns.values():
        fn()  # warm-up (numba compilation is cached on disk, first call loads it)
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    return {k: pixels[k] / best[k] for k in fns}


def bench_spsolve(y: np.ndarray, w: np.ndarray) -> float:
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    n, _, npx = y.shape
    d = sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n), format="csc")
    pen = (LAMBDA * (d.T @ d)).tocsc()

    def run():
        for p in range(npx):
            a = (sp.diags(w[:, p]) + pen).tocsc()
            spsolve(a, w[:, p, None] * y[:, :, p])

    return npx / timed(run)


def bench_solver(n: int, npx: int, quick: bool, repeats: int) -> dict:
    import torch

    y, w = make(n, npx)
    out: dict = {"n_steps": n, "pixels": npx, "bands": BANDS, "repeats": repeats}
    sub = 300 if quick else 2000
    fns = {"whittaker_eilers_px_s": rust_runner(y[:, :, :sub], w[:, :sub])}
    pixels = {"whittaker_eilers_px_s": sub}
    # memory floor: any method returning a new float64 z of y's size reads y and writes z
    fns["memory_floor_px_s"] = lambda: np.multiply(y, w[:, None, :])
    pixels["memory_floor_px_s"] = npx
    if HAVE_NUMBA:
        fns["ours_numba_px_s"] = lambda: whittaker(y, w, LAMBDA, engine="numba")
        fns["ours_numba_1thread_px_s"] = lambda: whittaker(y, w, LAMBDA, engine="numba", threads=1)
        pixels["ours_numba_px_s"] = pixels["ours_numba_1thread_px_s"] = npx
    out["load_avg_1min_before"] = os.getloadavg()[0]
    out.update(round_robin(fns, pixels, repeats))
    out["load_avg_1min_after"] = os.getloadavg()[0]
    out["ours_numpy_px_s"] = npx / timed(
        lambda: whittaker(y, w, LAMBDA, engine="numpy"), repeat=1 if quick else 2
    )
    m = min(npx, 40_000)  # the CPU twin is for tests; a subset keeps the run short
    yt, wt = torch.tensor(y[:, :, :m]), torch.tensor(w[:, :m])
    out["ours_torch_cpu_px_s"] = m / timed(lambda: whittaker_torch(yt, wt, LAMBDA))
    yt, wt = torch.tensor(y), torch.tensor(w)
    if torch.cuda.is_available():
        yc, wc = yt.cuda(), wt.cuda()

        def gpu():
            whittaker_torch(yc, wc, LAMBDA)
            torch.cuda.synchronize()

        gpu()  # warm-up
        out["ours_torch_cuda_px_s"] = npx / timed(gpu, repeat=3)
    out["scipy_spsolve_px_s"] = bench_spsolve(y[:, :, : sub // 5], w[:, : sub // 5])
    # same numbers as the peers (spot check)
    from whittaker_eilers import WhittakerSmoother

    ref = WhittakerSmoother(lmbda=LAMBDA, order=2, data_length=n, weights=list(w[:, 0]))
    ours = whittaker(y[:, :, :1], w[:, :1], LAMBDA).z[:, 0, 0]
    if HAVE_NUMBA:
        q = min(npx, 5000)
        a = whittaker(y[:, :, :q], w[:, :q], LAMBDA, engine="numba").z
        out["numba_equals_numpy_bitwise"] = bool(
            np.array_equal(a, whittaker(y[:, :, :q], w[:, :q], LAMBDA, engine="numpy").z)
        )
    out["max_abs_diff_vs_whittaker_eilers"] = float(
        np.abs(np.array(ref.smooth(list(y[:, 0, 0]))) - ours).max()
    )
    return out


MEMORY_CHILD = r"""
import json, resource, sys, time

def hwm_kb():
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux: ru_maxrss (may include the parent's peak)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import numpy as np, xarray as xr
sys.path.insert(0, sys.argv[1])
from geoxai.geo.bands import CUBE_BANDS
from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams, preprocess
T, Y, X = 73, 660, 660
rng = np.random.default_rng(0)
days = np.sort(rng.choice(np.arange(-40, 400), size=T, replace=False))
data = np.empty((T, 11, Y, X), np.float32)
season = np.sin(np.pi * np.clip(days, 0, 365) / 365.0).astype(np.float32)
for t in range(T):
    data[t, :10] = 0.1 + 0.2 * season[t] + rng.random((10, 1, 1), dtype=np.float32) * 0.05
    clouds = (rng.random((Y // 20, X // 20)) < 0.3).repeat(20, 0).repeat(20, 1)  # 200 m cells
    data[t, 10] = np.where(clouds, 9.0, 4.0)
times = np.datetime64("2021-01-01", "ns") + (days * 86400e9).astype("timedelta64[ns]")
raw = xr.DataArray(data, dims=("time", "band", "y", "x"),
                   coords={"time": times, "band": list(CUBE_BANDS),
                           "y": np.arange(Y) * -10.0, "x": np.arange(X) * 10.0},
                   attrs={"resolution_m": 10})
base = hwm_kb()
t0 = time.perf_counter()
ds = preprocess(raw, PreprocessParams(smoothing=SmoothingParams(year=2021)))
sec = time.perf_counter() - t0
peak = hwm_kb()
print(json.dumps({"cube_shape": [T, 11, Y, X], "cube_gb": data.nbytes / 2**30,
                  "peak_rss_gb": peak / 2**20, "rss_before_preprocess_gb": base / 2**20,
                  "preprocess_seconds": sec, "pixels_per_s": Y * X / sec,
                  "valid_fraction": float(ds["valid"].mean())}))
"""


def bench_memory() -> dict:
    res = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small tile (200 x 200) and subsets")
    ap.add_argument("--no-memory", action="store_true", help="skip the 660x660x10x73 run")
    ap.add_argument("--repeats", type=int, default=3, help="round-robin rounds (best kept)")
    args = ap.parse_args()
    side = 200 if args.quick else 600
    results: dict = {"lambda": LAMBDA, "tile_px": [side, side]}
    results["solver"] = []
    for n in (24, 91):
        r = bench_solver(n, side * side, args.quick, args.repeats)
        results["solver"].append(r)
        rust, spl = r["whittaker_eilers_px_s"], r["scipy_spsolve_px_s"]
        print(
            f"n={n:3d} steps, {side}x{side} px, {BANDS} bands, weighted; load avg "
            f"{r['load_avg_1min_before']:.1f} -> {r['load_avg_1min_after']:.1f} on "
            f"{os.cpu_count()} cores:"
        )
        keys = (
            "ours_numba_px_s",
            "ours_numba_1thread_px_s",
            "ours_numpy_px_s",
            "ours_torch_cpu_px_s",
            "ours_torch_cuda_px_s",
        )
        for key in keys:
            if key in r:
                print(
                    f"  {key:24s} {r[key]:>12,.0f} px/s  = {r[key] / rust:6.1f}x whittaker-eilers, "
                    f"{r[key] / spl:7.1f}x spsolve"
                )
        print(f"  {'whittaker_eilers_px_s':24s} {rust:>12,.0f} px/s (per series, Rust)")
        floor = r["memory_floor_px_s"]
        print(
            f"  {'memory_floor_px_s':24s} {floor:>12,.0f} px/s (y * w into a new array: read y, "
            f"write z; = {floor / rust:.1f}x whittaker-eilers)"
        )
        print(f"  {'scipy_spsolve_px_s':24s} {spl:>12,.0f} px/s (per pixel)")
        print(f"  max |ours - whittaker-eilers| = {r['max_abs_diff_vs_whittaker_eilers']:.2e}")
        if "numba_equals_numpy_bitwise" in r:
            print(f"  numba engine == numpy engine bit for bit: {r['numba_equals_numpy_bitwise']}")
    if not args.no_memory:
        m = bench_memory()
        results["memory"] = m
        print(
            f"preprocess {m['cube_shape']} raw cube ({m['cube_gb']:.2f} GB): peak RSS "
            f"{m['peak_rss_gb']:.2f} GB (limit 4 GB), {m['preprocess_seconds']:.1f} s, "
            f"{m['pixels_per_s']:,.0f} px/s end to end"
        )
    results["context"] = context()  # after the runs: numba's threading layer is known
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_whittaker.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'bench_whittaker.json'}")


if __name__ == "__main__":
    main()
