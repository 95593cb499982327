"""From a raw, irregular, cloudy tile cube to the model-ready cube on a fixed time axis.

:func:`preprocess` chains, for every pixel independently:

1. **weights** (:mod:`geoxai.temporal.clouds`): SCL classes (or a spectral rule) with a buffer
   of ``buffer_m`` around clouds and shadows -> a weight in [0, 1] per pixel and acquisition;
   NaN reflectance -> 0. Optional date screening uses only the item's own ``eo:cloud_cover``.
2. **indices** (:mod:`geoxai.temporal.indices`) per observation (NDVI, EVI, BI, MSAVI2,
   GRNDVI), as the reference computes them from the observations before smoothing them.
3. **binning** to a fine regular grid of ``grid_days`` (default 5 days, the Sentinel-2
   revisit) that spans the target window plus ``margin_days`` on each side: every acquisition
   enters at its exact time, through linear-interpolation weights on the two nodes around it
   (:mod:`geoxai.temporal.binning`). This is exactly the weighted least-squares data term of
   the acquisitions against the piecewise-linear curve through the nodes (tridiagonal, so the
   banded solve is unchanged), so nothing is dropped, moved in time or decided per tile.
4. **weighted Whittaker** (:mod:`geoxai.temporal.whittaker`) on that grid, all pixels at once:
   gaps are bridged, the year edges are held by the acquisitions of the margins (data from just
   before/after the year). By default each pixel's ``(order, lambda)`` is chosen by leave-one-out
   cross-validation (:mod:`geoxai.temporal.lambda_select`), pooled over its 3 x 3 neighbours.
   Beyond a pixel's first/last clear observation the curve holds its end value
   (:func:`~geoxai.temporal.binning.sample_held`): no extrapolated trend, no invented values.
5. **sampling** of the smooth curve at the centres of the ``n_steps`` steps of ``step_days``
   (default 24 x 15 days from 1 January), by linear interpolation between nodes.
6. **clip** reflectance to ``clip``, indices to their ranges; optional normalization to [-1, 1].

What ``lambda_`` means, and the per-pixel choice when it is None: :mod:`geoxai.temporal.axis`.

Seamlessness: every step is per pixel except the cloud buffer, which reaches
``ceil(buffer_m / resolution_m)`` pixels (4 for the defaults), and the pooling of the lambda
choice (``lambda_pool_px``, 1): tiles need at least that halo
(:func:`required_halo_px`) for their cores to agree with neighbours to float round-off.

Memory: weights for the whole tile (``4 T Y X`` bytes), then rows in blocks of ``rows_per_block``;
a 660 x 660 x 10 x 73 raw cube stays well under 4 GB (see benchmarks/bench_whittaker.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.bands import S2_BANDS, SCL, check_bands
from geoxai.provenance import canonical_json
from geoxai.temporal.axis import (
    SmoothingParams,
    bin_series,
    binning_matrix,
    days_since,
    fine_grid,
    grid_lambda,
    sampling_matrix,
    solve_groups,
    time_axis,
)
from geoxai.temporal.binning import (
    Binned,
    bin_to_grid,
    binned_buffers,
    first_columns,
    interp_nodes,
    obs_nodes,
    sample_held,
    series_gaps,
    take_last,
)
from geoxai.temporal.clouds import CloudMaskParams, item_screen
from geoxai.temporal.clouds import required_halo_px as _cloud_halo
from geoxai.temporal.device import smooth_block_torch
from geoxai.temporal.indices import (
    INDEX_BANDS,
    FeatureRanges,
    IndexParams,
    compute_indices,
    normalize,
)
from geoxai.temporal.lambda_select import choose, lambda_cv, select_lambda
from geoxai.temporal.weights import RowBlocks, observation_weights, pixel_size_m
from geoxai.temporal.whittaker import whittaker

__all__ = [
    "SmoothingParams",
    "PreprocessParams",
    "time_axis",
    "fine_grid",
    "grid_lambda",
    "binning_matrix",
    "sampling_matrix",
    "observation_weights",
    "pixel_size_m",
    "bin_series",
    "criterion_channels",
    "smooth_series",
    "preprocess",
    "required_halo_px",
    "feature_names",
    "REFERENCE_FEATURES",
]


@dataclass(frozen=True)
class PreprocessParams:
    """Everything :func:`preprocess` does, as one frozen value object.

    Attributes:
        bands: reflectance bands of the features, in order (canonical names).
        clouds: observation weights.
        smoothing: time axis and smoother.
        indices: vegetation indices appended after the bands.
        normalization: per-feature ranges to [-1, 1]; None leaves physical units.
    """

    bands: tuple[str, ...] = S2_BANDS
    clouds: CloudMaskParams = field(default_factory=CloudMaskParams)
    smoothing: SmoothingParams = field(default_factory=SmoothingParams)
    indices: IndexParams = field(default_factory=IndexParams)
    normalization: FeatureRanges | None = None

    def __post_init__(self) -> None:
        bands = check_bands(self.bands)
        if SCL in bands:
            raise ConfigError("PreprocessParams.bands lists SCL; it is a mask, not a feature.")
        object.__setattr__(self, "bands", bands)
        for name in self.indices.indices:
            missing = [b for b in INDEX_BANDS[name] if b not in bands]
            if missing:
                raise ConfigError(
                    f"Index {name} needs bands {missing} that PreprocessParams.bands omits; "
                    "add them or drop the index."
                )

    def to_dict(self) -> dict:
        """Plain-dict form (for provenance attrs and config hashes)."""
        return asdict(self)


def feature_names(params: PreprocessParams) -> tuple[str, ...]:
    """Band axis of the model-ready cube: the bands, then the indices."""
    return (*params.bands, *params.indices.indices)


def required_halo_px(
    params: PreprocessParams, resolution_m: float = 10.0, bands: Sequence[str] | None = None
) -> int:
    """Halo pixels a tile needs for its core to be exact: the cloud mask's reach (``bands``,
    the cube's bands, tells whether "auto" uses SCL or the spectral mask), plus the pooling
    window of the per-pixel lambda choice (``lambda_pool_px``) when it is on."""
    pool = params.smoothing.lambda_pool_px if params.smoothing.lambda_ is None else 0
    return _cloud_halo(params.clouds, resolution_m, bands) + pool


def smooth_series(
    values: np.ndarray,
    weights: np.ndarray,
    obs_days: np.ndarray,
    params: SmoothingParams,
    *,
    at_days: np.ndarray | None = None,
    device: str | None = None,
    criterion_channels: list[int] | None = None,
    choice: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin irregular observations to the fine grid, smooth, hold the ends, and sample.

    Args:
        values: ``(T, C, N)`` observations (anything where the weight is 0).
        weights: ``(T, N)`` weights >= 0.
        obs_days: ``(T,)`` acquisition times, days from the axis start.
        params: smoothing parameters.
        at_days: where to sample, days from the axis start (default: the step centres).
        device: None for the numpy path; "cpu"/"cuda" for the torch path (float64).
        criterion_channels: channels whose leave-one-out error chooses the per-pixel
            ``(order, lambda)`` when ``params.lambda_`` is None (default: all).
        choice: ``(N,)`` index into ``params.lambda_candidates`` chosen beforehand (e.g.
            pooled over neighbours by :func:`preprocess`); None chooses per pixel here.

    Returns:
        ``(S, C, N)`` float64 smoothed values (NaN on invalid pixels), ``(N,)`` valid, and
        ``(N,)`` number of observations with positive weight inside the grid.
    """
    if at_days is None:
        at_days = (np.arange(params.n_steps) + 0.5) * params.step_days
    if device is not None:  # the block on the device: bin, solve, sample there
        if params.lambda_ is None and choice is None:
            crit = list(criterion_channels) if criterion_channels is not None else None
            sub = values if crit is None else values[:, crit]
            nodes = fine_grid(params)
            scale = params.lambda_step_days / params.grid_days
            choice = select_lambda(
                sub,
                weights,
                params.lambda_candidates,
                at=obs_nodes(obs_days, nodes),
                n_nodes=nodes.size,
                scale=scale,
            ).index
        return smooth_block_torch(
            [values],
            weights,
            obs_days,
            fine_grid(params),
            params,
            np.asarray(at_days, dtype=np.float64),
            choice=choice,
            device=device,
        )
    nodes, binned = bin_series(values, weights, obs_days, params)
    if params.lambda_ is None and choice is None:
        scale = params.lambda_step_days / params.grid_days
        crit = list(criterion_channels) if criterion_channels is not None else None
        choice = select_lambda(
            values,
            weights,
            params.lambda_candidates,
            at=obs_nodes(obs_days, nodes),
            n_nodes=nodes.size,
            scale=scale,
            channels=crit,
        ).index
    lo, frac = interp_nodes(nodes, np.asarray(at_days, dtype=np.float64))
    out, valid = solve_and_sample(binned, params, lo, frac, choice=choice)
    return out, valid, binned.n_obs


def solve_and_sample(
    binned: Binned,
    params: SmoothingParams,
    lo: np.ndarray,
    frac: np.ndarray,
    *,
    choice: np.ndarray | None = None,
    dtype: type = np.float64,
    out: np.ndarray | None = None,
    clip: tuple[np.ndarray, np.ndarray] | None = None,
    fill: float = np.nan,
) -> tuple[np.ndarray, np.ndarray]:
    """Whittaker on the binned grid, held ends, sampled: the solve half of :func:`smooth_series`.

    Args:
        binned: the observations on the grid (:func:`geoxai.temporal.binning.bin_to_grid`;
            ``ybar`` float32 or float64).
        params: smoothing parameters (a fixed ``lambda_``, or the candidates ``choice``
            ``(N,)`` indexes when ``lambda_`` is None).
        lo, frac: ``(S,)`` sampling positions (:func:`geoxai.temporal.binning.interp_nodes`).
        dtype: dtype of the result (when ``out`` is None).
        out: ``(S, C, N)`` array (any strides, e.g. a row block of the tile's features) the
            result is written into, instead of a new one.
        clip: ``((C,), (C,))`` per-channel bounds the samples are clipped to (in the result's
            dtype, as ``np.clip`` would); None: not clipped.
        fill: value of the pixels that are not valid.

    Returns:
        ``(S, C, N)`` sampled values (``fill`` where not valid; held beyond each pixel's
        first/last observation) and ``(N,)`` valid. Pixels are solved grouped by candidate (the
        kernel gathers each candidate's pixels from ``ybar`` in place, the sampled result is
        written straight to their columns of the result: no full float64 node array, no
        intermediate copy).
    """
    ybar, wsum, woff, n_obs, ends = binned
    g, c, n = ybar.shape
    if out is None:
        out = np.empty((lo.size, c, n), dtype=dtype)
    valid = np.zeros(n, dtype=bool)
    if params.lambda_ is None and choice is None:
        raise InvalidInputError("solve_and_sample: lambda_ is None and no per-pixel choice.")
    groups = solve_groups(params)
    perm = None
    if len(groups) > 1 and choice is not None:  # sorted by candidate: contiguous runs
        perm = np.argsort(choice, kind="stable")
        ends, n_obs = take_last(ends, perm), n_obs[perm]
        bounds = np.searchsorted(choice[perm], np.arange(len(groups) + 1))
    else:
        bounds = np.array([0, n])
    for i, (_, order, lam) in enumerate(groups):
        s, e = int(bounds[i]), int(bounds[i + 1])
        if s == e:
            continue
        pix = None if perm is None else perm[s:e]  # the kernel reads them from ybar in place
        res = whittaker(ybar, wsum, lam, order, pixels=pix, off=woff)
        ok = res.valid & (n_obs[s:e] >= params.min_obs)
        cols = np.arange(s, e) if pix is None else pix
        sample_held(res.z, ends[:, s:e], lo, frac, ok, out=out, cols=cols, clip=clip, fill=fill)
        valid[cols] = ok
    return out, valid


def _check_cube(raw: xr.DataArray, params: PreprocessParams, need_scl: bool) -> None:
    if not isinstance(raw, xr.DataArray):
        raise InvalidInputError(
            f"preprocess expects the raw tile cube as an xarray.DataArray, got {type(raw)}."
        )
    if tuple(raw.dims) != ("time", "band", "y", "x"):
        raise InvalidInputError(
            f"Raw cube dims are {tuple(raw.dims)}; expected ('time', 'band', 'y', 'x')."
        )
    have = [str(b) for b in raw["band"].values]
    for b in have:
        if b != SCL:
            check_bands([b])  # unknown band names raise with suggestions
    missing = [b for b in params.bands if b not in have]
    if need_scl and SCL not in have:
        missing.append(SCL)
    if missing:
        tile = raw.attrs.get("tile_id", "?")
        raise InvalidInputError(
            f"Raw cube of tile {tile} has bands {have} but lacks {missing}. Rebuild the cube "
            "with them, or set PreprocessParams.bands (and CloudMaskParams.method) to match."
        )


def preprocess(
    raw: xr.DataArray,
    params: PreprocessParams,
    *,
    device: str | None = None,
    rows_per_block: int = 64,
    progress: Callable[[int, int], None] | None = None,
    block_hook: Callable[[xr.DataArray, np.ndarray, np.ndarray, int], None] | None = None,
) -> xr.Dataset:
    """Raw tile cube -> model-ready features on the fixed time axis, plus a quality layer.

    Args:
        raw: ``(time, band, y, x)`` float32 reflectance cube with SCL (the raw cube contract
            of geoxai.io.cube); may be dask-backed (read block by block).
        params: what to do.
        device: None for the numpy path, "cpu" or "cuda" for the torch path.
        rows_per_block: image rows solved together (bounds memory).
        progress: called as ``progress(rows_done, rows_total)``.
        block_hook: called per row block as ``block_hook(block, w, days, r0)`` with the raw
            bands ``(T, B, rows, X)``, their weights ``(T, rows * X)``, the acquisition days
            and the block's first row (e.g. :class:`geoxai.temporal.heldout.TileHeldout` scores a
            sample of pixels there).

    Returns:
        Dataset with

        * ``features`` ``(time, band, y, x)`` float32, NaN-free; ``time`` = :func:`time_axis`,
          ``band`` = :func:`feature_names`; reflectance (or [-1, 1] when normalized);
          0 on nodata pixels.
        * ``valid`` ``(y, x)`` bool: False = nodata (too few clear observations).
        * ``n_obs`` ``(y, x)`` int16: observations with positive weight in axis + margins.
        * ``max_gap_days`` ``(y, x)`` float32: longest stretch of the axis without a clear
          observation (axis edges count as gap ends).
        * ``edge_gap_days`` ``(y, x)`` float32: the longer of the stretches from the axis start
          to the first clear observation and from the last one to the axis end (observations
          in the margins count); there the series is held at its end values
          (:func:`~geoxai.temporal.binning.sample_held`), never extrapolated.
        * ``lambda_choice`` ``(y, x)`` int8 (when ``lambda_`` is None): index of each pixel's
          ``(order, lambda)`` in ``attrs["candidates"]`` (JSON).

        y/x coords and the raw cube's attrs are kept; ``attrs["preprocess"]`` holds the params.

    Raises:
        InvalidInputError: missing bands, unknown band names, or no acquisition in the window.
        ConfigError: bad parameters (no year, lambda <= 0 ...).
    """
    sp = params.smoothing
    need_scl = params.clouds.method == "scl"
    _check_cube(raw, params, need_scl)
    if "time" in raw.indexes and not raw.indexes["time"].is_monotonic_increasing:
        raw = raw.sortby("time")
    origin = sp.axis_start()
    days = days_since(np.asarray(raw["time"].values), origin)
    nodes = fine_grid(sp)
    half = sp.grid_days / 2.0
    in_window = (days >= nodes[0] - half) & (days < nodes[-1] + half)
    keep = in_window.copy()
    cc = raw.coords["eo:cloud_cover"].values if "eo:cloud_cover" in raw.coords else None
    screen = item_screen(cc, params.clouds)
    if screen is not None:
        keep &= screen
    if not in_window.any():
        t0, t1 = (str(np.asarray(raw["time"].values)[i])[:10] for i in (0, -1))
        raise InvalidInputError(
            f"Raw cube of tile {raw.attrs.get('tile_id', '?')} spans {t0}..{t1}, outside the "
            f"requested axis {str(origin)[:10]} + {sp.n_steps}x{sp.step_days:g} days "
            f"(with {sp.margin_days:g} days margin). Set SmoothingParams.year/start to the "
            "cube's year or rebuild the cube for the requested year."
        )
    ti = np.nonzero(keep)[0]
    days_k = days[ti]
    ny, nx = raw.sizes["y"], raw.sizes["x"]
    feats = feature_names(params)
    nb, nf = len(params.bands), len(feats)
    out = np.zeros((sp.n_steps, nf, ny, nx), dtype=np.float32)
    valid = np.zeros((ny, nx), dtype=bool)
    n_obs = np.zeros((ny, nx), dtype=np.int16)
    max_gap = np.zeros((ny, nx), dtype=np.float32)
    edge_gap = np.zeros((ny, nx), dtype=np.float32)
    span = sp.n_steps * sp.step_days
    choice = None
    if sp.lambda_ is None:
        choice = np.zeros((ny, nx), dtype=np.int64)
    if ti.size:
        blocks = RowBlocks(raw, params, keep, rows_per_block)
        nodes = fine_grid(sp)
        node = obs_nodes(days_k, nodes)
        at = (np.arange(sp.n_steps) + 0.5) * sp.step_days
        lo, frac = interp_nodes(nodes, at)
        lo_clip, hi_clip = sp.clip
        idx_lim = [1.5 if n == "EVI" else 1.0 for n in params.indices.indices]
        bounds = (  # per feature: reflectance to ``clip``, indices to their ranges
            np.array([lo_clip] * nb + [-v for v in idx_lim], dtype=np.float32),
            np.array([hi_clip] * nb + idx_lim, dtype=np.float32),
        )
        crit = criterion_channels(params.bands)
        pool = sp.lambda_pool_px
        cands = sp.lambda_candidates
        scale = sp.lambda_step_days / sp.grid_days
        cv = np.empty((len(cands), ny, nx)) if choice is not None else None

        # the binned arrays of the two row blocks in flight and the indices, reused block
        # after block (fresh pages for every block cost as much as filling them)
        n_blk = min(blocks.rows, ny) * nx
        slots = [binned_buffers(nodes.size, nf, n_blk) for _ in range(2 if device is None else 0)]
        idx_buf = np.empty((ti.size, nf - nb, n_blk), dtype=np.float32)

        def bin_block(r0: int, r1: int, refl: np.ndarray, w: np.ndarray) -> tuple:
            """Stage A: weights are final; indices, binning, quality, lambda criterion."""
            shape = (r1 - r0, nx)
            n_px = shape[0] * nx
            idx = None
            if device is None and refl.dtype == np.float32:
                idx = idx_buf.reshape(-1)[: idx_buf.size // n_blk * n_px]
                idx = idx.reshape(ti.size, nf - nb, n_px)
            idx = compute_indices(refl, params.bands, params.indices, axis=1, out=idx)
            if device is None:
                into = first_columns(slots[(r0 // blocks.rows) % 2], n_px)
                binned = bin_to_grid([refl, idx], w, node, nodes.size, into=into)
                cnt = binned.n_obs
            else:  # the device bins; the host counts the observations
                cnt = ((w > 0) & (node[0] >= 0)[:, None]).sum(axis=0)
            if block_hook is not None:
                view = xr.DataArray(
                    refl.reshape(ti.size, nb, *shape),
                    dims=("time", "band", "y", "x"),
                    coords={"band": list(params.bands)},
                )
                block_hook(view, w, days_k, r0)
            mg, eg = series_gaps(w, days_k, span)
            max_gap[r0:r1], edge_gap[r0:r1] = mg.reshape(shape), eg.reshape(shape)
            n_obs[r0:r1] = np.minimum(cnt, np.iinfo(np.int16).max).reshape(shape)
            if cv is not None:
                cv[:, r0:r1] = lambda_cv(
                    refl, w, cands, at=node, n_nodes=nodes.size, scale=scale, channels=crit
                ).reshape(-1, *shape)
            if device is not None:
                return refl, idx, w
            return (binned,)

        def smooth_block(r0: int, r1: int, *binned: Any) -> None:
            """Stage B (needs the criterion of the rows around): choice, solve, sample."""
            pick = None
            if choice is not None and cv is not None:
                a, b = max(r0 - pool, 0), min(r1 + pool, ny)
                choice[r0:r1] = choose(cv[:, a:b], pool, n_obs[a:b])[r0 - a : r1 - a]
                pick = choice[r0:r1].ravel()
            if device is None:  # sampled, clipped and zeroed straight into the tile's rows
                dest = out[:, :, r0:r1].reshape(sp.n_steps, nf, -1)  # a view: out is C-order
                _, ok = solve_and_sample(
                    binned[0], sp, lo, frac, choice=pick, out=dest, clip=bounds, fill=0.0
                )
            else:
                refl, idx, w = binned
                sm64, ok, _ = smooth_block_torch(
                    [refl, idx], w, days_k, nodes, sp, at, choice=pick, device=device
                )
                sm = sm64.astype(np.float32)
                np.clip(sm, bounds[0][None, :, None], bounds[1][None, :, None], out=sm)
                sm[:, :, ~ok] = 0.0
                out[:, :, r0:r1] = sm.reshape(sp.n_steps, nf, r1 - r0, nx)
            valid[r0:r1] = ok.reshape(r1 - r0, nx)
            if progress is not None:
                progress(r1, ny)

        # one block is binned while the one before waits for its neighbours' lambda criterion
        waiting: list[tuple] = []
        for r0, r1, refl, w in blocks:
            waiting.append((r0, r1, *bin_block(r0, r1, refl, w)))
            del refl, w
            if len(waiting) == 2:
                smooth_block(*waiting.pop(0))
        while waiting:
            smooth_block(*waiting.pop(0))
    if ti.size == 0:
        max_gap[:] = span
        edge_gap[:] = span
    if params.normalization is not None:
        out = normalize(out, feats, params.normalization, axis=1)
        out[:, :, ~valid] = 0.0
    ds = _as_dataset(raw, params, out, valid, n_obs, max_gap, ti)
    ds["edge_gap_days"] = (("y", "x"), edge_gap)
    ds["edge_gap_days"].attrs["units"] = "days"
    if choice is not None:
        ds["lambda_choice"] = (("y", "x"), choice.astype(np.int8))
        ds["lambda_choice"].attrs["candidates"] = json.dumps(sp.lambda_candidates)
    return ds


_CRITERION_BANDS = ("B04", "B08", "B11")
"""Bands whose leave-one-out error chooses lambda per pixel (visible, NIR, SWIR): one solve
each per candidate instead of one per feature."""


def criterion_channels(names: tuple[str, ...] | list[str]) -> list[int]:
    """Indices of the channels whose leave-one-out error chooses lambda: B04, B08, B11 where
    present, else every channel."""
    names = [str(n) for n in names]
    crit = [names.index(b) for b in _CRITERION_BANDS if b in names]
    return crit or list(range(len(names)))


def _as_dataset(
    raw: xr.DataArray,
    params: PreprocessParams,
    out: np.ndarray,
    valid: np.ndarray,
    n_obs: np.ndarray,
    max_gap: np.ndarray,
    ti: np.ndarray,
) -> xr.Dataset:

    coords = {
        "time": time_axis(params.smoothing),
        "band": list(feature_names(params)),
        "y": raw["y"].values,
        "x": raw["x"].values,
    }
    attrs = dict(raw.attrs)
    attrs["preprocess"] = canonical_json(params)
    if "id" in raw.coords:
        attrs["input_items"] = [str(v) for v in np.asarray(raw["id"].values)[ti]]
    ds = xr.Dataset(
        {
            "features": (("time", "band", "y", "x"), out),
            "valid": (("y", "x"), valid),
            "n_obs": (("y", "x"), n_obs),
            "max_gap_days": (("y", "x"), max_gap),
        },
        coords=coords,
        attrs=attrs,
    )
    ds["features"].attrs["units"] = "reflectance" if params.normalization is None else "[-1, 1]"
    ds["max_gap_days"].attrs["units"] = "days"
    return ds


REFERENCE_FEATURES: tuple[str, ...] = (
    *S2_BANDS,
    "slope",
    "VV",
    "VH",
    "EVI",
    "BI",
    "MSAVI2",
    "GRNDVI",
)
"""The 17 features per pixel and step of the reference tree cover model, in its order
(preprocess with ``IndexParams(indices=("EVI", "BI", "MSAVI2", "GRNDVI"))``, then :func:`fuse`)."""
