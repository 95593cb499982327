"""Fusion of optical features with Sentinel-1 and terrain layers into the features a bundle reads,
by name.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from geoxai.errors import InvalidInputError, look_up_option
from geoxai.geo.bands import S2_BANDS
from geoxai.temporal.indices import (
    FeatureRanges,
    normalize,
)
from geoxai.temporal.s1 import db_to_unit

__all__ = [
    "fused_feature_names",
    "fuse",
]


def fused_feature_names(
    optical: tuple[str, ...] | list[str], *, s1: bool = True, slope: bool = True
) -> tuple[str, ...]:
    """Default order of fused features: S2 bands, ``slope``, ``VV``, ``VH``, then the indices."""
    opt = [str(b) for b in optical]
    bands = [b for b in opt if b in S2_BANDS]
    rest = [b for b in opt if b not in S2_BANDS]
    return (*bands, *(["slope"] if slope else []), *(["VV", "VH"] if s1 else []), *rest)


def fuse(
    features: xr.Dataset,
    s1: xr.Dataset | None = None,
    terrain: xr.Dataset | None = None,
    *,
    order: tuple[str, ...] | list[str] | None = None,
    s1_scale: str = "db",
    db_floor: float = -22.0,
    normalization: FeatureRanges | None = None,
) -> xr.Dataset:
    """Append Sentinel-1 steps and static terrain to the model-ready optical cube, by name.

    Args:
        features: output of :func:`preprocess` in physical units (``normalization=None``).
        s1: output of :func:`geoxai.temporal.s1.aggregate_s1` /
        :func:`geoxai.mapping.ancillary_s1.s1_steps` on the same
            grid and time axis: ``backscatter`` ``(time, band, y, x)`` in dB.
        terrain: output of :func:`geoxai.mapping.ancillary_dem.terrain` on the same grid: ``slope``
        (degrees) and
            ``DEM`` (metres), repeated over every time step when listed in ``order``.
        order: feature names of the result (any of the optical features, ``VV``, ``VH``,
            ``slope``, ``DEM``); default :func:`fused_feature_names` of what is given.
        s1_scale: ``"db"`` (dB, floored at ``db_floor``) or ``"unit"`` (the reference's
            ``(clip(dB, floor, 0) - floor) / -floor`` in [0, 1]).
        db_floor: dB floor of the S1 layer (-22 in the reference).
        normalization: optional per-feature ranges to [-1, 1] applied to the fused stack.

    Returns:
        Dataset like :func:`preprocess`'s with ``features`` ``(time, band, y, x)`` float32
        NaN-free in ``order``; where S1 has no coverage VV/VH hold the floor (dB) or 0 (unit),
        where the slope is void it holds 0. ``valid_optical`` is the optical ``valid``;
        ``valid`` becomes ``valid_optical | s1_valid`` when S1 is fused (radar alone is an
        observation); ``s1_valid``, ``s1_n_obs``, ``s1_flags``, ``dem_flags`` are carried.

    Raises:
        InvalidInputError: grids or time axes differ, a requested feature is missing, or the
            optical features are already normalized.
    """

    if not isinstance(features, xr.Dataset) or "features" not in features:
        raise InvalidInputError("fuse needs the Dataset returned by preprocess (with 'features').")
    tile = features.attrs.get("tile_id", "?")
    if features["features"].attrs.get("units") == "[-1, 1]":
        raise InvalidInputError(
            f"Optical features of tile {tile} are already normalized; run preprocess with "
            "normalization=None and pass the ranges of every fused feature to fuse(normalization=)."
        )
    look_up_option(s1_scale, ("db", "unit"), what="S1 scaling", error=InvalidInputError)
    optical = [str(b) for b in features["band"].values]
    y, x = features["y"].values, features["x"].values
    for name, other in (("S1 layer", s1), ("terrain", terrain)):
        if other is None:
            continue
        same = other.sizes.get("y") == y.size and other.sizes.get("x") == x.size
        if same:
            same = bool(np.allclose(other["y"].values, y) and np.allclose(other["x"].values, x))
        if not same:
            raise InvalidInputError(
                f"The {name} of tile {other.attrs.get('tile_id', '?')} is on another grid "
                f"({other.sizes.get('y')}x{other.sizes.get('x')} px) than the optical features of "
                f"tile {tile} ({y.size}x{x.size}); build both on the same TileSpec and halo."
            )
    layers: dict[str, np.ndarray] = {}
    nt = features.sizes["time"]
    if s1 is not None:
        if s1.sizes["time"] != nt or not np.array_equal(
            s1["time"].values.astype("datetime64[ns]"),
            features["time"].values.astype("datetime64[ns]"),
        ):
            raise InvalidInputError(
                f"The S1 layer of tile {tile} is on another time axis ({s1.sizes['time']} steps) "
                f"than the optical features ({nt} steps); aggregate it with the same "
                "SmoothingParams."
            )

        for pol in [str(b) for b in s1["band"].values]:
            db = np.asarray(s1["backscatter"].sel(band=pol).values, np.float32)
            db = np.maximum(np.where(np.isfinite(db), db, db_floor), db_floor)
            layers[pol] = db_to_unit(db, db_floor) if s1_scale == "unit" else db
    if terrain is not None:
        for name in ("slope", "DEM"):
            if name in terrain:
                v = np.asarray(terrain[name].values, np.float32)
                layers[name] = np.broadcast_to(np.where(np.isfinite(v), v, 0.0), (nt, *v.shape))
    names = (
        tuple(order)
        if order is not None
        else fused_feature_names(optical, s1=s1 is not None, slope=terrain is not None)
    )
    missing = [n for n in names if n not in optical and n not in layers]
    if missing or len(set(names)) != len(names):
        raise InvalidInputError(
            f"fuse: features {missing or list(names)} are missing or repeated; available: "
            f"optical {optical}, fused {sorted(layers)}."
        )
    feats = features["features"]
    out = np.empty((nt, len(names), y.size, x.size), np.float32)
    for k, n in enumerate(names):
        out[:, k] = feats.sel(band=n).values if n in optical else layers[n]
    if normalization is not None:
        out = normalize(out, names, normalization, axis=1)
    ds = features.drop_vars(["features", "band"]).assign_coords(band=list(names))
    ds["features"] = (("time", "band", "y", "x"), out)
    ds["features"].attrs["units"] = (
        "mixed: reflectance, dB, degrees" if normalization is None else "[-1, 1]"
    )
    ds["valid_optical"] = features["valid"]
    if s1 is not None:
        for layer in ("s1_valid", "s1_n_obs", "s1_flags"):
            if layer in s1:
                ds[layer] = (("y", "x"), s1[layer].values)
        if "s1_valid" in s1:
            ds["valid"] = (("y", "x"), features["valid"].values | s1["s1_valid"].values)
        ds.attrs["s1_items"] = list(s1.attrs.get("item_ids", []))
        ds.attrs["s1_orbit"] = str(s1.attrs.get("orbit", ""))
    if terrain is not None and "dem_flags" in terrain:
        ds["dem_flags"] = (("y", "x"), terrain["dem_flags"].values)
        ds.attrs["dem_items"] = list(terrain.attrs.get("item_ids", []))
    return ds
