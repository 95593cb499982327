"""The smoothing stage (``geoxai.temporal.preprocess``) on one tile: numpy path vs the torch path
on each device present (CPU torch, CUDA when available), outputs compared.

    .venv/bin/python benchmarks/bench_smoothing_device.py [--px 728] [--quick] [--out DIR]

A synthetic irregular, cloudy tile-year with SCL (``tests.fixtures.cubes.synthetic_cube``: ~85
dates, 10 bands) of ``--px`` x ``--px`` pixels (728 = a 6 km tile with its 64 px halo) goes
through the default preprocessing (per-pixel lambda choice, held ends, indices) once per path,
after a warm-up on a small cube (numba compiles, CUDA context). Prints wall seconds, tiles/s
and the max abs difference of the features against the numpy path; writes
``<out>/bench_smoothing_device.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import numpy as np
    import torch

    from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams, preprocess
    from tests.fixtures.cubes import synthetic_cube

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--px", type=int, default=728, help="tile edge in pixels")
    ap.add_argument("--quick", action="store_true", help="a 128 px tile")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    px = 128 if args.quick else args.px

    params = PreprocessParams(smoothing=SmoothingParams(year=2021))
    small, _ = synthetic_cube(1, ny=16, nx=16)
    raw, _ = synthetic_cube(0, ny=px, nx=px)
    paths = {"numpy": None, "torch-cpu": "cpu"}
    if torch.cuda.is_available():
        paths["torch-cuda"] = "cuda"
    res: dict = {
        "tile_px": px,
        "dates": int(raw.sizes["time"]),
        "machine": platform.node(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "paths": {},
    }
    ref = None
    for name, device in paths.items():
        preprocess(small, params, device=device)  # warm-up: compiles, CUDA context
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        ds = preprocess(raw, params, device=device)
        feats = np.asarray(ds["features"].values)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if ref is None:
            ref = feats
        both = np.isfinite(ref) & np.isfinite(feats)
        diff = float(np.abs(ref[both] - feats[both]).max()) if both.any() else 0.0
        same_nan = bool((np.isnan(ref) == np.isnan(feats)).all())
        res["paths"][name] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "tiles_per_s": 1.0 / wall,
            "max_abs_diff_vs_numpy": diff,
            "same_nan": same_nan,
        }
        print(
            f"{name:11s} {wall:7.2f} s wall {cpu:7.2f} s CPU  {1 / wall:6.3f} tiles/s  "
            f"max |diff| vs numpy {diff:.2e}  NaN pattern equal: {same_nan}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_smoothing_device.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
