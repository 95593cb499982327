"""ASOS cost vs its peers, in one run: plain forward, ASOS map, Captum OSM; fit throughput on Ray.

Per image (default 256x256, 10 bands, ASOSNet k=3):
- ``forward``: one plain ``net(x)`` (U-Net + head), the unit;
- ``asos_map``: U-Net once + table look-up (goal <= 1.5x forward);
- ``osm``: Captum ``Occlusion`` patch 8 stride 4 (goal: ASOS >= 100x cheaper). OSM on a full
  256 px image runs ~4,000 forward passes; by default it is measured on a ``--osm-size`` crop
  and scaled by the ratio of perturbation counts (printed as "extrapolated"); ``--full-osm``
  measures it on the full image.

Fit: images/s of :func:`geoxai.xai.asos.fit_partial` in-process (one thread), then the Ray fit
(:func:`pipelines.asos_fit.fit_sharded`) with 1 and 2 workers on a local loopback Ray.

Run: ``.venv/bin/python benchmarks/bench_asos.py [--size 256] [--full-osm]``; writes
``benchmarks/results/bench_asos.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geoxai.models.asos_net import ASOSNet
from geoxai.xai.asos import ASOSParams, asos_map, fit_partial, save_asos_bundle
from geoxai.xai.baselines import occlusion_map


def _median_time(fn, reps: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``reps`` runs (after one warm-up)."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def _n_perturbations(size: int, patch: int = 8, stride: int = 4) -> int:
    return ((size - patch) // stride + 1) ** 2


def _context(args) -> dict:
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):  # pragma: no cover
        mem = float("nan")
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(mem, 1),
        "load_avg": os.getloadavg(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "image_px": args.size,
        "width": args.width,
        "k": 3,
        "fit_images": args.fit_images,
        "fit_px": args.fit_size,
    }


def bench_map(args, net: ASOSNet) -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.4, (10, args.size, args.size)).astype(np.float32)
    fit_imgs = rng.uniform(0, 0.4, (4, 10, 64, 64)).astype(np.float32)
    table = fit_partial(net, fit_imgs, ASOSParams(min_pixels=20))
    xt = torch.from_numpy(x)[None]

    def forward():
        with torch.no_grad():
            net(xt)

    fw = _median_time(forward, args.reps)
    am = _median_time(lambda: asos_map(net, table, x), args.reps)
    osm_size = args.size if args.full_osm else min(args.osm_size, args.size)
    xo = x[:, :osm_size, :osm_size]
    osm = _median_time(lambda: occlusion_map(net, xo), 1)
    scale = _n_perturbations(args.size) / _n_perturbations(osm_size)
    # OSM time ~ perturbations x (forward of an image of that size): scale by both
    px_scale = (args.size / osm_size) ** 2
    osm_full = (osm[0] * scale * px_scale, osm[1] * scale * px_scale)
    return {
        "forward_s": fw[0],
        "forward_cpu_s": fw[1],
        "asos_map_s": am[0],
        "asos_map_cpu_s": am[1],
        "osm_measured_px": osm_size,
        "osm_measured_s": osm[0],
        "osm_s": osm_full[0],
        "osm_cpu_s": osm_full[1],
        "osm_extrapolated": osm_size != args.size,
        "asos_over_forward": am[1] / fw[1],
        "osm_over_asos": osm_full[1] / am[1],
    }


def bench_fit(args, net: ASOSNet) -> dict:
    import ray

    from pipelines.asos_fit import FitData, fit_sharded, init_local_ray

    rng = np.random.default_rng(1)
    imgs = rng.uniform(0, 0.4, (args.fit_images, 10, args.fit_size, args.fit_size))
    params = ASOSParams(min_pixels=50)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    w0 = time.perf_counter()
    fit_partial(net, imgs.astype(np.float32), params)
    local_s = time.perf_counter() - w0
    torch.set_num_threads(threads)
    out = {"in_process_images_per_s": args.fit_images / local_s}
    with tempfile.TemporaryDirectory() as d:
        bundle = save_asos_bundle(Path(d) / "b", net)
        np.savez(Path(d) / "data.npz", images=imgs.astype(np.float32))
        data = FitData(str(Path(d) / "data.npz"))
        for workers in (1, 2):
            init_local_ray(num_cpus=workers)
            try:
                fit_sharded(bundle, data, params, n_shards=workers)  # warm the workers
                w0 = time.perf_counter()
                rep = fit_sharded(bundle, data, params, n_shards=4 * workers)
                wall = time.perf_counter() - w0
            finally:
                ray.shutdown()
            out[f"ray_{workers}_workers_images_per_s"] = rep.n_images / wall
        out["ray_scaling_1_to_2"] = (
            out["ray_2_workers_images_per_s"] / out["ray_1_workers_images_per_s"]
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image edge, px")
    ap.add_argument("--width", type=int, default=16, help="U-Net width")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions")
    ap.add_argument("--osm-size", type=int, default=64, help="crop OSM is measured on")
    ap.add_argument("--full-osm", action="store_true", help="measure OSM on the full image")
    ap.add_argument("--fit-images", type=int, default=256, help="images in the fit benchmark")
    ap.add_argument("--fit-size", type=int, default=64, help="fit image edge, px")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray fit scaling")
    args = ap.parse_args()

    torch.manual_seed(0)
    net = ASOSNet(10, 3, width=args.width).eval()
    res = {"context": _context(args), "map": bench_map(args, net)}
    m = res["map"]
    print(f"per {args.size}x{args.size} image (CPU seconds, median of {args.reps}):")
    print(f"  forward   {m['forward_cpu_s']:.4f} s   (1.00x)")
    print(f"  asos_map  {m['asos_map_cpu_s']:.4f} s   ({m['asos_over_forward']:.2f}x forward;"
          " goal <= 1.5x)")  # fmt: skip
    tag = " extrapolated from " + str(m["osm_measured_px"]) + " px" if m["osm_extrapolated"] else ""
    print(f"  osm 8/4   {m['osm_cpu_s']:.2f} s   (ASOS {m['osm_over_asos']:.0f}x cheaper; goal "
          f">= 100x){tag}")  # fmt: skip
    if not args.no_ray:
        res["fit"] = bench_fit(args, net)
        f = res["fit"]
        print(f"fit on {args.fit_images} images of {args.fit_size} px:")
        print(f"  in-process, 1 thread     {f['in_process_images_per_s']:.1f} images/s")
        print(f"  Ray, 1 worker            {f['ray_1_workers_images_per_s']:.1f} images/s")
        print(f"  Ray, 2 workers           {f['ray_2_workers_images_per_s']:.1f} images/s "
              f"({f['ray_scaling_1_to_2']:.2f}x)")  # fmt: skip
    out = Path(__file__).parent / "results" / "bench_asos.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
