"""Temporal processing on real Sentinel-2 series (../shared/realdata, via the realdata fixture).

The worldcereal/openEO NetCDF files are read with GDAL's netCDF driver (rasterio), so no extra
NetCDF library is needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geoxai.geo.bands import CUBE_BANDS, S2_BANDS
from geoxai.temporal.clouds import CloudMaskParams
from geoxai.temporal.smoothing import (
    PreprocessParams,
    SmoothingParams,
    observation_weights,
    preprocess,
    smooth_series,
)

pytestmark = pytest.mark.realdata

TS = "worldcereal_ts_patch"
STEM = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"


def _read(path: Path, var: str) -> tuple[np.ndarray, list[str], dict]:
    """(bands, y, x) array of one NetCDF variable, each band's NETCDF_DIM tag, global tags."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no geotransform in these files
        with rasterio.open(f"netcdf:{path}:{var}") as src:
            data = src.read()
            dims = [
                next((v for k, v in src.tags(i).items() if k.startswith("NETCDF_DIM_")), "")
                for i in range(1, src.count + 1)
            ]
            return data, dims, src.tags()


def worldcereal_ts_cube(root: Path) -> tuple[xr.DataArray, np.ndarray]:
    """Raw cube (118, 11, 64, 64) of the real patch (20 m bands repeated to 10 m), + crop type."""
    d = root / TS
    bands: dict[str, np.ndarray] = {}
    seconds = None
    for res, names in (("10m", ("B02", "B03", "B04", "B08")), ("20m", S2_BANDS[3:] + ("SCL",))):
        for name in names:
            if name in ("B08",) and res == "20m":
                continue
            if name in ("B02", "B03", "B04") and res == "20m":
                continue
            a, dims, tags = _read(d / f"S2_L2A_{res}_{STEM}", name)
            if res == "20m":
                a = a.repeat(2, axis=1).repeat(2, axis=2)
            bands[name] = a
            seconds = np.array([int(v) for v in dims])
            origin = np.datetime64(tags["timestamp#units"].split("since ")[1].replace(" ", "T"))
    assert seconds is not None
    times = (origin + seconds.astype("timedelta64[s]")).astype("datetime64[ns]")
    stack = []
    for name in CUBE_BANDS:
        a = bands[name].astype(np.float32)
        if name == "SCL":
            stack.append(np.where(a == 0, np.nan, a))
        else:  # processing baseline < 04.00 in 2017/18: no offset
            stack.append(np.where(a == 0, np.nan, a * np.float32(1e-4)))
    data = np.stack(stack, axis=1)
    raw = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": list(CUBE_BANDS),
            "y": 5_629_675.0 - 10.0 * np.arange(64),
            "x": 501_365.0 + 10.0 * np.arange(64),
        },
        name="reflectance",
        attrs={"crs": "EPSG:32631", "tile_id": "worldcereal_00002806639B424A", "resolution_m": 10},
    )
    ct, _, _ = _read(d / f"OUTPUT_POLY-110_10m_{STEM}", "CT")
    return raw, ct[0]


@pytest.fixture(scope="module")
def ts(realdata):
    return worldcereal_ts_cube(realdata)


P2018 = PreprocessParams(smoothing=SmoothingParams(year=2018))


def test_real_cloudy_observations_are_masked(ts):
    raw, _ = ts
    w = observation_weights(raw, P2018)
    scl = raw.sel(band="SCL").values
    assert raw.sizes["time"] == 118
    cloudy = np.isin(scl, (3, 8, 9, 10))
    assert cloudy.mean() > 0.3  # a really cloudy Belgian series
    assert (w[cloudy] == 0).all()
    bright = raw.sel(band="B02").values > 0.25  # thick cloud whatever SCL says
    print(f"bright (B02 > 0.25) observations masked: {(w[bright] == 0).mean():.3f}")
    assert (w[bright] == 0).mean() > 0.97
    clear = np.isin(scl, (4, 5))
    assert (w[clear] > 0).mean() > 0.8  # the buffer takes some clear pixels next to clouds


def test_real_maize_ndvi_follows_a_season(ts):
    """Maize (LPIS crop type 1200): winter cover, bare soil in May, peak in July, harvest.

    The reference lambda (100 on 15 days) damps the season strongly (half-power period ~300
    days); lambda = 10 keeps its depth. Both must put the dip in spring and the peak in summer.
    """
    raw, ct = ts
    maize = ct == 1200
    assert maize.sum() > 500
    curves = {}
    for lam in (100.0, 10.0):
        p = PreprocessParams(smoothing=SmoothingParams(year=2018, lambda_=lam))
        ds = preprocess(raw, p)
        f = ds["features"]
        assert np.isfinite(f.values).all() and bool(ds["valid"].all())
        curve = np.median(f.sel(band="NDVI").values[:, maize], axis=1)
        print(f"maize median NDVI, lambda={lam:g}:", curve.round(2).tolist())
        dip = 6 + int(curve[6:11].argmin())  # April .. May
        peak = 11 + int(curve[11:17].argmax())  # June .. August
        assert curve[peak] > curve[dip] + (0.05 if lam == 100.0 else 0.3)
        assert curve[0] > curve[dip]  # winter cover crop before ploughing
        assert curve[20] < curve[peak]  # after harvest
        curves[lam] = curve
    assert curves[10.0].min() < 0.45 and curves[10.0][11:17].max() > 0.7


def test_real_held_out_clear_observation_is_predicted_by_the_smooth_curve(ts):
    """Leave out each clear 2018 date in turn; compare the curve at that date with it.

    Baselines: the raw nearest acquisition in time (clouds included) and the nearest
    acquisition that is clear at that pixel.
    """
    raw, _ = ts
    params = P2018
    sp = params.smoothing
    w_all = observation_weights(raw, params).reshape(118, -1)
    refl = raw.sel(band=list(S2_BANDS)).values.reshape(118, 10, -1)
    w_all = w_all * np.isfinite(refl).all(axis=1)
    vals = np.nan_to_num(refl)
    days = (raw["time"].values - sp.axis_start()) / np.timedelta64(1, "D")
    clear_frac = (w_all == 1).mean(axis=1)
    held = [i for i in np.nonzero((clear_frac > 0.95) & (days >= 0) & (days < 365))[0]][::2]
    assert len(held) >= 5
    err_s, err_raw, err_clear = [], [], []
    for i in held:
        w = w_all.copy()
        w[i] = 0.0
        sm, ok, _ = smooth_series(vals, w, days, sp, at_days=np.array([days[i]]))
        truth = refl[i]
        px = ok & (w_all[i] == 1)
        others = np.delete(np.arange(118), i)
        j = others[np.abs(days[others] - days[i]).argmin()]
        near = np.nan_to_num(refl[j], nan=0.0)
        dist = np.where(w[:, :] > 0, np.abs(days[:, None] - days[i]), np.inf)
        jc = dist.argmin(axis=0)
        near_clear = vals[jc, :, np.arange(vals.shape[2])].T
        err_s.append((sm[0] - truth)[:, px])
        err_raw.append((near - truth)[:, px])
        err_clear.append((near_clear - truth)[:, px])

    def rmse(errs):
        return float(np.sqrt(np.mean(np.concatenate(errs, axis=1) ** 2)))

    r_s, r_raw, r_clear = rmse(err_s), rmse(err_raw), rmse(err_clear)
    print(
        f"held-out clear dates {len(held)}: RMSE smooth {r_s:.4f}, raw nearest {r_raw:.4f}, "
        f"nearest clear {r_clear:.4f} (reflectance, 10 bands)"
    )
    assert r_s < r_raw
    assert r_s < 0.5 * r_raw


def test_real_monthly_composites_bridge_two_empty_months(realdata):
    path = realdata / "worldcereal_monthly_inputs" / "worldcereal_preprocessed_inputs.nc"
    bands = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
    stack, days_since = [], None
    for b in bands:
        a, dims, _ = _read(path, f"S2-L2A-{b}")
        stack.append(np.where(a == 65535, np.nan, a.astype(np.float32) * np.float32(1e-4)))
        days_since = np.array([int(v) for v in dims])
    times = (np.datetime64("1990-01-01") + days_since.astype("timedelta64[D]")).astype(
        "datetime64[ns]"
    )
    data = np.stack(stack, axis=1)
    empty = np.isnan(data).all(axis=(1, 2, 3))
    assert empty.sum() == 2  # December 2020 and January 2021
    raw = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": list(bands), "y": np.arange(100.0), "x": np.arange(100.0)},
        name="reflectance",
        attrs={"resolution_m": 10},
    )
    params = PreprocessParams(
        bands=bands,
        clouds=CloudMaskParams(method="none"),
        smoothing=SmoothingParams(start="2020-11-01", margin_days=20.0),
    )
    ds = preprocess(raw, params)
    f = ds["features"]
    assert np.isfinite(f.values).all() and bool(ds["valid"].all())
    assert float(ds["max_gap_days"].max()) >= 80  # the 3-month hole between Nov and Feb
    steps = (ds["time"].values - np.datetime64("2020-11-01")) / np.timedelta64(1, "D")
    hole = (steps > 40) & (steps < 85)  # mid-December .. late January
    assert hole.sum() == 3
    nov, feb = data[0], data[3]
    lo = np.minimum(nov, feb) - 0.05
    hi = np.maximum(nov, feb) + 0.05
    for k in np.nonzero(hole)[0]:
        v = f.values[k, :9]
        inside = ((v >= lo) & (v <= hi)).mean()
        frac = (steps[k] - 0.0) / 92.0  # Nov 1 -> Feb 1
        dev = np.abs(v - ((1 - frac) * nov + frac * feb))
        print(
            f"step {k}: {inside:.3f} of bridged values within the Nov/Feb range +-0.05, "
            f"median |smooth - linear Nov->Feb| {np.median(dev):.4f}"
        )
        assert inside > 0.97
        assert np.median(dev) < 0.02
