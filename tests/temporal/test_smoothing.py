"""Raw cube -> model-ready cube: accuracy against known truth, seamlessness, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.bands import S2_BANDS
from geoxai.temporal.clouds import CloudMaskParams
from geoxai.temporal.indices import FeatureRanges
from geoxai.temporal.smoothing import (
    PreprocessParams,
    SmoothingParams,
    feature_names,
    fine_grid,
    grid_lambda,
    preprocess,
    required_halo_px,
    time_axis,
)
from tests.fixtures.cubes import AMP, synthetic_cube, truth

PARAMS = PreprocessParams(
    clouds=CloudMaskParams(buffer_m=0.0), smoothing=SmoothingParams(year=2021)
)


def test_cleaned_series_match_the_clean_truth_per_band():
    """Error vs the clean truth is the smoother's bias on the seasonal peak, not clouds.

    lambda = 100 on the 15-day scale (the reference) has its half-power period near 300 days,
    so a season with a 55-day sigma loses ~10 % of its amplitude at the peak; a weaker lambda
    tracks the truth to about the noise level. Clouds (30 %), shadows and gaps never show.
    """
    raw, amp = synthetic_cube(0)
    centres = (np.arange(24) + 0.5) * 15.0
    ref = truth(centres, amp.ravel()).reshape(24, 10, *amp.shape)
    rmse = {}
    for lam in (100.0, 10.0):
        p = PreprocessParams(
            clouds=PARAMS.clouds, smoothing=SmoothingParams(year=2021, lambda_=lam)
        )
        ds = preprocess(raw, p)
        f = ds["features"]
        assert f.dims == ("time", "band", "y", "x") and f.dtype == np.float32
        assert list(f["band"].values) == list(feature_names(PARAMS))
        assert bool(ds["valid"].all())
        err = f.values[:, :10] - ref
        rmse[lam] = np.sqrt((err**2).mean(axis=(0, 2, 3)))
        per_band = dict(zip(S2_BANDS, rmse[lam].round(4), strict=True))
        print(f"lambda={lam:g} per-band RMSE vs truth:", per_band)
    assert np.all(rmse[100.0] < 0.12 * np.abs(AMP) + 0.004), rmse[100.0]
    assert np.all(rmse[10.0] < 0.04 * np.abs(AMP) + 0.003), rmse[10.0]
    # the raw nearest acquisition (clouds included) is far worse
    days = (raw["time"].values - np.datetime64("2021-01-01", "ns")) / np.timedelta64(1, "D")
    nearest = np.abs(days[None, :] - centres[:, None]).argmin(axis=1)
    raw_err = np.nan_to_num(raw.values[nearest, :10] - ref, nan=1.0)
    assert np.sqrt((raw_err**2).mean()) > 5 * rmse[100.0].max()


def test_output_axis_and_quality_layers():
    raw, _ = synthetic_cube(1, ny=8, nx=8)
    ds = preprocess(raw, PARAMS)
    np.testing.assert_array_equal(ds["time"].values, time_axis(PARAMS.smoothing))
    assert str(ds["time"].values[0]) == "2021-01-08T12:00:00.000000000"
    np.testing.assert_array_equal(ds["x"].values, raw["x"].values)
    assert ds.attrs["tile_id"] == raw.attrs["tile_id"]
    assert ds.attrs["input_items"][0].startswith("S2_")
    assert (ds["n_obs"] > 10).all() and (ds["max_gap_days"] < 120).all()
    assert np.isfinite(ds["features"].values).all()


def test_lambda_is_scaled_to_the_fine_grid():
    sp = SmoothingParams(year=2021, lambda_=100.0)
    assert grid_lambda(sp) == pytest.approx(100.0 * 3**3)
    nodes = fine_grid(sp)
    assert np.allclose(np.diff(nodes), 5.0)
    bounds = np.arange(25) * 15.0
    assert np.isin(bounds, nodes).all()  # step boundaries (whole 5-day periods) are nodes
    assert nodes[0] == -45 and nodes[-1] == 360 + 45


def test_nodata_pixels_and_tiles_are_flagged_not_raised():
    raw, _ = synthetic_cube(2, ny=6, nx=6)
    data = raw.values.copy()
    data[:, :10, 0, 0] = np.nan  # no valid observation at all
    data[:, 10, 1, 1] = 9.0  # always cloudy
    ds = preprocess(raw.copy(data=data), PARAMS)
    assert not ds["valid"][0, 0] and not ds["valid"][1, 1]
    assert int(ds["valid"].sum()) == 34
    assert (ds["features"].values[:, :, 0, 0] == 0).all()
    assert int(ds["n_obs"][0, 0]) == 0 and float(ds["max_gap_days"][0, 0]) == 360.0
    data[:, :10] = np.nan  # a whole tile without data
    ds = preprocess(raw.copy(data=data), PARAMS)
    assert not ds["valid"].any()
    assert np.isfinite(ds["features"].values).all() and (ds["features"].values == 0).all()


@pytest.mark.parametrize("lam", [None, 100.0])
def test_overlapping_tiles_agree_in_their_cores(lam):
    """Per-pixel lambda choice (None, pooled over 3x3) or a fixed lambda: seamless cores."""
    raw, _ = synthetic_cube(3, ny=20, nx=40)
    # noisier stripes (sd 0.02 more on the bands): the choice smooths there, interpolates elsewhere
    data = raw.values.copy()
    noisy = (np.arange(40) // 6) % 2 == 1
    extra = np.random.default_rng(4).normal(0, 0.02, size=data[:, :10].shape).astype(np.float32)
    data[:, :10] += extra * noisy
    raw = raw.copy(data=data)
    sp = SmoothingParams(year=2021, lambda_=lam)
    bands = raw["band"].values  # "auto" with SCL: the buffer only
    assert required_halo_px(PreprocessParams(smoothing=sp), 10.0, bands) == (
        5 if lam is None else 4
    )
    # a 10 m buffer (1 px): with the default 40 m one this 30 %-cloudy cube has no valid pixel
    p = PreprocessParams(clouds=CloudMaskParams(buffer_m=10.0), smoothing=sp)
    halo = required_halo_px(p, 10.0, bands)
    assert halo == (2 if lam is None else 1)  # the 3x3 pooling of the choice reaches 1 px
    whole = preprocess(raw, p)
    assert whole["valid"].values.all()
    differ = []
    full = whole["features"].values
    for xs in (slice(0, 24), slice(16, 40)):
        ds = preprocess(raw.isel(x=xs), p, rows_per_block=7)
        part = ds["features"].values
        core = slice(halo, -halo)
        np.testing.assert_allclose(
            part[..., core, :][..., core],
            full[..., halo:-halo, xs][..., core],
            rtol=0,
            atol=1e-6,
        )
        if lam is None:
            choice = ds["lambda_choice"].values[core, core]
            np.testing.assert_array_equal(
                choice, whole["lambda_choice"].values[halo:-halo, xs][:, core]
            )
            # one pixel less of halo (the cloud buffer's alone): the pooled choice differs
            short = slice(halo - 1, -(halo - 1))
            cut = ds["lambda_choice"].values[short, short]
            differ.append((cut != whole["lambda_choice"].values[short, xs][:, short]).any())
    if lam is None:  # the choice is per pixel, not one for the tile; the check has teeth
        assert np.unique(whole["lambda_choice"].values).size > 1
        assert any(differ)


def test_torch_path_gives_the_same_numbers():
    raw, _ = synthetic_cube(4, ny=6, nx=7)
    a = preprocess(raw, PARAMS)
    b = preprocess(raw, PARAMS, device="cpu")
    np.testing.assert_allclose(b["features"].values, a["features"].values, atol=1e-6)
    np.testing.assert_array_equal(b["valid"].values, a["valid"].values)


def test_margins_hold_the_year_edges():
    """Acquisitions just outside the year keep January and December accurate."""
    raw, amp = synthetic_cube(5, ny=6, nx=6, cloud=0.5)
    centres = (np.arange(24) + 0.5) * 15.0
    ref = truth(centres, amp.ravel()).reshape(24, 10, *amp.shape)
    errs = {}
    for margin in (0.0, 45.0):
        sp = SmoothingParams(year=2021, margin_days=margin)
        f = preprocess(raw, PreprocessParams(clouds=PARAMS.clouds, smoothing=sp))["features"]
        e = f.values[[0, -1], :10] - ref[[0, -1]]
        errs[margin] = float(np.sqrt((e**2).mean()))
    assert errs[45.0] < errs[0.0]


def test_item_screening_equals_dropping_the_item():
    raw, _ = synthetic_cube(6, ny=5, nx=5)
    cc = np.full(raw.sizes["time"], 10.0)
    cc[[10, 20]] = 99.0
    screened = raw.assign_coords({"eo:cloud_cover": ("time", cc)})
    p = PreprocessParams(clouds=CloudMaskParams(buffer_m=0.0, max_item_cloud_cover=90.0))
    p = PreprocessParams(clouds=p.clouds, smoothing=SmoothingParams(year=2021))
    a = preprocess(screened, p)
    b = preprocess(raw.drop_isel(time=[10, 20]), PARAMS)
    np.testing.assert_allclose(a["features"].values, b["features"].values, atol=1e-6)


def test_normalized_features_lie_in_minus_one_one():
    raw, _ = synthetic_cube(7, ny=5, nx=5)
    names = feature_names(PARAMS)
    norm = FeatureRanges(names, (0.0,) * len(names), (0.3,) * len(names))
    p = PreprocessParams(clouds=PARAMS.clouds, smoothing=PARAMS.smoothing, normalization=norm)
    f = preprocess(raw, p)["features"].values
    assert f.min() >= -1 and f.max() <= 1 and f.min() < 0 < f.max()


def test_mismatched_band_sets_are_named():
    raw, _ = synthetic_cube(8, ny=4, nx=4)
    no_b8a = raw.drop_sel(band="B8A")
    with pytest.raises(InvalidInputError, match="lacks \\['B8A'\\]"):
        preprocess(no_b8a, PARAMS)
    bands = tuple(b for b in S2_BANDS if b != "B8A")
    p = PreprocessParams(bands=bands, clouds=PARAMS.clouds, smoothing=PARAMS.smoothing)
    assert preprocess(no_b8a, p)["features"].sizes["band"] == 14
    with pytest.raises(InvalidInputError, match="lacks \\['SCL'\\]"):
        preprocess(
            raw.drop_sel(band="SCL"),
            PreprocessParams(clouds=CloudMaskParams(method="scl"), smoothing=PARAMS.smoothing),
        )
    renamed = raw.assign_coords(band=[*S2_BANDS[:-1], "B13", "SCL"])
    with pytest.raises(InvalidInputError, match="B13"):
        preprocess(renamed, PARAMS)


def test_time_axis_outside_the_year_is_an_error():
    raw, _ = synthetic_cube(9, ny=4, nx=4)
    with pytest.raises(InvalidInputError, match="outside the requested axis 2019-01-01"):
        preprocess(raw, PreprocessParams(smoothing=SmoothingParams(year=2019)))


@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda: SmoothingParams(year=2021, lambda_=0.0), ConfigError, "lambda"),
        (lambda: SmoothingParams(year=2021, lambda_=-5.0), ConfigError, "lambda"),
        (lambda: SmoothingParams(year=2021, min_obs=1), ConfigError, "min_obs"),
        (lambda: SmoothingParams(start="2021-13-01"), ConfigError, "ISO date"),
        (lambda: SmoothingParams().axis_start(), ConfigError, "target year"),
        (lambda: PreprocessParams(bands=("B04", "B99")), InvalidInputError, "Unknown band"),
        (lambda: PreprocessParams(bands=("B04", "SCL")), ConfigError, "mask"),
        (lambda: PreprocessParams(bands=("B02", "B03", "B08")), ConfigError, "B04"),
    ],
)
def test_bad_parameters_are_typed_errors(make, err, match):
    with pytest.raises(err, match=match):
        make()
