"""Weighted Whittaker smoother solved for many series at once (numpy and torch).

For each series ``y`` (length ``n``) with weights ``w >= 0`` the smoother returns ``z``, the
solution of::

    (W + lambda * D_d' D_d) z = W y

where ``W = diag(w)`` and ``D_d`` is the ``(n - d) x n`` matrix of ``d``-th order differences
(Eilers 2003). Zero weights are gaps: the smoother interpolates across them (for ``d = 2`` the
gap is bridged by a cubic-spline-like curve, straight lines at the ends).

The system matrix is symmetric positive definite with bandwidth ``d`` (pentadiagonal for
``d = 2``). It is factored as ``L D L'`` by a loop over *time* in which every operation is
vectorized over *pixels* (``O(n d^2)`` vector operations for ``N`` pixels): no Python loop over
pixels and no dense solve. One factorization serves every band of a pixel, because weights are
per pixel and time, shared by the bands.

The same factorization loop runs on numpy arrays (:func:`whittaker`) and on torch tensors
(:func:`whittaker_torch`, CPU or CUDA); both give the same numbers to float64 round-off.

CPU engine: when `numba <https://numba.pydata.org>`_ is installed, :func:`whittaker` runs the
same arithmetic, operation for operation (``fastmath=False``, no FMA contraction, so the
numbers are bit-identical to the numpy loops), as one compiled kernel: blocks of a few hundred
contiguous pixels are spread over the cores, and each block factors once for all bands in
cache-resident scratch, reads every value once, solves band by band and writes every result
once, so the kernel runs near the memory bandwidth. The numpy loops (one vector operation per
time step and band over a chunk of pixels, every one a pass over memory) stay as the fallback
(``engine="numpy"``, or numba missing). The first call in a fresh environment compiles the
kernel (~10 s per input dtype); numba caches it on disk (``__pycache__`` or
``NUMBA_CACHE_DIR``). Measured in benchmarks/bench_whittaker.py.

A pixel whose weights are positive on fewer than ``min_points`` nodes (at least ``d``, below
which the system is singular) comes back as NaN with ``valid = False``; it is never an exception.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoxai.errors import ConfigError, InvalidInputError

__all__ = [
    "ENGINES",
    "WhittakerResult",
    "difference_penalty_bands",
    "whittaker",
    "whittaker_torch",
    "check_lambda",
]

try:  # optional compiled CPU engine; the numpy loops below are the fallback
    from numba import njit as _njit
    from numba import prange as _prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_NUMBA = False


_NAN_UNDER_WEIGHT = (
    "Whittaker values are NaN/inf where the weight is positive; give those observations weight 0."
)


ENGINES = ("auto", "numba", "numpy")
"""CPU engines of :func:`whittaker`: "auto" = numba when installed, else numpy."""


@dataclass(frozen=True)
class WhittakerResult:
    """Smoothed series and their validity.

    Attributes:
        z: smoothed values, shape ``(n, B, N)`` (or ``(n, N)`` for a 2-D input), NaN where invalid.
        valid: ``(N,)`` bool, False for pixels with too few weighted points (nodata).
    """

    z: Any
    valid: Any


def check_lambda(lambda_: float, order: int) -> None:
    """Raise :class:`ConfigError` unless ``lambda_ > 0`` (finite) and ``order`` is 1..4."""
    if not (isinstance(lambda_, int | float) and np.isfinite(lambda_) and lambda_ > 0):
        raise ConfigError(
            f"Whittaker lambda_={lambda_!r} is invalid: it must be a finite number > 0 "
            "(the reference uses 100 on a 15-day grid; larger is smoother)."
        )
    if not (isinstance(order, int) and 1 <= order <= 4):
        raise ConfigError(
            f"Whittaker order={order!r} is invalid: use an integer difference order 1..4 "
            "(2 is the reference)."
        )


def difference_penalty_bands(n: int, order: int) -> np.ndarray:
    """Lower bands of ``P = D' D`` for ``d``-th order differences on ``n`` nodes.

    Returns:
        float64 array ``(order + 1, n)`` (read-only, cached per ``(n, order)``); row ``k``
        holds ``P[i, i - k]`` (zero for ``i < k``).
    """
    if n <= order:
        raise InvalidInputError(
            f"A series of {n} nodes is too short for order-{order} differences; "
            f"use at least {order + 1} nodes."
        )
    return _penalty_bands(int(n), int(order))


@functools.lru_cache(maxsize=64)
def _penalty_bands(n: int, order: int) -> np.ndarray:
    d = np.diff(np.eye(n), n=order, axis=0)  # (n - order, n)
    p = d.T @ d
    bands = np.zeros((order + 1, n))
    for k in range(order + 1):
        bands[k, k:] = np.diagonal(p, offset=-k)
    bands.flags.writeable = False
    return bands


def _check_inputs(y: Any, w: Any) -> tuple[int, int, bool]:
    """Validate shapes; return (n, N, squeeze)."""
    if w.ndim != 2:
        raise InvalidInputError(
            f"Whittaker weights must be 2-D (time, pixel); got shape {tuple(w.shape)}."
        )
    squeeze = y.ndim == 2
    if y.ndim not in (2, 3):
        raise InvalidInputError(
            f"Whittaker values must be (time, pixel) or (time, band, pixel); got {tuple(y.shape)}."
        )
    n, npx = int(w.shape[0]), int(w.shape[1])
    if int(y.shape[0]) != n or int(y.shape[-1]) != npx:
        raise InvalidInputError(
            f"Whittaker values {tuple(y.shape)} and weights {tuple(w.shape)} disagree on the "
            "time or pixel axis; both need (time, ..., pixel) with the same sizes."
        )
    return n, npx, squeeze


def _factor(ab0: Any, bands: np.ndarray, lam: float, low: Any, dinv: Any, off: Any = None) -> Any:
    """In-place banded ``L D L'`` factorization, generic over numpy arrays and torch tensors.

    Args:
        ab0: ``(n, N)`` diagonal of ``W + lam P``.
        bands: ``(d + 1, n)`` float64 penalty bands (read as python floats).
        lam: lambda.
        off: ``(n, N)`` first sub-diagonal of the data term (``W[i, i - 1]``; see
            :func:`whittaker`), or None (a diagonal ``W``).
        low: ``(d + 1, n, N)`` zeros; filled with the factor, ``low[k, i] = L[i, i - k]``.
        dinv: ``(n, N)`` scratch; filled with ``1 / D``.

    Returns:
        ``(n, N)`` the pivots ``D`` (all > 0 for a positive definite system).
    """
    n = ab0.shape[0]
    p = bands.shape[0] - 1
    piv = ab0 * 0.0
    for i in range(n):
        kmax = min(i, p)
        for k in range(kmax, 0, -1):  # column j = i - k, in increasing j
            j = i - k
            s = lam * float(bands[k, i])
            if k == 1 and off is not None:
                s = s + off[i]
            for m in range(max(i - p, 0), j):
                s = s - low[i - m, i] * low[j - m, j] * piv[m]
            low[k, i] = s * dinv[j]
        di = ab0[i]
        for k in range(1, kmax + 1):
            di = di - low[k, i] * low[k, i] * piv[i - k]
        piv[i] = di
        dinv[i] = 1.0 / (di + (di <= 0) * 1.0)  # singular (di <= 0): flagged by the caller
    return piv


def _solve_torch(b: Any, low: Any, dinv: Any) -> None:
    """Solve ``L D L' z = b`` in place on torch tensors; ``b`` is ``(n, B, N)``."""
    n = b.shape[0]
    p = low.shape[0] - 1
    for i in range(1, n):
        for k in range(1, min(i, p) + 1):
            b[i].addcmul_(low[k, i], b[i - k], value=-1.0)
    b.mul_(dinv[:, None, :])
    for i in range(n - 2, -1, -1):
        for k in range(1, min(n - 1 - i, p) + 1):
            b[i].addcmul_(low[k, i + k], b[i + k], value=-1.0)


def _solve_numpy(b: np.ndarray, low: np.ndarray, dinv: np.ndarray) -> None:
    """Numpy twin of :func:`_solve_torch` with a preallocated temporary."""
    n = b.shape[0]
    p = low.shape[0] - 1
    tmp = np.empty_like(b[0])
    for i in range(1, n):
        for k in range(1, min(i, p) + 1):
            np.multiply(low[k, i], b[i - k], out=tmp)
            np.subtract(b[i], tmp, out=b[i])
    np.multiply(b, dinv[:, None, :], out=b)
    for i in range(n - 2, -1, -1):
        for k in range(1, min(n - 1 - i, p) + 1):
            np.multiply(low[k, i + k], b[i + k], out=tmp)
            np.subtract(b[i], tmp, out=b[i])


def ldl_block(wc, oc, bands, lam, p, low, piv, dinv):  # type: ignore[no-untyped-def]
    """Banded ``L D L'`` factor of ``W + lam D' D`` for a block of ``m`` pixels (compiled).

    ``wc`` ``(n, m)`` weights (the diagonal of ``W``), ``oc`` ``(n, m)`` its first
    sub-diagonal ``W[i, i - 1]`` (exact-time observations, :func:`whittaker`) or ``(0, m)``
    for a diagonal ``W``, ``bands`` ``(p + 1, n)`` penalty bands, ``lam`` the grid lambda,
    ``p`` the order; fills ``low`` ``(>= p + 1, n, m)`` (unit lower factor, band ``k`` at
    ``low[k]``), ``piv`` ``(n, m)`` (``D``) and ``dinv`` ``(n, m)`` (``1 / D``). Same operations
    in the same order as :func:`_factor` per pixel; the one factorization of the smoothing
    kernel and of the leave-one-out kernel (:mod:`geoxai.temporal.lambda_select`).
    """
    n, m = wc.shape
    for i in range(n):
        kmax = min(i, p)
        for k in range(kmax, 0, -1):
            j = i - k
            lb = lam * bands[k, i]
            for q in range(m):
                low[k, i, q] = lb
            if k == 1 and oc.shape[0] > 0:
                for q in range(m):
                    low[k, i, q] = low[k, i, q] + oc[i, q]
            for mm in range(max(i - p, 0), j):
                for q in range(m):
                    low[k, i, q] = low[k, i, q] - low[i - mm, i, q] * low[j - mm, j, q] * piv[mm, q]
            for q in range(m):
                low[k, i, q] = low[k, i, q] * dinv[j, q]
        lb0 = lam * bands[0, i]
        for q in range(m):
            piv[i, q] = wc[i, q] + lb0
        for k in range(1, kmax + 1):
            for q in range(m):
                piv[i, q] = piv[i, q] - low[k, i, q] * low[k, i, q] * piv[i - k, q]
        for q in range(m):  # a singular system (piv <= 0) is flagged invalid by the caller
            dinv[i, q] = 1.0 / piv[i, q] if piv[i, q] > 0 else 0.0


if HAVE_NUMBA:
    ldl_block = _njit(cache=True, fastmath=False, nogil=True)(ldl_block)


def _smooth_blocks(y, w, off, pix, bands, lam, need, blk, z, valid):  # type: ignore[no-untyped-def]
    """Compiled engine: smooth blocks of ``blk`` pixels in parallel (see the module doc).

    Same operations in the same order as :func:`_factor` + :func:`_solve_numpy` per pixel, so
    the results are bit-identical to the numpy engine. ``y`` ``(n, B, N)`` float32/float64,
    ``pix`` ``(M,)`` the columns of ``y`` to solve, in order (empty: all, ``M = N``), ``w``
    ``(n, M)`` float64 their weights, ``off`` ``(n, M)`` the sub-diagonal of ``W`` (or
    ``(0, M)``: diagonal), ``bands`` ``(d + 1, n)``; fills ``z`` ``(n, B, M)``
    float64 and ``valid`` ``(M,)`` (``y`` gathered block by block into cache-resident
    scratch). Returns the number of values that are NaN/inf under a positive weight
    (the caller raises if it is not 0).
    """
    n, nb = y.shape[0], y.shape[1]
    gather = pix.shape[0] > 0
    npx = w.shape[1]
    p = bands.shape[0] - 1
    nblk = (npx + blk - 1) // blk
    bad = np.zeros(nblk, dtype=np.int64)
    for ib in _prange(nblk):
        s = ib * blk
        m = min(s + blk, npx) - s
        ok = np.empty(m, dtype=np.bool_)
        wc = np.empty((n, m))
        oc = np.zeros((n if off.shape[0] > 0 else 0, m))
        low = np.zeros((p + 1, n, m))
        dinv = np.empty((n, m))
        piv = np.empty((n, m))
        bb = np.empty((n, m))
        yl = np.empty((n, m))
        cnt = np.zeros(m, dtype=np.int64)
        for i in range(n):  # row order: contiguous, vectorized
            for q in range(m):
                cnt[q] += w[i, s + q] > 0
        for q in range(m):
            ok[q] = cnt[q] >= need
        for i in range(n):
            for q in range(m):
                wc[i, q] = w[i, s + q] if ok[q] else 1.0  # dummy weights keep it regular
        for i in range(oc.shape[0]):
            for q in range(m):
                oc[i, q] = off[i, s + q] if ok[q] else 0.0
        ldl_block(wc, oc, bands, lam, p, low, piv, dinv)  # once for all bands
        for i in range(n):
            for q in range(m):
                ok[q] = ok[q] and piv[i, q] > 0
        for q in range(m):
            valid[s + q] = ok[q]
        nbad = 0
        for c in range(nb):
            if gather:
                for i in range(n):
                    for q in range(m):
                        yl[i, q] = np.float64(y[i, c, pix[s + q]])
            else:
                for i in range(n):
                    for q in range(m):
                        yl[i, q] = np.float64(y[i, c, s + q])
            # right-hand side W y (0 where the value is missing or the pixel is nodata)
            for i in range(n):
                for q in range(m):
                    yv = yl[i, q]
                    wv = w[i, s + q]
                    if not np.isfinite(yv):
                        if wv > 0:
                            nbad += 1
                        bb[i, q] = 0.0
                    elif not ok[q]:  # nodata pixel (dummy weights): zero right-hand side
                        bb[i, q] = 0.0
                    else:
                        bb[i, q] = yv * wv
            for i in range(1, n):  # forward substitution L u = b
                for k in range(1, min(i, p) + 1):
                    for q in range(m):
                        bb[i, q] = bb[i, q] - low[k, i, q] * bb[i - k, q]
            for i in range(n - 1, -1, -1):  # D^-1, then back substitution L' z = D^-1 u
                for q in range(m):
                    bb[i, q] = bb[i, q] * dinv[i, q]
                for k in range(1, min(n - 1 - i, p) + 1):
                    for q in range(m):
                        bb[i, q] = bb[i, q] - low[k, i + k, q] * bb[i + k, q]
            for i in range(n):
                for q in range(m):
                    z[i, c, s + q] = bb[i, q] if ok[q] else np.nan
        bad[ib] = nbad
    return bad.sum()


if HAVE_NUMBA:
    _smooth_blocks_nb = _njit(parallel=True, cache=True, fastmath=False, nogil=True)(_smooth_blocks)


def block_px(n: int) -> int:
    """Pixels per compiled block: scratch ``~6 n blk`` float64 (~1 MB) stays in a core's L2."""
    return int(min(512, max(32, (24576 // max(n, 1)) // 16 * 16)))


def numba_threads(threads: int | None) -> int:
    """Threads for the compiled engine: ``threads``, else ``OMP_NUM_THREADS`` when set (Ray
    sets it to an actor's CPUs), else numba's current setting; capped by numba's pool."""
    import numba  # lazy: numba JIT only when the kernel runs

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else numba.get_num_threads()
    pool = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    return max(1, min(int(threads), pool))


_KERNEL_LOCK = threading.Lock()


def _run_kernel(*args: Any) -> int:
    """Run the compiled kernel with the requested threads (restored afterwards).

    numba's "workqueue" threading layer (the one left when neither TBB nor OpenMP is usable)
    aborts the process on concurrent parallel launches, so calls are serialized unless the
    layer is known to be thread-safe; the kernel releases the GIL either way.
    """
    import numba  # lazy: numba JIT only when the kernel runs

    *kargs, threads = args
    try:
        safe = numba.threading_layer() in ("tbb", "omp")
    except ValueError:  # no parallel kernel has run yet: layer unknown
        safe = False
    with contextlib.nullcontext() if safe else _KERNEL_LOCK:
        before = numba.get_num_threads()
        numba.set_num_threads(numba_threads(threads))
        try:
            return int(_smooth_blocks_nb(*kargs))
        finally:
            numba.set_num_threads(before)


def whittaker(
    y: np.ndarray,
    w: np.ndarray,
    lambda_: float,
    order: int = 2,
    *,
    min_points: int | None = None,
    chunk: int = 2048,
    engine: str = "auto",
    threads: int | None = None,
    pixels: np.ndarray | None = None,
    off: np.ndarray | None = None,
) -> WhittakerResult:
    """Weighted Whittaker smoothing of many series on one regular grid (CPU, float64).

    Args:
        y: values ``(n, B, N)`` or ``(n, N)`` (time first, pixels last); may hold NaN/inf where
            the weight is 0.
        w: weights ``(n, N)``, finite and ``>= 0``; shared by the ``B`` bands of a pixel.
        lambda_: smoothing strength on this grid's spacing (> 0).
        order: difference order ``d`` (2 = the reference).
        min_points: fewest nodes with positive weight for a valid pixel (default and minimum
            ``order``, below which the system is singular).
        chunk: pixels per block of the numpy engine (bounds its scratch memory:
            ``~8 (d + B + 3) n chunk`` bytes); the numba engine sizes its own blocks.
        engine: "auto" (numba when installed, else numpy), "numba" or "numpy"; both give
            bit-identical results.
        threads: threads of the numba engine (None: ``OMP_NUM_THREADS`` when set, else all
            of numba's); the numpy engine is single-threaded.
        pixels: ``(M,)`` indices of the pixels (last axis) to smooth, in this order; the
            result holds those ``M`` pixels only (the numba engine reads them in place, no
            gathered copy of ``y``). None: all.
        off: ``(n, N)`` first sub-diagonal of a tridiagonal data term, ``W[i, i - 1]``
            (``off[0]`` unused), or None for the diagonal ``W = diag(w)``. Observations at
            exact times between nodes enter as ``B' W_obs B`` (two linear-interpolation
            weights per row of ``B``): ``w`` is its diagonal, ``off`` its sub-diagonal and
            ``y`` the right-hand side divided by ``w``
            (:func:`geoxai.temporal.binning.bin_to_grid`). The band structure is unchanged.

    Returns:
        :class:`WhittakerResult` with ``z`` float64 shaped like ``y`` (NaN on invalid pixels).
    """
    check_lambda(lambda_, order)
    if engine not in ENGINES:
        raise ConfigError(
            f"Whittaker engine={engine!r} is unknown; use one of {', '.join(ENGINES)}."
        )
    if engine == "numba" and not HAVE_NUMBA:
        raise ConfigError(
            "Whittaker engine='numba' needs the numba package (pip install numba); "
            "use engine='auto' to fall back to numpy."
        )
    y = np.asarray(y)
    w = np.asarray(w, dtype=np.float64)
    n, npx, squeeze = _check_inputs(y, w)
    if off is not None:
        off = np.asarray(off, dtype=np.float64)
        if off.shape != w.shape or not np.all(np.isfinite(off)):
            raise InvalidInputError(
                f"whittaker off has shape {off.shape} (or non-finite values); it needs the "
                f"weights' shape {w.shape}, finite."
            )
    pix = np.zeros(0, dtype=np.int64)
    if pixels is not None:
        pix = np.ascontiguousarray(pixels, dtype=np.int64)
        if pix.size and (pix.min() < 0 or pix.max() >= npx):
            raise InvalidInputError(
                f"whittaker pixels index {npx} pixels but range {pix.min()}..{pix.max()}."
            )
        w = w[:, pix]
        off = None if off is None else off[:, pix]
        npx = pix.size
        if engine == "numpy" or not HAVE_NUMBA:
            y, pix = y[..., pix], np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InvalidInputError(
            "Whittaker weights must be finite and >= 0; set the weight of a missing "
            "observation to 0 instead of NaN or a negative value."
        )
    yv = y[:, None, :] if squeeze else y
    nb = yv.shape[1]
    bands = difference_penalty_bands(n, order)
    need = max(order, int(min_points or order))
    z = np.empty((n, nb, npx), dtype=np.float64)
    valid = np.empty(npx, dtype=bool)
    if HAVE_NUMBA and engine != "numpy":
        if yv.dtype not in (np.float32, np.float64):
            yv = yv.astype(np.float64)
        offk = np.zeros((0, npx)) if off is None else off
        nbad = _run_kernel(
            yv, w, offk, pix, bands, float(lambda_), need, block_px(n), z, valid, threads
        )
        if nbad:
            raise InvalidInputError(_NAN_UNDER_WEIGHT)
        return WhittakerResult(z=z[:, 0, :] if squeeze else z, valid=valid)
    for s in range(0, npx, chunk):
        e = min(s + chunk, npx)
        wc = w[:, s:e]
        with np.errstate(invalid="ignore"):  # inf * 0 under zero weight: zeroed below
            b = np.multiply(yv[:, :, s:e], wc[:, None, :], dtype=np.float64)  # W y
        pos = wc > 0
        ok = pos.sum(axis=0) >= need
        if not np.isfinite(b).all():  # NaN/inf values: allowed only under zero weight
            finite = np.isfinite(yv[:, :, s:e])
            if (pos[:, None, :] & ~finite).any():
                raise InvalidInputError(_NAN_UNDER_WEIGHT)
            b[~finite] = 0.0
        if not ok.all():
            wc = np.where(ok[None, :], wc, 1.0)  # dummy weights keep the system regular
            b[:, :, ~ok] = 0.0
        ab0 = wc + lambda_ * bands[0][:, None]
        low = np.zeros((order + 1, n, e - s))
        dinv = np.empty((n, e - s))
        oc = None if off is None else np.where(ok[None, :], off[:, s:e], 0.0)
        piv = _factor(ab0, bands, float(lambda_), low, dinv, oc)
        _solve_numpy(b, low, dinv)
        ok &= np.all(piv > 0, axis=0)
        if not ok.all():
            b[:, :, ~ok] = np.nan
        z[:, :, s:e] = b
        valid[s:e] = ok
    return WhittakerResult(z=z[:, 0, :] if squeeze else z, valid=valid)


def whittaker_torch(
    y: Any,
    w: Any,
    lambda_: float,
    order: int = 2,
    *,
    min_points: int | None = None,
    chunk: int | None = None,
    off: Any = None,
) -> WhittakerResult:
    """Torch twin of :func:`whittaker` on the tensors' device (CPU or CUDA).

    Same arguments and result as :func:`whittaker`, with torch tensors (numpy arrays are
    converted, on CPU). Computes in the dtype of ``y`` promoted to at least float32; pass
    float64 to match the numpy path to round-off (1e-10 in tests/temporal/test_whittaker.py);
    float32
    loses about three digits inside long gaps (2e-3 absolute on reflectance-like values at
    lambda = 100 in the tests), so the pipeline uses float64 on every device.
    """
    import torch  # lazy: torch (~1 s import) only on this path

    check_lambda(lambda_, order)
    y = torch.as_tensor(y)
    w = torch.as_tensor(w, device=y.device)
    n, npx, squeeze = _check_inputs(y, w)
    dtype = y.dtype if y.dtype in (torch.float32, torch.float64) else torch.float32
    w = w.to(dtype)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise InvalidInputError(
            "Whittaker weights must be finite and >= 0; set the weight of a missing "
            "observation to 0 instead of NaN or a negative value."
        )
    yv = (y[:, None, :] if squeeze else y).to(dtype)
    nb = yv.shape[1]
    bands = difference_penalty_bands(n, order)
    bands0 = torch.tensor(np.array(bands[0]), dtype=dtype, device=y.device)
    need = max(order, int(min_points or order))
    if chunk is None:  # cache-sized blocks on CPU, few big launches on a GPU
        chunk = 4096 if y.device.type == "cpu" else 1 << 20
    z = torch.empty((n, nb, npx), dtype=dtype, device=y.device)
    valid = torch.empty(npx, dtype=torch.bool, device=y.device)
    for s in range(0, npx, chunk):
        e = min(s + chunk, npx)
        wc = w[:, s:e]
        yc = yv[:, :, s:e]
        pos = wc > 0
        if bool((pos[:, None, :] & ~torch.isfinite(yc)).any()):
            raise InvalidInputError(_NAN_UNDER_WEIGHT)
        ok = pos.sum(dim=0) >= need
        wc = torch.where(ok[None, :], wc, torch.ones_like(wc))
        keep = pos[:, None, :] & ok[None, None, :]
        b = torch.where(keep, wc[:, None, :] * torch.nan_to_num(yc), torch.zeros_like(yc))
        ab0 = wc + float(lambda_) * bands0[:, None]
        low = torch.zeros((order + 1, n, e - s), dtype=dtype, device=y.device)
        dinv = torch.empty((n, e - s), dtype=dtype, device=y.device)
        oc = None
        if off is not None:
            oc = torch.where(
                ok[None, :], torch.as_tensor(off, device=y.device)[:, s:e].to(dtype), 0.0
            )
        piv = _factor(ab0, bands, float(lambda_), low, dinv, oc)
        _solve_torch(b, low, dinv)
        ok = ok & (piv > 0).all(dim=0)
        b[:, :, ~ok] = float("nan")
        z[:, :, s:e] = b
        valid[s:e] = ok
    return WhittakerResult(z=z[:, 0, :] if squeeze else z, valid=valid)
