"""Good-practice accuracy and area estimation from a (stratified) random reference sample.

Pure estimators: arrays in, value objects out. They follow Olofsson et al. (2014, Remote Sensing
of Environment 148:42-57, "Good practices for estimating area and assessing accuracy of land
change") written in the general form of Stehman (2014, Int. J. Remote Sens. 35:4923-4939), so
the strata need not be the map classes (e.g. map class x change flag) and a simple random sample
is the special case of one stratum:

* every population quantity is the stratified mean ``sum_h W_h * mean_h(y)`` of a per-point
  indicator or value ``y`` (``W_h = N_h / N``, ``N_h`` pixels in stratum ``h``), with variance
  ``sum_h W_h^2 s_yh^2 / n_h`` (no finite-population correction, as in the paper);
* ratios (user's and producer's accuracy, accuracy inside a quality class) are
  ``R = Y / X`` of two stratified means with the linearised variance
  ``sum_h W_h^2 (s_yh^2 + R^2 s_xh^2 - 2 R s_xyh) / n_h / X^2``.

When the strata are the map classes these are exactly Olofsson's equations (error matrix of
area proportions ``p_ij = W_i n_ij / n_i.``, eqs. 4-7 for the accuracies, eqs. 9-11 for areas).
Confidence intervals are ``estimate +- 1.96 SE``.

A stratum with pixels but no sample point leaves the estimators undefined (raise
:class:`SampleDesignError`); one with a single point has an undefined variance (the estimate is
kept, its SE is NaN and a warning says which stratum needs more points).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoxai.errors import InvalidInputError

__all__ = [
    "Z95",
    "SampleDesignError",
    "Estimate",
    "StratifiedDesign",
    "ClassAccuracy",
    "CategoricalAccuracy",
    "ContinuousAccuracy",
    "assess_categorical",
    "assess_continuous",
]

Z95 = 1.959963984540054
"""Two-sided 95 % normal quantile (the paper rounds it to 1.96)."""


class SampleDesignError(InvalidInputError):
    """The reference sample cannot support the estimate (a stratum without points, bad labels)."""


@dataclass(frozen=True)
class Estimate:
    """A design-based estimate with its standard error (NaN = undefined, see ``note``)."""

    value: float
    se: float
    note: str = ""

    @property
    def ci95(self) -> tuple[float, float]:
        """``value -+ 1.96 SE``."""
        return (self.value - Z95 * self.se, self.value + Z95 * self.se)

    def scaled(self, k: float) -> Estimate:
        """The estimate of ``k`` times the quantity (areas from proportions)."""
        return Estimate(self.value * k, self.se * abs(k), self.note)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN -> None)."""
        lo, hi = self.ci95
        d: dict[str, Any] = {"value": _num(self.value), "se": _num(self.se)}
        d["ci95"] = [_num(lo), _num(hi)]
        if self.note:
            d["note"] = self.note
        return d


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class StratifiedDesign:
    """The strata of a sample: which stratum each point is in and how big each stratum is.

    Attributes:
        strata: ``(n,)`` stratum label of every sample point.
        sizes: stratum label -> ``N_h``, pixels of the stratum in the mapped population.
    """

    strata: np.ndarray
    sizes: Mapping[Any, int]
    _index: dict[Any, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        s = np.asarray(self.strata)
        object.__setattr__(self, "strata", s)
        if s.ndim != 1 or s.size == 0:
            raise SampleDesignError(f"The sample needs >= 1 point, got strata of shape {s.shape}.")
        bad = sorted({str(v) for v in np.unique(s)} - {str(k) for k in self.sizes})
        if bad:
            raise SampleDesignError(
                f"Sample points are in strata {bad} that have no pixel count; give the size "
                f"(pixels) of every stratum (known strata: {sorted(map(str, self.sizes))})."
            )
        sizes = {k: int(v) for k, v in self.sizes.items() if int(v) > 0}
        if any(int(v) < 0 for v in self.sizes.values()):
            raise SampleDesignError(f"Stratum sizes must be >= 0 pixels, got {dict(self.sizes)}.")
        object.__setattr__(self, "sizes", sizes)
        index = {h: np.flatnonzero(s.astype(str) == str(h)) for h in sizes}
        empty = [h for h, ix in index.items() if ix.size == 0]
        if empty:
            raise SampleDesignError(
                "Stratum "
                + ", ".join(f"{h!r} ({sizes[h]} px)" for h in empty)
                + " has no sample point: the estimates and their variance are undefined without "
                "it. Add (label) at least 2 points in each such stratum (good practice: >= 50 in "
                "rare classes), e.g. `geoxai assess sample ... --min-per-stratum 50`."
            )
        self._index.update(index)

    @property
    def n(self) -> int:
        """Number of sample points."""
        return int(self.strata.size)

    @property
    def total(self) -> int:
        """``N``, pixels of the population."""
        return int(sum(self.sizes.values()))

    def weights(self) -> dict[Any, float]:
        """``W_h = N_h / N``."""
        n = self.total
        return {h: v / n for h, v in self.sizes.items()}

    def thin_strata(self) -> list[str]:
        """Warnings for strata with one point (variance undefined)."""
        return [
            f"stratum {h!r} ({self.sizes[h]} px) has 1 sample point: standard errors are "
            "undefined (NaN); label at least one more point in it."
            for h, ix in self._index.items()
            if ix.size == 1
        ]

    def mean(self, y: np.ndarray) -> Estimate:
        """Stratified estimate of the population mean of ``y`` (``(n,)``) and its SE."""
        y = np.asarray(y, dtype=np.float64)
        w = self.weights()
        est, var = 0.0, 0.0
        for h, ix in self._index.items():
            yh = y[ix]
            est += w[h] * yh.mean()
            var += w[h] ** 2 * (yh.var(ddof=1) / ix.size if ix.size > 1 else math.nan)
        return Estimate(float(est), math.sqrt(var) if math.isfinite(var) else math.nan)

    def ratio(self, y: np.ndarray, x: np.ndarray) -> Estimate:
        """Stratified combined ratio ``sum(y) / sum(x)`` over the population, with its SE."""
        y = np.asarray(y, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        w = self.weights()
        ys = sum(w[h] * y[ix].mean() for h, ix in self._index.items())
        xs = sum(w[h] * x[ix].mean() for h, ix in self._index.items())
        if xs <= 0:
            return Estimate(math.nan, math.nan, "no sample point in the denominator")
        r = ys / xs
        var = 0.0
        for h, ix in self._index.items():
            if ix.size < 2:
                var = math.nan
                break
            yh, xh = y[ix], x[ix]
            cov = np.cov(yh, xh, ddof=1)
            var += w[h] ** 2 * (cov[0, 0] + r * r * cov[1, 1] - 2 * r * cov[0, 1]) / ix.size
        var /= xs * xs
        return Estimate(float(r), math.sqrt(max(var, 0.0)) if math.isfinite(var) else math.nan)


# ---- categorical maps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassAccuracy:
    """Accuracy and area of one class.

    Attributes:
        code: class code (as in the map).
        name: class name.
        users: user's accuracy (1 - commission error), fraction.
        producers: producer's accuracy (1 - omission error), fraction.
        area_fraction: estimated share of the population in this class (reference), fraction.
        area_ha: estimated area, hectares (``area_fraction * total``).
        mapped_ha: area mapped as this class (pixel count x pixel area), hectares; the naive,
            biased estimate (NaN when not given, e.g. for a domain).
        n_mapped: sample points mapped as this class.
        n_reference: sample points labelled as this class.
    """

    code: int
    name: str
    users: Estimate
    producers: Estimate
    area_fraction: Estimate
    area_ha: Estimate
    mapped_ha: float
    n_mapped: int
    n_reference: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "code": self.code,
            "name": self.name,
            "users_accuracy": self.users.to_dict(),
            "producers_accuracy": self.producers.to_dict(),
            "area_fraction": self.area_fraction.to_dict(),
            "area_ha": self.area_ha.to_dict(),
            "mapped_ha": _num(self.mapped_ha),
            "n_mapped": self.n_mapped,
            "n_reference": self.n_reference,
        }


@dataclass(frozen=True)
class CategoricalAccuracy:
    """The good-practice summary of a categorical map against a reference sample.

    Attributes:
        classes: class names, in the order of the error matrix rows/columns.
        error_matrix: ``(K, K)`` estimated area proportions, rows = map, columns = reference.
        error_matrix_se: ``(K, K)`` their standard errors.
        overall: overall accuracy, fraction.
        per_class: one :class:`ClassAccuracy` per class.
        total_ha: area of the population, hectares.
        n: sample points used.
        n_strata: number of strata.
        warnings: what makes an estimate undefined or weak (shown in JSON and the report).
        domain: the sub-population these numbers are for ("all", or e.g. "quality=good").
    """

    classes: tuple[str, ...]
    error_matrix: np.ndarray
    error_matrix_se: np.ndarray
    overall: Estimate
    per_class: tuple[ClassAccuracy, ...]
    total_ha: float
    n: int
    n_strata: int
    warnings: tuple[str, ...] = ()
    domain: str = "all"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN -> None)."""
        return {
            "domain": self.domain,
            "classes": list(self.classes),
            "error_matrix": [[_num(v) for v in row] for row in self.error_matrix],
            "error_matrix_se": [[_num(v) for v in row] for row in self.error_matrix_se],
            "overall_accuracy": self.overall.to_dict(),
            "per_class": [c.to_dict() for c in self.per_class],
            "total_ha": self.total_ha,
            "n": self.n,
            "n_strata": self.n_strata,
            "warnings": list(self.warnings),
        }


def _labels(values: np.ndarray, codes: Sequence[int], what: str) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1:
        raise SampleDesignError(f"{what} labels must be 1-D, got shape {v.shape}.")
    bad = np.setdiff1d(np.unique(v), np.asarray(codes))
    if bad.size:
        raise SampleDesignError(
            f"{what} labels {bad.tolist()} are not among the map's classes {list(codes)}; "
            "relabel those points with a map class (or fix the --strata thresholds/classes)."
        )
    return v.astype(np.int64)


def assess_categorical(
    design: StratifiedDesign,
    map_class: np.ndarray,
    ref_class: np.ndarray,
    classes: Mapping[int, str],
    *,
    pixel_area_m2: float,
    mapped_px: Mapping[int, int] | None = None,
    domain: np.ndarray | None = None,
    domain_name: str = "all",
) -> CategoricalAccuracy:
    """Error matrix, overall/user's/producer's accuracy and class areas with SEs.

    Args:
        design: the strata of the points and their sizes (pixels).
        map_class: ``(n,)`` map class code at each point.
        ref_class: ``(n,)`` reference class code of each point.
        classes: class code -> name (the rows/columns of the error matrix, in this order).
        pixel_area_m2: area of one pixel, square metres (100 for 10 m pixels).
        mapped_px: class code -> pixels mapped as the class (for the naive mapped area);
            default the stratum sizes when the strata are the class codes; classes missing
            from it get a NaN mapped area.
        domain: optional ``(n,)`` bool: estimate for the sub-population where it is True
            (e.g. quality class "good"); areas are then those of the domain.
        domain_name: label of the domain in the output.

    Raises:
        SampleDesignError: a label is not a class code, or a stratum has no point.
    """
    codes = list(classes)
    m = _labels(map_class, codes, "Map")
    r = _labels(ref_class, codes, "Reference")
    if m.size != design.n or r.size != design.n:
        raise SampleDesignError(
            f"{design.n} points in the design, {m.size} map labels, {r.size} reference labels."
        )
    d = np.ones(design.n) if domain is None else np.asarray(domain, dtype=np.float64)
    warnings = list(design.thin_strata())
    k = len(codes)
    em = np.zeros((k, k))
    em_se = np.zeros((k, k))
    total_px = design.total
    dom = design.mean(d)  # share of the population in the domain
    for i, ci in enumerate(codes):
        for j, cj in enumerate(codes):
            e = design.mean(d * (m == ci) * (r == cj))
            em[i, j], em_se[i, j] = e.value, e.se
    agree = d * (m == r)
    overall = design.ratio(agree, d) if domain is not None else design.mean(agree)
    if mapped_px is None:
        mapped_px = {c: int(design.sizes.get(c, design.sizes.get(str(c), 0))) for c in codes}
    per_class = []
    ha = pixel_area_m2 / 10_000.0
    for c in codes:
        hit = d * (m == c) * (r == c)
        users = design.ratio(hit, d * (m == c))
        producers = design.ratio(hit, d * (r == c))
        frac = design.mean(d * (r == c))
        for what, e in (("user's", users), ("producer's", producers)):
            if not math.isfinite(e.value):
                warnings.append(
                    f"{what} accuracy of class {classes[c]!r} is undefined ({e.note}) in domain "
                    f"{domain_name!r}."
                )
        per_class.append(
            ClassAccuracy(
                code=int(c),
                name=str(classes[c]),
                users=users,
                producers=producers,
                area_fraction=frac,
                area_ha=frac.scaled(total_px * ha),
                mapped_ha=float(mapped_px[c]) * ha if c in mapped_px else math.nan,
                n_mapped=int(((m == c) & (d > 0)).sum()),
                n_reference=int(((r == c) & (d > 0)).sum()),
            )
        )
    if domain is not None and int((d > 0).sum()) == 0:
        warnings.append(f"no sample point in domain {domain_name!r}: nothing to estimate.")
    return CategoricalAccuracy(
        classes=tuple(str(classes[c]) for c in codes),
        error_matrix=em,
        error_matrix_se=em_se,
        overall=overall,
        per_class=tuple(per_class),
        total_ha=float(dom.value * total_px * ha),
        n=int((d > 0).sum()),
        n_strata=len(design.sizes),
        warnings=tuple(warnings),
        domain=domain_name,
    )


# ---- continuous maps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuousAccuracy:
    """Errors of a continuous map (e.g. tree-cover fraction), ``error = map - reference``.

    Attributes:
        bias: mean error (units of the map).
        mae: mean absolute error.
        rmse: root mean square error (SE by the delta method, ``SE(MSE) / (2 RMSE)``).
        n: sample points used.
        domain: the sub-population ("all", "quality=good" ...).
        warnings: undefined variances and the like.
    """

    bias: Estimate
    mae: Estimate
    rmse: Estimate
    n: int
    domain: str = "all"
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "domain": self.domain,
            "bias": self.bias.to_dict(),
            "mae": self.mae.to_dict(),
            "rmse": self.rmse.to_dict(),
            "n": self.n,
            "warnings": list(self.warnings),
        }


def assess_continuous(
    design: StratifiedDesign,
    map_value: np.ndarray,
    ref_value: np.ndarray,
    *,
    domain: np.ndarray | None = None,
    domain_name: str = "all",
) -> ContinuousAccuracy:
    """Bias, MAE and RMSE of ``map_value - ref_value`` (``(n,)`` each) over the population.

    Raises:
        SampleDesignError: values are not finite, or shapes differ from the design.
    """
    mv = np.asarray(map_value, dtype=np.float64)
    rv = np.asarray(ref_value, dtype=np.float64)
    if mv.shape != (design.n,) or rv.shape != (design.n,):
        raise SampleDesignError(
            f"{design.n} points in the design, map values {mv.shape}, reference {rv.shape}."
        )
    if not (np.isfinite(mv).all() and np.isfinite(rv).all()):
        raise SampleDesignError(
            "Map and reference values must be finite at every point used; drop the points on "
            "nodata or give them a value."
        )
    e = mv - rv
    d = np.ones(design.n) if domain is None else np.asarray(domain, dtype=np.float64)

    def est(y: np.ndarray) -> Estimate:
        return design.ratio(d * y, d) if domain is not None else design.mean(y)

    mse = est(e * e)
    rmse_v = math.sqrt(max(mse.value, 0.0)) if math.isfinite(mse.value) else math.nan
    rmse_se = mse.se / (2 * rmse_v) if rmse_v > 0 else math.nan
    return ContinuousAccuracy(
        bias=est(e),
        mae=est(np.abs(e)),
        rmse=Estimate(rmse_v, rmse_se),
        n=int((d > 0).sum()),
        domain=domain_name,
        warnings=tuple(design.thin_strata()),
    )
