"""Per-pixel (order, lambda) choice by leave-one-out CV: the criterion, the choice, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.temporal.lambda_select import (
    CANDIDATES,
    check_candidates,
    choose,
    lambda_cv,
    select_lambda,
    smooth_selected,
)
from geoxai.temporal.smoothing import SmoothingParams
from geoxai.temporal.whittaker import whittaker


def _dense_cv(y, w, order, lam):
    """Leave-one-out by refitting without each node in turn (no identity used)."""
    g = w.size
    d = np.diff(np.eye(g), order, axis=0)
    p = d.T @ d
    total = 0.0
    for i in np.nonzero(w > 0)[0]:
        wi = w.copy()
        wi[i] = 0.0
        z = np.linalg.solve(np.diag(wi) + lam * p, wi[:, None] * y)
        total += w[i] * ((y[i] - z[i]) ** 2).sum()
    return total


def test_criterion_equals_refitting_without_each_observation():
    rng = np.random.default_rng(0)
    g, c, n = 25, 2, 6
    w = (rng.random((g, n)) > 0.35) * rng.uniform(0.3, 1.0, (g, n))
    w[:2, 0] = 1.0
    w[2:, 0] = 0.0  # two nodes: too few for order 2 (inf), enough for order 1
    y = rng.normal(size=(g, c, n))
    cands = ((1, 0.001), (1, 0.1), (2, 3.0), (3, 1.0))  # (1, 0.001): near-interpolation
    cv = lambda_cv(y, w, cands, scale=3.0)
    for k, (o, lam) in enumerate(cands):
        for q in range(n):
            if (w[:, q] > 0).sum() <= o:
                assert cv[k, q] == np.inf
            else:
                ref = _dense_cv(y[:, :, q], w[:, q], o, lam * 3.0 ** (2 * o - 1))
                assert cv[k, q] == pytest.approx(ref, rel=1e-9)


def test_choice_prefers_the_smoother_candidate_on_ties_and_pools_neighbours():
    cv = np.array([[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]])  # (K=2, N=3)
    np.testing.assert_array_equal(choose(cv), [1, 1, 1])
    cv = np.array([[1.0, 3.0, np.inf], [2.0, 1.0, np.inf]])
    np.testing.assert_array_equal(choose(cv), [0, 1, 0])  # unscorable pixel -> 0
    # pooled: one odd pixel in a 3x3 block follows its neighbours
    field = np.ones((2, 5, 5))
    field[0] *= 2.0  # every pixel prefers candidate 1 ...
    field[0, 2, 2], field[1, 2, 2] = 1.0, 1.2  # ... except the centre, mildly
    assert choose(field)[2, 2] == 0 and choose(field, pool_px=1)[2, 2] == 1
    with pytest.raises(InvalidInputError, match="Y, X"):
        choose(field.reshape(2, -1), pool_px=1)


def test_noisy_flat_series_choose_strong_smoothing_wiggly_ones_weak():
    rng = np.random.default_rng(1)
    g, n = 91, 200
    t = np.arange(g) * 5.0
    w = (rng.random((g, n)) > 0.4).astype(float)
    flat = 0.3 + rng.normal(0, 0.03, (g, 1, n))  # noise around a constant
    wiggly = (
        0.3 + 0.2 * np.sin(2 * np.pi * t / 60.0)[:, None, None] + rng.normal(0, 0.003, (g, 1, n))
    )
    lams = [lam for _, lam in CANDIDATES]
    k_flat = select_lambda(flat, w, CANDIDATES, scale=3.0).index
    k_wig = select_lambda(wiggly, w, CANDIDATES, scale=3.0).index
    assert np.median([lams[k] for k in k_flat]) == max(lams)  # the strongest candidate
    assert np.median([lams[k] for k in k_wig]) <= 0.03


def test_pixels_with_few_nodes_take_the_near_interpolating_candidate():
    cv = np.array([[3.0, 3.0, np.inf], [1.0, 1.0, np.inf]])  # (K=2, N=3)
    np.testing.assert_array_equal(choose(cv), [1, 1, 0])
    np.testing.assert_array_equal(choose(cv, n_obs=np.array([5, 4, 9])), [1, 0, 0])
    assert CANDIDATES[0] == (1, 0.001)  # order 1, lambda -> 0: linear interpolation
    g, n = 30, 8
    w = np.zeros((g, n))
    w[1::7] = 1.0  # 5 nodes
    w[1, :4] = 0.0  # 4 nodes in the first 4 pixels
    y = np.broadcast_to(0.3 + 0.05 * (-1.0) ** np.arange(g)[:, None, None], (g, 1, n))
    k = select_lambda(y, w, CANDIDATES, scale=3.0).index  # alternating noise: smooth most
    assert (k[:4] == 0).all() and (k[4:] == len(CANDIDATES) - 1).all()


def test_smooth_selected_equals_fixed_smoothing_per_group():
    rng = np.random.default_rng(2)
    g, c, n = 40, 3, 30
    w = (rng.random((g, n)) > 0.3).astype(float)
    y = rng.normal(size=(g, c, n))
    index = rng.integers(0, len(CANDIDATES), n)
    z, valid = smooth_selected(y, w, CANDIDATES, index, scale=3.0)
    for k, (o, lam) in enumerate(CANDIDATES):
        sel = index == k
        if sel.any():
            ref = whittaker(y[:, :, sel], w[:, sel], lam * 3.0 ** (2 * o - 1), o)
            np.testing.assert_array_equal(z[:, :, sel], ref.z)
            np.testing.assert_array_equal(valid[sel], ref.valid)


def test_bad_candidates_and_inputs_are_typed_errors():
    with pytest.raises(ConfigError, match="order, lambda"):
        check_candidates(("a", "b"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lambda"):
        SmoothingParams(year=2021, lambda_candidates=((2, -1.0),))
    with pytest.raises(ConfigError, match="empty"):
        SmoothingParams(year=2021, lambda_candidates=())
    with pytest.raises(ConfigError, match="lambda_pool_px"):
        SmoothingParams(year=2021, lambda_pool_px=-1)
    y = np.zeros((10, 1, 3))
    with pytest.raises(InvalidInputError, match="weights"):
        lambda_cv(y, np.full((10, 3), np.nan), CANDIDATES)
    bad = y.copy()
    bad[0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        lambda_cv(bad, np.ones((10, 3)), CANDIDATES)
    # NaN under zero weight is fine; a pixel without weights is not scorable, not an error
    cv = lambda_cv(bad, np.vstack([np.zeros((1, 3)), np.ones((9, 3))]), CANDIDATES)
    assert np.isfinite(cv).all()
    assert (lambda_cv(y, np.zeros((10, 3)), CANDIDATES) == np.inf).all()
