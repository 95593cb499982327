"""Real Sentinel-2 scenes with a reference mask, for scoring the spectral mask.

Each loader returns a :class:`MaskCase`: reflectance ``(T, C, Y, X)`` float32 (NaN = nodata),
band names, solar angles per date, pixel size and the reference classes
(:data:`geoxai.temporal.masks.CLASS_NAMES`). Solar angles: the real files carry none, so they
are computed (:func:`geoxai.temporal.masks.solar_angles`) from the acquisition time and the
patch centre; where a file stores only the day, the overpass is taken at 11:00 local mean
solar time (Sentinel-2 passes 10:55-11:05 local solar time over these patches, as the
timestamped WorldCereal and eo-learn series show).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoxai.temporal.masks import CLEAR, CLOUD, NODATA, scl_classes, solar_angles

STEM = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"


@dataclass
class MaskCase:
    name: str
    refl: np.ndarray  # (T, C, Y, X) float32
    bands: tuple[str, ...]
    sun: tuple[np.ndarray, np.ndarray]  # (T,) azimuth, elevation
    resolution_m: float
    ref: np.ndarray  # (T, Y, X) uint8 reference classes
    reference: str  # what the reference is


def _lonlat(epsg: int, x: float, y: float) -> tuple[float, float]:
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    return float(lon), float(lat)


def _at_overpass(days: np.ndarray, lon: float) -> np.ndarray:
    """Dates (datetime64[D]) at 11:00 local mean solar time, as UTC datetime64[s]."""
    utc_h = 11.0 - lon / 15.0
    return days.astype("datetime64[s]") + np.timedelta64(int(round(utc_h * 3600)), "s")


def _nc(path: Path, var: str) -> tuple[np.ndarray, list[str], dict, object]:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(f"netcdf:{path}:{var}") as src:
            dims = [
                next((v for k, v in src.tags(i).items() if k.startswith("NETCDF_DIM_")), "")
                for i in range(1, src.count + 1)
            ]
            return src.read(), dims, src.tags(), src.transform


def worldcereal(root: Path) -> MaskCase:
    """118 L2A dates of the WorldCereal patch (Belgium); reference = its SCL (20 m)."""
    d = root / "worldcereal_ts_patch"
    names = ("B02", "B03", "B04", "B08", "B11")
    arrs, seconds, origin = [], None, None
    for b in names:
        res = "10m" if b != "B11" else "20m"
        a, dims, tags, _ = _nc(d / f"S2_L2A_{res}_{STEM}", b)
        if res == "20m":
            a = a.repeat(2, axis=1).repeat(2, axis=2)
        arrs.append(np.where(a == 0, np.nan, a.astype(np.float32) * np.float32(1e-4)))
        seconds = np.array([int(v) for v in dims])
        origin = np.datetime64(tags["timestamp#units"].split("since ")[1].replace(" ", "T"))
    scl, _, _, _ = _nc(d / f"S2_L2A_20m_{STEM}", "SCL")
    scl = scl.repeat(2, axis=1).repeat(2, axis=2).astype(np.float32)
    assert seconds is not None and origin is not None
    times = origin + seconds.astype("timedelta64[s]")
    lon, lat = _lonlat(32631, 501680.0, 5629360.0)
    return MaskCase(
        "worldcereal_ts_patch",
        np.stack(arrs, axis=1),
        names,
        solar_angles(times, lon, lat),
        10.0,
        scl_classes(np.where(scl == 0, np.nan, scl)),
        "SCL",
    )


def openeo(root: Path, name: str) -> MaskCase:
    """One openEO GFMAP cube (CDSE L2A, 2022/23, Belgium); reference = its SCL."""
    path = root / "openeo_gfmap_cubes" / f"{name}.nc"
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the container has no geotransform
        with rasterio.open(path) as src:
            subs = [s.rsplit(":", 1)[1] for s in src.subdatasets]
    bands = tuple(
        s.replace("S2-L2A-", "")
        for s in subs
        if s.startswith("S2-L2A-B") and s.replace("S2-L2A-", "") != "B8A"
    )
    arrs = []
    days = None
    transform = None
    for b in bands:
        a, dims, _, transform = _nc(path, f"S2-L2A-{b}")
        a = a.astype(np.float32)
        bad = ~np.isfinite(a) | (a <= 0) | (a >= 32767)
        arrs.append(np.where(bad, np.nan, a * np.float32(1e-4)))
        days = np.datetime64("1990-01-01") + np.array([int(float(v)) for v in dims]).astype(
            "timedelta64[D]"
        )
    scl, _, _, _ = _nc(path, "S2-L2A-SCL")
    scl = scl.astype(np.float32)
    scl = np.where((scl <= 0) | (scl > 11) | ~np.isfinite(scl), np.nan, scl)
    assert days is not None and transform is not None
    ny, nx = scl.shape[1:]
    cx, cy = transform * (nx / 2, ny / 2)  # type: ignore[operator]
    lon, lat = _lonlat(32631, cx, cy)
    return MaskCase(
        name,
        np.stack(arrs, axis=1),
        bands,
        solar_angles(_at_overpass(days, lon), lon, lat),
        10.0,
        scl_classes(scl),
        "SCL",
    )


EO_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10")
EO_BANDS += ("B11", "B12")


def eolearn(root: Path) -> MaskCase:
    """5 L1C scenes (Slovenia, 2015) of eo-learn; reference = the s2cloudless mask CLM."""
    d = root / "eolearn_testeopatch"
    scenes = np.load(d / "REFERENCE_SCENES.npy")  # (5, Y, X, 13)
    ndvi = np.load(d / "NDVI.npy")[..., 0]
    clm = np.load(d / "CLM.npy")[..., 0]
    stamps = np.array(json.loads((d / "timestamps.json").read_text()), dtype="datetime64[s]")
    idx = []
    for s in scenes:  # find each scene's date by its NDVI
        b4, b8 = s[..., 3], s[..., 7]
        with np.errstate(invalid="ignore", divide="ignore"):
            nd = (b8 - b4) / (b8 + b4)
        err = np.nanmean(np.abs(ndvi - nd[None]), axis=(1, 2))
        idx.append(int(np.nanargmin(err)))
    ref = np.where(clm[idx].astype(bool), CLOUD, CLEAR).astype(np.uint8)
    ref[~np.isfinite(scenes).all(axis=-1)] = NODATA  # (IS_VALID is False under clouds too)
    x0, y0, x1, y1 = 465181.05, 5079244.89, 466180.53, 5080254.63
    lon, lat = _lonlat(32633, (x0 + x1) / 2, (y0 + y1) / 2)
    return MaskCase(
        "eolearn_testeopatch",
        np.moveaxis(scenes, -1, 1).astype(np.float32),
        EO_BANDS,
        solar_angles(stamps[idx], lon, lat),
        10.0,
        ref,
        "s2cloudless CLM",
    )
