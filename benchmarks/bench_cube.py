"""Cube build for one tile from a local STAC API + local S3: geoxai.io.cube vs odc-stac.

Run: ``.venv/bin/python benchmarks/bench_cube.py [--quick] [--start 2023-01-01 --end
2023-12-31] [--halo 32] [--repeats 1] [--storage [--no-table]]``

1. Writes a synthetic Sentinel-2 L2A archive (geoxai.synthetic) of one standard 6 km tile,
   uploads its COGs to a ``moto_server`` started here on 127.0.0.7 (in memory), rewrites the
   asset hrefs to ``s3://`` and serves the items with ``rustac serve`` on loopback
   (pipelines.services.local_stac_api). GDAL reads S3 through ``AWS_S3_ENDPOINT``,
   ``AWS_HTTPS=NO``, ``AWS_VIRTUAL_HOSTING=FALSE`` and fake keys.
2. Times, interleaved ``--repeats`` times each, on the same items and the same tile grid:

   * **geoxai**: ``geoxai.io.stac.search`` + ``geoxai.io.cube.build_cube`` (stackstac, float32,
     scale/offset applied, bilinear 20 m, SCL nearest) + compute;
   * **odc-stac**: ``odc.stac.load`` with ``geobox=tile.geobox``, the same bands, float32,
     bilinear (SCL nearest), NaN nodata; DN are left unscaled (odc-stac does not apply
     raster:bands scale/offset; it costs one multiply-add per pixel).

   Both reduce the cube to per-date, per-band means on dask's threaded scheduler (same
   threads), so neither holds the whole tile-year in memory and the work is identical.
3. Prints wall time, throughput of the bytes read (the COGs the items reference, all of which
   overlap the tile), and the ratio geoxai / odc-stac (< 1: geoxai is faster), and writes JSON
   with the machine context to ``benchmarks/results/bench_cube-<time>.json``.

The default is one tile-year (73 acquisitions of 2023, ~330 MiB of COGs): about 80 s on 2
shared cores. ``--quick`` takes a quarter year (19 acquisitions) twice each, about 35 s.

``--storage`` measures the stored cube instead (:func:`storage_ratios`, local files, no S3):
cube bytes stored / source COG bytes of the same windows; cube build (build + encode + write,
numba's kernels loaded before it, as in a tile actor) / decoding the same COG windows with
rasterio alone (no warp, no write), for both build paths in the same run: ``build_tile_cube``'s
default (the DN read straight from the COGs, ``geoxai.io.cube_direct``) and ``direct=False``
(stackstac's float32 cube, encoded), checked to commit the same chunk objects; reading the
stored cube back as the run does (the
smoothing stage streams ``SMOOTH_ROWS``-row slices of all dates x bands, holding the two before
while it reads the next: ``geoxai.temporal.weights.RowBlocks``) / decoding the same stored chunk
objects, each once, with the codec alone (zstd, un-shuffle and the zigzag-delta predictor, into
integers; both best of 3, the first read reported apart; streaming by whole stored chunks is
reported beside it);
verifying the chunk checksums / the build; and a table of candidate codecs (bytes, encode and
decode time) on the cube's DN.
``benchmarks/bench_tile.py`` can call :func:`storage_ratios` on its own tile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoxai.geo.bands import CUBE_BANDS  # noqa: E402
from geoxai.geo.grid import TileSpec  # noqa: E402

S3_HOST = "127.0.0.7"
BUCKET = "bench-cube"


def context(args: argparse.Namespace) -> dict:
    import dask
    import odc.stac
    import rasterio
    import stackstac

    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(mem_gb, 1),
        "load_avg": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dask": dask.__version__,
        "stackstac": stackstac.__version__,
        "odc_stac": odc.stac.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "dask_threads": dask.config.get("num_workers", None) or os.cpu_count(),
        "args": vars(args),
    }


def start_moto() -> tuple[subprocess.Popen, str]:
    from tests.fixtures.net import free_port, wait_http

    exe = Path(sys.executable).with_name("moto_server")
    port = free_port(S3_HOST)
    proc = subprocess.Popen(
        [str(exe), "-H", S3_HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{S3_HOST}:{port}"
    wait_http(url + "/moto-api/", proc)
    return proc, url


def s3_env(endpoint: str) -> None:
    """Fake keys and the endpoint for boto/s3fs and GDAL (process-wide, this script only)."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench-key",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_S3_ENDPOINT=endpoint.removeprefix("http://"),
        AWS_HTTPS="NO",
        AWS_VIRTUAL_HOSTING="FALSE",
    )


def upload(archive_root: Path, items: list[dict], endpoint: str) -> tuple[list[dict], int]:
    """Put every referenced COG on S3 and point the items at it; total bytes uploaded."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    total = 0
    out = []
    for item in items:
        item = json.loads(json.dumps(item))
        for asset in item["assets"].values():
            href = asset.get("href", "")
            if not href.startswith("/") or not href.endswith(".tif"):
                continue
            key = str(Path(href).relative_to(archive_root))
            client.upload_file(href, BUCKET, key)
            total += Path(href).stat().st_size
            asset["href"] = f"s3://{BUCKET}/{key}"
        out.append(item)
    return out, total


def run_geoxai(api: str, tile: TileSpec, start: str, end: str) -> tuple[float, dict]:
    from geoxai.io.cube import build_cube
    from geoxai.io.stac import search

    t0 = time.perf_counter()
    items = search(
        api,
        collections="sentinel-2-l2a",
        bbox=tile.footprint(halo=True).bounds,
        datetime=(start, end),
    )
    t_search = time.perf_counter() - t0
    cube = build_cube(items, tile, start=start, end=end)
    means = cube.mean(dim=("y", "x")).compute()
    wall = time.perf_counter() - t0
    return wall, {
        "search_s": t_search,
        "n_items": len(items),
        "shape": list(cube.shape),
        "mean_B04": float(np.nanmean(means.sel(band="B04").values)),
    }


def run_odc(api: str, tile: TileSpec, start: str, end: str) -> tuple[float, dict]:
    import odc.stac
    import pystac_client

    t0 = time.perf_counter()
    client = pystac_client.Client.open(api)
    items = list(
        client.search(
            collections=["sentinel-2-l2a"],
            bbox=tile.footprint(halo=True).bounds,
            datetime=f"{start}/{end}",
            method="POST",
        ).items()
    )
    t_search = time.perf_counter() - t0
    keys = {"B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
            "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08",
            "B11": "swir16", "B12": "swir22", "SCL": "scl"}  # fmt: skip
    ds = odc.stac.load(
        items,
        bands=[keys[b] for b in CUBE_BANDS],
        geobox=tile.geobox,
        dtype="float32",
        nodata=float("nan"),
        resampling={"*": "bilinear", "scl": "nearest"},
        chunks={"time": 1, "x": tile.shape[1], "y": tile.shape[0]},
        groupby="solar_day",
    )
    cube = ds.to_array("band").transpose("time", "band", "y", "x")
    means = cube.mean(dim=("y", "x")).compute()
    wall = time.perf_counter() - t0
    dn = float(np.nanmean(means.sel(band="red").values))
    return wall, {
        "search_s": t_search,
        "n_items": len(items),
        "shape": list(cube.shape),
        "mean_B04": dn * 1e-4 - 0.1,  # scaled here, for the cross-check only
    }


def _cog_window_bytes_and_decode(items: list[dict], tile: TileSpec) -> tuple[int, float, float]:
    """Bytes of the COG tiles that intersect the tile's window (full resolution, every asset
    the cube reads), and wall/CPU seconds to decode those windows with rasterio alone."""
    import rasterio
    from rasterio.windows import from_bounds

    from geoxai.geo.bands import CUBE_BANDS
    from geoxai.io.stac_items import normalize_item

    nbytes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for item in items:
        norm = normalize_item(item)  # the assets the cube reads, by canonical band name
        for href in (norm.assets[b].href for b in CUBE_BANDS):
            with rasterio.open(href) as ds:
                win = from_bounds(*tile.bounds, transform=ds.transform).round_offsets()
                win = win.round_lengths()
                ds.read(1, window=win, boundless=False)
                bh, bw = ds.block_shapes[0]
                r0, c0_ = max(0, int(win.row_off) // bh), max(0, int(win.col_off) // bw)
                r1 = min((ds.height - 1) // bh, int(win.row_off + win.height - 1) // bh)
                c1 = min((ds.width - 1) // bw, int(win.col_off + win.width - 1) // bw)
                for i in range(r0, r1 + 1):
                    for j in range(c0_, c1 + 1):
                        nbytes += ds.block_size(1, i, j)
    return nbytes, time.perf_counter() - t0, time.process_time() - c0


def _codec_table(dn: np.ndarray, rows: int) -> list[dict]:
    """Candidate codecs on the cube's uint16 DN ``(time, band, y, x)``: bytes, encode and
    decode seconds (one thread), with the chunks the store uses."""
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec
    from zarr.codecs.numcodecs import Delta, Shuffle

    from geoxai.io.cube_rows import ZigzagDelta

    cands: dict[str, Any] = {
        "zstd0 (float32 today: see cube_float32_zstd0)": [ZstdCodec(level=0)],
        "zstd3+checksum": [ZstdCodec(level=3, checksum=True)],
        "shuffle+zstd1+checksum": [Shuffle(elementsize=2), ZstdCodec(level=1, checksum=True)],
        "shuffle+zstd3+checksum": [Shuffle(elementsize=2), ZstdCodec(level=3, checksum=True)],
        "zigzag-delta+shuffle+zstd3+checksum (chosen)": (
            [ZigzagDelta()],
            [Shuffle(elementsize=2), ZstdCodec(level=3, checksum=True)],
        ),
        "zigzag-delta+shuffle+zstd1+checksum": (
            [ZigzagDelta()],
            [Shuffle(elementsize=2), ZstdCodec(level=1, checksum=True)],
        ),
        "delta (numcodecs, no zigzag)+shuffle+zstd3": (
            [Delta(dtype="<u2")],
            [Shuffle(elementsize=2), ZstdCodec(level=3, checksum=True)],
        ),
        "shuffle+zstd6+checksum": [Shuffle(elementsize=2), ZstdCodec(level=6, checksum=True)],
        "blosc zstd3 byteshuffle": [
            BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=2)
        ],
        "blosc zstd3 bitshuffle": [
            BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=2)
        ],
        "blosc lz4 5 bitshuffle": [
            BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=2)
        ],
    }
    out = []
    chunks = (1, dn.shape[1], rows, dn.shape[3])
    for name, comp in cands.items():
        filters, comp = comp if isinstance(comp, tuple) else ((), comp)
        st = zarr.storage.MemoryStore()
        z = zarr.create_array(
            st,
            shape=dn.shape,
            chunks=chunks,
            dtype=dn.dtype,
            filters=list(filters),
            compressors=comp,
            fill_value=0,
        )
        t = time.perf_counter()
        z[:] = dn
        enc = time.perf_counter() - t
        nb = sum(len(v.to_bytes()) for k, v in st._store_dict.items() if "zarr.json" not in k)
        t = time.perf_counter()
        z[:]
        out.append(
            {"codec": name, "bytes": nb, "encode_s": enc, "decode_s": time.perf_counter() - t}
        )
    return out


def storage_ratios(
    items: list[dict], tile: TileSpec, work: Path, *, table: bool = True, build_repeats: int = 1
) -> dict:
    """The stored cube of ``tile`` against its floors, measured in one run on local files.

    Args:
        items: STAC items whose assets are local COG paths.
        tile: the tile (with halo).
        work: a scratch folder (the cube store is written under it).
        table: also measure the candidate codecs on the cube's DN.
        build_repeats: interleaved runs of the rasterio floor and of both builds (best kept).

    Returns:
        A dict of bytes, seconds (wall and CPU) and the ratios (see the module docstring).
    """
    import numcodecs

    from geoxai.io import store
    from geoxai.io.cube import build_cube
    from geoxai.io.cube_codec import ROWS
    from geoxai.io.cube_rows import ZIGZAG_DELTA, undo_zigzag_delta
    from geoxai.io.tile_cube import build_tile_cube
    from geoxai.mapping.stages import SMOOTH_ROWS

    numba_s = _load_kernels()
    # the rasterio floor and both build paths, interleaved ``build_repeats`` times (best of
    # each kept: the machine is shared), each path into its own store, the float (stackstac)
    # one first: the direct one (the default) must commit the same chunk objects (same SHA-256)
    url_float = str(work / f"{tile.id}-stackstac.zarr")
    url = str(work / f"{tile.id}.zarr")
    rio_s = rio_cpu = float_s = float_cpu = build_s = build_cpu = float("inf")
    for _ in range(build_repeats):
        cog_bytes, w, c = _cog_window_bytes_and_decode(items, tile)
        rio_s, rio_cpu = min(rio_s, w), min(rio_cpu, c)
        t0, c0 = time.perf_counter(), time.process_time()
        rec_float = build_tile_cube(
            items, tile, url_float, start="1900-01-01", end="2100-01-01", overwrite=True,
            direct=False,
        )  # fmt: skip
        float_s = min(float_s, time.perf_counter() - t0)
        float_cpu = min(float_cpu, time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        rec = build_tile_cube(
            items, tile, url, start="1900-01-01", end="2100-01-01", overwrite=True
        )
        build_s = min(build_s, time.perf_counter() - t0)
        build_cpu = min(build_cpu, time.process_time() - c0)
    same_store = {k: v["sha256"] for k, v in rec.marker["variables"].items()} == {
        k: v["sha256"] for k, v in rec_float.marker["variables"].items()
    }
    t0 = time.perf_counter()
    n_checked = store.verify(url)
    verify_s = time.perf_counter() - t0
    # reading back as the smoothing stage streams it (geoxai.temporal.weights.RowBlocks): row
    # slices of SMOOTH_ROWS (all dates x bands), two held while the next is read; the first
    # read (numba's kernel loaded from its cache, the whole cube kept for the equality check)
    # apart, then the best of REPEATS
    cube = store.read_cube(url)

    def read_blocks() -> list[np.ndarray]:
        return [cube.isel(y=slice(r, r + ROWS)).values for r in range(0, cube.sizes["y"], ROWS)]

    def read_stream(rows: int = SMOOTH_ROWS) -> None:
        held: list[np.ndarray] = []  # RowBlocks reads one block ahead of the one in use
        for r in range(0, cube.sizes["y"], rows):
            held = [*held[-1:], cube.isel(y=slice(r, r + rows)).values]

    t0 = time.perf_counter()
    back = np.concatenate(read_blocks(), axis=2)
    read_first_s = time.perf_counter() - t0
    read_s, read_cpu = _best(read_stream)
    read_chunks_s, read_chunks_cpu = _best(lambda: read_stream(ROWS))
    t0 = time.perf_counter()
    _ = store.read_cube(url).values  # the whole cube at once (row blocks in parallel threads)
    read_whole_s = time.perf_counter() - t0

    # the floor of reading back: the same stored objects, read and decoded by the codec alone
    # (zstd, un-shuffle, and the zigzag-delta predictor where the array has it), into uint16/uint8
    zstd, shuffle2 = numcodecs.Zstd(), numcodecs.Shuffle(elementsize=2)
    meta = {
        n: json.loads((Path(url) / n / "zarr.json").read_text()) for n in ("reflectance", "SCL")
    }
    delta = ZIGZAG_DELTA in [c["name"] for c in meta["reflectance"]["codecs"]]
    refl_chunk = tuple(meta["reflectance"]["chunk_grid"]["configuration"]["chunk_shape"])
    files = [
        p
        for name in ("reflectance", "SCL")
        for p in (Path(url) / name / "c").rglob("*")
        if p.is_file()
    ]

    def codec_alone() -> None:
        for p in files:
            raw = zstd.decode(p.read_bytes())
            if "reflectance" in p.parts:
                dn = np.frombuffer(shuffle2.decode(raw), np.uint16).reshape(refl_chunk)
                if delta:
                    undo_zigzag_delta(dn)

    codec_s, codec_cpu = _best(codec_alone)

    want = build_cube(items, tile).values
    exact = bool(np.array_equal(back, want, equal_nan=True))
    float32_bytes = _float32_zstd0_bytes(want, work)
    out = {
        "tile": tile.id,
        "shape": list(back.shape),
        "cube_bytes": rec.nbytes,
        "cube_float32_zstd0_bytes": float32_bytes,
        "cog_window_bytes": cog_bytes,
        "ratio_cube_over_cog": rec.nbytes / cog_bytes,
        "ratio_float32_today_over_cog": float32_bytes / cog_bytes,
        "build_repeats": build_repeats,
        "build_path": rec.build_path,
        "build_fallback": rec.fallback,
        "build_s": build_s,
        "numba_kernels_load_s": numba_s,
        "build_cpu_s": build_cpu,
        "rasterio_decode_s": rio_s,
        "rasterio_decode_cpu_s": rio_cpu,
        "ratio_build_over_rasterio": build_s / rio_s,
        "ratio_build_cpu_over_rasterio_cpu": build_cpu / rio_cpu,
        "build_stackstac_s": float_s,
        "build_stackstac_cpu_s": float_cpu,
        "ratio_build_stackstac_over_rasterio": float_s / rio_s,
        "ratio_build_stackstac_cpu_over_rasterio_cpu": float_cpu / rio_cpu,
        "direct_store_equals_stackstac_store": same_store,
        "read_s": read_s,
        "read_cpu_s": read_cpu,
        "read_rows": SMOOTH_ROWS,
        "read_by_stored_chunk_s": read_chunks_s,
        "read_by_stored_chunk_cpu_s": read_chunks_cpu,
        "read_whole_s": read_whole_s,
        "read_first_s": read_first_s,
        "codec_decode_s": codec_s,
        "codec_decode_cpu_s": codec_cpu,
        "ratio_read_over_codec": read_s / codec_s,
        "ratio_read_cpu_over_codec_cpu": read_cpu / codec_cpu,
        "verify_s": verify_s,
        "verify_chunks": n_checked,
        "ratio_verify_over_build": verify_s / build_s,
        "decoded_equals_float32_cube": exact,
    }
    if table:
        dn = np.asarray(store.read_dataset(url, chunks={})["reflectance"].values)
        out["codecs"] = _codec_table(dn, ROWS)
        out["codec_raw_bytes"] = int(dn.nbytes)
    return out


def _load_kernels() -> float:
    """Load the build's numba kernels (20 m upsampling, DN encoding, the direct build's chunk
    predictor and shuffle) from numba's cache, once
    per process as a tile actor does, so the build is timed without it; seconds it took."""
    from geoxai.geo.resample import bilinear_2x
    from geoxai.io.cube_rows import delta_shuffle, dn_encoder

    t0 = time.perf_counter()
    src = np.ones((4, 4), np.uint16)
    bilinear_2x(src, src > 0, (-1, -1), (0, 0), (2, 2), np.empty((2, 2), np.float32))
    bilinear_2x(src, src > 0, (-1, -1), (0, 0), (2, 2), np.empty((2, 2), np.uint16), 0)  # direct
    dn_encoder()(np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1), np.float32),
                 np.zeros((1, 1), np.float32), np.empty((1, 1, 1, 1), np.uint16))  # fmt: skip
    for dn in (np.ones((1, 1, 2), np.uint16), np.ones((1, 2, 2), np.uint16)[:, :1]):  # C, strided
        delta_shuffle()(dn, 0, np.empty(4, np.uint8))  # the direct build's chunk writes
    return time.perf_counter() - t0


REPEATS = 3
"""Timed repeats of the read-back and codec-alone loops (best kept: the machine is shared)."""


def _best(fn: Any) -> tuple[float, float]:
    """Best wall and best CPU seconds of ``REPEATS`` calls of ``fn()``."""
    wall, cpu = [], []
    for _ in range(REPEATS):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def _float32_zstd0_bytes(cube: np.ndarray, work: Path) -> int:
    """Bytes of the cube as stored before (float32, zstd level 0, the stackstac chunks)."""
    import zarr
    from zarr.codecs import ZstdCodec

    st = zarr.storage.MemoryStore()
    z = zarr.create_array(
        st,
        shape=cube.shape,
        chunks=(1, 1, *cube.shape[2:]),
        dtype=np.float32,
        compressors=[ZstdCodec(level=0)],
        fill_value=np.nan,
    )
    z[:] = cube
    return sum(len(v.to_bytes()) for k, v in st._store_dict.items() if "zarr.json" not in k)


def print_storage(r: dict) -> None:
    mib = 2**20
    print(f"tile {r['tile']} cube {r['shape']} (decoded == float32 cube: "
          f"{r['decoded_equals_float32_cube']})")  # fmt: skip
    print(f"  cube bytes / COG bytes of the same windows: {r['cube_bytes'] / mib:.1f} / "
          f"{r['cog_window_bytes'] / mib:.1f} MiB = {r['ratio_cube_over_cog']:.2f} "
          f"(float32 zstd0 as before: {r['ratio_float32_today_over_cog']:.2f})")  # fmt: skip
    why = f", fallback: {r['build_fallback']}" if r["build_fallback"] else ""
    print(f"  cube build ({r['build_path']} path{why}) / rasterio decode of the windows: "
          f"{r['build_s']:.2f} / "
          f"{r['rasterio_decode_s']:.2f} s = {r['ratio_build_over_rasterio']:.2f} "
          f"(CPU {r['ratio_build_cpu_over_rasterio_cpu']:.2f}; numba kernels loaded before, "
          f"once per process: {r['numba_kernels_load_s']:.2f} s)")  # fmt: skip
    print(f"  (builds and floor: best of {r['build_repeats']}, interleaved)")
    print(f"  cube build (stackstac path) / rasterio decode of the windows: "
          f"{r['build_stackstac_s']:.2f} / {r['rasterio_decode_s']:.2f} s = "
          f"{r['ratio_build_stackstac_over_rasterio']:.2f} "
          f"(CPU {r['ratio_build_stackstac_cpu_over_rasterio_cpu']:.2f}); stores byte-identical: "
          f"{r['direct_store_equals_stackstac_store']}")  # fmt: skip
    print(f"  read back streamed by {r['read_rows']}-row slices / codec alone on the stored "
          f"bytes: {r['read_s']:.2f} / {r['codec_decode_s']:.2f} s = "
          f"{r['ratio_read_over_codec']:.2f} (CPU {r['ratio_read_cpu_over_codec_cpu']:.2f}; by "
          f"stored chunk {r['read_by_stored_chunk_s']:.2f} s, CPU "
          f"{r['read_by_stored_chunk_cpu_s']:.2f}; whole cube at once "
          f"{r['read_whole_s']:.2f} s; first read {r['read_first_s']:.2f} s)")  # fmt: skip
    print(f"  verify {r['verify_chunks']} chunk checksums: {r['verify_s']:.2f} s = "
          f"{r['ratio_verify_over_build']:.3f} of the build")  # fmt: skip
    if "codecs" in r:
        print(f"  codecs on the DN ({r['codec_raw_bytes'] / mib:.0f} MiB raw), 1 thread:")
        print(f"    {'codec':42s} {'MiB':>7s} {'enc s':>6s} {'dec s':>6s}")
        for c in r["codecs"]:
            print(f"    {c['codec']:42s} {c['bytes'] / mib:7.1f} {c['encode_s']:6.2f} "
                  f"{c['decode_s']:6.2f}")  # fmt: skip


def synthetic_tile(args: argparse.Namespace, prefix: str) -> tuple[Any, Path, Any, list[dict]]:
    """One standard 6 km tile (``args.halo``) and its synthetic archive of ``args.start`` to
    ``args.end`` in a new temporary folder: ``(tile, folder, archive, items)``."""
    from geoxai.synthetic.fields import block_tiles
    from geoxai.synthetic.world import make_world

    tile = block_tiles(1)[0].with_halo(args.halo)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    t0 = time.perf_counter()
    world, archive = make_world(
        work / "world",
        tiles=(tile.with_halo(0),),
        start=date.fromisoformat(args.start),
        end=date.fromisoformat(args.end),
        margin_px=max(64, args.halo + args.halo % 2),
    )
    print(f"synthetic archive: {len(world.dates)} dates, {archive.bytes_written / 2**20:.0f} MiB "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    items = [json.loads(line) for line in archive.ndjson.read_text().splitlines() if line]
    return tile, work, archive, items


def main_storage(args: argparse.Namespace) -> None:
    tile, work, _, items = synthetic_tile(args, "bench-cube-storage-")
    r = storage_ratios(items, tile, work, table=not args.no_table, build_repeats=args.repeats or 1)
    print_storage(r)
    r["context"] = {"cores": os.cpu_count(), "load_avg": os.getloadavg(), "args": vars(args)}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_cube_storage-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(r, indent=1))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", default="2023-01-01", help="first day (ISO)")
    ap.add_argument("--end", default="2023-12-31", help="last day (ISO)")
    ap.add_argument("--quick", action="store_true", help="2023-04-01..2023-06-30, 2 repeats")
    ap.add_argument("--halo", type=int, default=32, help="tile halo, px")
    ap.add_argument(
        "--repeats", type=int, default=None,
        help="interleaved runs of each (--storage: of the rasterio floor and both builds)",
    )  # fmt: skip
    ap.add_argument("--storage", action="store_true", help="measure the stored cube instead")
    ap.add_argument("--no-table", action="store_true", help="--storage without the codec table")
    args = ap.parse_args()
    if args.quick:
        args.start, args.end = "2023-04-01", "2023-06-30"
    if args.storage:
        main_storage(args)
        return
    if args.repeats is None:
        args.repeats = 2 if args.quick else 1

    from pipelines.services import local_stac_api

    tile, work, archive, items = synthetic_tile(args, "bench-cube-")
    proc, endpoint = start_moto()
    try:
        s3_env(endpoint)
        items, nbytes = upload(archive.root, items, endpoint)
        print(f"uploaded {nbytes / 2**20:.0f} MiB of COGs to {endpoint}")
        runs: dict[str, list[float]] = {"geoxai": [], "odc-stac": []}
        info: dict[str, dict] = {}
        with local_stac_api(items) as api:
            for _ in range(args.repeats):
                for name, fn in (("geoxai", run_geoxai), ("odc-stac", run_odc)):
                    wall, meta = fn(api, tile, args.start, args.end)
                    runs[name].append(wall)
                    info[name] = meta
                    print(f"  {name:9s} {wall:7.2f} s  ({meta['n_items']} items)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    best = {k: min(v) for k, v in runs.items()}
    ratio = best["geoxai"] / best["odc-stac"]
    px = tile.shape[0] * tile.shape[1]
    print()
    print(f"tile {tile.id} halo {args.halo} ({tile.shape[0]}x{tile.shape[1]} px), "
          f"{info['geoxai']['n_items']} items x {len(CUBE_BANDS)} bands, "
          f"{nbytes / 2**20:.0f} MiB of COGs read")  # fmt: skip
    print(f"{'loader':10s} {'best s':>8s} {'MiB/s':>8s} {'Mpx/s':>8s} {'vs odc-stac':>12s}")
    for name, t in best.items():
        mpx = info[name]["n_items"] * len(CUBE_BANDS) * px / 1e6 / t
        print(f"{name:10s} {t:8.2f} {nbytes / 2**20 / t:8.1f} {mpx:8.1f} "
              f"{t / best['odc-stac']:12.2f}")  # fmt: skip
    drift = abs(info["geoxai"]["mean_B04"] - info["odc-stac"]["mean_B04"])
    print(f"cross-check: mean B04 reflectance differs by {drift:.2e} between the two loaders")

    result = {
        "context": context(args),
        "tile": tile.to_dict(),
        "n_items": info["geoxai"]["n_items"],
        "bands": list(CUBE_BANDS),
        "cog_bytes": nbytes,
        "cube_shape": info["geoxai"]["shape"],
        "cube_bytes_float32": int(np.prod(info["geoxai"]["shape"])) * 4,
        "runs_s": runs,
        "best_s": best,
        "ratio_geoxai_over_odc": ratio,
        "search_s": {k: v["search_s"] for k, v in info.items()},
        "mean_B04_abs_diff": drift,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_cube-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
