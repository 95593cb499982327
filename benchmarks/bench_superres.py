"""WRI's DSen2-lite super-resolution: what it costs per 6 km tile-date, and what it gains.

Run: ``.venv/bin/python benchmarks/bench_superres.py [--device cuda] [--repeats 3]``
(needs ``$GEOXAI_REALDATA``, default ../shared/realdata, for the graph and the real patch).

1. Cost. One date of a 6 km tile with the default 64 px halo (728 x 728 px at 10 m), the six
   20 m bands, measured in one run, best of ``--repeats``:

   * the bilinear resampling the network replaces: GDAL's bilinear warp of the six 20 m bands
     (364 x 364) onto the 10 m grid (rasterio ``reproject``, in memory, what the cube reader
     does per band), and ``scipy.ndimage.zoom(order=1)`` as a second peer;
   * super-resolution: the reference preparation on the zone lattice
     (:func:`geoxai.temporal.superres.prepare_tile`) + the network on 256 px windows with its
     6 px reach as margin (:func:`~geoxai.temporal.superres.run_network`), on CPU (torch's
     threads) and on CUDA when present.

   Ratios are network / GDAL bilinear, from the same run.
2. Gain. Wald's protocol on the real WorldCereal patch (``worldcereal_ts_patch``, dates >= 90 %
   clear, clear pixels): every band degraded 2x, the network vs bilinear upsampling back to
   20 m, per-band RMSE against the real 20 m bands
   (:func:`~geoxai.temporal.superres.wald_protocol`).

Results go to ``benchmarks/results/bench_superres.json`` with the machine context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoxai.models.dsen2 import (  # noqa: E402
    DSEN2_BANDS,
    DSEN2_OUTPUTS,
    import_dsen2_lite,
    load_superres_bundle,
)
from geoxai.temporal.superres import prepare_tile, run_network, wald_protocol  # noqa: E402

STEM = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
TILE_PX = 600 + 2 * 64


def context() -> dict:
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg": os.getloadavg(),
    }


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gdal_bilinear(b20: np.ndarray) -> np.ndarray:
    """(6, 364, 364) at 20 m -> (6, 728, 728) at 10 m with GDAL's bilinear warp."""
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.warp import reproject

    src_t = from_origin(500_000, 5_600_000, 20, 20)
    dst_t = from_origin(500_000, 5_600_000, 10, 10)
    out = np.empty((b20.shape[0], 2 * b20.shape[1], 2 * b20.shape[2]), np.float32)
    reproject(
        b20,
        out,
        src_transform=src_t,
        dst_transform=dst_t,
        src_crs="EPSG:32631",
        dst_crs="EPSG:32631",
        resampling=Resampling.bilinear,
    )
    return out


def cost(bundle, repeats: int, devices: list[str]) -> dict:
    rng = np.random.default_rng(0)
    half = TILE_PX // 2
    b10 = rng.uniform(0.0, 0.4, (1, 4, TILE_PX, TILE_PX)).astype(np.float32)
    b20 = rng.uniform(0.0, 0.4, (1, 6, half, half)).astype(np.float32)
    nearest = np.concatenate([b10, b20.repeat(2, -2).repeat(2, -1)], axis=1)
    res: dict = {"tile_px": TILE_PX, "bands": list(DSEN2_OUTPUTS)}
    from scipy.ndimage import zoom

    res["gdal_bilinear_s"] = timed(lambda: gdal_bilinear(b20[0]), repeats)
    res["scipy_zoom_s"] = timed(
        lambda: [zoom(b, 2, order=1, grid_mode=True, mode="nearest") for b in b20[0]], repeats
    )
    res["prepare_s"] = timed(lambda: prepare_tile(nearest, (0, 0)), repeats)
    x = prepare_tile(nearest, (0, 0))
    for dev in devices:
        net = bundle.net.to(dev)

        def go(window: int, net=net, dev=dev) -> None:
            run_network(net, x, margin=6, window=window, device=dev)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()

        go(256)  # warm-up (allocator, cuDNN autotune)
        res[f"network_{dev}_s"] = timed(lambda go=go: go(256), repeats)
        res[f"network_{dev}_whole_s"] = timed(lambda go=go: go(TILE_PX), repeats)
        total = res["prepare_s"] + res[f"network_{dev}_s"]
        res[f"superres_{dev}_s"] = total
        res[f"ratio_{dev}_vs_gdal_bilinear"] = total / res["gdal_bilinear_s"]
    bundle.net.to("cpu")
    return res


def _read(path: Path, var: str) -> np.ndarray:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(f"netcdf:{path}:{var}") as src:
            return src.read()


def gain(bundle, realdata: Path) -> dict:
    d = realdata / "worldcereal_ts_patch"

    def refl(a):
        return np.where(a == 0, np.nan, a.astype(np.float32) * np.float32(1e-4))

    b10 = np.stack([refl(_read(d / f"S2_L2A_10m_{STEM}", b)) for b in DSEN2_BANDS[:4]], 1)
    b20 = np.stack([refl(_read(d / f"S2_L2A_20m_{STEM}", b)) for b in DSEN2_OUTPUTS], 1)
    scl = _read(d / f"S2_L2A_20m_{STEM}", "SCL")
    clear = np.isin(scl, [4, 5, 6])
    dates = clear.mean(axis=(1, 2)) >= 0.9
    mask = clear[dates] & np.isfinite(b20[dates]).all(1)
    rmse = wald_protocol(bundle.net, b10[dates], b20[dates], mask)
    return {"dates": int(dates.sum()), "pixels": int(mask.sum()), "rmse": rmse}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", help="auto (CPU, + CUDA when present), cpu, cuda")
    args = ap.parse_args()
    realdata = Path(os.environ.get("GEOXAI_REALDATA", ROOT.parent / "shared" / "realdata"))
    graph = realdata / "wri_superresolve" / "superresolve_graph.pb"
    if not graph.is_file():
        sys.exit(f"{graph} is absent: set GEOXAI_REALDATA to the shared real-data folder.")
    devices = ["cpu"]
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append("cuda")
    if args.device == "cuda" and "cuda" not in devices:
        sys.exit("--device cuda but no CUDA device is visible.")
    with tempfile.TemporaryDirectory() as tmp:  # weights derived from the GPL graph: not kept
        bundle = load_superres_bundle(import_dsen2_lite(graph, Path(tmp) / "b"))
        out = {"context": context(), "cost": cost(bundle, args.repeats, devices)}
        out["wald"] = gain(bundle, realdata)
    c = out["cost"]
    print(f"one 6 km tile-date ({TILE_PX} x {TILE_PX} px, 6 bands), best of {args.repeats}:")
    print(f"  GDAL bilinear 20 -> 10 m    {c['gdal_bilinear_s'] * 1e3:9.1f} ms")
    print(f"  scipy zoom(order=1)         {c['scipy_zoom_s'] * 1e3:9.1f} ms")
    print(f"  preparation (zone lattice)  {c['prepare_s'] * 1e3:9.1f} ms")
    for dev in devices:
        print(
            f"  network {dev:4s} 256 px windows {c[f'network_{dev}_s'] * 1e3:9.1f} ms "
            f"(one pass {c[f'network_{dev}_whole_s'] * 1e3:.1f} ms); preparation + network = "
            f"{c[f'ratio_{dev}_vs_gdal_bilinear']:.0f}x GDAL bilinear"
        )
    w = out["wald"]
    print(f"Wald's protocol, {w['dates']} dates, {w['pixels']} pixel-dates, RMSE (reflectance):")
    print("  band   network  bilinear  network/bilinear")
    for band, r in w["rmse"].items():
        ratio = r["network"] / r["bilinear"]
        print(f"  {band:5s}  {r['network']:.4f}   {r['bilinear']:.4f}    {ratio:.2f}")
    res_dir = ROOT / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "bench_superres.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
