"""Where the TemporalUNet inference of one 6 km tile spends its CPU time, and the cheap wins.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_predict.py [--threads 1] [--repeats 2]

The task of a tile actor's ``predict`` stage: :meth:`geoxai.models.bundle.LoadedBundle.predict`
of one haloed 6 km tile (600 px core + 64 px halo = 728 px, 24 steps x 15 features; lattice
windows of 64 px, stride 32, context 8, Gaussian blending, interior windows) with the built-in
TemporalUNet at the training defaults (embed 16, base 16, depth 2; seeded weights and pixels,
the cube of ``bench_onnx.py``). One process, ``--threads`` intra-op threads (a 1-CPU Ray actor
gets ``OMP_NUM_THREADS=1``, which torch and the onnxruntime session follow).

1. **Profile** (one predict each): ``cProfile`` splits the default CPU path (runtime
   ``auto`` = onnxruntime) into input preparation, the model calls, and the window gather /
   merge; ``torch.profiler`` lists the top operators of the torch runtime.
2. **Before / after**, round-robin over ``--repeats`` rounds, best times, ratios from this one
   run, with the largest |difference| of the outputs:

   * ``prepare``: main's out-of-place normalization (``(x - offset) / scale``, clip: three
     full-cube temporaries) vs :meth:`LoadedBundle.prepare` in place;
   * ``torch forward``: main's ``encode_time`` (convolutions over the strided transposed
     view) vs today's (the view made channels-last first), on one batch of windows and over
     the whole tile with the torch runtime;
   * ``batch``: windows per model call (4 / 16 / 64) with onnxruntime.

Writes ``benchmarks/results/bench_predict.json`` with the machine context.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"


def encode_time_main(self: Any, x: torch.Tensor) -> torch.Tensor:
    """``TemporalUNet.encode_time`` as main has it (no channels-last copy): the reference."""
    b, t, c, h, w = x.shape
    z = x.transpose(1, 2).reshape(b, c, t, h * w)
    z = self.temporal(self.embed(z))
    a = torch.softmax(self.score(z), dim=2)
    pooled = torch.cat([(z * a).sum(dim=2), z.mean(dim=2)], dim=1)
    return pooled.reshape(b, -1, h, w)


def prepare_main(bundle: Any, cube: Any) -> np.ndarray:
    """``LoadedBundle.prepare`` as main has it (out of place): the reference."""
    idx = bundle.check_cube(cube)
    x = np.asarray(cube.isel(band=idx).values, dtype=np.float32)
    n = bundle.spec.normalization
    if n.kind == "affine" and n.offset is not None and n.scale is not None:
        off = np.asarray(n.offset, np.float32)[None, :, None, None]
        sc = np.asarray(n.scale, np.float32)[None, :, None, None]
        x = (x - off) / sc
    if n.clip is not None:
        x = np.clip(x, n.clip[0], n.clip[1])
    return x


def best_of(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict, dict]:
    """Round-robin: best seconds per variant and its last output."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}, outs


def maxdiff(a: Any, b: Any) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    return float(np.nanmax(np.abs(a - b))) if a.size else 0.0


def profile_split(bundle: Any, cube: Any) -> dict[str, float]:
    """cProfile of one predict: seconds in prepare, in the model calls, and the rest of
    predict_windows (window gather, validity, merge, finalize)."""
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    bundle.predict(cube)
    pr.disable()
    total = time.perf_counter() - t0
    st = pstats.Stats(pr).stats  # type: ignore[attr-defined]

    def cum(pred: Callable[[str, str], bool]) -> float:
        return sum(v[3] for (f, _, name), v in st.items() if pred(f, name))

    prepare = cum(lambda f, n: n == "prepare" and f.endswith("bundle.py"))
    windows = cum(lambda f, n: n == "predict_windows")
    model = cum(lambda f, n: n == "forward" and f.endswith("bundle_spec.py"))
    return {
        "total_s": total,
        "prepare_s": prepare,
        "model_s": model,
        "gather_merge_s": windows - model,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from bench_onnx import _cube

    from geoxai.models import unet
    from geoxai.models.bundle import load_bundle
    from geoxai.train.temporal import save_temporal_bundle

    feats = [f"f{i:02d}" for i in range(15)]
    torch.manual_seed(0)
    net = unet.TemporalUNet(15, 24, embed=16, base=16, depth=2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    norm = ([0.05] * 15, [0.5] * 15)
    path = save_temporal_bundle(tmp / "b", net, feats, norm, window=64, stride=32, context=8)
    cube = _cube(argparse.Namespace(halo=64, core_px=600, time_steps=24), feats)
    ort_b = load_bundle(path, runtime="auto")
    torch_b = load_bundle(path, runtime="torch")
    res: dict[str, Any] = {"runtime_auto": ort_b.runtime}

    # 1. where the time goes
    ort_b.predict(cube)  # warm (session, allocations)
    res["split_auto"] = profile_split(ort_b, cube)
    from torch.profiler import ProfilerActivity, profile

    x = torch.from_numpy(torch_b.prepare(cube)[:, :, :80, :80].copy())[None].repeat(16, 1, 1, 1, 1)
    with torch.inference_mode():
        torch_b.model(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            torch_b.model(x)
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=28
        )
        orig = unet.TemporalUNet.encode_time
        unet.TemporalUNet.encode_time = encode_time_main  # type: ignore[method-assign]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            torch_b.model(x)
        unet.TemporalUNet.encode_time = orig  # type: ignore[method-assign]
        table_main = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=28
        )

    # 2. before / after, same run
    def with_encode(fn: Callable, enc: Callable) -> Callable:
        def run() -> Any:
            orig = unet.TemporalUNet.encode_time
            unet.TemporalUNet.encode_time = enc  # type: ignore[method-assign]
            try:
                with torch.inference_mode():
                    return fn()
            finally:
                unet.TemporalUNet.encode_time = orig  # type: ignore[method-assign]

        return run

    pairs: dict[str, dict[str, Callable[[], Any]]] = {
        "prepare": {
            "main": lambda: prepare_main(ort_b, cube),
            "now": lambda: ort_b.prepare(cube),
        },
        "torch_forward_batch16": {
            "main": with_encode(lambda: torch_b.model(x), encode_time_main),
            "now": with_encode(lambda: torch_b.model(x), unet.TemporalUNet.encode_time),
        },
        "torch_predict_tile": {
            "main": with_encode(lambda: torch_b.predict(cube).values, encode_time_main),
            "now": lambda: torch_b.predict(cube).values,
        },
        "ort_batch": {
            f"batch{b}": (lambda b=b: ort_b.predict(cube, batch_size=b).values) for b in (16, 4, 64)
        },
    }
    rows = {}
    for name, fns in pairs.items():
        best, outs = best_of(fns, args.repeats)
        ref = next(iter(fns))
        rows[name] = {
            "best_s": best,
            "ratio_first_over": {k: best[ref] / best[k] for k in fns},
            "max_abs_diff_vs_first": {
                k: maxdiff(
                    outs[k].numpy() if isinstance(outs[k], torch.Tensor) else outs[k],
                    outs[ref].numpy() if isinstance(outs[ref], torch.Tensor) else outs[ref],
                )
                for k in fns
            },
        }
    res["before_after"] = rows

    s = res["split_auto"]
    print(f"TemporalUNet, 728 px tile, T=24, C=15, {args.threads} thread(s)")
    print(
        f"default CPU path ({res['runtime_auto']}): {s['total_s']:.2f} s = prepare "
        f"{s['prepare_s']:.2f} + model {s['model_s']:.2f} + gather/merge "
        f"{s['gather_merge_s']:.2f} (+ rest)"
    )
    print("torch runtime, one batch of 16 windows, top operators (main's encode_time):")
    print(table_main)
    print("... and today's:")
    print(table)
    for name, r in rows.items():
        cells = ", ".join(
            f"{k} {r['best_s'][k]:.2f} s (x{r['ratio_first_over'][k]:.2f}, "
            f"max|d| {r['max_abs_diff_vs_first'][k]:.1e})"
            for k in r["best_s"]
        )
        print(f"{name}: {cells}")
    res["context"] = {
        "cores": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "threads": args.threads,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "repeats": args.repeats,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_predict.json"
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
