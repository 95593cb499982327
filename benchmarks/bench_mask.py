"""Cost of the cloud masks per 6 km tile, as ratios to the Whittaker smoothing kernel.

Run: ``.venv/bin/python benchmarks/bench_mask.py [--dates 91] [--quick]``

One synthetic tile of ``600 + 2 * 124`` px a side (the 6 km core plus the halo the spectral
mask needs at 10 m), ``--dates`` acquisitions (91 = a year plus the 45-day margins at the
5-day revisit), ~35 % of the pixel-dates under cloud blobs, solar elevations 20-60 degrees.
Timed in one run, one thread each (``OMP_NUM_THREADS=1``, ``NUMBA_NUM_THREADS=1``):

* **spectral mask**: :func:`geoxai.temporal.clouds.spectral_weights` with the defaults (classes, the
  single-date shadow projection up to 1,200 m, the temporal extra, the 40 m buffer);
* the same **without the projection** (``max_shadow_distance_m=0``: the old rule's cost);
* **SCL weights**: :func:`geoxai.temporal.clouds.scl_weights` on the same tile;
* **smoothing kernel**: :func:`geoxai.temporal.smooth_series` (binning to the 5-day grid,
  weighted Whittaker, sampling to 24 steps) of the 15 features (10 bands + 5 indices) that
  :func:`geoxai.temporal.preprocess` smooths, on blocks of 16 rows; ``--kernel-blocks`` blocks
  are timed and scaled to the whole tile (every block costs the same).

Ratios are printed against the smoothing kernel; results go to
``benchmarks/results/bench_mask.json`` with the machine context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoxai.temporal.clouds import (  # noqa: E402
    CloudMaskParams,
    required_halo_px,
    scl_weights,
    spectral_weights,
)
from geoxai.temporal.masks import SpectralMaskParams  # noqa: E402
from geoxai.temporal.smoothing import SmoothingParams, smooth_series  # noqa: E402

BANDS = ("B02", "B03", "B04", "B08", "B11")
FEATURES = 15


def make_tile(t: int, n: int, seed: int = 0):
    """Reflectance (t, 5, n, n) float32, SCL (t, n, n), sun angles, cloud fraction."""
    rng = np.random.default_rng(seed)
    veg = np.array([0.03, 0.06, 0.04, 0.35, 0.18], np.float32)
    refl = np.empty((t, 5, n, n), np.float32)
    scl = np.full((t, n, n), 4.0, np.float32)
    cover = rng.uniform(0.0, 0.8, t)
    for k in range(t):
        field = ndimage.gaussian_filter(rng.standard_normal((n // 8, n // 8)), 3.0)
        field = ndimage.zoom(field, 8, order=1)[:n, :n]
        cloud = field > np.quantile(field, 1.0 - cover[k])
        shade = np.roll(cloud, (n // 20, -n // 40), axis=(0, 1)) & ~cloud
        refl[k] = veg[:, None, None] * rng.uniform(0.9, 1.1, (1, n, n)).astype(np.float32)
        refl[k][:, cloud] = np.array([0.45, 0.45, 0.45, 0.5, 0.35], np.float32)[:, None]
        refl[k][:, shade] *= np.float32(0.25)
        scl[k][cloud] = 9.0
        scl[k][shade] = 3.0
    sun = (np.full(t, 160.0), rng.uniform(20.0, 60.0, t))
    return refl, scl, sun, float((scl == 9).mean())


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def kernel_seconds(t: int, n: int, blocks: int, repeat: int) -> float:
    """smooth_series of FEATURES features on ``blocks`` blocks of 16 rows, scaled to n rows."""
    rng = np.random.default_rng(1)
    sp = SmoothingParams(year=2021)
    days = np.sort(rng.uniform(-45.0, 365.0 + 45.0, t))
    npx = 16 * n
    values = rng.uniform(0.0, 0.5, (t, FEATURES, npx))
    weights = (rng.random((t, npx)) > 0.35).astype(np.float64)
    weights[:3] = 1.0

    def run():
        for _ in range(blocks):
            smooth_series(values, weights, days, sp)

    smooth_series(values[:, :, :64], weights[:, :64], days, sp)  # warm-up (numba compile)
    return timed(run, repeat) / blocks * (n / 16.0)


def context() -> dict:
    from geoxai.temporal.whittaker import HAVE_NUMBA

    return {
        "cores": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "numba_threads": os.environ.get("NUMBA_NUM_THREADS"),
        "numba": HAVE_NUMBA,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dates", type=int, default=91)
    ap.add_argument("--kernel-blocks", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="23 dates, one repeat (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.dates, args.repeat, args.kernel_blocks = 23, 1, 2
    spectral = CloudMaskParams(method="spectral")
    halo = required_halo_px(spectral, 10.0)
    n = 600 + 2 * halo
    refl, scl, sun, cloud_frac = make_tile(args.dates, n)
    no_proj = CloudMaskParams(
        method="spectral", spectral=SpectralMaskParams(max_shadow_distance_m=0.0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = {
            "spectral_mask": timed(
                lambda: spectral_weights(refl, BANDS, spectral, 10.0, sun=sun), args.repeat
            ),
            "spectral_mask_no_projection": timed(
                lambda: spectral_weights(refl, BANDS, no_proj, 10.0, sun=sun), args.repeat
            ),
            "scl_weights": timed(lambda: scl_weights(scl, CloudMaskParams(), 10.0), args.repeat),
        }
    res["smoothing_kernel"] = kernel_seconds(args.dates, n, args.kernel_blocks, args.repeat)
    k = res["smoothing_kernel"]
    print(
        f"tile {n} x {n} px (6 km core + {halo} px halo), {args.dates} dates, "
        f"{cloud_frac:.0%} cloudy pixel-dates, one thread"
    )
    for name, sec in res.items():
        print(f"  {name:30s} {sec:8.2f} s   ratio to smoothing kernel {sec / k:6.3f}")
    out = {
        "tile_px": n,
        "dates": args.dates,
        "features_smoothed": FEATURES,
        "cloud_fraction": cloud_frac,
        "seconds": res,
        "ratio_to_smoothing_kernel": {name: sec / k for name, sec in res.items()},
        "context": context(),
    }
    path = ROOT / "benchmarks" / "results" / "bench_mask.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"-> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
