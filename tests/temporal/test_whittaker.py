"""Weighted Whittaker: batched banded solve == dense solve; numba == numpy == torch; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.temporal.whittaker import (
    HAVE_NUMBA,
    difference_penalty_bands,
    whittaker,
    whittaker_torch,
)

ENGINES = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="no numba")),
]
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")


def dense_solve(y: np.ndarray, w: np.ndarray, lam: float, order: int) -> np.ndarray:
    """Reference: (W + lam D'D) z = W y with a dense solver, one pixel. y: (n, B), w: (n,)."""
    n = w.size
    d = np.diff(np.eye(n), n=order, axis=0)
    a = np.diag(w) + lam * d.T @ d
    return np.linalg.solve(a, w[:, None] * y)


def random_case(seed: int, n: int = 60, nb: int = 3, npx: int = 80):
    """Random weights with all-zero stretches, all-zero pixels and one-point pixels."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0.3, 0.1, size=(n, nb, npx))
    w = rng.uniform(0.0, 2.0, size=(n, npx)) * (rng.random((n, npx)) > 0.3)
    w[10:30, :20] = 0.0  # long gaps inside the series
    w[:15, 20:30] = 0.0  # gaps at the start
    w[-15:, 30:40] = 0.0  # gaps at the end
    w[:, 40:43] = 0.0  # all-zero pixels -> nodata
    w[:, 43] = 0.0
    w[7, 43] = 1.0  # a single point: singular for d=2 -> nodata
    y[np.broadcast_to((w == 0)[:, None, :], y.shape)] = np.nan  # must not matter
    return y, w


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("lam", [1.0, 100.0, 2700.0])
def test_banded_equals_dense_solve(order, lam, engine):
    y, w = random_case(order * 7 + int(lam))
    res = whittaker(y, w, lam, order, chunk=32, engine=engine)  # several chunks / blocks
    npos = (w > 0).sum(axis=0)
    assert np.array_equal(res.valid, npos >= order)
    for j in np.nonzero(res.valid)[0]:
        ref = dense_solve(np.nan_to_num(y[:, :, j]), w[:, j], lam, order)
        np.testing.assert_allclose(res.z[:, :, j], ref, rtol=0, atol=1e-6 * max(1, abs(ref).max()))
    assert np.isnan(res.z[:, :, ~res.valid]).all()
    assert not res.valid[40:43].any()
    assert res.valid[43] == (order == 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_two_d_input_and_min_points(engine):
    y, w = random_case(1, nb=1)
    res2 = whittaker(y[:, 0, :], w, 100.0, engine=engine)
    res3 = whittaker(y, w, 100.0, engine=engine)
    np.testing.assert_array_equal(res2.z, res3.z[:, 0, :])
    strict = whittaker(y, w, 100.0, min_points=10, engine=engine)
    assert np.array_equal(strict.valid, (w > 0).sum(axis=0) >= 10)


@needs_numba
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("n", [31, 91])
def test_numba_engine_is_bit_identical_to_numpy(order, n):
    """Same operations in the same order (no fastmath, no FMA): equal to the last bit, across
    block edges (npx not a multiple of the block), with float32 and strided inputs."""
    y, w = random_case(n + order, n=n, nb=4, npx=1111)
    w[:, 1000:1005] = 0.0  # nodata pixels inside a block
    ref = whittaker(y, w, 370.0, order, engine="numpy", chunk=100)
    got = whittaker(y, w, 370.0, order, engine="numba")
    assert np.array_equal(got.valid, ref.valid)
    np.testing.assert_array_equal(got.z, ref.z)  # NaN == NaN here
    y32 = y.astype(np.float32)
    ref32 = whittaker(y32[:, 1:3, 7:], w[:, 7:], 370.0, order, engine="numpy")
    got32 = whittaker(y32[:, 1:3, 7:], w[:, 7:], 370.0, order, engine="numba", threads=1)
    np.testing.assert_array_equal(got32.z, ref32.z)
    assert np.array_equal(got32.valid, ref32.valid)


def test_numba_engine_threads_and_int_values_agree():
    if not HAVE_NUMBA:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(9)
    y = rng.integers(0, 10_000, size=(30, 2, 700))  # DN-like integers are cast to float64
    w = (rng.random((30, 700)) > 0.5).astype(np.float64)
    ref = whittaker(y, w, 50.0, engine="numpy")
    for threads in (1, 2, 64):
        got = whittaker(y, w, 50.0, engine="numba", threads=threads)
        np.testing.assert_array_equal(got.z, ref.z)


@given(
    a=st.floats(-1, 1),
    b=st.floats(-0.05, 0.05),
    lam=st.floats(0.1, 1e5),
    seed=st.integers(0, 2**16),
)
def test_linear_series_come_back_exactly(a, b, lam, seed):
    """d=2 penalises curvature only: a straight line is reproduced for any weights."""
    rng = np.random.default_rng(seed)
    n = 30
    t = np.arange(n, dtype=float)
    y = (a + b * t)[:, None]
    w = rng.uniform(0, 1, size=(n, 1)) * (rng.random((n, 1)) > 0.5)
    w[[3, 20], 0] = 1.0
    res = whittaker(y, w, lam, 2)
    np.testing.assert_allclose(res.z[:, 0], a + b * t, atol=1e-7)


def test_gap_is_bridged_smoothly():
    """Zero weights across a gap: the curve stays between the values around it (d=2)."""
    n = 50
    y = np.zeros((n, 1))
    y[25:] = 1.0
    w = np.ones((n, 1))
    w[20:30] = 0.0
    z = whittaker(y, w, 10.0).z[:, 0]
    assert np.all(np.diff(z[18:32]) > 0)
    assert -0.2 < z.min() and z.max() < 1.2


def test_torch_cpu_float64_matches_numpy():
    y, w = random_case(3)
    ref = whittaker(y, w, 2700.0)
    got = whittaker_torch(torch.tensor(y), torch.tensor(w), 2700.0, chunk=50)
    assert np.array_equal(got.valid.numpy(), ref.valid)
    v = ref.valid
    np.testing.assert_allclose(got.z.numpy()[:, :, v], ref.z[:, :, v], rtol=0, atol=1e-10)


def test_torch_float32_tolerance():
    """float32 loses ~3 digits inside long gaps (condition ~ lambda); float64 is the default."""
    y, w = random_case(4)
    ref = whittaker(y, w, 100.0)
    got = whittaker_torch(torch.tensor(y, dtype=torch.float32), torch.tensor(w).float(), 100.0)
    v = ref.valid
    np.testing.assert_allclose(got.z.numpy()[:, :, v], ref.z[:, :, v], rtol=0, atol=2e-3)


@pytest.mark.gpu
def test_torch_cuda_matches_numpy():
    y, w = random_case(5, npx=5000)
    ref = whittaker(y, w, 2700.0)
    got = whittaker_torch(torch.tensor(y, device="cuda"), torch.tensor(w, device="cuda"), 2700.0)
    v = ref.valid
    assert np.array_equal(got.valid.cpu().numpy(), v)
    np.testing.assert_allclose(got.z.cpu().numpy()[:, :, v], ref.z[:, :, v], rtol=0, atol=1e-9)


def test_penalty_bands_match_dense():
    for order in (1, 2, 3):
        n = 9
        d = np.diff(np.eye(n), n=order, axis=0)
        p = d.T @ d
        bands = difference_penalty_bands(n, order)
        for k in range(order + 1):
            np.testing.assert_array_equal(bands[k, k:], np.diagonal(p, -k))


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_lambda_is_a_config_error(lam):
    with pytest.raises(ConfigError, match="lambda"):
        whittaker(np.zeros((10, 2)), np.ones((10, 2)), lam)
    with pytest.raises(ConfigError, match="lambda"):
        whittaker_torch(torch.zeros(10, 2), torch.ones(10, 2), lam)


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_under_positive_weight_is_an_error(engine):
    y = np.zeros((10, 3, 2))
    y[3, 2, 1] = np.inf
    with pytest.raises(InvalidInputError, match="NaN/inf where the weight is positive"):
        whittaker(y, np.ones((10, 2)), 10.0, engine=engine)
    w = np.ones((10, 2))
    w[3, 1] = 0.0
    assert whittaker(y, w, 10.0, engine=engine).valid.all()  # under zero weight: ignored


def test_bad_inputs_are_typed_errors():
    with pytest.raises(InvalidInputError, match="weights must be finite"):
        whittaker(np.zeros((10, 2)), -np.ones((10, 2)), 10.0)
    y = np.zeros((10, 2))
    y[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN/inf where the weight is positive"):
        whittaker(y, np.ones((10, 2)), 10.0)
    with pytest.raises(ConfigError, match="engine"):
        whittaker(np.zeros((10, 2)), np.ones((10, 2)), 10.0, engine="rust")
    with pytest.raises(InvalidInputError, match="disagree"):
        whittaker(np.zeros((10, 3)), np.ones((9, 3)), 10.0)
    with pytest.raises(InvalidInputError, match="too short"):
        whittaker(np.zeros((2, 3)), np.ones((2, 3)), 10.0)
    with pytest.raises(ConfigError, match="order"):
        whittaker(np.zeros((10, 3)), np.ones((10, 3)), 10.0, order=0)


@needs_numba
def test_numba_engine_concurrent_calls_from_threads():
    """Several Python threads smoothing at once (e.g. a threaded caller): same results."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [random_case(20 + i, nb=2, npx=600) for i in range(4)]
    want = [whittaker(y, w, 100.0, engine="numpy").z for y, w in cases]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: whittaker(c[0], c[1], 100.0, engine="numba").z, cases))
    for g, ref in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, ref)
