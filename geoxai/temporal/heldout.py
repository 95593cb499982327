"""Held-out evaluation of the temporal smoothing: hide clear observations, smooth, score.

How well does the smoothed curve reconstruct a pixel's series? Hide some of its clear
observations (weight set to 0), smooth what is left with the run's parameters, and compare the
curve at the hidden dates with the hidden values. The same hidden observations are predicted by
four baselines, so a score is read against something:

* ``nearest_raw``: the value of the nearest acquisition in time at that pixel, clouds included
  (what a user gets without any cloud mask);
* ``nearest_clear``: the value of the nearest remaining clear observation of the pixel;
* ``linear``: linear interpolation in time between the pixel's remaining clear observations
  (held constant before the first and after the last);
* ``reference``: the Whittaker smoother with the reference's fixed lambda (100 on 15 days).

Which observations are hidden (:func:`hide_clear`): every ``every``-th clear observation of a
pixel inside the time axis (weight >= ``clear_weight``), staggered by pixel so that the hidden
dates differ between neighbours; deterministic, so a rerun scores the same observations.

:func:`heldout_score` is what a user calls on arrays; in a mapping run :class:`TileHeldout`
scores a lattice sample of each tile's pixels while :func:`geoxai.temporal.smoothing.preprocess`
smooths it (as its ``block_hook``); the run records the result per tile and shows it in
``report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from geoxai.errors import ConfigError, InvalidInputError, NoDataError
from geoxai.temporal.binning import obs_nodes
from geoxai.temporal.lambda_select import choose, lambda_cv
from geoxai.temporal.smoothing import criterion_channels, fine_grid, pixel_size_m, smooth_series

__all__ = [
    "BASELINES",
    "METHODS",
    "HeldoutParams",
    "HeldoutScore",
    "hide_clear",
    "baseline_predictions",
    "heldout_score",
    "sample_pixels",
    "TileHeldout",
]

BASELINES = ("nearest_raw", "nearest_clear", "linear", "reference")
"""Baselines every score is compared with (see the module docstring)."""
METHODS = ("smooth", *BASELINES)
"""Score keys: the smoother as configured, then the baselines."""


@dataclass(frozen=True)
class HeldoutParams:
    """Which observations are hidden, and how many pixels a tile scores.

    Attributes:
        every: hide every ``every``-th clear observation of a pixel (>= 2; 3 hides a third).
        clear_weight: observations with a weight >= this are clear (candidates to hide).
        reference_lambda: lambda of the ``reference`` baseline, on the 15-day scale.
        sample_step: in a run, score the pixels on a lattice of this step, pixels (both axes).
        max_pixels: at most this many lattice pixels per block (every k-th of them).
    """

    every: int = 3
    clear_weight: float = 1.0
    reference_lambda: float = 100.0
    sample_step: int = 12
    max_pixels: int = 2500

    def __post_init__(self) -> None:
        if not (isinstance(self.every, int) and self.every >= 2):
            raise ConfigError(
                f"HeldoutParams.every={self.every!r} must be an integer >= 2 (hide every "
                "every-th clear observation; 3 hides a third)."
            )
        if not (0.0 < self.clear_weight <= 1.0):
            raise ConfigError(
                f"HeldoutParams.clear_weight={self.clear_weight!r} must be in (0, 1]."
            )
        if not (np.isfinite(self.reference_lambda) and self.reference_lambda > 0):
            raise ConfigError(
                f"HeldoutParams.reference_lambda={self.reference_lambda!r} must be > 0."
            )
        for name in ("sample_step", "max_pixels"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ConfigError(f"HeldoutParams.{name}={v!r} must be an integer >= 1.")


@dataclass(frozen=True)
class HeldoutScore:
    """Held-out RMSE of the smoother and of the baselines.

    Attributes:
        channels: names of the scored channels (bands), length ``C``.
        n_pixels: pixels with at least one hidden observation.
        n_held: hidden observations (per channel).
        sse: ``{method: (C,) float64}`` sums of squared errors over the hidden observations
            (keys :data:`METHODS`); sums, so that scores of blocks and tiles add up.
    """

    channels: tuple[str, ...]
    n_pixels: int
    n_held: int
    sse: dict[str, np.ndarray]

    def rmse(self, method: str = "smooth") -> np.ndarray:
        """``(C,)`` RMSE per channel of ``method`` (units of the values)."""
        if self.n_held == 0:
            return np.full(len(self.channels), np.nan)
        return np.sqrt(self.sse[method] / self.n_held)

    def mean_rmse(self, method: str = "smooth") -> float:
        """Mean over channels of the per-channel RMSE."""
        return float(np.mean(self.rmse(method)))

    def wins(self, against: str, method: str = "smooth") -> int:
        """Number of channels on which ``method`` has a lower RMSE than ``against``."""
        return int((self.rmse(method) < self.rmse(against)).sum())

    def __add__(self, other: HeldoutScore) -> HeldoutScore:
        if other.channels != self.channels:
            raise InvalidInputError(
                f"Held-out scores of channels {other.channels} and {self.channels} cannot be added."
            )
        return HeldoutScore(
            self.channels,
            self.n_pixels + other.n_pixels,
            self.n_held + other.n_held,
            {m: self.sse[m] + other.sse[m] for m in METHODS},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: per-channel and mean RMSE of every method (for tile records)."""
        return {
            "channels": list(self.channels),
            "n_pixels": int(self.n_pixels),
            "n_held": int(self.n_held),
            "rmse": {m: [round(float(v), 6) for v in self.rmse(m)] for m in METHODS},
            "mean_rmse": {m: round(self.mean_rmse(m), 6) for m in METHODS},
        }

    def table(self) -> str:
        """Markdown table: one row per method, RMSE per channel and the mean."""
        head = "| method | " + " | ".join(self.channels) + " | mean |"
        rows = [head, "|" + "---|" * (len(self.channels) + 2)]
        for m in METHODS:
            cells = " | ".join(f"{v:.4f}" for v in self.rmse(m))
            rows.append(f"| {m} | {cells} | {self.mean_rmse(m):.4f} |")
        return "\n".join(rows)

    @staticmethod
    def empty(channels: tuple[str, ...]) -> HeldoutScore:
        """A score of nothing (adds neutrally)."""
        return HeldoutScore(tuple(channels), 0, 0, {m: np.zeros(len(channels)) for m in METHODS})


def hide_clear(
    weights: np.ndarray, obs_days: np.ndarray, span_days: float, params: HeldoutParams
) -> np.ndarray:
    """``(T, N)`` bool: the clear observations to hide.

    Args:
        weights: ``(T, N)`` observation weights (0 = not observed/cloudy).
        obs_days: ``(T,)`` acquisition days from the axis start.
        span_days: length of the axis, days (only observations in ``[0, span_days)`` are hidden).
        params: which ones (every ``every``-th clear one of a pixel, staggered by pixel).
    """
    t = np.asarray(obs_days, dtype=np.float64)[:, None]
    clear = (weights >= params.clear_weight) & (t >= 0) & (t < span_days)
    rank = np.cumsum(clear, axis=0)
    stagger = np.arange(weights.shape[1])[None, :] % params.every
    return clear & (((rank + stagger) % params.every) == 0)


def _prev_next(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the previous/next True at or before/after each row (-1 / T if none)."""
    t_count = pos.shape[0]
    idx = np.arange(t_count)[:, None]
    prev = np.maximum.accumulate(np.where(pos, idx, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(pos, idx, t_count)[::-1], axis=0)[::-1]
    return prev, nxt


def _nearest(pos: np.ndarray, obs_days: np.ndarray, exclude_self: bool) -> np.ndarray:
    """``(T, N)`` index of the nearest True of ``pos`` in time (ties: earlier); -1 if none."""
    t_count, n = pos.shape
    if exclude_self:  # nearest *other* acquisition: look strictly before and strictly after
        before = np.vstack([np.zeros((1, n), bool), pos[:-1]])
        after = np.vstack([pos[1:], np.zeros((1, n), bool)])
        prev, _ = _prev_next(before)
        prev = np.where(prev >= 0, prev - 1, -1)
        _, nxt = _prev_next(after)
        nxt = np.where(nxt < t_count, nxt + 1, t_count)
    else:
        prev, nxt = _prev_next(pos)
    d = np.asarray(obs_days, dtype=np.float64)[:, None]
    dp = np.where(prev >= 0, d - np.asarray(obs_days)[np.clip(prev, 0, None)], np.inf)
    dn = np.where(nxt < t_count, np.asarray(obs_days)[np.clip(nxt, None, t_count - 1)] - d, np.inf)
    best = np.where(dp <= dn, prev, nxt)
    return np.where(np.isfinite(np.minimum(dp, dn)), best, -1)


def _take(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``values[idx[t, n], :, n]`` as ``(T, C, N)``; NaN where ``idx`` is -1."""
    t_count, c, n = values.shape
    safe = np.clip(idx, 0, t_count - 1)
    out = np.take_along_axis(values, np.broadcast_to(safe[:, None, :], (t_count, c, n)), axis=0)
    return np.where((idx >= 0)[:, None, :], out, np.nan)


def baseline_predictions(
    values: np.ndarray, weights: np.ndarray, obs_days: np.ndarray
) -> dict[str, np.ndarray]:
    """Predictions of the non-smoothing baselines at every acquisition.

    Args:
        values: ``(T, C, N)`` observations, NaN where not observed.
        weights: ``(T, N)`` weights *after* hiding (the hidden ones are 0).
        obs_days: ``(T,)`` acquisition days, increasing.

    Returns:
        ``{"nearest_raw", "nearest_clear", "linear"}`` each ``(T, C, N)`` float64 (NaN where a
        pixel has nothing to predict from).
    """
    finite = np.isfinite(values).all(axis=1)
    clear = weights > 0
    out = {
        "nearest_raw": _take(values, _nearest(finite, obs_days, exclude_self=True)),
        "nearest_clear": _take(values, _nearest(clear, obs_days, exclude_self=False)),
    }
    prev, nxt = _prev_next(clear)
    d = np.asarray(obs_days, dtype=np.float64)
    t_count = d.size
    vp, vn = _take(values, prev), _take(values, np.where(nxt < t_count, nxt, -1))
    dp = d[np.clip(prev, 0, None)]
    dn = d[np.clip(nxt, None, t_count - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(nxt > prev, (d[:, None] - dp) / (dn - dp), 0.0)
    lin = vp + frac[:, None, :] * (vn - vp)
    lin = np.where(np.isnan(vp), vn, np.where(np.isnan(vn), vp, lin))  # hold at the ends
    out["linear"] = lin
    return out


def heldout_score(
    values: np.ndarray,
    weights: np.ndarray,
    obs_days: np.ndarray,
    smoothing: Any,
    *,
    channels: tuple[str, ...] | None = None,
    params: HeldoutParams | None = None,
    device: str | None = None,
    shape: tuple[int, int] | None = None,
) -> HeldoutScore:
    """Hide clear observations, smooth the rest, and score the smoother and the baselines.

    Args:
        values: ``(T, C, N)`` observations (e.g. reflectance), NaN where not observed.
        weights: ``(T, N)`` observation weights (0 = cloudy/missing), as the smoother reads.
        obs_days: ``(T,)`` acquisition days from the axis start of ``smoothing``.
        smoothing: the :class:`geoxai.temporal.smoothing.SmoothingParams` to evaluate (its
            lambda rule).
        channels: names of the ``C`` channels (default ``c0, c1, ...``).
        params: which observations to hide (default :class:`HeldoutParams`).
        device: smoothing device (None = numpy, ``"cuda"``).
        shape: ``(Y, X)`` image shape of the ``N`` pixels (row-major): the per-pixel lambda
            choice is then pooled over ``smoothing.lambda_pool_px`` as in
            :func:`geoxai.temporal.smoothing.preprocess`; None chooses per pixel alone.

    Returns:
        :class:`HeldoutScore` over every hidden observation whose pixel stayed valid and
        which every method could predict.

    Raises:
        InvalidInputError: shapes disagree.
        NoDataError: no clear observation inside the axis to hide, or no pixel left valid
            after hiding (nothing to score).
    """
    params = params or HeldoutParams()
    values = np.asarray(values)
    weights = np.asarray(weights, dtype=np.float64)
    obs_days = np.asarray(obs_days, dtype=np.float64)
    if values.ndim != 3 or weights.shape != (values.shape[0], values.shape[2]):
        raise InvalidInputError(
            f"heldout_score needs values (T, C, N) and weights (T, N); got {values.shape} "
            f"and {weights.shape}."
        )
    if obs_days.shape != (values.shape[0],):
        raise InvalidInputError(
            f"heldout_score: obs_days has shape {obs_days.shape}, expected ({values.shape[0]},)."
        )
    names = (
        tuple(channels) if channels is not None else tuple(f"c{i}" for i in range(values.shape[1]))
    )
    if len(names) != values.shape[1]:
        raise InvalidInputError(f"heldout_score: {len(names)} channel names for {values.shape[1]}.")
    order = np.argsort(obs_days, kind="stable")
    values, weights, obs_days = values[order], weights[order], obs_days[order]
    weights = weights * np.isfinite(values).all(axis=1)
    span = smoothing.n_steps * smoothing.step_days
    held = hide_clear(weights, obs_days, span, params)
    if not held.any():
        raise NoDataError(
            f"heldout_score: no clear observation (weight >= {params.clear_weight}) inside the "
            f"{span:g}-day axis to hide among {values.shape[2]} pixels; give a series with clear "
            "dates in the target window (or lower HeldoutParams.clear_weight)."
        )
    w = np.where(held, 0.0, weights)
    filled = np.where(w[:, None, :] > 0, values, 0.0)
    preds = baseline_predictions(values, w, obs_days)
    crit = criterion_channels(names)
    choice = None
    if smoothing.lambda_ is None and shape is not None:
        if shape[0] * shape[1] != values.shape[2]:
            raise InvalidInputError(
                f"heldout_score: shape {shape} does not hold the {values.shape[2]} pixels."
            )
        nodes = fine_grid(smoothing)
        at = obs_nodes(obs_days, nodes)
        scale = smoothing.lambda_step_days / smoothing.grid_days
        cv = lambda_cv(
            filled,
            w,
            smoothing.lambda_candidates,
            at=at,
            n_nodes=nodes.size,
            scale=scale,
            channels=crit,
        )
        n_obs = ((w > 0) & (at[0] >= 0)[:, None]).sum(axis=0).reshape(shape)
        choice = choose(cv.reshape(-1, *shape), smoothing.lambda_pool_px, n_obs).ravel()
    preds["smooth"], ok, _ = smooth_series(
        filled,
        w,
        obs_days,
        smoothing,
        at_days=obs_days,
        device=device,
        criterion_channels=crit,
        choice=choice,
    )
    ref = replace(smoothing, lambda_=params.reference_lambda)
    preds["reference"], ok_ref, _ = smooth_series(
        filled, w, obs_days, ref, at_days=obs_days, device=device
    )
    scored = held & (ok & ok_ref)[None, :]
    for p in preds.values():
        scored &= np.isfinite(p).all(axis=1)
    if not scored.any():
        raise NoDataError(
            f"heldout_score: {int(held.sum())} clear observations were hidden, but no pixel kept "
            f"the {smoothing.min_obs} clear observations a valid smooth needs (SmoothingParams."
            "min_obs) among the rest; those pixels are nodata, not scorable. Give longer or "
            "clearer series (or a larger HeldoutParams.every)."
        )
    sse = {}
    for m in METHODS:
        err = np.where(scored[:, None, :], preds[m] - values, 0.0)
        sse[m] = (err**2).sum(axis=(0, 2))
    return HeldoutScore(names, int(scored.any(axis=0).sum()), int(scored.sum()), sse)


def sample_pixels(
    shape: tuple[int, int], origin: tuple[int, int], params: HeldoutParams
) -> np.ndarray:
    """Flat indices of the scored pixels of a ``(Y, X)`` block.

    The lattice is fixed in the pixel coordinates of the zone (``origin`` = the block's first
    row/column there), so two tiles score the same pixels where they overlap.
    """
    ny, nx = shape
    r0, c0 = origin
    step = params.sample_step
    rows = np.nonzero((np.arange(ny) + r0) % step == 0)[0]
    cols = np.nonzero((np.arange(nx) + c0) % step == 0)[0]
    idx = (rows[:, None] * nx + cols[None, :]).ravel()
    if idx.size > params.max_pixels:
        idx = idx[:: -(-idx.size // params.max_pixels)]
    return idx


class TileHeldout:
    """Held-out score of a tile, accumulated block by block during
    :func:`geoxai.temporal.smoothing.preprocess` (pass :meth:`add` as its ``block_hook``).

    Scores the pixels of the zone-fixed lattice (:func:`sample_pixels`) inside the tile core
    (``raw.attrs["halo_px"]``), bands only; the smoothing runs as configured, its per-pixel
    lambda choice made per pixel on the series with the hidden observations removed (the
    run pools it over neighbours, whose series are not thinned here).

    Args:
        raw: the tile's raw cube (attrs ``resolution_m``, ``halo_px``; ``y``/``x`` in metres).
        smoothing: the run's :class:`geoxai.temporal.smoothing.SmoothingParams`.
        params: which observations are hidden and the pixel lattice.
        device: smoothing device.
    """

    def __init__(
        self,
        raw: Any,
        smoothing: Any,
        params: HeldoutParams | None = None,
        device: str | None = None,
    ) -> None:
        self.smoothing = smoothing
        self.params = params or HeldoutParams()
        self.device = device
        self.halo = int(raw.attrs.get("halo_px", 0) or 0)
        self.ny = int(raw.sizes["y"])
        res = pixel_size_m(raw)
        self.origin = (0, 0)
        if raw["x"].size and np.issubdtype(raw["x"].dtype, np.number):
            self.origin = (
                int(round(-float(raw["y"].values[0]) / res)),
                int(round(float(raw["x"].values[0]) / res)),
            )
        self.score: HeldoutScore | None = None

    def add(self, block: Any, w: np.ndarray, days: np.ndarray, r0: int) -> None:
        """Score the sampled pixels of one row block (``block`` ``(T, B, rows, X)``)."""
        names = tuple(str(b) for b in block["band"].values)
        if self.score is None:
            self.score = HeldoutScore.empty(names)
        ny, nx = int(block.sizes["y"]), int(block.sizes["x"])
        px = sample_pixels((ny, nx), (self.origin[0] + r0, self.origin[1]), self.params)
        if self.halo:  # the tile's own core only (its halo belongs to the neighbours)
            rows, cols = px // nx + r0, px % nx
            inner = (rows >= self.halo) & (rows < self.ny - self.halo)
            px = px[inner & (cols >= self.halo) & (cols < nx - self.halo)]
        if px.size == 0:
            return
        t = int(block.sizes["time"])
        vals = np.asarray(block.values, dtype=np.float32).reshape(t, len(names), -1)[:, :, px]
        try:
            part = heldout_score(
                vals,
                w[:, px],
                days,
                self.smoothing,
                channels=names,
                params=self.params,
                device=self.device,
            )
        except NoDataError:  # no clear observation among these pixels: nothing to score
            return
        self.score = self.score + part

    def to_dict(self) -> dict[str, Any] | None:
        """The tile's :meth:`HeldoutScore.to_dict`, or None when nothing was scored."""
        if self.score is None or self.score.n_held == 0:
            return None
        return self.score.to_dict()
