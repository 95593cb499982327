"""Compiled kernels of the smoothing stage around the Whittaker solve: binning and sampling.

* :func:`obs_nodes`: where each acquisition sits between two nodes of the fine grid.
* :func:`clear_nonfinite`: weight 0 for observations with a NaN/inf band (in place).
* :func:`bin_to_grid`: irregular observations -> the normal equations of the Whittaker data
  term on the grid. Each observation enters at its exact time through linear-interpolation
  weights on its two neighbouring nodes (a row of ``B`` with ``1 - f`` and ``f``), so the data
  term ``B' W B`` is tridiagonal and the banded solver still applies (Eilers 2003, unequally
  spaced data). Snapping to the nearest node instead cost up to half a grid step in time
  (1.1 days on every eo-learn date), more than smoothing gained there. An index scatter, not a
  dense matmul: reads every value once, skips zero weights (their values may be NaN),
  accumulates in float64 whatever the input dtype.
* :func:`sample_held`: the smooth node values read back at any days by linear interpolation
  between nodes, held flat beyond each pixel's first/last observation (no invented values at
  the series' ends) without changing the node values.

All run over pixels in parallel blocks (numba ``prange``) with the time loop inside; with numba
missing the same functions run as plain Python loops (slow; numba is a dependency).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

from geoxai.errors import InvalidInputError
from geoxai.temporal.whittaker import HAVE_NUMBA, numba_threads

if HAVE_NUMBA:
    from numba import njit as _njit
    from numba import prange as _prange
else:  # pragma: no cover
    _prange = range  # type: ignore[misc]

__all__ = [
    "obs_nodes",
    "clear_nonfinite",
    "Binned",
    "bin_to_grid",
    "binned_buffers",
    "first_columns",
    "sample_held",
    "interp_nodes",
    "series_gaps",
    "take_last",
]

_BLK = 256
"""Pixels per parallel block of the kernels (scratch ``G * C * 256`` float64 stays in L2)."""


def obs_nodes(obs_days: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each acquisition enters the fine grid: ``(T,)`` int64 lower node (``-1`` for
    those more than half a grid step beyond the first/last node) and ``(T,)`` fraction towards
    the next node (positions clamped to the grid): the two non-zero entries
    ``1 - frac, frac`` of each row of the observation matrix ``B``."""
    step = float(nodes[1] - nodes[0])
    rel = (np.asarray(obs_days, dtype=np.float64) - nodes[0]) / step
    lo, frac = interp_nodes(nodes, obs_days)
    lo[(rel < -0.5) | (rel >= nodes.size - 0.5)] = -1
    return lo, frac


def interp_nodes(nodes: np.ndarray, at_days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(S,)`` lower node and ``(S,)`` fraction towards the next node for ``at_days`` (days on
    the nodes' axis; clamped to the grid), the rows of the linear sampling matrix."""
    step = float(nodes[1] - nodes[0])
    pos = np.clip((np.asarray(at_days, dtype=np.float64) - nodes[0]) / step, 0, nodes.size - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), nodes.size - 2)
    return lo, pos - lo


def _clear_nonfinite(values, w):  # type: ignore[no-untyped-def]
    t, c, n = values.shape
    for i in _prange(t):
        for k in range(c):
            for q in range(n):
                if not np.isfinite(values[i, k, q]):
                    w[i, q] = 0.0


def _bin_kernel(values, w, lo, frac, c_off, ybar, wsum, woff, nobs, ends, first):  # type: ignore[no-untyped-def]
    t, c, n = values.shape
    g = ybar.shape[0]
    nblk = (n + _BLK - 1) // _BLK
    for ib in _prange(nblk):
        s = ib * _BLK
        m = min(s + _BLK, n) - s
        ws = np.zeros((g, m))
        acc = np.zeros((g, m))
        for i in range(t):  # the data term B' W B: diagonal and sub-diagonal
            j = lo[i]
            if j < 0:
                continue
            f = frac[i]
            a2, b2, ab = (1.0 - f) * (1.0 - f), f * f, f * (1.0 - f)
            for q in range(m):
                wv = np.float64(w[i, s + q])
                if wv > 0:
                    ws[j, q] += wv * a2
                    ws[j + 1, q] += wv * b2
                    if first:
                        woff[j + 1, s + q] += wv * ab
                        nobs[s + q] += 1
                        ends[0, s + q] = min(ends[0, s + q], j + f)
                        ends[1, s + q] = max(ends[1, s + q], j + f)
        if first:
            for k in range(g):
                for q in range(m):
                    wsum[k, s + q] = ws[k, q]
        for ch in range(c):  # right-hand side B' W y, stored divided by the diagonal
            for k in range(g):
                for q in range(m):
                    acc[k, q] = 0.0
            for i in range(t):
                j = lo[i]
                if j < 0:
                    continue
                f = frac[i]
                for q in range(m):
                    wv = np.float64(w[i, s + q])
                    if wv > 0:
                        wy = wv * np.float64(values[i, ch, s + q])
                        acc[j, q] += wy * (1.0 - f)
                        acc[j + 1, q] += wy * f
            for k in range(g):
                for q in range(m):
                    ybar[k, c_off + ch, s + q] = acc[k, q] / ws[k, q] if ws[k, q] > 0 else np.nan


def _sample_kernel(z, ends, lo, frac, valid, cols, low, high, fill, out):  # type: ignore[no-untyped-def]
    g, c, n = z.shape
    ns = lo.shape[0]
    nblk = (n + _BLK - 1) // _BLK
    for ib in _prange(nblk):
        s = ib * _BLK
        m = min(s + _BLK, n) - s
        a = np.empty(m, dtype=np.int64)
        fr = np.empty(m)
        for j in range(ns):
            for q in range(m):  # held beyond the pixel's first/last observation
                pos = min(max(lo[j] + frac[j], ends[0, s + q]), ends[1, s + q])
                a[q] = min(int(np.floor(pos)), g - 2)
                fr[q] = pos - a[q]
            for ch in range(c):
                lo_c, hi_c = low[ch], high[ch]
                for q in range(m):
                    col = cols[s + q]
                    if valid[s + q]:
                        f = fr[q]
                        out[j, ch, col] = (1.0 - f) * z[a[q], ch, s + q] + f * z[
                            a[q] + 1, ch, s + q
                        ]
                        v = out[j, ch, col]  # clipped in out's dtype, as np.clip after the cast
                        if v < lo_c:
                            out[j, ch, col] = lo_c
                        elif v > hi_c:
                            out[j, ch, col] = hi_c
                    else:
                        out[j, ch, col] = fill


def _gaps_kernel(w, days, span, max_gap, edge_gap):  # type: ignore[no-untyped-def]
    t, n = w.shape
    nblk = (n + _BLK - 1) // _BLK
    for ib in _prange(nblk):
        for q in range(ib * _BLK, min(ib * _BLK + _BLK, n)):
            first, last = np.inf, -np.inf
            prev, gap = 0.0, 0.0
            for i in range(t):
                if w[i, q] > 0:
                    d = days[i]
                    first = min(first, d)
                    last = max(last, d)
                    if 0.0 <= d <= span:
                        gap = max(gap, d - prev)
                        prev = max(prev, d)
            max_gap[q] = max(gap, span - prev)
            edge_gap[q] = min(max(max(first, 0.0), max(span - last, 0.0)), span)


def _take_last(a, order, out):  # type: ignore[no-untyped-def]
    rows = a.shape[0]
    n = order.shape[0]
    for r in _prange(rows):
        for q in range(n):
            out[r, q] = a[r, order[q]]


if HAVE_NUMBA:
    _clear_nonfinite = _njit(parallel=True, cache=True, nogil=True)(_clear_nonfinite)
    _bin_kernel = _njit(parallel=True, cache=True, nogil=True)(_bin_kernel)
    _sample_kernel = _njit(parallel=True, cache=True, nogil=True)(_sample_kernel)
    _gaps_kernel = _njit(parallel=True, cache=True, nogil=True)(_gaps_kernel)
    _take_last = _njit(parallel=True, cache=True, nogil=True)(_take_last)


def _threads(threads: int | None) -> object:
    """Context that runs a kernel with :func:`numba_threads` threads (restored after)."""
    if not HAVE_NUMBA:  # pragma: no cover
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def ctx():  # type: ignore[no-untyped-def]
        import numba  # lazy: numba only when a kernel runs

        before = numba.get_num_threads()
        numba.set_num_threads(numba_threads(threads))
        try:
            yield
        finally:
            numba.set_num_threads(before)

    return ctx()


def clear_nonfinite(values: np.ndarray, weights: np.ndarray, threads: int | None = None) -> None:
    """Set ``weights[t, n] = 0`` (in place) where any channel of ``values[t, :, n]`` is NaN/inf.

    ``values`` ``(T, C, N)`` float, ``weights`` ``(T, N)`` writable float.
    """
    with _threads(threads):  # type: ignore[attr-defined]
        _clear_nonfinite(values, weights)


class Binned(NamedTuple):
    """Observations on the fine grid (:func:`bin_to_grid`); see there for the fields."""

    ybar: np.ndarray
    wsum: np.ndarray
    woff: np.ndarray
    n_obs: np.ndarray
    ends: np.ndarray


def bin_to_grid(
    parts: list[np.ndarray],
    weights: np.ndarray,
    at: tuple[np.ndarray, np.ndarray],
    n_nodes: int,
    *,
    dtype: type = np.float32,
    threads: int | None = None,
    into: Binned | None = None,
) -> Binned:
    """The Whittaker data term of irregular observations on the grid (an index scatter).

    Args:
        parts: ``(T, C_i, N)`` observation arrays whose channels are stacked in order (e.g.
            the bands, then the indices; no concatenated copy is made); any value where the
            weight is 0.
        weights: ``(T, N)`` weights >= 0.
        at: ``(lo, frac)``, each ``(T,)``: where each observation sits (:func:`obs_nodes`;
            ``lo = -1``: outside, dropped).
        n_nodes: ``G``, nodes of the grid.
        dtype: dtype of ``ybar`` (accumulation is float64 either way).
        threads: kernel threads (None: ``OMP_NUM_THREADS``, else numba's).
        into: arrays of the result's shapes and dtypes (e.g. :func:`binned_buffers`) that are
            overwritten and returned, instead of new ones: a tile's row blocks reuse the same
            pages instead of having fresh ones zeroed by the kernel for every block.

    Returns:
        :class:`Binned`:

        * ``ybar`` ``(G, sum C_i, N)``: the right-hand side ``B' W y`` divided by ``wsum``
          (NaN where a node has no weight; the weighted node mean when observations sit on
          nodes);
        * ``wsum`` ``(G, N)`` float64: the diagonal of ``B' W B``;
        * ``woff`` ``(G, N)`` float64: its sub-diagonal (``woff[k]`` couples nodes ``k`` and
          ``k - 1``; all 0 when observations sit on nodes);
        * ``n_obs`` ``(N,)`` int64: observations with positive weight inside the grid;
        * ``ends`` ``(2, N)`` float64: grid positions (node index + fraction) of each pixel's
          first and last weighted observation (``0, G - 1`` without any).

        ``(ybar, wsum, woff)`` are what :func:`geoxai.temporal.whittaker.whittaker` reads as
        ``(y, w, off)``.
    """
    n = weights.shape[1]
    c = sum(int(p.shape[1]) for p in parts)
    if into is None:
        into = binned_buffers(n_nodes, c, n, dtype)
    want = binned_buffers(n_nodes, c, 0, dtype)
    for name, have, ref in zip(Binned._fields, into, want, strict=True):
        shape = (*ref.shape[:-1], n)
        if have.shape != shape or have.dtype != ref.dtype or not have.flags.c_contiguous:
            raise InvalidInputError(
                f"bin_to_grid: into.{name} is {have.dtype} {have.shape}; give a C-contiguous "
                f"{ref.dtype} {shape} array (binned_buffers({n_nodes}, {c}, {n}))."
            )
    ybar, wsum, woff, nobs, ends = into
    woff.fill(0.0)
    nobs.fill(0)
    ends[0], ends[1] = np.inf, -np.inf
    lo = np.ascontiguousarray(at[0], dtype=np.int64)
    frac = np.ascontiguousarray(at[1], dtype=np.float64)
    off = 0
    with _threads(threads):  # type: ignore[attr-defined]
        for i, p in enumerate(parts):
            _bin_kernel(p, weights, lo, frac, off, ybar, wsum, woff, nobs, ends, i == 0)
            off += int(p.shape[1])
    none = nobs == 0
    ends[0, none], ends[1, none] = 0.0, n_nodes - 1.0
    return Binned(ybar, wsum, woff, nobs, ends)


def binned_buffers(n_nodes: int, channels: int, n: int, dtype: type = np.float32) -> Binned:
    """Uninitialized arrays for :func:`bin_to_grid`'s result (``into``): ``ybar``
    ``(G, C, N)`` of ``dtype``, ``wsum``/``woff`` ``(G, N)`` float64, ``n_obs`` ``(N,)``
    int64, ``ends`` ``(2, N)`` float64."""
    return Binned(
        np.empty((n_nodes, channels, n), dtype=dtype),
        np.empty((n_nodes, n), dtype=np.float64),
        np.empty((n_nodes, n), dtype=np.float64),
        np.empty(n, dtype=np.int64),
        np.empty((2, n), dtype=np.float64),
    )


def first_columns(bufs: Binned, n: int) -> Binned:
    """The first ``n`` pixels of :func:`binned_buffers` ``bufs`` as C-contiguous arrays of
    ``n`` columns (views of the same memory, for a tile's last, shorter row block)."""
    return Binned(
        *(b.reshape(-1)[: b.size // b.shape[-1] * n].reshape(*b.shape[:-1], n) for b in bufs)
    )


def sample_held(
    z: np.ndarray,
    ends: np.ndarray,
    lo: np.ndarray,
    frac: np.ndarray,
    valid: np.ndarray,
    *,
    out: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    clip: tuple[np.ndarray, np.ndarray] | None = None,
    fill: float = np.nan,
    threads: int | None = None,
) -> np.ndarray:
    """Node values ``z`` ``(G, C, N)`` sampled at ``(lo, frac)`` (:func:`interp_nodes`) by
    linear interpolation, held beyond each pixel's first/last observation (``ends`` ``(2, N)``
    grid positions, :class:`Binned`): the curve keeps its value there instead of the
    smoother's extrapolated trend; ``fill`` (NaN) where not ``valid`` ``(N,)``.

    ``cols`` ``(N,)`` writes pixel ``q`` to column ``cols[q]`` of ``out`` (any strides, e.g.
    a row block of a larger cube, or the pixels of one candidate scattered back to their
    places; default ``0..N-1``), ``clip`` ``((C,), (C,))`` clips each channel to
    ``[low, high]`` after the cast to ``out``'s dtype (the same values as ``np.clip`` of the
    sampled array; NaN stays NaN): one pass writes the final values.

    Returns ``out`` ``(S, C, N')`` (float64 ``(S, C, N)`` unless ``out`` is given).
    """
    g, c, n = z.shape
    if out is None:
        out = np.empty((lo.shape[0], c, n), dtype=np.float64)
    if cols is None:
        cols = np.arange(n, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    if out.shape[:2] != (lo.shape[0], c) or cols.shape != (n,):
        raise InvalidInputError(
            f"sample_held: out {out.shape} and cols {cols.shape} do not fit {lo.shape[0]} "
            f"samples of z {z.shape}; give out (S, C, >= N) and one column per pixel."
        )
    if n and (int(cols.min()) < 0 or int(cols.max()) >= out.shape[2]):
        raise InvalidInputError(
            f"sample_held: cols span {int(cols.min())}..{int(cols.max())}, outside out's "
            f"{out.shape[2]} columns; give columns in 0..{out.shape[2] - 1}."
        )
    if clip is None:
        clip = (np.full(c, -np.inf), np.full(c, np.inf))
    low = np.ascontiguousarray(clip[0], dtype=out.dtype)
    high = np.ascontiguousarray(clip[1], dtype=out.dtype)
    with _threads(threads):  # type: ignore[attr-defined]
        _sample_kernel(
            z,
            np.ascontiguousarray(ends, dtype=np.float64),
            np.ascontiguousarray(lo, dtype=np.int64),
            np.ascontiguousarray(frac, dtype=np.float64),
            np.ascontiguousarray(valid, dtype=np.bool_),
            cols,
            low,
            high,
            out.dtype.type(fill),
            out,
        )
    return out


def series_gaps(
    weights: np.ndarray, obs_days: np.ndarray, span: float, *, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, from ``weights`` ``(T, N)`` (positive = clear) at ``obs_days`` ``(T,)``
    (ascending, days from the axis start) on an axis of ``span`` days:

    * ``max_gap`` ``(N,)`` float32: the longest interval of ``[0, span]`` without a clear
      observation (axis edges count as gap ends);
    * ``edge_gap`` ``(N,)`` float32: the longer of the stretches from the axis start to the
      first and from the last clear observation to the axis end (margins count; ``span``
      without any).
    """
    n = weights.shape[1]
    max_gap = np.empty(n, dtype=np.float32)
    edge_gap = np.empty(n, dtype=np.float32)
    with _threads(threads):  # type: ignore[attr-defined]
        _gaps_kernel(
            weights, np.asarray(obs_days, dtype=np.float64), float(span), max_gap, edge_gap
        )
    return max_gap, edge_gap


def take_last(a: np.ndarray, order: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """``a[..., order]`` (a parallel gather along the last axis)."""
    flat = a.reshape(-1, a.shape[-1])
    out = np.empty((flat.shape[0], order.size), dtype=a.dtype)
    with _threads(threads):  # type: ignore[attr-defined]
        _take_last(flat, np.ascontiguousarray(order, dtype=np.int64), out)
    return out.reshape(*a.shape[:-1], order.size)
