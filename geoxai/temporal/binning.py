"""Compiled kernels of the smoothing stage around the Whittaker solve: binning and sampling.

* :func:`node_index`: each acquisition's nearest node of the fine grid (``-1`` outside).
* :func:`clear_nonfinite`: weight 0 for observations with a NaN/inf band (in place).
* :func:`bin_to_grid`: irregular observations -> weighted node means and node weights, as an
  index scatter (each observation is added to its node), not a dense one-hot matmul: reads
  every value once, writes every node once, skips zero weights (their values may be NaN),
  accumulates in float64 whatever the input dtype.
* :func:`sample_held`: the smooth node values read back at any days by linear interpolation
  between nodes, held flat beyond each pixel's first/last weighted node
  (:func:`geoxai.temporal.axis.hold_ends`'s rule) without changing the node values.

All run over pixels in parallel blocks (numba ``prange``) with the time loop inside; with numba
missing the same functions run as plain Python loops (slow; numba is a dependency).
"""

from __future__ import annotations

import contextlib

import numpy as np

from geoxai.temporal.whittaker import HAVE_NUMBA, numba_threads

if HAVE_NUMBA:
    from numba import njit as _njit
    from numba import prange as _prange
else:  # pragma: no cover
    _prange = range  # type: ignore[misc]

__all__ = [
    "node_index",
    "clear_nonfinite",
    "bin_to_grid",
    "sample_held",
    "interp_nodes",
    "series_gaps",
    "take_last",
    "put_last",
]

_BLK = 256
"""Pixels per parallel block of the kernels (scratch ``G * C * 256`` float64 stays in L2)."""


def node_index(obs_days: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """``(T,)`` int64 nearest node of each acquisition; ``-1`` for those more than half a grid
    step beyond the first/last node (same rounding as the one-hot binning matrix)."""
    step = float(nodes[1] - nodes[0])
    idx = np.rint((np.asarray(obs_days, dtype=np.float64) - nodes[0]) / step).astype(np.int64)
    idx[(idx < 0) | (idx >= nodes.size)] = -1
    return idx


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


def _bin_kernel(values, w, node, order, g, c_off, ybar, wsum, nobs, first):  # type: ignore[no-untyped-def]
    t, c, n = values.shape
    nt = order.shape[0]
    nblk = (n + _BLK - 1) // _BLK
    for ib in _prange(nblk):
        s = ib * _BLK
        m = min(s + _BLK, n) - s
        acc = np.zeros((c, m))
        ws = np.zeros(m)
        cnt = np.zeros(m, dtype=np.int64)
        cur = -1
        for ii in range(nt + 1):  # observations in node order; a node is flushed when left
            k = node[order[ii]] if ii < nt else g
            if k != cur:
                if cur >= 0:
                    for ch in range(c):
                        for q in range(m):
                            ybar[cur, c_off + ch, s + q] = (
                                acc[ch, q] / ws[q] if ws[q] > 0 else np.nan
                            )
                            acc[ch, q] = 0.0
                    if first:
                        for q in range(m):
                            wsum[cur, s + q] = ws[q]
                    for q in range(m):
                        ws[q] = 0.0
                for e in range(cur + 1, k):  # nodes without observations
                    for ch in range(c):
                        for q in range(m):
                            ybar[e, c_off + ch, s + q] = np.nan
                    if first:
                        for q in range(m):
                            wsum[e, s + q] = 0.0
                cur = k
            if ii == nt:
                break
            i = order[ii]
            for q in range(m):
                wv = np.float64(w[i, s + q])
                if wv > 0:
                    ws[q] += wv
                    cnt[q] += 1
            for ch in range(c):
                for q in range(m):
                    wv = np.float64(w[i, s + q])
                    if wv > 0:
                        acc[ch, q] += wv * np.float64(values[i, ch, s + q])
        if first:
            for q in range(m):
                nobs[s + q] = cnt[q]


def _sample_kernel(z, wsum, lo, frac, valid, out):  # type: ignore[no-untyped-def]
    g, c, n = z.shape
    ns = lo.shape[0]
    nblk = (n + _BLK - 1) // _BLK
    for ib in _prange(nblk):
        s = ib * _BLK
        m = min(s + _BLK, n) - s
        fst = np.full(m, -1, dtype=np.int64)
        lst = np.full(m, g - 1, dtype=np.int64)
        for k in range(g):
            for q in range(m):
                if wsum[k, s + q] > 0:
                    if fst[q] < 0:
                        fst[q] = k
                    lst[q] = k
        for q in range(m):
            if fst[q] < 0:  # no weighted node: nothing to hold
                fst[q] = 0
                lst[q] = g - 1
        a = np.empty(m, dtype=np.int64)
        b = np.empty(m, dtype=np.int64)
        for j in range(ns):
            f = frac[j]
            for q in range(m):
                a[q] = min(max(lo[j], fst[q]), lst[q])
                b[q] = min(max(lo[j] + 1, fst[q]), lst[q])
            for ch in range(c):
                for q in range(m):
                    if valid[s + q]:
                        out[j, ch, s + q] = (1.0 - f) * z[a[q], ch, s + q] + f * z[b[q], ch, s + q]
                    else:
                        out[j, ch, s + q] = np.nan


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


def _put_last(a, order, out):  # type: ignore[no-untyped-def]
    rows = a.shape[0]
    n = order.shape[0]
    for r in _prange(rows):
        for q in range(n):
            out[r, order[q]] = a[r, q]


if HAVE_NUMBA:
    _clear_nonfinite = _njit(parallel=True, cache=True, nogil=True)(_clear_nonfinite)
    _bin_kernel = _njit(parallel=True, cache=True, nogil=True)(_bin_kernel)
    _sample_kernel = _njit(parallel=True, cache=True, nogil=True)(_sample_kernel)
    _gaps_kernel = _njit(parallel=True, cache=True, nogil=True)(_gaps_kernel)
    _take_last = _njit(parallel=True, cache=True, nogil=True)(_take_last)
    _put_last = _njit(parallel=True, cache=True, nogil=True)(_put_last)


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


def bin_to_grid(
    parts: list[np.ndarray],
    weights: np.ndarray,
    node: np.ndarray,
    n_nodes: int,
    *,
    dtype: type = np.float32,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted node means of irregular observations (an index scatter onto the grid).

    Args:
        parts: ``(T, C_i, N)`` observation arrays whose channels are stacked in order (e.g.
            the bands, then the indices; no concatenated copy is made); any value where the
            weight is 0.
        weights: ``(T, N)`` weights >= 0.
        node: ``(T,)`` node of each observation (:func:`node_index`; ``-1`` = outside).
        n_nodes: ``G``, nodes of the grid.
        dtype: dtype of ``ybar`` (accumulation is float64 either way).
        threads: kernel threads (None: ``OMP_NUM_THREADS``, else numba's).

    Returns:
        ``ybar`` ``(G, sum C_i, N)`` weighted means (NaN where a node has no weight),
        ``wsum`` ``(G, N)`` float64 node weights, ``n_obs`` ``(N,)`` int64 observations with
        positive weight inside the grid.
    """
    n = weights.shape[1]
    c = sum(int(p.shape[1]) for p in parts)
    ybar: np.ndarray = np.empty((n_nodes, c, n), dtype=dtype)
    wsum = np.empty((n_nodes, n), dtype=np.float64)
    nobs = np.empty(n, dtype=np.int64)
    node = np.ascontiguousarray(node, dtype=np.int64)
    inside = np.nonzero(node >= 0)[0]
    order = inside[np.argsort(node[inside], kind="stable")]  # node order, outside dropped
    off = 0
    with _threads(threads):  # type: ignore[attr-defined]
        for i, p in enumerate(parts):
            _bin_kernel(p, weights, node, order, n_nodes, off, ybar, wsum, nobs, i == 0)
            off += int(p.shape[1])
    return ybar, wsum, nobs


def sample_held(
    z: np.ndarray,
    wsum: np.ndarray,
    lo: np.ndarray,
    frac: np.ndarray,
    valid: np.ndarray,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Node values ``z`` ``(G, C, N)`` sampled at ``(lo, frac)`` (:func:`interp_nodes`), held
    beyond each pixel's first/last node with ``wsum > 0``; NaN where not ``valid`` ``(N,)``.

    Returns ``out`` ``(S, C, N)`` (float64 unless ``out`` is given).
    """
    g, c, n = z.shape
    if out is None:
        out = np.empty((lo.shape[0], c, n), dtype=np.float64)
    with _threads(threads):  # type: ignore[attr-defined]
        _sample_kernel(
            z,
            wsum,
            np.ascontiguousarray(lo, dtype=np.int64),
            np.ascontiguousarray(frac, dtype=np.float64),
            np.ascontiguousarray(valid, dtype=np.bool_),
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


def put_last(a: np.ndarray, order: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """The inverse of :func:`take_last` for a permutation: ``out[..., order] = a``."""
    flat = a.reshape(-1, a.shape[-1])
    out = np.empty_like(flat)
    with _threads(threads):  # type: ignore[attr-defined]
        _put_last(flat, np.ascontiguousarray(order, dtype=np.int64), out)
    return out.reshape(a.shape)
