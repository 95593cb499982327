"""Scale simulation of a run's outputs at country scale: catalog, mosaics and report.

    .venv/bin/python benchmarks/bench_scale_outputs.py [--tiles 240000] [--quick]

Brazil's real tile list (``cover_aoi("BRA")``: ~240,000 tiles of 6 km in 8 UTM zones; computed
once, ~2 min and ~1.5 GB, then cached in ``benchmarks/results/bra_tiles.npy``), the first
``--tiles`` of it (``--quick``: 10,000), go through these steps, each printing its wall time
and peak RSS (sampled every 10 ms while it runs; ``ru_maxrss`` of the process too):

- ``tiles``: the tile list (from the cache, or computed);
- ``records``: synthetic tile records in memory (96 % done, 3 % failed with four reasons, 1 %
  empty; per-stage timings; provenance: config hash, code version, input item ids);
- ``catalog``: :func:`geoxai.mapping.catalog.write_catalog` (stac-geoparquet, plus JSON Items
  up to 10,000 tiles as ``items_json: auto`` does) on a local root for a growing number of done
  tiles (1,000, 10,000, 100,000, 240,000 up to ``--catalog-max``, default 100,000), with its
  ms/item and peak RSS at each size, Parquet only as well where auto wrote JSON Items, and a
  linear extrapolation to ``--tiles`` (said as such);
- ``mosaics``: in the zone with the most tiles, ``--sample`` real 600 px float32 COGs (a block
  of adjacent tiles, written as a run writes them) and :func:`geoxai.io.mosaic.build_mosaics`
  over them (overview COG + VRT); then the flat VRT over *every* tile of that zone (its XML
  size and write time at full scale; no COG needs to exist for that) and the overview COG over
  the zone's full extent (streaming through rows of absent tiles: the cost of the COG copy and
  its overviews at full size), and a country-zoom read of the whole zone through the VRT
  (which GDAL serves from the overview COG);
- ``report``: :func:`geoxai.mapping.report.render_report` over every tile and the records
  as a one-shot iterator (no zone stores here: no quicklooks; each quicklook adds ~0.1-0.5
  MB), its size in MB.

Writes ``benchmarks/results/bench_scale_outputs.json``. ``benchmarks/bench_scale.py`` calls the
``step_*`` functions with its own context (a dict; see :func:`new_context`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
BRA_CACHE = RESULTS / "bra_tiles.npy"
CONFIG = {"name": "bra-scale", "year": 2024, "aoi": "BRA", "config_hash": "5ca1e"}
REASONS = (
    "NoDataError: {k} scenes with clear pixels in 2024",
    "StoreError: Could not write to s3://bucket/run/2024/zone=32723: timeout after {k} s",
    "CorruptDataError: truncated B04 of item S2B_MSIL2A_2024{k:04d}",
    "WorkerCrashedError: the worker died (out of memory, {k} GB)",
)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Peak:
    """Peak RSS while a block runs (a thread sampling ``/proc/self/statm`` every 10 ms)."""

    def __enter__(self) -> _Peak:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def measured(fn: Callable[[dict[str, Any]], dict[str, Any]], ctx: dict[str, Any]) -> dict:
    """Run one step; its result plus ``seconds`` (wall), ``cpu_s`` (this process, all threads),
    ``peak_rss_mb`` and ``rss_before_mb``."""
    before = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    with _Peak() as p:
        out = fn(ctx)
    out = {
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_s": round(time.process_time() - c0, 3),
        "peak_rss_mb": round(p.peak, 1),
        "rss_before_mb": round(before, 1),
        **out,
    }
    print(
        f"  {fn.__name__:<14} {out['seconds']:>9.2f} s ({out['cpu_s']:.1f} s CPU)  "
        f"peak RSS {out['peak_rss_mb']:>7.0f} MB (from {before:.0f})"
    )
    return out


def new_context(n_tiles: int, workdir: Path, **options: Any) -> dict[str, Any]:
    """The context the steps share: ``n_tiles``, ``workdir`` (scratch, deleted by the caller),
    and options ``sample`` (COGs written, default 64), ``catalog_max`` (default 100,000),
    ``tiles`` (a list of TileSpec to use instead of Brazil's), ``records``."""
    return {"n_tiles": n_tiles, "workdir": workdir, "sample": 64, "catalog_max": 100_000, **options}


def bra_tiles() -> np.ndarray:
    """Brazil's tiles as an ``(N, 3)`` int64 array of (epsg, col, row), cached on disk."""
    if BRA_CACHE.exists():
        return np.load(BRA_CACHE)
    from geoxai.geo.aoi import cover_aoi

    print("  computing Brazil's tile list (cover_aoi('BRA'), ~2 min) ...", flush=True)
    a = np.array([(t.epsg, t.col, t.row) for t in cover_aoi("BRA")], dtype=np.int64)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(BRA_CACHE, a)
    return a


def step_tiles(ctx: dict[str, Any]) -> dict[str, Any]:
    """ctx["tiles"]: the first ``n_tiles`` of Brazil (spread over the zones: every k-th)."""
    from geoxai.geo.grid import TileSpec

    if "tiles" not in ctx:
        a = bra_tiles()
        step = max(1, len(a) // ctx["n_tiles"])
        a = a[::step][: ctx["n_tiles"]]
        ctx["tiles"] = [TileSpec(int(e), int(c), int(r)) for e, c, r in a]
        ctx["bra_total"] = int(len(bra_tiles()))
    zones: dict[int, int] = {}
    for t in ctx["tiles"]:
        zones[t.epsg] = zones.get(t.epsg, 0) + 1
    ctx["zones"] = zones
    return {"tiles": len(ctx["tiles"]), "zones": dict(sorted(zones.items()))}


def step_records(ctx: dict[str, Any]) -> dict[str, Any]:
    """ctx["records"]: one synthetic record per tile (as ``read_records`` returns them)."""
    rng = np.random.default_rng(0)
    u = rng.random(len(ctx["tiles"]))
    stages = {"cube_s": 60.0, "smooth_s": 20.0, "predict_s": 8.0, "asos_s": 30.0}
    times = {k: rng.lognormal(np.log(v), 0.4, len(u)) for k, v in stages.items()}
    records = []
    for i, t in enumerate(ctx["tiles"]):
        rec: dict[str, Any] = {
            "tile_id": t.id,
            "config_hash": CONFIG["config_hash"],
            "code_version": "geoxai 0.9.0+bench",
            "input_items": [f"S2A_MSIL2A_2024{m:02d}15_T{t.zone:02d}XYZ" for m in range(1, 13)],
        }
        if u[i] < 0.96:
            rec["status"] = "done"
            rec["timings"] = {k: float(v[i]) for k, v in times.items()}
        elif u[i] < 0.99:
            rec["status"] = "failed"
            rec["reason"] = REASONS[i % len(REASONS)].format(k=i % 97)
        else:
            rec["status"] = "empty"
            rec["reason"] = "NoDataError: 0 scenes"
        records.append(rec)
    ctx["records"] = records
    done = sum(r["status"] == "done" for r in records)
    return {"records": len(records), "done": done, "failed_or_empty": len(records) - done}


def step_catalog(ctx: dict[str, Any]) -> dict[str, Any]:
    """write_catalog at growing sizes up to ``catalog_max`` done tiles, with the default
    ``items_json`` (auto: JSON Items up to 10,000 tiles) and, where that wrote JSON Items,
    without them (Parquet only); ms/item, peak RSS, and a linear extrapolation."""
    from geoxai.io.layout import RunLayout
    from geoxai.mapping.catalog import ITEMS_JSON_AUTO_MAX, write_catalog

    done = [r for r in ctx["records"] if r["status"] == "done"]
    cap = min(len(done), ctx["catalog_max"])
    sizes = [s for s in (1000, 10_000, 100_000, 240_000) if s <= cap] or [len(done)]
    if cap not in sizes and cap > sizes[-1]:
        sizes.append(cap)
    rows = []
    for s in sizes:
        modes = [None, False] if s <= ITEMS_JSON_AUTO_MAX else [None]
        for mode in modes:
            root = ctx["workdir"] / f"catalog-{s}"
            layout = RunLayout(str(root / "run" / "2024"))
            rss0 = _rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            with _Peak() as p:
                write_catalog(  # streamed, as finish_run hands the records
                    layout, CONFIG, lambda s=s: iter(done[:s]), mosaics={}, items_json=mode
                )
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
            pq = root / "run" / "2024" / "catalog" / "items.parquet"
            json_items = s <= ITEMS_JSON_AUTO_MAX if mode is None else mode
            rows.append(
                {
                    "items": s,
                    "items_json": json_items,
                    "seconds": round(sec, 2),
                    "ms_per_item": round(1000 * sec / s, 3),
                    "cpu_ms_per_item": round(1000 * cpu / s, 3),
                    "peak_rss_over_start_mb": round(p.peak - rss0, 1),
                    "parquet_mb": round(pq.stat().st_size / 2**20, 2) if pq.exists() else None,
                }
            )
            print(
                f"    catalog {s:>7} items ({'JSON + ' if json_items else ''}Parquet): "
                f"{sec:7.1f} s ({1000 * sec / s:.2f} ms/item, {1000 * cpu / s:.2f} ms CPU), "
                f"peak RSS +{p.peak - rss0:.0f} MB"
            )
            shutil.rmtree(root, ignore_errors=True)
    pq_rows = [r for r in rows if not r["items_json"]]
    per = pq_rows[-1]["ms_per_item"]
    return {
        "sizes": rows,
        "growth_ratio_ms_per_item_last_vs_first_parquet_only": round(
            per / pq_rows[0]["ms_per_item"], 2
        ),
        "extrapolated_s_at_done_tiles": round(per * len(done) / 1000, 0),
        "extrapolated_note": f"parquet only, linear from {pq_rows[-1]['items']} items to "
        f"{len(done)}",
    }


def _tile_values(t: Any, rng: np.random.Generator) -> np.ndarray:
    """A 600 x 600 float32 field like a tree-cover probability (smooth + noise)."""
    y, x = np.mgrid[0:600, 0:600] / 600.0
    base = 0.5 + 0.4 * np.sin(2 * np.pi * (x + t.col * 0.37)) * np.cos(2 * np.pi * y)
    return np.clip(base + rng.normal(0, 0.05, (600, 600)), 0, 1).astype("float32")[None]


def step_mosaics(ctx: dict[str, Any]) -> dict[str, Any]:
    """Real COGs for a block of the largest zone, mosaics over them, then the zone at full
    scale: flat VRT over every tile, overview COG over the full extent, a country-zoom read."""
    import rasterio
    from rasterio.enums import Resampling

    from geoxai.io.cog import write_cog
    from geoxai.io.layout import RunLayout
    from geoxai.io.mosaic import (
        READ_THREADS,
        build_mosaics,
        build_overview,
        build_tile_index,
        build_vrt,
    )
    from geoxai.io.zonestore import LayerSpec, ZoneGrid

    epsg = max(ctx["zones"], key=ctx["zones"].get)
    zone_tiles = [t for t in ctx["tiles"] if t.epsg == epsg]
    full = ZoneGrid.from_tiles(zone_tiles)[epsg]
    k = max(1, int(np.sqrt(ctx["sample"])))
    c0, r0 = full.col0 + full.ncols // 2, full.row0 + full.nrows // 2
    from geoxai.geo.grid import TileSpec

    sample = [TileSpec(epsg, c0 + i, r0 + j) for j in range(k) for i in range(k)]
    layout = RunLayout(str(ctx["workdir"] / "mosaics" / "run" / "2024"))
    spec = LayerSpec("prediction", "float32", ("tree",), units="1")
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for t in sample:
        write_cog(
            _tile_values(t, rng),
            t,
            layout.cog_url("prediction", t.id),
            band_names=["tree"],
            tags={"layer": "prediction"},
        )
    cog_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    build_overview(layout, spec, sample, workers=1)
    ovr_one_s, ovr_one_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    build_overview(layout, spec, sample)
    ovr_sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_mosaics(layout, sample, [spec])
    mosaics_s = time.perf_counter() - t0
    per_tile_ms = 1000 * ovr_sample_s / len(sample)
    # the zone at full scale
    t0 = time.perf_counter()
    vrt = build_vrt(layout, spec, zone_tiles, grid=full)
    vrt_s = time.perf_counter() - t0
    vrt_mb = Path(vrt).stat().st_size / 2**20
    t0 = time.perf_counter()
    ovr = build_overview(layout, spec, sample, grid=full)
    full_ovr_s = time.perf_counter() - t0
    assert ovr is not None
    ovr_mb = Path(ovr).stat().st_size / 2**20
    build_vrt(layout, spec, zone_tiles, grid=full, overview=ovr)
    t0 = time.perf_counter()
    with rasterio.open(vrt) as src:
        open_s = time.perf_counter() - t0
        shape = (max(1, src.height // 256), max(1, src.width // 256))
        t1 = time.perf_counter()
        a = src.read(1, out_shape=shape, resampling=Resampling.average)
        read_s = time.perf_counter() - t1
        with rasterio.open(ovr) as o:
            levels = o.overviews(1)
            size = (o.width, o.height)
        # native read of the sample block (the only tiles with COGs here)
        regions = [full.region(t) for t in sample]
        # 1 px inside the block: the index would open the COG-less neighbours it touches
        win = (
            (min(r.start for r, _ in regions) + 1, max(r.stop for r, _ in regions) - 1),
            (min(c.start for _, c in regions) + 1, max(c.stop for _, c in regions) - 1),
        )
        t1 = time.perf_counter()
        native = src.read(1, window=win)
        vrt_native_s = time.perf_counter() - t1
    # the same zone as a GDAL tile index (GeoPackage + R-tree)
    t0 = time.perf_counter()
    gti = build_tile_index(layout, spec, zone_tiles, grid=full, overview=ovr)
    gti_s = time.perf_counter() - t0
    gti_mb = Path(gti).stat().st_size / 2**20
    t0 = time.perf_counter()
    with rasterio.open(gti) as src:
        gti_open_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        g_native = src.read(1, window=win)
        gti_native_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        g = src.read(1, out_shape=shape, resampling=Resampling.average)
        gti_read_s = time.perf_counter() - t1
    same = bool(np.array_equal(native, g_native, equal_nan=True))
    print(
        f"    tile index: {gti_mb:.1f} MB in {gti_s:.1f} s; open {gti_open_s:.3f} s "
        f"(VRT {open_s:.2f} s); native read of {k}x{k} tiles {gti_native_s:.3f} s "
        f"(VRT {vrt_native_s:.3f} s, equal: {same}); country zoom {gti_read_s:.3f} s"
    )
    print(
        f"    zone EPSG:{epsg}: {len(zone_tiles)} tiles, VRT {vrt_mb:.0f} MB in {vrt_s:.1f} s; "
        f"overview {size[0]}x{size[1]} px ({ovr_mb:.1f} MB) in {full_ovr_s:.1f} s; "
        f"decimated reads {ovr_one_s / len(sample) * 1000:.1f} ms/tile on 1 thread "
        f"({ovr_one_cpu / len(sample) * 1000:.1f} ms CPU), "
        f"{ovr_sample_s / len(sample) * 1000:.1f} ms/tile on {READ_THREADS}"
    )
    return {
        "zone": epsg,
        "zone_tiles": len(zone_tiles),
        "zone_grid_tiles": [full.ncols, full.nrows],
        "sample_cogs": len(sample),
        "sample_cog_write_s": round(cog_s, 2),
        "sample_overview_s_1_thread": round(ovr_one_s, 2),
        "sample_overview_cpu_ms_per_tile": round(1000 * ovr_one_cpu / len(sample), 2),
        "sample_overview_s": round(ovr_sample_s, 2),
        "read_threads": READ_THREADS,
        "threads_speedup": round(ovr_one_s / ovr_sample_s, 2),
        "sample_mosaics_s": round(mosaics_s, 2),
        "overview_ms_per_tile": round(per_tile_ms, 2),
        "overview_decimated_reads_extrapolated_s": {
            "zone": round(per_tile_ms * len(zone_tiles) / 1000, 0),
            "all_tiles": round(per_tile_ms * len(ctx["tiles"]) / 1000, 0),
            "note": "per layer; linear in tiles (one decimated read per tile COG)",
        },
        "flat_vrt_mb": round(vrt_mb, 1),
        "flat_vrt_write_s": round(vrt_s, 2),
        "overview_full_extent_px": list(size),
        "overview_full_extent_mb": round(ovr_mb, 2),
        "overview_full_extent_s": round(full_ovr_s, 2),
        "overview_levels": levels,
        "vrt_open_s": round(open_s, 2),
        "country_zoom_read": {"shape": list(a.shape), "seconds": round(read_s, 3)},
        "tile_index": {
            "mb": round(gti_mb, 2),
            "write_s": round(gti_s, 2),
            "open_s": round(gti_open_s, 4),
            "native_read_s": round(gti_native_s, 4),
            "vrt_native_read_s": round(vrt_native_s, 4),
            "native_equal_to_vrt": same,
            "country_zoom_read_s": round(gti_read_s, 3),
            "country_zoom_equal_to_vrt": bool(np.array_equal(a, g, equal_nan=True)),
        },
    }


def step_report(ctx: dict[str, Any]) -> dict[str, Any]:
    """render_report over every tile and record (no quicklooks: no zone stores here)."""
    from geoxai.io.layout import RunLayout
    from geoxai.mapping.report import render_report

    layout = RunLayout(str(ctx["workdir"] / "report" / "run" / "2024"))
    records = iter(ctx["records"])  # read once, as a stream (finish_run hands a digest)
    page = render_report(layout, CONFIG, records, tiles=ctx["tiles"], wall_s=86_400.0)
    return {"tiles": len(ctx["tiles"]), "html_mb": round(len(page.encode()) / 2**20, 3)}


STEPS = (step_tiles, step_records, step_catalog, step_mosaics, step_report)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", type=int, default=240_000)
    ap.add_argument("--quick", action="store_true", help="10,000 tiles")
    ap.add_argument("--sample", type=int, default=64, help="real COGs for the mosaics")
    ap.add_argument("--catalog-max", type=int, default=100_000)
    ap.add_argument(
        "--steps",
        default=",".join(f.__name__.removeprefix("step_") for f in STEPS),
        help="comma-separated steps to run (tiles and records always run)",
    )
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.tiles
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "tiles": n,
        "steps": {},
    }
    print(f"bench_scale_outputs: {n} tiles")
    with tempfile.TemporaryDirectory(prefix="geoxai-scale-out-") as tmp:
        ctx = new_context(n, Path(tmp), sample=args.sample, catalog_max=args.catalog_max)
        chosen = {"tiles", "records", *args.steps.split(",")}
        for fn in (f for f in STEPS if f.__name__.removeprefix("step_") in chosen):
            results["steps"][fn.__name__.removeprefix("step_")] = measured(fn, ctx)
    results["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_scale_outputs.json"
    if set(results["steps"]) != {f.__name__.removeprefix("step_") for f in STEPS}:
        out = RESULTS / "bench_scale_outputs_partial.json"  # keep the full run's file
    out.write_text(json.dumps(results, indent=2))
    print(f"process peak RSS {results['ru_maxrss_mb']:.0f} MB; wrote {out}")
    return results


if __name__ == "__main__":
    main()
