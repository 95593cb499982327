"""Per-pixel choice of the Whittaker smoothing strength by leave-one-out cross-validation.

One lambda does not fit every landscape (a crop field changes within weeks, a forest over a
season) nor every pixel's noise (undetected clouds). The smoother here is linear in the data,
so the error it would make on an observation it had *not* seen is known exactly from one fit
(the leave-one-out identity of linear smoothers)::

    y_i - z_(-i)(t_i) = (y_i - z(t_i)) / (1 - H_ii),   H = B (B' W B + lambda P)^-1 B' W

where ``B`` holds each observation's two linear-interpolation weights on the nodes around
its exact time (:func:`geoxai.temporal.binning.bin_to_grid`). For each candidate
``(order, lambda)`` of :data:`CANDIDATES` and each pixel, the criterion is the weighted
leave-one-out error over its observations, summed over the criterion channels::

    CV = sum_c sum_i w_i ((y_ic - z_c(t_i)) / (1 - H_ii))^2

and the pixel takes the candidate with the smallest CV (ties: the smoother one); a pixel with
fewer than :data:`MIN_CHOICE_OBS` weighted observations takes the first, near-interpolating
one. ``H_ii = w_i b_i' Z b_i`` needs the diagonal and first off-diagonal of
``Z = (B' W B + lambda P)^-1``, computed from the same ``L D L'`` factor as the fit by the
banded-inverse recursion (Hutchinson & de Hoog 1985), ``O(n d^2)`` per pixel.

Seamless by construction: the choice depends only on the pixel's own series (no tile-level
statistic), so two tiles that share a pixel choose the same candidate for it. The cost is one
factorization, one solve per criterion channel and one recursion per candidate; the smoothing
itself then runs once per pixel at its chosen candidate (pixels grouped by candidate). Measured
in benchmarks/bench_lambda.py; the choice kernel is compiled with numba.

This module is the temporary flat home of ``geoxai/temporal/lambda_select.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.temporal.whittaker import (
    HAVE_NUMBA,
    block_px,
    check_lambda,
    difference_penalty_bands,
    ldl_block,
    numba_threads,
    whittaker,
    whittaker_torch,
)

if HAVE_NUMBA:
    from numba import njit as _njit
    from numba import prange as _prange
else:  # pragma: no cover
    _prange = range  # type: ignore[misc]

__all__ = [
    "CANDIDATES",
    "MIN_CHOICE_OBS",
    "LambdaChoice",
    "check_candidates",
    "lambda_cv",
    "choose",
    "select_lambda",
    "smooth_selected",
]

CANDIDATES: tuple[tuple[int, float], ...] = (
    (1, 0.001),
    (1, 0.01),
    (1, 0.03),
    (1, 0.1),
    (1, 0.3),
    (1, 1.0),
)
"""Default ``(order, lambda)`` candidates; lambda on the ``lambda_step_days`` (15-day) scale.

All order 1: gaps are bridged by straight lines and the curve is held flat at the ends. The
first, ``(1, 0.001)``, nearly interpolates the clear observations (order 1 with lambda -> 0
*is* linear interpolation of observations on nodes; between nodes the curve can bend only
at nodes), so every pixel can fall back to (near) linear interpolation; the others trade
fidelity for noise removal. Measured on the real series
(README, "Smoothing strength and held-out error"): order-2 candidates (the reference's
penalty, lambda 0.3 ... 100) won on the 118-date patch by less than this set does, and lost to
linear interpolation on the composites and the eo-learn NDVI, where their curvature
overshoots between sparse, noisy observations."""

MIN_CHOICE_OBS = 5
"""Fewest weighted observations of a pixel for its own choice; below it the pixel takes the
first candidate (near-interpolation). Leave-one-out over 4 or fewer points cannot tell noise
from signal: on the openEO winter composites (~5 clear dates, 3-4 after hiding a third) it
chose smoothing that lost to linear interpolation on held-out observations (0.1365 vs 0.1327)."""


def check_candidates(candidates: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    """Validate ``(order, lambda)`` pairs; return them as a tuple of (int, float) tuples."""
    try:
        out = tuple((int(o), float(lam)) for o, lam in candidates)
    except (TypeError, ValueError):
        raise ConfigError(
            f"lambda candidates {candidates!r} must be (order, lambda) pairs like "
            "((2, 1.0), (2, 10.0))."
        ) from None
    if not out:
        raise ConfigError("lambda candidates are empty; give at least one (order, lambda) pair.")
    for o, lam in out:
        check_lambda(lam, o)
    if len(set(out)) != len(out):
        raise ConfigError(f"lambda candidates {out} repeat a pair.")
    return out


@dataclass(frozen=True)
class LambdaChoice:
    """Result of :func:`select_lambda`.

    Attributes:
        index: ``(N,)`` int index into the candidates of each pixel's choice (0 where no
            candidate could be scored: fewer weighted observations than the order + 1).
        cv: ``(K, N)`` float64 leave-one-out criterion of every candidate (inf: not scorable).
    """

    index: np.ndarray
    cv: np.ndarray


def _cv_blocks(y, w, lo, frac, g, bands, orders, lams, blk, cv):  # type: ignore[no-untyped-def]
    """Leave-one-out criterion of every candidate for blocks of ``blk`` pixels (compiled).

    ``y`` ``(T, Cc, N)`` criterion channels of the observations (anything where ``w`` is 0),
    ``w`` ``(T, N)``, ``lo``/``frac`` ``(T,)`` where each observation sits between nodes
    (``lo = -1``: outside), ``g`` nodes, ``bands`` ``(K, pmax + 1, G)`` penalty bands of each
    candidate's order (zero-padded), ``orders`` ``(K,)``, ``lams`` ``(K,)`` grid lambdas; fills
    ``cv`` ``(K, N)`` (inf where a pixel has no more weighted observations than the order).
    Per candidate: the banded ``L D L'`` factor of ``B' W B + lambda P`` (as
    :func:`geoxai.temporal.whittaker._smooth_blocks` computes it), one solve per channel, and
    the diagonal and first off-diagonal of the inverse by the recursion
    ``Z = D^-1 L^-1 + (I - L') Z`` from the last row up (``zb[m, i] = Z[i, i + m]``); an
    observation's leverage is ``w b' Z b`` with ``b`` its two interpolation weights.
    """
    t, nc, npx = y.shape
    nk = orders.shape[0]
    pmax = bands.shape[1] - 1
    nblk = (npx + blk - 1) // blk
    for ib in _prange(nblk):
        s = ib * blk
        m = min(s + blk, npx) - s
        wd = np.zeros((g, m))
        wo = np.zeros((g, m))
        wc = np.empty((g, m))
        oc = np.empty((g, m))
        low = np.zeros((pmax + 1, g, m))
        dinv = np.empty((g, m))
        piv = np.empty((g, m))
        zb = np.zeros((pmax + 1, g, m))
        bb = np.empty((g, m))
        acc = np.zeros(m)
        npos = np.zeros(m, dtype=np.int64)
        for i in range(t):
            j = lo[i]
            if j < 0:
                continue
            f = frac[i]
            for q in range(m):
                wv = w[i, s + q]
                if wv > 0:
                    npos[q] += 1
                    wd[j, q] += wv * (1.0 - f) * (1.0 - f)
                    wd[j + 1, q] += wv * f * f
                    wo[j + 1, q] += wv * f * (1.0 - f)
        for kk in range(nk):
            p = orders[kk]
            lam = lams[kk]
            for i in range(g):
                for q in range(m):
                    wc[i, q] = wd[i, q] if npos[q] > p else 1.0
                    oc[i, q] = wo[i, q] if npos[q] > p else 0.0
            ldl_block(wc, oc, bands[kk], lam, p, low, piv, dinv)
            for i in range(g - 1, -1, -1):  # band of the inverse (p >= 1: Z[i, i + 1] too)
                kmax = min(p, g - 1 - i)
                for mo in range(kmax, 0, -1):
                    for q in range(m):
                        zb[mo, i, q] = 0.0
                    for k in range(1, kmax + 1):
                        d = k - mo if k >= mo else mo - k
                        r = i + (k if k < mo else mo)
                        for q in range(m):
                            zb[mo, i, q] -= low[k, i + k, q] * zb[d, r, q]
                for q in range(m):
                    zb[0, i, q] = dinv[i, q]
                for k in range(1, kmax + 1):
                    for q in range(m):
                        zb[0, i, q] -= low[k, i + k, q] * zb[k, i, q]
            for q in range(m):
                acc[q] = 0.0
            for c in range(nc):
                for i in range(g):
                    for q in range(m):
                        bb[i, q] = 0.0
                for i in range(t):  # right-hand side B' W y
                    j = lo[i]
                    if j < 0:
                        continue
                    f = frac[i]
                    for q in range(m):
                        wv = w[i, s + q]
                        if wv > 0 and npos[q] > p:
                            wy = wv * y[i, c, s + q]
                            bb[j, q] += wy * (1.0 - f)
                            bb[j + 1, q] += wy * f
                for i in range(1, g):
                    for k in range(1, min(i, p) + 1):
                        for q in range(m):
                            bb[i, q] = bb[i, q] - low[k, i, q] * bb[i - k, q]
                for i in range(g - 1, -1, -1):
                    for q in range(m):
                        bb[i, q] = bb[i, q] * dinv[i, q]
                    for k in range(1, min(g - 1 - i, p) + 1):
                        for q in range(m):
                            bb[i, q] = bb[i, q] - low[k, i + k, q] * bb[i + k, q]
                for i in range(t):  # leave-one-out residual of every observation
                    j = lo[i]
                    if j < 0:
                        continue
                    f = frac[i]
                    a2, b2, ab = (1.0 - f) * (1.0 - f), f * f, 2.0 * f * (1.0 - f)
                    for q in range(m):
                        wv = w[i, s + q]
                        if wv > 0:
                            z = (1.0 - f) * bb[j, q] + f * bb[j + 1, q]
                            h = wv * (a2 * zb[0, j, q] + b2 * zb[0, j + 1, q] + ab * zb[1, j, q])
                            den = max(1.0 - h, 1e-12)
                            r = (y[i, c, s + q] - z) / den
                            acc[q] += wv * r * r
            for q in range(m):
                cv[kk, s + q] = acc[q] if npos[q] > p else np.inf


if HAVE_NUMBA:
    _cv_blocks_nb = _njit(parallel=True, cache=True, fastmath=False, nogil=True)(_cv_blocks)


def lambda_cv(
    values: np.ndarray,
    weights: np.ndarray,
    candidates: tuple[tuple[int, float], ...],
    *,
    at: tuple[np.ndarray, np.ndarray] | None = None,
    n_nodes: int | None = None,
    scale: float = 1.0,
    channels: np.ndarray | list[int] | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """``(K, N)`` leave-one-out criterion of every candidate for every pixel.

    Args:
        values: ``(T, C, N)`` observations (anything where the weight is 0).
        weights: ``(T, N)`` observation weights >= 0.
        candidates: ``(order, lambda)`` pairs (see :data:`CANDIDATES`).
        at: ``(lo, frac)``, each ``(T,)``: where each observation sits on a grid of
            ``n_nodes`` nodes (:func:`geoxai.temporal.binning.obs_nodes`; ``lo = -1``:
            outside, ignored). None: the observations are the nodes of a regular grid
            (``T`` nodes).
        n_nodes: nodes of the grid ``at`` refers to (required with ``at``).
        scale: ratio of the candidates' lambda step to the grid step; a candidate's grid
            lambda is ``lambda * scale ** (2 order - 1)``
            (see :func:`geoxai.temporal.smoothing.grid_lambda`).
        channels: indices of the ``C`` channels summed into the criterion (default all).
        threads: threads of the compiled kernel (None: ``OMP_NUM_THREADS``, else numba's).

    Returns:
        float64 ``(K, N)``: ``sum_c sum_i w_i ((y_ic - z(t_i)_c) / (1 - H_ii))^2`` over the
        observations ``i``; inf where a pixel has no more weighted observations than the
        candidate's order.
    """
    candidates = check_candidates(candidates)
    values = np.asarray(values)
    weights = np.asarray(weights, dtype=np.float64)
    if values.ndim != 3 or weights.shape != (values.shape[0], values.shape[2]):
        raise InvalidInputError(
            f"lambda_cv needs values (T, C, N) and weights (T, N); got {values.shape}, "
            f"{weights.shape}."
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise InvalidInputError("lambda_cv: weights must be finite and >= 0.")
    t = values.shape[0]
    if at is None:
        g = t
        lo = np.minimum(np.arange(t), max(t - 2, 0)).astype(np.int64)
        frac = (np.arange(t) > lo).astype(np.float64)
    else:
        if n_nodes is None:
            raise InvalidInputError("lambda_cv: give n_nodes, the grid that `at` refers to.")
        g = int(n_nodes)
        lo = np.ascontiguousarray(at[0], dtype=np.int64)
        frac = np.ascontiguousarray(at[1], dtype=np.float64)
        if lo.shape != (t,) or frac.shape != (t,):
            raise InvalidInputError(
                f"lambda_cv: at holds {lo.shape} and {frac.shape} positions for {t} observations."
            )
    pmax = max(o for o, _ in candidates)
    if g <= pmax:
        raise InvalidInputError(
            f"A grid of {g} nodes is too short for order-{pmax} candidates; use at least "
            f"{pmax + 1} nodes."
        )
    ch = np.arange(values.shape[1]) if channels is None else np.asarray(channels, dtype=np.int64)
    y = np.where(weights[:, None, :] > 0, values[:, ch, :], 0.0).astype(np.float64)
    if not np.isfinite(y).all():
        raise InvalidInputError(
            "lambda_cv: values are NaN/inf where the weight is positive; give those "
            "observations weight 0."
        )
    bands = np.zeros((len(candidates), pmax + 1, g))
    for k, (o, _) in enumerate(candidates):
        bands[k, : o + 1] = difference_penalty_bands(g, o)
    orders = np.array([o for o, _ in candidates], dtype=np.int64)
    lams = np.array([lam * scale ** (2 * o - 1) for o, lam in candidates])
    cv = np.empty((len(candidates), values.shape[2]))
    kernel = _cv_blocks_nb if HAVE_NUMBA else _cv_blocks
    args = (y, weights, lo, frac, g, bands, orders, lams, block_px(g), cv)
    if HAVE_NUMBA:
        import numba  # lazy: numba JIT only when the kernel runs

        before = numba.get_num_threads()
        numba.set_num_threads(numba_threads(threads))
        try:
            kernel(*args)
        finally:
            numba.set_num_threads(before)
    else:  # pragma: no cover - numba is a dependency; the plain loops are very slow
        kernel(*args)
    return cv


def choose(
    cv: np.ndarray,
    pool_px: int = 0,
    n_obs: np.ndarray | None = None,
    min_obs: int = MIN_CHOICE_OBS,
) -> np.ndarray:
    """Index of the chosen candidate per pixel from the criterion, pooled over a window.

    Args:
        cv: ``(K, N)`` or ``(K, Y, X)`` criterion (:func:`lambda_cv`); inf = not scorable.
        pool_px: with a ``(K, Y, X)`` criterion, sum each candidate's criterion, normalized
            per pixel, over the ``(2 pool_px + 1)^2`` window around the pixel before the
            choice (a steadier choice; the window is the pixel's own neighbourhood, so the
            choice stays seamless for tiles whose halo covers it).
        n_obs: weighted observations per pixel, shaped like ``cv[0]``; pixels with fewer
            than ``min_obs`` take candidate 0 (see :data:`MIN_CHOICE_OBS`). None: no
            such rule.
        min_obs: see ``n_obs``.

    Returns:
        int64 index shaped like ``cv[0]``; ties go to the later (in :data:`CANDIDATES`:
        smoother) candidate; pixels nobody can score, or with too few observations, get 0.
    """
    k = cv.shape[0]
    finite = np.isfinite(cv)
    scorable = finite.any(axis=0)
    # normalize per pixel so that every pixel weighs the same in the pooled sum
    best = np.where(finite, cv, np.inf).min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(finite, cv / np.maximum(best, 1e-30), 1e6)
    if pool_px > 0:
        if cv.ndim != 3:
            raise InvalidInputError(
                f"choose(pool_px={pool_px}) needs the criterion as (K, Y, X); got {cv.shape}."
            )
        norm = np.where(scorable[None], norm, 1.0)
        norm = uniform_filter(norm, size=(1, 2 * pool_px + 1, 2 * pool_px + 1), mode="nearest")
    index = (k - 1 - np.argmin(norm[::-1], axis=0)).astype(np.int64)
    index[~scorable] = 0
    if n_obs is not None:
        index[np.asarray(n_obs).reshape(index.shape) < min_obs] = 0
    return index


def select_lambda(
    values: np.ndarray,
    weights: np.ndarray,
    candidates: tuple[tuple[int, float], ...],
    *,
    at: tuple[np.ndarray, np.ndarray] | None = None,
    n_nodes: int | None = None,
    scale: float = 1.0,
    channels: np.ndarray | list[int] | None = None,
) -> LambdaChoice:
    """Per-pixel (unpooled) choice: :func:`lambda_cv` (same arguments) then :func:`choose`."""
    cv = lambda_cv(
        values, weights, candidates, at=at, n_nodes=n_nodes, scale=scale, channels=channels
    )
    inside = np.ones(np.shape(weights)[0], bool) if at is None else np.asarray(at[0]) >= 0
    n_obs = ((np.asarray(weights) > 0) & inside[:, None]).sum(axis=0)
    return LambdaChoice(index=choose(cv, n_obs=n_obs), cv=cv)


def smooth_selected(
    ybar: np.ndarray,
    wsum: np.ndarray,
    candidates: tuple[tuple[int, float], ...],
    index: np.ndarray,
    *,
    scale: float = 1.0,
    min_points: int | None = None,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Whittaker smoothing of every pixel at its chosen candidate (pixels grouped by choice).

    Args:
        ybar: ``(G, C, N)`` node values; ``wsum`` ``(G, N)`` node weights.
        candidates: the ``(order, lambda)`` pairs ``index`` points into.
        index: ``(N,)`` chosen candidate per pixel.
        scale: as in :func:`select_lambda`.
        min_points: fewest weighted nodes of a valid pixel (default: the candidate's order).
        device: None (numpy/numba) or a torch device ("cpu", "cuda").

    Returns:
        ``z`` ``(G, C, N)`` float64 (NaN on invalid pixels) and ``valid`` ``(N,)``.
    """
    g, c, npx = ybar.shape
    z = np.full((g, c, npx), np.nan)
    valid = np.zeros(npx, dtype=bool)
    for k, (order, lam) in enumerate(candidates):
        sel = np.nonzero(index == k)[0]
        if sel.size == 0:
            continue
        lg = lam * scale ** (2 * order - 1)
        need = max(order, int(min_points or order))
        yk, wk = ybar[:, :, sel], wsum[:, sel]
        if device is None:
            res = whittaker(yk, wk, lg, order, min_points=need)
            zk, vk = res.z, res.valid
        else:
            import torch  # lazy: torch (~1 s import) only on this path

            res = whittaker_torch(
                torch.as_tensor(yk, dtype=torch.float64, device=device),
                torch.as_tensor(wk, dtype=torch.float64, device=device),
                lg,
                order,
                min_points=need,
            )
            zk, vk = res.z.cpu().numpy(), res.valid.cpu().numpy()
        z[:, :, sel] = zk
        valid[sel] = vk
    return z, valid
