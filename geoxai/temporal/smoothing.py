"""From a raw, irregular, cloudy tile cube to the model-ready cube on a fixed time axis.

:func:`preprocess` chains, for every pixel independently:

1. **weights** (:mod:`geoxai.temporal.clouds`): SCL classes (or a spectral rule) with a buffer of
   ``buffer_m`` around clouds and shadows -> a weight in [0, 1] per pixel and acquisition;
   NaN reflectance -> 0. Optional date screening uses only the item's own ``eo:cloud_cover``.
2. **indices** (:mod:`geoxai.temporal.indices`) per observation (NDVI, EVI, BI, MSAVI2, GRNDVI), as
the
   reference computes them from the observations before smoothing them.
3. **binning** to a fine regular grid of ``grid_days`` (default 5 days, the Sentinel-2
   revisit) that spans the target window plus ``margin_days`` on each side: every acquisition
   goes to its nearest node; a node holds the weighted mean of its observations and the sum of
   their weights. This is exactly the weighted least-squares data term of the acquisitions
   snapped to the grid, so nothing is dropped or decided per tile.
4. **weighted Whittaker** (:mod:`geoxai.temporal.whittaker`) on that grid, all pixels at once: gaps
are
   bridged, the year edges are held by the acquisitions of the margins (data from just
   before/after the year).
5. **sampling** of the smooth curve at the centres of the ``n_steps`` steps of ``step_days``
   (default 24 x 15 days from 1 January; the centres are grid nodes when ``step_days`` is a
   multiple of ``grid_days``, otherwise linear interpolation between nodes).
6. **clip** reflectance to ``clip``, indices to their ranges; optional normalization to [-1, 1].

What ``lambda_`` means. The reference (WRI) smooths a series already interpolated to 24 steps of
15 days with ``lambda = 100`` and ``d = 2``. A difference penalty on spacing ``h`` behaves, for
smooth curves, like ``lambda h^(2d-1) * integral (z^(d))^2 dt`` while the data term is
``sum w_i (y_i - z(t_i))^2``. ``SmoothingParams.lambda_`` is therefore stated on a grid of
``lambda_step_days`` (15) and used on the fine grid as
``lambda_grid = lambda_ * (lambda_step_days / grid_days) ** (2 d - 1)`` (2700 for the defaults):
with one unit-weight observation per 15 days this equals the reference's smoothing exactly (in
the continuous limit); denser clear observations are fitted more closely, as they should.

Seamlessness: every step is per pixel except the cloud buffer, which reaches
``ceil(buffer_m / resolution_m)`` pixels (4 for the defaults): tiles need at least that halo
(:func:`required_halo_px`) for their cores to agree with neighbours to float round-off.

Memory: weights for the whole tile (``4 T Y X`` bytes), then rows in blocks of ``rows_per_block``;
a 660 x 660 x 10 x 73 raw cube stays well under 4 GB (see benchmarks/bench_whittaker.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.bands import S2_BANDS, SCL, check_bands
from geoxai.provenance import canonical_json
from geoxai.temporal.clouds import CloudMaskParams, item_screen, scl_weights, spectral_weights
from geoxai.temporal.clouds import required_halo_px as _cloud_halo
from geoxai.temporal.indices import (
    INDEX_BANDS,
    IndexParams,
    NormalizationParams,
    compute_indices,
    normalize,
)
from geoxai.temporal.masks import MASK_BANDS, cube_sun_angles
from geoxai.temporal.whittaker import check_lambda, whittaker, whittaker_torch

__all__ = [
    "SmoothingParams",
    "PreprocessParams",
    "time_axis",
    "fine_grid",
    "grid_lambda",
    "binning_matrix",
    "sampling_matrix",
    "observation_weights",
    "smooth_series",
    "preprocess",
    "required_halo_px",
    "feature_names",
    "REFERENCE_FEATURES",
]

_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class SmoothingParams:
    """The fixed time axis and the Whittaker smoother.

    Attributes:
        year: target calendar year; the axis starts on 1 January (unless ``start`` is set).
        start: ISO date the axis starts on, instead of 1 January of ``year``.
        n_steps: number of output time steps.
        step_days: length of one output step, days; outputs sit at step centres.
        lambda_: smoothing strength stated on a grid of ``lambda_step_days`` (> 0; 100 = WRI).
        lambda_step_days: grid spacing, days, that ``lambda_`` refers to (15 = WRI).
        order: difference order d of the penalty (2 = WRI).
        grid_days: spacing, days, of the fine grid the smoother is solved on.
        margin_days: days before the start and after the end whose acquisitions are used.
        min_obs: fewest weighted observations (in axis + margins) for a valid pixel (>= order).
        clip: (min, max) reflectance of the smoothed bands.
    """

    year: int | None = None
    start: str | None = None
    n_steps: int = 24
    step_days: float = 15.0
    lambda_: float = 100.0
    lambda_step_days: float = 15.0
    order: int = 2
    grid_days: float = 5.0
    margin_days: float = 45.0
    min_obs: int = 3
    clip: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_lambda(self.lambda_, self.order)
        for name in ("step_days", "lambda_step_days", "grid_days"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(
                    f"SmoothingParams.{name}={v!r} must be a positive number of days."
                )
        if not (isinstance(self.n_steps, int) and self.n_steps >= 1):
            raise ConfigError(f"SmoothingParams.n_steps={self.n_steps!r} must be an integer >= 1.")
        if not (math.isfinite(self.margin_days) and self.margin_days >= 0):
            raise ConfigError(f"SmoothingParams.margin_days={self.margin_days!r} must be >= 0.")
        if self.min_obs < self.order:
            raise ConfigError(
                f"SmoothingParams.min_obs={self.min_obs} is below order={self.order}: the "
                "smoother is singular with fewer points than the difference order."
            )
        if not self.clip[0] < self.clip[1]:
            raise ConfigError(f"SmoothingParams.clip={self.clip} needs min < max.")
        if self.start is not None:
            try:
                np.datetime64(self.start, "D")
            except ValueError as exc:
                raise ConfigError(
                    f"SmoothingParams.start={self.start!r} is not an ISO date like '2021-01-01'."
                ) from exc

    def axis_start(self) -> np.datetime64:
        """First instant of the axis (datetime64[ns])."""
        if self.start is not None:
            return np.datetime64(self.start, "D").astype("datetime64[ns]")
        if self.year is None:
            raise ConfigError(
                "SmoothingParams needs the target year (year=2021) or a start date "
                "(start='2020-11-01'); it is never guessed per tile."
            )
        return np.datetime64(f"{int(self.year):04d}-01-01", "D").astype("datetime64[ns]")


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
    normalization: NormalizationParams | None = None

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
    """Halo pixels a tile needs for its core to be exact (the cloud mask's reach; ``bands``,
    the cube's bands, tells whether "auto" uses SCL or the spectral mask)."""
    return _cloud_halo(params.clouds, resolution_m, bands)


def time_axis(params: SmoothingParams) -> np.ndarray:
    """``(n_steps,)`` datetime64[ns] step centres of the fixed axis."""
    start = params.axis_start()
    offs = (np.arange(params.n_steps) + 0.5) * params.step_days * _DAY_NS
    return start + offs.round().astype("timedelta64[ns]")


def _days(times: np.ndarray, origin: np.datetime64) -> np.ndarray:
    return (times.astype("datetime64[ns]") - origin).astype(np.int64) / _DAY_NS


def fine_grid(params: SmoothingParams) -> np.ndarray:
    """Node positions of the fine grid, days from :meth:`SmoothingParams.axis_start`.

    Nodes sit at ``step_days / 2 + k * grid_days`` (so step centres are nodes when
    ``step_days`` is a multiple of ``grid_days``) and cover the axis plus the margins.
    """
    span = params.n_steps * params.step_days
    c0 = params.step_days / 2.0
    k_lo = math.floor((c0 + params.margin_days) / params.grid_days)
    k_hi = math.ceil((span - c0 + params.margin_days) / params.grid_days)
    nodes = c0 + np.arange(-k_lo, k_hi + 1) * params.grid_days
    return nodes


def grid_lambda(params: SmoothingParams) -> float:
    """Lambda used on the fine grid (see the module docstring)."""
    return params.lambda_ * (params.lambda_step_days / params.grid_days) ** (2 * params.order - 1)


def binning_matrix(obs_days: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-hot ``(G, T)`` matrix sending each observation to its nearest node.

    Returns:
        (matrix, inside): ``inside`` is ``(T,)`` bool, False for observations more than half a
        grid step beyond the first/last node (their column is all zero).
    """
    step = float(nodes[1] - nodes[0])
    idx = np.rint((obs_days - nodes[0]) / step).astype(np.int64)
    inside = (idx >= 0) & (idx < nodes.size)
    m = np.zeros((nodes.size, obs_days.size))
    m[idx[inside], np.nonzero(inside)[0]] = 1.0
    return m, inside


def sampling_matrix(nodes: np.ndarray, at_days: np.ndarray) -> np.ndarray:
    """``(S, G)`` linear-interpolation matrix from node values to ``at_days``."""
    step = float(nodes[1] - nodes[0])
    pos = np.clip((at_days - nodes[0]) / step, 0, nodes.size - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), nodes.size - 2)
    frac = pos - lo
    m = np.zeros((at_days.size, nodes.size))
    rows = np.arange(at_days.size)
    m[rows, lo] += 1.0 - frac
    m[rows, lo + 1] += frac
    return m


def smooth_series(
    values: np.ndarray,
    weights: np.ndarray,
    obs_days: np.ndarray,
    params: SmoothingParams,
    *,
    at_days: np.ndarray | None = None,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin irregular observations to the fine grid, smooth, and sample.

    Args:
        values: ``(T, C, N)`` observations (anything where the weight is 0).
        weights: ``(T, N)`` weights >= 0.
        obs_days: ``(T,)`` acquisition times, days from the axis start.
        params: smoothing parameters.
        at_days: where to sample, days from the axis start (default: the step centres).
        device: None for the numpy path; "cpu"/"cuda" for the torch path (float64).

    Returns:
        ``(S, C, N)`` float64 smoothed values (NaN on invalid pixels), ``(N,)`` valid, and
        ``(N,)`` number of observations with positive weight inside the grid.
    """
    nodes = fine_grid(params)
    if at_days is None:
        at_days = (np.arange(params.n_steps) + 0.5) * params.step_days
    bmat, inside = binning_matrix(np.asarray(obs_days, dtype=np.float64), nodes)
    t, c, n = values.shape
    w = np.where(inside[:, None], weights, 0.0)
    pos = w > 0
    yv = np.where(pos[:, None, :], values, 0.0)
    wsum = bmat @ w  # (G, N)
    wy = (bmat @ (w[:, None, :] * yv).reshape(t, c * n)).reshape(nodes.size, c, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ybar = wy / wsum[:, None, :]
    n_obs = pos.sum(axis=0)
    lam = grid_lambda(params)
    if device is None:
        res = whittaker(ybar, wsum, lam, params.order)
        z, valid = res.z, res.valid
    else:
        import torch  # lazy: torch (~1 s import) only on this path

        res = whittaker_torch(
            torch.as_tensor(ybar, dtype=torch.float64, device=device),
            torch.as_tensor(wsum, dtype=torch.float64, device=device),
            lam,
            params.order,
        )
        z, valid = res.z.cpu().numpy(), res.valid.cpu().numpy()
    valid = valid & (n_obs >= params.min_obs)
    smat = sampling_matrix(nodes, np.asarray(at_days, dtype=np.float64))
    out = (smat @ np.nan_to_num(z).reshape(nodes.size, c * n)).reshape(smat.shape[0], c, n)
    out[:, :, ~valid] = np.nan
    return out, valid, n_obs


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


def pixel_size_m(raw: xr.DataArray) -> float:
    """Pixel size, metres: ``attrs["resolution_m"]``, else the spacing of the ``x`` coordinate
    (a projected grid), else 10. Converts the cloud buffer (and shadow reach) to pixels."""
    if "resolution_m" in raw.attrs:
        return float(raw.attrs["resolution_m"])
    x = np.asarray(raw["x"].values, dtype=np.float64) if "x" in raw.coords else np.zeros(0)
    step = float(abs(x[1] - x[0])) if x.size > 1 else 0.0
    return step if step >= 0.5 else 10.0  # < 0.5: degrees or pixel indices, not metres


def observation_weights(
    raw: xr.DataArray, params: PreprocessParams, keep: np.ndarray | None = None
) -> np.ndarray:
    """``(T, Y, X)`` float32 cloud/shadow/snow weights of the raw cube (before NaN checks).

    Uses SCL or the spectral rule as ``params.clouds.method`` says ("auto": SCL if present).
    """
    have = [str(b) for b in raw["band"].values]
    method = params.clouds.method
    if method == "auto":
        method = "scl" if SCL in have else "spectral"
    res = pixel_size_m(raw)
    tsel = slice(None) if keep is None else np.nonzero(keep)[0]
    nt = raw.sizes["time"] if keep is None else int(np.count_nonzero(keep))
    if method == "scl":  # pick the band first: never copy the whole cube
        scl = np.asarray(raw.sel(band=SCL).isel(time=tsel).values, dtype=np.float32)
        w = scl_weights(scl, params.clouds, res)
    elif method == "spectral":  # the mask's bands that the cube has; it says what it lacks
        names = tuple(b for b in MASK_BANDS if b in have) or ("B02", "B04", "B08")
        refl = np.asarray(raw.sel(band=list(names)).isel(time=tsel).values, dtype=np.float32)
        y = np.asarray(raw["y"].values) if "y" in raw.coords else np.zeros(0)
        w = spectral_weights(
            refl,
            names,
            params.clouds,
            res,
            sun=cube_sun_angles(raw, None if keep is None else np.nonzero(keep)[0]),
            y_ascending=bool(y.size > 1 and y[1] > y[0]),
        )
    else:
        w = np.ones((nt, raw.sizes["y"], raw.sizes["x"]), dtype=np.float32)
    return w


def preprocess(
    raw: xr.DataArray,
    params: PreprocessParams,
    *,
    device: str | None = None,
    rows_per_block: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> xr.Dataset:
    """Raw tile cube -> model-ready features on the fixed time axis, plus a quality layer.

    Args:
        raw: ``(time, band, y, x)`` float32 reflectance cube with SCL (the raw cube contract
            of geoxai.io.cube); may be dask-backed (read block by block).
        params: what to do.
        device: None for the numpy path, "cpu" or "cuda" for the torch path.
        rows_per_block: image rows solved together (bounds memory).
        progress: called as ``progress(rows_done, rows_total)``.

    Returns:
        Dataset with

        * ``features`` ``(time, band, y, x)`` float32, NaN-free; ``time`` = :func:`time_axis`,
          ``band`` = :func:`feature_names`; reflectance (or [-1, 1] when normalized);
          0 on nodata pixels.
        * ``valid`` ``(y, x)`` bool: False = nodata (too few clear observations).
        * ``n_obs`` ``(y, x)`` int16: observations with positive weight in axis + margins.
        * ``max_gap_days`` ``(y, x)`` float32: longest stretch of the axis without a clear
          observation (axis edges count as gap ends).

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
    days = _days(np.asarray(raw["time"].values), origin)
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
    if ti.size:
        weights = observation_weights(raw, params, keep)
    span = sp.n_steps * sp.step_days
    lo_clip, hi_clip = sp.clip
    idx_lim = np.array([1.5 if n == "EVI" else 1.0 for n in params.indices.indices])
    for r0 in range(0, ny, rows_per_block):
        r1 = min(r0 + rows_per_block, ny)
        if ti.size == 0:
            break
        block = raw.isel(time=ti, y=slice(r0, r1)).sel(band=list(params.bands))
        refl = np.asarray(block.values, dtype=np.float32).reshape(ti.size, nb, -1)
        w = weights[:, r0:r1].reshape(ti.size, -1) * np.isfinite(refl).all(axis=1)
        refl = np.where(w[:, None, :] > 0, refl, 0.0).astype(np.float32)
        idx = compute_indices(refl, params.bands, params.indices, axis=1)
        values = np.concatenate([refl, idx], axis=1)
        sm, ok, cnt = smooth_series(values, w, days_k, sp, device=device)
        sm[:, :nb] = np.clip(sm[:, :nb], lo_clip, hi_clip)
        sm[:, nb:] = np.clip(sm[:, nb:], -idx_lim[None, :, None], idx_lim[None, :, None])
        sm[:, :, ~ok] = 0.0
        shape = (r1 - r0, nx)
        out[:, :, r0:r1] = sm.reshape(sp.n_steps, nf, *shape).astype(np.float32)
        valid[r0:r1] = ok.reshape(shape)
        n_obs[r0:r1] = np.minimum(cnt, np.iinfo(np.int16).max).reshape(shape)
        max_gap[r0:r1] = _max_gap(w > 0, days_k, span).reshape(shape)
        if progress is not None:
            progress(r1, ny)
    if ti.size == 0:
        max_gap[:] = span
    if params.normalization is not None:
        out = normalize(out, feats, params.normalization, axis=1)
        out[:, :, ~valid] = 0.0
    return _as_dataset(raw, params, out, valid, n_obs, max_gap, ti)


def _max_gap(pos: np.ndarray, days: np.ndarray, span: float) -> np.ndarray:
    """``(N,)`` longest interval of ``[0, span]`` without a positive observation."""
    t = np.broadcast_to(days[:, None], pos.shape)
    inside = pos & (t >= 0) & (t <= span)
    tv = np.where(inside, t, -np.inf)
    prev = np.maximum.accumulate(np.vstack([np.zeros((1, pos.shape[1])), tv]), axis=0)[:-1]
    gaps = np.where(inside, t - prev, 0.0)
    last = np.maximum(tv.max(axis=0), 0.0)
    return np.maximum(gaps.max(axis=0), span - last).astype(np.float32)


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
