"""ONNX Runtime vs torch eager (and torch.compile) for the TemporalUNet on one 6 km tile, CPU.

Task: :meth:`geoxai.models.bundle.LoadedBundle.predict` of one haloed tile (600 px core + 64 px halo
= 728 px, 24 steps x 15 features, as a run's tile worker does: lattice windows of 64 px, stride
32, context 8, Gaussian blending, interior windows only) with the built-in TemporalUNet at the
training defaults (embed 16, base 16, depth 2; seeded weights, pixels from a seeded normal:
speed does not depend on skill). Variants, all through the same ``predict`` (same windows,
same batches, same float64 merge):

- ``torch``: the bundle loaded with ``runtime="torch"`` (eager);
- ``onnxruntime``: ``runtime="onnxruntime"`` (the in-memory export, CPU execution provider,
  as many intra-op threads as torch has);
- ``compile``: the torch network wrapped in ``torch.compile`` (inductor; its compile time is
  reported separately and left out of the rounds; skipped with the reason if it fails).

Round-robin over ``--repeats`` rounds; per variant the best time; ratios ``torch / X`` from
the best times of this one run; the largest |difference| to torch's tile. Prints a table and
writes ``benchmarks/results/bench_onnx.json`` with the machine context.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_onnx.py [--threads 1] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def _cube(args: argparse.Namespace, features: list[str]):
    import xarray as xr

    from geoxai.geo.grid import TileSpec

    tile = TileSpec(32631, 96, 938, args.halo, tile_size_m=args.core_px * 10)
    h = tile.shape[0]
    y, x = tile.coords()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.time_steps, len(features), h, h), dtype=np.float32)
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"band": features, "y": y, "x": x},
        attrs={
            "crs": tile.crs,
            "transform": list(tile.transform)[:6],
            "tile_id": tile.id,
            "halo_px": args.halo,
            "resolution_m": 10,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--core-px", type=int, default=600, help="tile core edge (600 = 6 km)")
    ap.add_argument("--halo", type=int, default=64)
    ap.add_argument("--time-steps", type=int, default=24)
    ap.add_argument("--features", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from geoxai.models.bundle import load_bundle
    from geoxai.models.unet import TemporalUNet
    from geoxai.train.temporal import save_temporal_bundle

    feats = [f"f{i:02d}" for i in range(args.features)]
    torch.manual_seed(0)
    net = TemporalUNet(args.features, args.time_steps, embed=16, base=16, depth=2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    norm = ([0.0] * args.features, [1.0] * args.features)
    bundle = save_temporal_bundle(tmp / "b", net, feats, norm, window=64, stride=32, context=8)
    cube = _cube(args, feats)

    t0 = time.perf_counter()
    torch_b = load_bundle(bundle, runtime="torch")
    load_torch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ort_b = load_bundle(bundle, runtime="onnxruntime")
    load_ort_s = time.perf_counter() - t0  # export + session + agreement check
    assert ort_b.runtime == "onnxruntime"

    def run(b):
        return lambda: b.predict(cube, batch_size=args.batch_size).values

    variants = {"torch": run(torch_b), "onnxruntime": run(ort_b)}
    compile_info: dict = {"status": "skipped (--no-compile)"}
    if not args.no_compile:
        from geoxai.models.bundle import LoadedBundle
        from geoxai.models.bundle_spec import BundleModel

        try:
            compiled = torch.compile(torch_b.net, dynamic=False)
            cb = LoadedBundle(
                torch_b.spec,
                torch_b.path,
                torch_b.net,
                BundleModel(compiled, torch_b.spec).eval(),  # type: ignore[arg-type]
                torch_b.device,
            )
            t0 = time.perf_counter()
            run(cb)()  # compiles (full and last partial batch shapes)
            compile_info = {"status": "ok", "first_call_s": round(time.perf_counter() - t0, 2)}
            variants["compile"] = run(cb)
        except Exception as exc:  # noqa: BLE001 - report why compile does not work here
            compile_info = {"status": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}

    outs: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {k: [] for k in variants}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    load1 = os.getloadavg()[0]
    best = {k: min(v) for k, v in times.items()}
    ref = outs["torch"]
    rows = []
    for name in variants:
        diff = float(np.nanmax(np.abs(outs[name] - ref)))
        same_nan = bool(np.array_equal(np.isnan(outs[name]), np.isnan(ref)))
        rows.append(
            {
                "variant": name,
                "best_s": round(best[name], 3),
                "times_s": [round(t, 3) for t in times[name]],
                "speedup_vs_torch": round(best["torch"] / best[name], 2),
                "max_abs_diff_vs_torch": diff,
                "same_nodata": same_nan,
            }
        )
    h = args.core_px + 2 * args.halo
    print(
        f"TemporalUNet tile {args.core_px}+2x{args.halo} px, T={args.time_steps}, "
        f"C={args.features}, window 64/32/8, {args.threads} thread(s), best of {args.repeats}"
    )
    print(f"{'variant':<12} {'best s':>8} {'torch/X':>8} {'max|diff|':>10}")
    for r in rows:
        print(
            f"{r['variant']:<12} {r['best_s']:>8.2f} {r['speedup_vs_torch']:>8.2f} "
            f"{r['max_abs_diff_vs_torch']:>10.2e}"
        )
    print(f"torch.compile: {compile_info['status']}")
    print(f"load: torch {load_torch_s:.2f} s, onnxruntime (export+check) {load_ort_s:.2f} s")
    print(f"load average {load0:.2f} -> {load1:.2f}")
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "context": {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "cpu_cores": os.cpu_count(),
            "threads": args.threads,
            "tile_px": h,
            "time_steps": args.time_steps,
            "features": args.features,
            "batch_size": args.batch_size,
            "loadavg": [load0, load1],
        },
        "rows": rows,
        "compile": compile_info,
        "load_s": {"torch": load_torch_s, "onnxruntime": load_ort_s},
    }
    (RESULTS / "bench_onnx.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
