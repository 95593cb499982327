"""Vegetation indices (WRI formulas) and [-1, 1] normalization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.temporal.indices import (
    INDICES,
    FeatureRanges,
    IndexParams,
    compute_index,
    compute_indices,
    normalize,
)

VEG = {"B02": 0.03, "B03": 0.06, "B04": 0.04, "B08": 0.40, "B11": 0.20}


def _b(d):
    return {k: np.array([v], np.float64) for k, v in d.items()}


def test_known_values_for_vegetation():
    b = _b(VEG)
    assert compute_index("NDVI", b)[0] == pytest.approx(0.36 / 0.44)
    assert compute_index("EVI", b)[0] == pytest.approx(2.5 * 0.36 / (0.40 + 0.24 - 0.225 + 1))
    assert compute_index("BI", b)[0] == pytest.approx((0.24 - 0.43) / (0.24 + 0.43))
    msavi = (2 * 0.4 + 1 - np.sqrt((2 * 0.4 + 1) ** 2 - 8 * 0.36)) / 2
    assert compute_index("MSAVI2", b)[0] == pytest.approx(msavi)
    assert compute_index("GRNDVI", b)[0] == pytest.approx(0.30 / (0.50 + 1e-5))


def test_evi_is_clipped_and_zero_denominators_give_zero():
    b = _b({"B02": 0.5, "B03": 0.0, "B04": 0.0, "B08": 0.0, "B11": 0.0})
    for name in INDICES:
        v = compute_index(name, b)
        assert np.isfinite(v).all(), name
    b = _b({"B02": 0.29, "B04": 0.0, "B08": 1.2})  # denominator ~0 -> huge EVI, clipped
    assert compute_index("EVI", b)[0] == 1.5


@given(st.lists(st.floats(-0.2, 1.5), min_size=5, max_size=5))
def test_indices_stay_in_range_for_any_reflectance(vals):
    b = _b(dict(zip(("B02", "B03", "B04", "B08", "B11"), vals, strict=True)))
    for name in INDICES:
        v = compute_index(name, b)[0]
        lim = 1.5 if name == "EVI" else 1.0
        assert np.isfinite(v) and -lim <= v <= lim + 1e-12, (name, v)


def test_compute_indices_stacks_along_axis_and_names_missing_bands():
    refl = np.random.default_rng(0).uniform(0, 0.5, size=(4, 5, 7)).astype(np.float32)
    names = ("B02", "B03", "B04", "B08", "B11")
    out = compute_indices(refl, names, IndexParams(), axis=1)
    assert out.shape == (4, 5, 7) and out.dtype == np.float32
    np.testing.assert_allclose(
        out[:, 0], (refl[:, 3] - refl[:, 2]) / (refl[:, 3] + refl[:, 2]), rtol=1e-6
    )
    with pytest.raises(InvalidInputError, match="missing \\['B11'\\]"):
        compute_indices(refl[:, :4], names[:4], IndexParams(("BI",)), axis=1)
    with pytest.raises(ConfigError, match="Did you mean 'NDVI'"):
        IndexParams(("NDVJ",))


def test_normalization_maps_range_to_minus_one_one():
    p = FeatureRanges.from_dict({"B04": (0.0, 0.5), "NDVI": (-1.0, 1.0)})
    x = np.array([[0.0, -1.0], [0.25, 0.0], [0.5, 1.0], [2.0, -3.0]])
    out = normalize(x, ("B04", "NDVI"), p, axis=1)
    np.testing.assert_allclose(out, [[-1, -1], [0, 0], [1, 1], [1, -1]])
    with pytest.raises(InvalidInputError, match="missing ranges for \\['B08'\\]"):
        normalize(x, ("B04", "B08"), p, axis=1)
    with pytest.raises(ConfigError, match="min < max"):
        FeatureRanges(("B04",), (0.5,), (0.5,))
    with pytest.raises(ConfigError, match="one min and one max"):
        FeatureRanges(("B04", "B08"), (0.0,), (1.0,))
