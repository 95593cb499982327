"""Cloud/shadow/snow weights: classes, buffer, halo seamlessness, spectral rule, item screen."""

from __future__ import annotations

import numpy as np
import pytest

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.temporal.clouds import (
    CloudMaskParams,
    buffer_mask,
    item_screen,
    required_halo_px,
    scl_weights,
    spectral_weights,
)
from geoxai.temporal.masks import MissingSunAnglesWarning

S2 = ("B02", "B03", "B04", "B08", "B11")


def test_classes_map_to_weights():
    p = CloudMaskParams(buffer_m=0.0)
    scl = np.arange(12, dtype=np.float32).reshape(12, 1, 1)
    scl = np.concatenate([scl, np.full((1, 1, 1), np.nan, np.float32)])
    w = scl_weights(scl, p, 10.0)[:, 0, 0]
    for c in range(12):
        expect = 0.0 if c in p.masked_classes else (0.5 if c in p.reduced_classes else 1.0)
        assert w[c] == expect, c
    assert w[12] == 0.0  # missing SCL


def test_buffer_is_a_disk_of_the_given_metres():
    scl = np.full((1, 41, 41), 4.0, np.float32)
    scl[0, 20, 20] = 9.0
    w = scl_weights(scl, CloudMaskParams(buffer_m=50.0), 10.0)[0]
    yy, xx = np.mgrid[:41, :41]
    dist = np.hypot(yy - 20, xx - 20)
    assert (w[dist <= 5] == 0).all()
    assert (w[dist > 5] == 1).all()
    # nodata (class 0) is masked but not buffered
    scl[0, 20, 20] = 0.0
    w = scl_weights(scl, CloudMaskParams(buffer_m=50.0), 10.0)[0]
    assert (w == 0).sum() == 1


def test_overlapping_tiles_agree_in_their_cores_given_the_halo():
    """Two crops of one scene with halo >= required_halo_px give the same core weights."""
    rng = np.random.default_rng(0)
    scl = rng.choice([4.0, 5.0, 8.0, 9.0, 3.0], p=[0.6, 0.3, 0.04, 0.03, 0.03], size=(6, 80, 120))
    p = CloudMaskParams(method="scl", buffer_m=60.0)
    halo = required_halo_px(p, 10.0)
    assert halo == 6
    full = scl_weights(scl, p, 10.0)
    core_a, core_b = (slice(20, 60), slice(10, 60)), (slice(20, 60), slice(60, 110))
    for ys, xs in (core_a, core_b):
        crop = scl[:, ys.start - halo : ys.stop + halo, xs.start - halo : xs.stop + halo]
        w = scl_weights(crop, p, 10.0)[:, halo:-halo, halo:-halo]
        np.testing.assert_array_equal(w, full[:, ys, xs])
    # without the halo, the core edge would miss buffers from clouds just outside
    w0 = scl_weights(scl[:, 20:60, 10:60], p, 10.0)
    assert not np.array_equal(w0, full[:, 20:60, 10:60])


def test_buffer_mask_keeps_empty_and_full_frames():
    m = np.zeros((3, 5, 5), bool)
    m[1] = True
    m[2, 2, 2] = True
    out = buffer_mask(m, 1.0)
    assert not out[0].any() and out[1].all() and out[2].sum() == 5


def _scene(t: int = 20) -> np.ndarray:
    """(T, 5, 4, 4) clear vegetation reflectances for the spectral rule."""
    base = np.array([0.03, 0.06, 0.04, 0.35, 0.18], np.float32)
    return np.broadcast_to(base[None, :, None, None], (t, 5, 4, 4)).copy()


def test_spectral_rule_flags_cloud_shadow_snow_and_nan():
    refl = _scene()
    refl[3] = np.array([0.45, 0.45, 0.45, 0.5, 0.35])[:, None, None]  # cloud
    refl[5] = np.array([0.02, 0.03, 0.02, 0.08, 0.05])[:, None, None]  # shadow
    refl[7] = np.array([0.6, 0.6, 0.6, 0.55, 0.05])[:, None, None]  # snow
    refl[9, 2, 1, 1] = np.nan
    with pytest.warns(MissingSunAnglesWarning):  # no angles: the temporal test finds the shadow
        w = spectral_weights(refl, S2, CloudMaskParams(buffer_m=0.0), 10.0)
    assert (w[[3, 5, 7]] == 0).all()
    assert w[9, 1, 1] == 0 and w[9].sum() == 15
    assert (w[[0, 1, 2, 4, 6, 8, 10]] == 1).all()


def test_spectral_rule_keeps_water():
    """Dark water every date is the pixel's normal state, not a shadow."""
    refl = _scene()
    refl[:, :, 0, 0] = np.array([0.04, 0.05, 0.03, 0.02, 0.01])[None, :]
    w = spectral_weights(refl, S2, CloudMaskParams(buffer_m=0.0), 10.0)
    assert (w[:, 0, 0] == 1).all()


def test_spectral_rule_needs_its_bands():
    with pytest.raises(InvalidInputError, match="lacks \\['B08'\\]"):
        spectral_weights(_scene()[:, :3], S2[:3], CloudMaskParams(), 10.0)


def test_item_screen_depends_only_on_item_metadata():
    p = CloudMaskParams(max_item_cloud_cover=80.0)
    keep = item_screen(np.array([10.0, 95.0, np.nan, 80.0]), p)
    assert keep.tolist() == [True, False, True, True]
    assert item_screen(None, CloudMaskParams()) is None
    with pytest.raises(InvalidInputError, match="eo:cloud_cover"):
        item_screen(None, p)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "s2cloudless"}, "method"),
        ({"masked_classes": (3, 12)}, "not SCL classes"),
        ({"reduced_weight": 1.5}, "reduced_weight"),
        ({"buffer_m": -10.0}, "buffer_m"),
        ({"max_item_cloud_cover": 150.0}, "percentage"),
    ],
)
def test_bad_params_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CloudMaskParams(**kwargs)


def _scl_weights_numpy(scl, params, resolution_m):
    """The table + separable-rectangle path scl_weights took before its compiled pass."""
    from geoxai.temporal.clouds import scl_codes, scl_tables

    weight, buffered = scl_tables(params)
    codes = scl_codes(np.asarray(scl))
    w = weight[codes]
    if params.buffer_m > 0:
        w[buffer_mask(buffered[codes], params.buffer_m / resolution_m)] = 0.0
    return w


@pytest.mark.parametrize("buffer_m", [0.0, 5.0, 10.0, 15.0, 40.0, 55.0])
def test_scl_weights_compiled_pass_equals_the_table_and_rectangles(buffer_m):
    rng = np.random.default_rng(11)
    scl = rng.choice([4, 4, 4, 4, 5, 6, 2, 7, 3, 8, 9, 10, 11, 1, 0], (4, 37, 61)).astype(
        np.float32
    )
    scl[0, :5, :7] = np.nan  # missing: weight 0, never buffered
    scl[1, 3, :4] = [300.0, -2.0, np.inf, 254.7]  # out of the class range
    scl[2] = 9.0  # a frame all cloud
    scl[3, :, 30:] = 4.0  # a clear half, buffered from the other
    params = CloudMaskParams(buffer_m=buffer_m)
    for layer in (scl, np.nan_to_num(scl, nan=0.0).clip(0, 255).astype(np.uint8)):
        for res in (10.0, 20.0):
            want = _scl_weights_numpy(layer, params, res)
            got = scl_weights(layer, params, res)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
    assert (want == 0).any() and (want == 1).any() and (want == 0.5).any()
