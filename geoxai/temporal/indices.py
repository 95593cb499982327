"""Vegetation indices as in WRI's tropical tree cover pipeline, and [-1, 1] normalization.

Indices take a mapping band name -> reflectance array (any shape, unitless reflectance ~0..1)
and return an array of the same shape:

* NDVI   = (B08 - B04) / (B08 + B04), clipped to [-1, 1]
* EVI    = 2.5 (B08 - B04) / (B08 + 6 B04 - 7.5 B02 + 1), clipped to [-1.5, 1.5]
* BI     = ((B11 + B04) - (B08 + B02)) / ((B11 + B04) + (B08 + B02)), clipped to [-1, 1]
* MSAVI2 = (2 B08 + 1 - sqrt((2 B08 + 1)^2 - 8 (B08 - B04))) / 2, B04/B08 clipped to [0, 1],
  the root's argument floored at 0, result clipped to [-1, 1]
* GRNDVI = (B08 - (B03 + B04)) / (B08 + (B03 + B04) + 1e-5), bands clipped to [0, 1]

Zero denominators give 0, never NaN/inf.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from geoxai.errors import ConfigError, InvalidInputError, look_up_option

__all__ = [
    "INDICES",
    "INDEX_BANDS",
    "IndexParams",
    "FeatureRanges",
    "compute_index",
    "compute_indices",
    "normalize",
]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(np.isfinite(out), out, 0.0).astype(num.dtype, copy=False)


def ndvi(b: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalized difference vegetation index, clipped to [-1, 1] (negative reflectance)."""
    return np.clip(_ratio(b["B08"] - b["B04"], b["B08"] + b["B04"]), -1.0, 1.0)


def evi(b: Mapping[str, np.ndarray]) -> np.ndarray:
    """Enhanced vegetation index, clipped to [-1.5, 1.5] (the reference)."""
    nir, red, blue = b["B08"], b["B04"], b["B02"]
    return np.clip(2.5 * _ratio(nir - red, nir + 6 * red - 7.5 * blue + 1), -1.5, 1.5)


def bi(b: Mapping[str, np.ndarray]) -> np.ndarray:
    """Bare soil index, clipped to [-1, 1]."""
    s, v = b["B11"] + b["B04"], b["B08"] + b["B02"]
    return np.clip(_ratio(s - v, s + v), -1.0, 1.0)


def msavi2(b: Mapping[str, np.ndarray]) -> np.ndarray:
    """Modified soil-adjusted vegetation index 2 (red/NIR clipped to [0, 1])."""
    red = np.clip(b["B04"], 0, 1)
    nir = np.clip(b["B08"], 0, 1)
    root = np.maximum((2 * nir + 1) ** 2 - 8 * (nir - red), 0.0)
    return np.clip((2 * nir + 1 - np.sqrt(root)) / 2, -1.0, 1.0)


def grndvi(b: Mapping[str, np.ndarray]) -> np.ndarray:
    """Green-red normalized difference vegetation index (bands clipped to [0, 1])."""
    nir = np.clip(b["B08"], 0, 1)
    gr = np.clip(b["B03"], 0, 1) + np.clip(b["B04"], 0, 1)
    return _ratio(nir - gr, nir + gr + 1e-5)


INDICES: dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = {
    "NDVI": ndvi,
    "EVI": evi,
    "BI": bi,
    "MSAVI2": msavi2,
    "GRNDVI": grndvi,
}
"""Index name -> function of a band mapping."""


INDEX_BANDS: dict[str, tuple[str, ...]] = {
    "NDVI": ("B04", "B08"),
    "EVI": ("B02", "B04", "B08"),
    "BI": ("B02", "B04", "B08", "B11"),
    "MSAVI2": ("B04", "B08"),
    "GRNDVI": ("B03", "B04", "B08"),
}
"""The bands each index reads."""


@dataclass(frozen=True)
class IndexParams:
    """Which indices follow the bands in the feature stack.

    Attributes:
        indices: index names, in output order (from :data:`INDICES`).
    """

    indices: tuple[str, ...] = ("NDVI", "EVI", "BI", "MSAVI2", "GRNDVI")

    def __post_init__(self) -> None:
        for name in self.indices:
            look_up_option(name, list(INDICES), what="vegetation index")
        if len(set(self.indices)) != len(self.indices):
            raise ConfigError(f"IndexParams.indices {self.indices} repeats a name.")


def compute_index(name: str, bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """One index from a band mapping; typed error naming a missing band."""
    look_up_option(name, list(INDICES), what="vegetation index", error=InvalidInputError)
    missing = [b for b in INDEX_BANDS[name] if b not in bands]
    if missing:
        raise InvalidInputError(
            f"Index {name} needs bands {list(INDEX_BANDS[name])}; missing {missing}. "
            "Add them to the cube or drop the index from IndexParams.indices."
        )
    return INDICES[name](bands)


def compute_indices(
    refl: np.ndarray,
    band_names: tuple[str, ...],
    params: IndexParams,
    axis: int = 1,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Stack the configured indices along ``axis``.

    Args:
        refl: reflectance with the band axis at ``axis`` (e.g. ``(T, C, N)``).
        band_names: the ``C`` band names along ``axis``.
        params: which indices.
        axis: the band axis.
        out: where to write them (``refl``'s shape with ``len(params.indices)`` entries along
            ``axis``, ``refl``'s dtype), e.g. a buffer reused across row blocks; default new.

    Returns:
        indices stacked along ``axis`` (``len(params.indices)`` entries), dtype of ``refl``.
    """
    pick: list[int | slice] = [slice(None)] * refl.ndim
    bmap = {}
    for i, n in enumerate(band_names):  # views, no copies
        pick[axis] = i
        bmap[n] = refl[tuple(pick)]
    shape = list(refl.shape)
    shape[axis] = len(params.indices)
    if out is None:
        out = np.empty(shape, dtype=refl.dtype)
    elif list(out.shape) != shape or out.dtype != refl.dtype:
        raise InvalidInputError(
            f"compute_indices: out is {out.dtype} {out.shape}; give {refl.dtype} {tuple(shape)}."
        )
    for k, name in enumerate(params.indices):
        pick[axis] = k
        out[tuple(pick)] = compute_index(name, bmap)
    return out


@dataclass(frozen=True)
class FeatureRanges:
    """Per-feature min/max mapped linearly to [-1, 1] (values outside are clipped).

    The model bundle carries these; ``x' = clip(2 (x - min) / (max - min) - 1, -1, 1)``.

    Attributes:
        features: feature names (bands and indices) the ranges apply to.
        mins: minimum per feature, same order as ``features``.
        maxs: maximum per feature, same order, each > its min.
    """

    features: tuple[str, ...]
    mins: tuple[float, ...]
    maxs: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.features) == len(self.mins) == len(self.maxs)):
            raise ConfigError(
                f"FeatureRanges has {len(self.features)} features, {len(self.mins)} mins "
                f"and {len(self.maxs)} maxs; give one min and one max per feature."
            )
        for f, lo, hi in zip(self.features, self.mins, self.maxs, strict=True):
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ConfigError(
                    f"FeatureRanges for {f!r}: min={lo}, max={hi}; need finite min < max."
                )

    @classmethod
    def from_dict(cls, ranges: Mapping[str, tuple[float, float]]) -> FeatureRanges:
        """Build from ``{"B02": (min, max), ...}``."""
        names = tuple(ranges)
        return cls(
            features=names,
            mins=tuple(float(ranges[n][0]) for n in names),
            maxs=tuple(float(ranges[n][1]) for n in names),
        )


def normalize(
    x: np.ndarray, feature_names: tuple[str, ...], params: FeatureRanges, axis: int = 1
) -> np.ndarray:
    """Map every feature along ``axis`` to [-1, 1] with its configured range.

    Every feature in ``feature_names`` must have a range; a feature with a range that is
    not present is an error too (mismatched feature sets are a configuration bug).
    """
    have, want = set(params.features), set(feature_names)
    if have != want:
        raise InvalidInputError(
            f"Normalization ranges cover {sorted(have)} but the features are {sorted(want)}; "
            f"missing ranges for {sorted(want - have)}, unexpected {sorted(have - want)}."
        )
    shape = [1] * x.ndim
    shape[axis] = len(feature_names)
    lo = np.array([params.mins[params.features.index(f)] for f in feature_names]).reshape(shape)
    hi = np.array([params.maxs[params.features.index(f)] for f in feature_names]).reshape(shape)
    out = 2.0 * (x - lo) / (hi - lo) - 1.0
    return np.clip(out, -1.0, 1.0).astype(x.dtype, copy=False)
