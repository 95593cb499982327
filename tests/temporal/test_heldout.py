"""Held-out evaluation: which observations are hidden, the baselines, the score, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from geoxai.errors import ConfigError, InvalidInputError, NoDataError
from geoxai.temporal.heldout import (
    METHODS,
    HeldoutParams,
    HeldoutScore,
    baseline_predictions,
    heldout_score,
    hide_clear,
    sample_pixels,
)
from geoxai.temporal.smoothing import SmoothingParams

SP = SmoothingParams(year=2021)


def test_every_third_clear_observation_inside_the_axis_is_hidden_staggered_by_pixel():
    days = np.arange(-30.0, 400.0, 10.0)
    w = np.ones((days.size, 3))
    w[5, 0] = 0.0  # cloudy: never hidden, and it does not count
    held = hide_clear(w, days, 360.0, HeldoutParams(every=3))
    inside = (days >= 0) & (days < 360)
    assert not held[~inside].any() and not held[5, 0]
    for q in range(3):
        clear = np.nonzero((w[:, q] > 0) & inside)[0]
        hidden = np.nonzero(held[:, q])[0]
        assert set(hidden) <= set(clear)
        assert abs(hidden.size - clear.size / 3) <= 1
    assert not np.array_equal(held[:, 1], held[:, 2])  # staggered


def test_baselines_on_a_known_series():
    days = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    v = np.array([1.0, 9.0, 3.0, np.nan, 7.0])[:, None, None]  # (T, 1, 1)
    w = np.array([1.0, 0.0, 1.0, 0.0, 1.0])[:, None]  # day 10 cloudy, day 30 missing
    p = baseline_predictions(v, w, days)
    lin = p["linear"][:, 0, 0]
    np.testing.assert_allclose(lin, [1.0, 2.0, 3.0, 5.0, 7.0])
    assert p["nearest_clear"][1, 0, 0] == 1.0  # tie between day 0 and 20: the earlier one
    assert p["nearest_raw"][2, 0, 0] == 9.0  # the cloudy neighbour, itself excluded
    assert p["nearest_raw"][4, 0, 0] == 3.0  # day 30 is missing: the next finite one
    w_end = np.array([0.0, 0.0, 1.0, 0.0, 1.0])[:, None]
    assert baseline_predictions(v, w_end, days)["linear"][0, 0, 0] == 3.0  # held at the end


def test_linear_truth_is_predicted_by_smoothing_and_linear_baseline_alike():
    rng = np.random.default_rng(0)
    days = np.sort(rng.uniform(-40, 400, 80))
    vals = (0.1 + 0.0005 * days)[:, None, None] * np.ones((1, 2, 30))
    w = (rng.random((80, 30)) > 0.3).astype(float)
    s = heldout_score(vals, w, days, SP, channels=("B04", "B08"))
    assert s.n_held > 200 and s.n_pixels == 30
    assert s.rmse("linear").max() < 1e-9
    assert s.rmse("smooth").max() < 1e-3  # a straight line is in every candidate's null space
    assert s.rmse("nearest_clear").min() > 1e-3
    d = s.to_dict()
    assert set(d["rmse"]) == set(METHODS) and d["n_held"] == s.n_held
    assert "| smooth |" in s.table()


def test_scores_add_and_reject_other_channels():
    a = HeldoutScore(("a", "b"), 1, 2, {m: np.ones(2) for m in METHODS})
    b = HeldoutScore(("a", "b"), 2, 6, {m: np.full(2, 3.0) for m in METHODS})
    c = a + b + HeldoutScore.empty(("a", "b"))
    assert (c.n_pixels, c.n_held) == (3, 8)
    np.testing.assert_allclose(c.rmse(), np.sqrt(4.0 / 8))
    with pytest.raises(InvalidInputError, match="cannot be added"):
        a + HeldoutScore.empty(("x", "y"))


def test_bad_input_is_typed():
    days = np.arange(0.0, 300.0, 10.0)
    v = np.ones((days.size, 1, 4))
    with pytest.raises(NoDataError, match="no clear observation"):
        heldout_score(v, np.zeros((days.size, 4)), days, SP)  # a series with no clear date
    with pytest.raises(InvalidInputError, match="weights"):
        heldout_score(v, np.ones((days.size, 3)), days, SP)
    with pytest.raises(InvalidInputError, match="obs_days"):
        heldout_score(v, np.ones((days.size, 4)), days[:-1], SP)
    with pytest.raises(ConfigError, match="every"):
        HeldoutParams(every=1)
    # one clear observation per pixel: nothing the smoother can score, so nothing is scored
    w = np.zeros((days.size, 4))
    w[3] = 1.0
    w[:, 3] = 1.0  # one well-observed pixel
    s = heldout_score(v, w, days, SP)
    assert s.n_pixels == 1 and np.isfinite(s.rmse()).all()


def test_sample_lattice_is_fixed_in_zone_coordinates():
    hp = HeldoutParams(sample_step=4)
    a = sample_pixels((8, 10), (100, 200), hp)  # rows 100..107, cols 200..209
    b = sample_pixels((8, 10), (100, 202), hp)  # the same rows, shifted two columns east
    ra, ca = a // 10 + 100, a % 10 + 200
    rb, cb = b // 10 + 100, b % 10 + 202
    both = {(r, c) for r, c in zip(ra, ca, strict=True) if 202 <= c < 210}
    assert both == {(r, c) for r, c in zip(rb, cb, strict=True) if c < 210}
    assert (ra % 4 == 0).all() and (ca % 4 == 0).all()
