"""Latency of ``geoxai view``'s map tiles, and what country zoom reads, in one run.

A run of ``--tiles`` x ``--tiles`` standard 6 km tiles (600 px cores, 10 m, zone 31N near
50.8 N) is written with the library the run uses (zone store, validated COGs with 2x/4x
overviews, VRT mosaics), then served by the real viewer server on 127.0.0.12. Requests go
over HTTP (PNG encoding included), one at a time, each tile requested once per round:

- ``native``: every 256 px Web Mercator tile over the run at the run's native zoom (the zoom
  whose pixels are closest to 10 m); median and p95 latency (goal: median <= 100 ms) and the
  overview level each read (``X-Geoxai-Overview`` header; 0 = full resolution), and the CPU
  time per tile of the same work in-process (read + colour + PNG; on a shared machine the
  wall-clock latency includes waiting for a core);
- ``country``: tiles at native zoom - 3 (~80 m pixels), served from the overview pyramid the
  viewer builds over the mosaics, against the same tiles read from the plain VRT mosaic (GDAL
  exposes no overviews for a multi-source VRT, so its warper reads the COGs at full
  resolution): latency and bytes read from disk (``rchar`` of ``/proc/self/io``), and ratios.

JSON with the machine context goes to ``benchmarks/results/``.

Run: ``.venv/bin/python benchmarks/bench_view.py [--tiles 3] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.12"


def _rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar"):
                return int(line.split()[1])
    return 0


def make_run(base: Path, n: int) -> Path:
    """n x n 6 km tiles with smooth prediction / ASOS fields and a quality layer."""
    from geoxai.geo.grid import TileSpec
    from geoxai.io.cog import write_tile_cogs
    from geoxai.io.layout import RunLayout
    from geoxai.io.mosaic import build_mosaics
    from geoxai.io.store import write_json
    from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
    from geoxai.mapping.records import write_tile

    root = base / "bench-view" / "2024"
    layout = RunLayout(str(root))
    tiles = [TileSpec(32631, 96 + c, 938 + r, 0) for r in range(n) for c in range(n)]
    write_json({"name": "bench-view", "year": 2024, "tiles": [t.id for t in tiles]},
               str(root / "config.json"))  # fmt: skip
    specs = default_layers(("tree",))
    zone = ZoneStore.create(layout, ZoneGrid.from_tiles(tiles)[32631], specs)
    rng = np.random.default_rng(0)
    for t in tiles:
        x0, y0, x1, y1 = t.core_bounds
        x = np.linspace(x0 + 5, x1 - 5, t.core_px)[None, :]
        y = np.linspace(y1 - 5, y0 + 5, t.core_px)[:, None]
        field = 0.5 + 0.35 * np.sin(x / 900.0) * np.cos(y / 1300.0)
        pred = (field + 0.05 * rng.random(field.shape)).clip(0, 1).astype("float32")[None]
        layers = {
            "prediction": pred,
            "asos_sensitivity": (0.2 * np.abs(np.cos(x / 500.0 + y / 700.0))).astype("float32")
            + np.zeros_like(pred[0]),
            "quality": np.where(rng.random(pred.shape[1:]) < 0.1, 2, 1).astype("uint8"),
        }
        rec = {"config_hash": "bench", "cogs": write_tile_cogs(layout, zone, t, layers)}
        write_tile(zone, t, layers, rec)
    build_mosaics(layout, tiles, list(zone.layers.values()))
    return root


def _tiles_over(bounds: tuple[float, float, float, float], z: int) -> list[tuple[int, int]]:
    def xy(lon: float, lat: float) -> tuple[int, int]:
        n = 2**z
        return (
            int((lon + 180) / 360 * n),
            int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n),
        )

    (x0, y1), (x1, y0) = xy(bounds[0], bounds[1]), xy(bounds[2], bounds[3])
    return [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]


def _fetch(url: str) -> tuple[float, str, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
        ovr = r.headers.get("X-Geoxai-Overview", "")
    return time.perf_counter() - t0, ovr, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=3, help="run of N x N 6 km tiles")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", default=None, help="folder to keep the run in")
    args = ap.parse_args()

    from geoxai.io.tiler import ZoneMosaic, encode_png, release, render_tile
    from pipelines.viewer import make_server

    base = Path(args.keep or tempfile.mkdtemp(prefix="geoxai-bench-view-"))
    t0 = time.perf_counter()
    root = make_run(base, args.tiles)
    make_s = time.perf_counter() - t0
    server = make_server(str(root), HOST, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    view = server.view
    assert view is not None, server.error
    summary = view.summary()
    z = int(summary["native_zoom"])
    bounds = tuple(summary["bounds"])
    res: dict = {"run_tiles": args.tiles**2, "make_run_s": make_s, "native_zoom": z}
    try:
        _fetch(server.url + f"tiles/prediction/{z}/0/0.png")  # imports, GDAL start
        # country zoom first (cold caches): pyramid vs plain VRT, in-process (no HTTP)
        zc = z - 3
        ctiles = _tiles_over(bounds, zc)
        pyr = view.mosaics["prediction"]
        plain = [ZoneMosaic(m.epsg, m.name, m.bounds_lonlat, m.nodata, name=m.name) for m in pyr]
        out = {}
        for name, mos in (("plain_vrt", plain), ("pyramid", pyr)):
            ms, read, lv = [], [], []
            for rnd in range(args.rounds):
                for x, y in ctiles:
                    r0, t1 = _rchar(), time.perf_counter()
                    _, info = render_tile(mos, x, y, zc)
                    ms.append((time.perf_counter() - t1) * 1000)
                    if rnd == 0:  # bytes from disk: the first (cold) round only
                        read.append(_rchar() - r0)
                    lv += list(info["overview"].values())
            for m in mos:  # closing the datasets drops their cached blocks
                release(m.path)
            out[name] = {
                "median_ms": float(np.median(ms)),
                "median_bytes_read": float(np.median(read)),
                "overview_levels_read": sorted(set(lv)),
            }
        out["tiles"] = len(ctiles)
        out["zoom"] = zc
        out["bytes_ratio_plain_over_pyramid"] = out["plain_vrt"]["median_bytes_read"] / max(
            out["pyramid"]["median_bytes_read"], 1
        )
        out["time_ratio_plain_over_pyramid"] = out["plain_vrt"]["median_ms"] / max(
            out["pyramid"]["median_ms"], 1e-9
        )
        res["country"] = out
        # native zoom over HTTP
        lat_ms, levels = [], []
        tiles = _tiles_over(bounds, z)
        for _ in range(args.rounds):
            for x, y in tiles:
                s, ovr, _n = _fetch(server.url + f"tiles/prediction/{z}/{x}/{y}.png")
                lat_ms.append(s * 1000)
                levels += [int(v.split(":")[1]) for v in ovr.split(",") if v]
        cpu_ms = []  # the same tiles in-process: CPU time per tile (what load cannot inflate)
        for x, y in tiles:
            c0 = time.process_time()
            rgba, _ = view.tile("prediction", x, y, z)
            encode_png(rgba)
            cpu_ms.append((time.process_time() - c0) * 1000)
        res["native"] = {
            "cpu_median_ms": float(np.median(cpu_ms)),
            "tiles": len(tiles),
            "requests": len(lat_ms),
            "median_ms": float(np.median(lat_ms)),
            "p95_ms": float(np.percentile(lat_ms, 95)),
            "overview_levels_read": sorted(set(levels)),
        }
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    nat, cty = res["native"], res["country"]
    print(
        f"run: {res['run_tiles']} tiles of 600 px (written in {make_s:.1f} s); native zoom {z}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"native zoom z{z}: {nat['requests']} requests over HTTP, median {nat['median_ms']:.1f} ms"
        f" (goal <= 100 ms), p95 {nat['p95_ms']:.1f} ms, overview levels read "
        f"{nat['overview_levels_read']}; in-process CPU time {nat['cpu_median_ms']:.1f} ms per tile"
    )
    for k in ("pyramid", "plain_vrt"):
        c = cty[k]
        print(
            f"country zoom z{cty['zoom']} ({cty['tiles']} tiles), {k}: median "
            f"{c['median_ms']:.1f} ms, {c['median_bytes_read'] / 1e3:.0f} kB read per tile (cold), "
            f"overview levels {c['overview_levels_read']}"
        )
    print(
        f"plain VRT / pyramid: {cty['bytes_ratio_plain_over_pyramid']:.1f}x bytes, "
        f"{cty['time_ratio_plain_over_pyramid']:.2f}x time"
    )
    res["context"] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"bench_view-{stamp}.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
