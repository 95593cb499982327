"""Invariants of Gaussian-blended lattice-window inference (geoxai.inference).

"Exactly" in these tests means bit-identical float32: the merge accumulates in float64 and
rounds once, so ``sum(w * x) / sum(w)`` of a float32 ``x`` rounds back to ``x`` itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine
from hypothesis import given
from hypothesis import strategies as st

from geoxai.errors import ConfigError, InvalidInputError, NoDataError
from geoxai.inference.predict import predict_windows
from geoxai.inference.windows import (
    REFERENCE_SIGMA_RATIO,
    WindowMerger,
    WindowParams,
    check_halo,
    gaussian_weights,
    lattice_origin,
    required_halo,
    window_origins,
)

# a grid whose origin is not on any stride lattice of interest (zone px 93807 x 562841)
TRANSFORM = Affine(10.0, 0.0, 562_410.0, 0.0, -10.0, 5_628_070.0)


def _x(shape=(3, 2, 70, 61), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32) * 2 - 1


def identity(b: torch.Tensor) -> torch.Tensor:
    """(B, T, C, n, n) -> (B, C, n, n): the first time step."""
    return b[:, 0]


def plus_one(b: torch.Tensor) -> torch.Tensor:
    return b[:, 0] + 1


params_st = st.builds(
    lambda w, s_frac, c, sig, bs, pad: WindowParams(
        window=w,
        stride=max(1, int(round(w * s_frac))),
        context=c,
        sigma=sig,
        batch_size=bs,
        pad_edges=pad,
    ),
    w=st.integers(2, 24),
    s_frac=st.floats(0.05, 1.0),
    c=st.integers(0, 6),
    sig=st.one_of(st.none(), st.floats(0.3, 40.0)),
    bs=st.integers(1, 9),
    pad=st.booleans(),
)


@given(p=params_st, x0=st.integers(-50, 50), y0=st.integers(-50, 50))
def test_identity_and_plus_one_exact_for_any_lattice(p, x0, y0):
    x = _x((2, 2, 40, 37))
    tr = Affine(10.0, 0.0, 500_000.0 + 10 * x0, 0.0, -10.0, 4_000_000.0 + 10 * y0)
    if not p.pad_edges and len(window_origins((40, 37), tr, p)) == 0:
        with pytest.raises(InvalidInputError, match="fits wholly inside"):
            predict_windows(identity, x, tr, params=p)
        return
    got = predict_windows(identity, x, tr, params=p)
    m = got.weight > 0
    assert got.values.dtype == np.float32
    np.testing.assert_array_equal(got.values[:, m], x[0][:, m])
    assert np.isnan(got.values[:, ~m]).all()
    if p.pad_edges:
        assert m.all(), "with pad_edges every pixel is covered"
    got1 = predict_windows(plus_one, x, tr, params=p)
    np.testing.assert_array_equal(got1.values[:, m], (x[0] + np.float32(1))[:, m])


@pytest.mark.parametrize("pad", [True, False])
def test_constant_model_gives_constant_map_without_seams(pad):
    p = WindowParams(window=16, stride=5, context=3, pad_edges=pad)

    def const(b):
        return torch.full((b.shape[0], 2, 16, 16), 0.3125, dtype=torch.float32)

    got = predict_windows(const, _x(), TRANSFORM, params=p)
    m = got.weight > 0
    assert m.any()
    assert (got.values[:, m] == np.float32(0.3125)).all()


def test_three_d_input_and_k_channels():
    x = _x((4, 50, 50))[:, :, :]
    p = WindowParams(window=12, stride=6, context=2)
    got = predict_windows(lambda b: torch.cat([b, -b], dim=1), x, TRANSFORM, params=p)
    assert got.values.shape == (8, 50, 50)
    np.testing.assert_array_equal(got.values[:4], x)
    np.testing.assert_array_equal(got.values[4:], -x)


def _brute_force(model, x, transform, valid, p):
    """Loop over every window and every pixel, in float64, straight from the definition."""
    _, _, h, w = x.shape
    zr, zc = lattice_origin(transform)
    g = gaussian_weights(p.window, p.sigma_px)
    num = None
    den = np.zeros((h, w))
    n = p.input_size
    for zrow in range(zr - p.window - p.context - 2, zr + h + 1):
        if zrow % p.stride:
            continue
        for zcol in range(zc - p.window - p.context - 2, zc + w + 1):
            if zcol % p.stride:
                continue
            r, c = zrow - zr, zcol - zc
            if r + p.window <= 0 or c + p.window <= 0 or r >= h or c >= w:
                continue
            inp = np.zeros((1, *x.shape[:2], n, n), np.float32)
            for i in range(n):
                for j in range(n):
                    y_, x_ = r - p.context + i, c - p.context + j
                    if 0 <= y_ < h and 0 <= x_ < w:
                        inp[0, :, :, i, j] = x[:, :, y_, x_]
            with torch.no_grad():
                out = model(torch.from_numpy(inp)).double().numpy()[0]
            out = out[:, p.context : p.context + p.window, p.context : p.context + p.window]
            if num is None:
                num = np.zeros((out.shape[0], h, w))
            for i in range(p.window):
                for j in range(p.window):
                    y_, x_ = r + i, c + j
                    if 0 <= y_ < h and 0 <= x_ < w and valid[y_, x_]:
                        num[:, y_, x_] += g[i, j] * out[:, i, j]
                        den[y_, x_] += g[i, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (num / den).astype(np.float32), den


def test_matches_brute_force_reference():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 2, 3, padding=1).double()

    def model(b):  # a real spatial model: neighbours matter, so cropping and context matter
        bb = b.reshape(b.shape[0], -1, *b.shape[-2:]).double()
        return torch.tanh(conv(bb)).float()

    x = _x((3, 2, 29, 23), seed=3)
    valid = np.random.default_rng(1).random((29, 23)) > 0.2
    p = WindowParams(window=9, stride=4, context=2, sigma=3.1, batch_size=5)
    got = predict_windows(model, x, TRANSFORM, valid=valid, params=p)
    want, den = _brute_force(model, x, TRANSFORM, valid, p)
    np.testing.assert_array_equal(got.values, want)
    np.testing.assert_array_equal(got.weight, den.astype(np.float32))
    assert np.isnan(got.values[:, ~valid]).all() and (got.weight[~valid] == 0).all()


def test_windows_sit_on_the_zone_lattice():
    p = WindowParams(window=16, stride=8, context=4)
    zr, zc = lattice_origin(TRANSFORM)
    org = window_origins((70, 61), TRANSFORM, p)
    assert ((org[:, 0] + zr) % 8 == 0).all() and ((org[:, 1] + zc) % 8 == 0).all()
    # a shifted array sees the same absolute windows where both hold them
    shifted = TRANSFORM @ Affine.translation(5, 3)
    org2 = window_origins((70, 61), shifted, p)
    zr2, zc2 = lattice_origin(shifted)
    a = {(r + zr, c + zc) for r, c in org}
    b = {(r + zr2, c + zc2) for r, c in org2}
    assert len(a & b) > 0 and all((r % 8, c % 8) == (0, 0) for r, c in a | b)


def test_adjacent_arrays_agree_in_overlap_with_spatial_model():
    """Two overlapping crops of one scene: core pixels agree (model: a small conv net)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1)
    )

    def model(b):
        return net(b.reshape(b.shape[0], -1, *b.shape[-2:]))

    p = WindowParams(window=12, stride=6, context=3, batch_size=4)
    core = 30
    halo = required_halo(p.window, p.stride, p.context, core_px=core)
    scene = _x((3, 2, core * 3, core * 3), seed=7)
    outs = []
    for col in (0, 1):
        r0, c0 = core - halo, core * (1 + col) - halo
        crop = scene[:, :, r0 : r0 + core + 2 * halo, c0 : c0 + core + 2 * halo]
        tr = TRANSFORM @ Affine.translation(c0 - 3, r0 - 3)  # scene starts off-lattice
        outs.append(predict_windows(model, crop, tr, params=p).values[0, halo:-halo, halo:-halo])
    # shared ground: tile 0's columns [core - halo .. core) are tile 1's halo, and vice versa;
    # compare both cores against a third prediction spanning both
    r0, c0 = core - halo, core - halo
    big = scene[:, :, r0 : r0 + core + 2 * halo, c0 : c0 + 2 * core + 2 * halo]
    both = predict_windows(model, big, TRANSFORM @ Affine.translation(c0 - 3, r0 - 3), params=p)
    both_core = both.values[0, halo:-halo, halo:-halo]
    np.testing.assert_allclose(outs[0], both_core[:, :core], atol=1e-5, rtol=0)
    np.testing.assert_allclose(outs[1], both_core[:, core:], atol=1e-5, rtol=0)


def test_required_halo_is_tight():
    # a halo one pixel smaller lets some window covering a core pixel leave the tile
    for window, stride, context in [(64, 32, 8), (16, 16, 0), (13, 5, 3), (10, 7, 2)]:
        need = required_halo(window, stride, context, core_px=60)
        worst = 0
        for tile in range(0, 7):
            c0 = 60 * tile
            for z in range(c0, c0 + 60):
                for r in range(z - window + 1, z + 1):
                    if r % stride == 0:
                        worst = max(worst, c0 - (r - context), r + window + context - (c0 + 60))
        assert need == worst
    with pytest.raises(ConfigError, match="halo_px >= 64"):
        check_halo(40, WindowParams(window=64, stride=32, context=8))
    check_halo(64, WindowParams(window=64, stride=32, context=8))


def test_gaussian_weights_default_sigma_and_shape():
    g = gaussian_weights(158, 36.0)
    assert g.shape == (158, 158) and g.dtype == np.float64
    assert g.max() <= 1.0 and g.min() > 0
    np.testing.assert_array_equal(g, g.T)
    np.testing.assert_array_equal(g, g[::-1, ::-1])
    assert WindowParams(window=158).sigma_px == pytest.approx(36.0)
    assert REFERENCE_SIGMA_RATIO == pytest.approx(36 / 158)


def test_nodata_gets_no_weight_and_nan_inputs_are_masked():
    x = _x((2, 3, 40, 40))
    x[1, 2, 5:9, 7:20] = np.nan  # one band of one date
    valid = np.ones((40, 40), bool)
    valid[30:, 30:] = False
    seen = []

    def model(b):
        seen.append(bool(torch.isfinite(b).all()))
        return b[:, 0]

    got = predict_windows(model, x, TRANSFORM, valid=valid, params=WindowParams(10, 5, 2))
    assert all(seen), "NaNs never reach the model"
    assert np.isnan(got.values[:, 5:9, 7:20]).all() and (got.weight[5:9, 7:20] == 0).all()
    assert np.isnan(got.values[:, 30:, 30:]).all()
    ok = got.weight > 0
    assert ok.sum() == 40 * 40 - 4 * 13 - 100
    np.testing.assert_array_equal(got.values[:, ok], x[0][:, ok])


def test_windows_without_valid_input_are_not_run():
    x = _x((1, 1, 60, 60))
    valid = np.zeros((60, 60), bool)
    valid[:10, :10] = True
    calls = []

    def model(b):
        calls.append(b.shape[0])
        return b[:, 0]

    predict_windows(model, x, TRANSFORM, valid=valid, params=WindowParams(10, 10, 0))
    full = predict_windows(lambda b: b[:, 0], x, TRANSFORM, params=WindowParams(10, 10, 0))
    assert sum(calls) <= 4 and np.isfinite(full.values).all()


def test_bad_input():
    p = WindowParams(window=16, stride=8, context=4)
    with pytest.raises(NoDataError, match="No valid pixel"):
        predict_windows(identity, np.full((2, 1, 40, 40), np.nan, np.float32), TRANSFORM, params=p)
    with pytest.raises(NoDataError):
        predict_windows(identity, _x((1, 1, 40, 40)), TRANSFORM, np.zeros((40, 40), bool), p)
    with pytest.raises(InvalidInputError, match="smaller than one model input of 24x24"):
        predict_windows(identity, _x((1, 1, 23, 40)), TRANSFORM, params=p)
    with pytest.raises(InvalidInputError, match=r"\(T, C, H, W\)"):
        predict_windows(identity, np.zeros((40, 40), np.float32), TRANSFORM, params=p)
    with pytest.raises(InvalidInputError, match="valid mask"):
        predict_windows(identity, _x((1, 1, 40, 40)), TRANSFORM, np.ones((4, 4), bool), p)
    with pytest.raises(InvalidInputError, match="must return"):
        predict_windows(lambda b: b[:, 0, 0], _x((1, 1, 40, 40)), TRANSFORM, params=p)
    with pytest.raises(InvalidInputError, match="expected 24x24"):
        predict_windows(lambda b: b[:, 0, :, :5, :5], _x((1, 1, 40, 40)), TRANSFORM, params=p)
    with pytest.raises(InvalidInputError, match="north-up"):
        lattice_origin(Affine(10, 0, 0, 0, 10, 0))
    with pytest.raises(InvalidInputError, match="lattice"):
        lattice_origin(Affine(10, 0, 5.0, 0, -10, 0))
    with pytest.raises(ConfigError, match="stride"):
        WindowParams(window=8, stride=9)
    with pytest.raises(ConfigError, match="autocast"):
        predict_windows(identity, _x((1, 1, 40, 40)), TRANSFORM, params=p, autocast="int8")


def test_non_finite_model_output_gets_no_weight():
    def model(b):
        out = b[:, 0].clone()
        out[:, :, 0, 0] = float("nan")  # every window's first input pixel (context corner)
        return out

    x = _x((1, 1, 40, 40))
    got = predict_windows(model, x, TRANSFORM, params=WindowParams(8, 4, 0))
    ok = got.weight > 0
    np.testing.assert_array_equal(got.values[:, ok], x[0][:, ok])


def test_merger_direct_use():
    m = WindowMerger(1, (4, 4), 2)
    preds = torch.ones((2, 1, 2, 2))
    m.add(
        np.array([[0, 0], [-1, 3]]),
        preds * torch.tensor([2.0, 4.0])[:, None, None, None],
        torch.ones((2, 2, 2)),
    )
    out = m.finalize()
    assert out.values[0, 0, 0] == 2 and out.values[0, 0, 3] == 4 and out.weight.sum() == 5
    assert np.isnan(out.values[0, 3, 0])


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", [None, "bf16"])
def test_cuda_matches_cpu(autocast):
    x = _x((2, 3, 80, 80))
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 2, 3, padding=1)

    def model(b):
        return conv.to(b.device)(b.reshape(b.shape[0], -1, *b.shape[-2:]))

    p = WindowParams(window=16, stride=8, context=4)
    cpu = predict_windows(model, x, TRANSFORM, params=p)
    gpu = predict_windows(model, x, TRANSFORM, params=p, device="cuda", autocast=autocast)
    tol = 1e-5 if autocast is None else 3e-2
    np.testing.assert_allclose(gpu.values, cpu.values, atol=tol)


def test_cpu_fast_path_equals_general_path():
    """float32 input takes the numpy gather/merge; bfloat16 input the general torch path. Same
    values in (bf16-representable), same windows, weights and model: bit-identical maps."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 3, 3, padding=1).double()

    def model(b):
        return conv(b.reshape(b.shape[0], -1, *b.shape[-2:]).double()).float()

    xb = torch.from_numpy(_x((3, 2, 50, 47), seed=5)).to(torch.bfloat16)
    xb[1, 0, 3:6, 4:9] = float("nan")
    valid = np.random.default_rng(2).random((50, 47)) > 0.1
    for pad in (True, False):
        p = WindowParams(window=12, stride=5, context=3, batch_size=4, pad_edges=pad)
        general = predict_windows(model, xb, TRANSFORM, valid=valid, params=p)
        fast = predict_windows(model, xb.float(), TRANSFORM, valid=valid, params=p)
        np.testing.assert_array_equal(fast.values, general.values)
        np.testing.assert_array_equal(fast.weight, general.weight)


def test_model_keeping_its_batches_sees_distinct_inputs_per_call():
    """The CPU path reuses one batch buffer; outputs are merged before the next batch is cut,
    so a model returning views of its input still blends correctly (identity test) and the
    merge never reads a later batch."""
    x = _x((1, 2, 40, 40), seed=8)
    outs = []

    def model(b):
        outs.append(b[:, 0])  # a view of the input batch
        return b[:, 0]

    got = predict_windows(model, x, TRANSFORM, params=WindowParams(8, 4, 0, batch_size=3))
    np.testing.assert_array_equal(got.values, x[0])
    assert len(outs) > 1


def test_float16_input_identity_is_exact_and_large_sums_stay_valid():
    """float16 input takes the numpy path; its per-pixel finiteness sum accumulates in float32,
    so finite values whose sum exceeds float16's range are not mistaken for nodata."""
    x = (_x((4, 3, 40, 40), seed=11) * 30000).astype(np.float16)  # sum over T*C > 65504
    got = predict_windows(identity, x, TRANSFORM, params=WindowParams(8, 4, 0))
    assert (got.weight > 0).all()
    np.testing.assert_array_equal(got.values, x[0].astype(np.float32))
