"""Layers stored beside a cube (S1 steps, terrain): float32 as stored vs integers with a scale.

Run: ``.venv/bin/python benchmarks/bench_layers.py`` (needs ``$GEOXAI_REALDATA``, default
../shared/realdata).

The cube's reflectance is stored as the integers it is (uint16 DN, lossless); the layers beside
it are not integers at their source. This measures what an integer form would save and cost,
on real data, with the layers' own codec (:func:`geoxai.io.cube_codec.cube_codecs`: byte
shuffle + zstd 3 with checksum):

* S1: the WorldCereal patch's 159 ascending VV/VH dates (Belgium, 20 m, 32 x 32 px), linear
  power -> :func:`geoxai.temporal.s1.aggregate_s1` (per-step median dB on the 24-step axis of
  2018, gaps filled), as stored by a run; also on 10 m (power upsampled bilinearly 2x first,
  as the tile grid reads it). Integer form: int16 at 0.01 dB.
* DEM: the WorldCereal monthly inputs' elevation (100 x 100 px, float32 metres) and the
  :func:`geoxai.temporal.terrain.slope_degrees` of it. Integer form: int16 at 0.1 m / 0.01
  degree.

Printed and written to ``benchmarks/results/bench_layers.json``: bytes per form and the largest
absolute error of the integer form.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoxai.io.cube_codec import cube_codecs  # noqa: E402
from geoxai.temporal.s1 import S1Params, aggregate_s1  # noqa: E402
from geoxai.temporal.smoothing import SmoothingParams  # noqa: E402
from geoxai.temporal.terrain import slope_degrees  # noqa: E402

REAL = Path(os.environ.get("GEOXAI_REALDATA", ROOT.parent / "shared" / "realdata"))


def _read_nc(path: Path, var: str) -> tuple[np.ndarray, dict, list[str]]:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no geotransform in these files
        with rasterio.open(f"netcdf:{path}:{var}") as src:
            dims = [
                next((v for k, v in src.tags(i).items() if k.startswith("NETCDF_DIM_")), "")
                for i in range(1, src.count + 1)
            ]
            return src.read(), src.tags(), dims


def stored_bytes(a: np.ndarray) -> int:
    """Bytes of ``a`` through the layers' codec chain (shuffle + zstd 3 with checksum)."""
    import numcodecs

    data = np.ascontiguousarray(a)
    if data.dtype.itemsize > 1:
        data = np.frombuffer(numcodecs.Shuffle(elementsize=data.dtype.itemsize).encode(data), "u1")
    level = cube_codecs(a.dtype.itemsize)[-1].level
    return len(numcodecs.Zstd(level=level, checksum=True).encode(data))


def as_int16(a: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """``a`` quantized to ``step`` as int16 (NaN -> -32768) and the largest error, in units."""
    ok = np.isfinite(a)
    q = np.where(ok, np.rint(np.where(ok, a, 0) / step), -32768).astype(np.int16)
    back = q.astype(np.float32) * np.float32(step)
    return q, float(np.max(np.abs(back[ok] - a[ok]))) if ok.any() else 0.0


def compare(name: str, a: np.ndarray, step: float, unit: str) -> dict:
    q, err = as_int16(a, step)
    res = {
        "shape": list(a.shape),
        "float32_bytes": stored_bytes(a.astype(np.float32)),
        "int16_bytes": stored_bytes(q),
        "int16_step": step,
        "int16_max_error": err,
        "unit": unit,
        "raw_float32_bytes": int(a.size * 4),
    }
    res["int16_over_float32"] = res["int16_bytes"] / res["float32_bytes"]
    print(
        f"{name:18s} {str(tuple(a.shape)):18s} float32 {res['float32_bytes']:9,d} B  int16 "
        f"{res['int16_bytes']:9,d} B ({res['int16_over_float32']:.2f}x), max error "
        f"{err:.4g} {unit} at step {step:g}"
    )
    return res


def s1_layer(upsample: int) -> np.ndarray:
    from scipy.ndimage import zoom

    path = next((REAL / "worldcereal_ts_patch").glob("S1_GRD-ASCENDING_20m_*.nc"))
    vv, tags, secs = _read_nc(path, "VV")
    vh, _, _ = _read_nc(path, "VH")
    raw = np.stack([vv, vh], axis=1)
    db = np.where(raw == 0, np.nan, raw.astype(np.float32) * np.float32(1e-4))
    power = (10.0 ** (db / 10.0)).astype(np.float32)
    if upsample > 1:
        power = zoom(power, (1, 1, upsample, upsample), order=1, grid_mode=True, mode="nearest")
    origin = np.datetime64(tags["timestamp#units"].split("since ")[1].replace(" ", "T"))
    times = (origin + np.array([int(s) for s in secs]).astype("timedelta64[s]")).astype(
        "datetime64[ns]"
    )
    import xarray as xr

    h, w = power.shape[-2:]
    cube = xr.DataArray(
        power.astype(np.float32),
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": ["VV", "VH"], "y": -np.arange(h) * 10.0, "x": np.arange(w)},
        attrs={"units": "linear", "tile_id": "worldcereal"},
    )
    return aggregate_s1(cube, SmoothingParams(year=2018), S1Params())["backscatter"].values


def main() -> None:
    out: dict = {}
    out["s1_20m"] = compare("S1 dB, 20 m", s1_layer(1), 0.01, "dB")
    out["s1_10m"] = compare("S1 dB, 10 m", s1_layer(2), 0.01, "dB")
    path = REAL / "worldcereal_monthly_inputs" / "worldcereal_preprocessed_inputs.nc"
    elev = _read_nc(path, "elevation")[0][0].astype(np.float32)
    out["dem_source_dtype"] = str(_read_nc(path, "elevation")[0].dtype)
    out["dem"] = compare("DEM m", elev, 0.1, "m")
    out["slope"] = compare("slope degrees", slope_degrees(elev, 10.0), 0.01, "degrees")
    dest = ROOT / "benchmarks" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "bench_layers.json").write_text(json.dumps(out, indent=2))
    print(f"DEM source dtype: {out['dem_source_dtype']}")
    print(f"wrote {dest / 'bench_layers.json'}")


if __name__ == "__main__":
    main()
