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

A pixel whose weights are positive on fewer than ``min_points`` nodes (at least ``d``, below
which the system is singular) comes back as NaN with ``valid = False``; it is never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geoxai.errors import ConfigError, InvalidInputError

__all__ = [
    "WhittakerResult",
    "difference_penalty_bands",
    "whittaker",
    "whittaker_torch",
    "check_lambda",
]


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
        float64 array ``(order + 1, n)``; row ``k`` holds ``P[i, i - k]`` (zero for ``i < k``).
    """
    if n <= order:
        raise InvalidInputError(
            f"A series of {n} nodes is too short for order-{order} differences; "
            f"use at least {order + 1} nodes."
        )
    d = np.diff(np.eye(n), n=order, axis=0)  # (n - order, n)
    p = d.T @ d
    bands = np.zeros((order + 1, n))
    for k in range(order + 1):
        bands[k, k:] = np.diagonal(p, offset=-k)
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


def _factor(ab0: Any, bands: np.ndarray, lam: float, low: Any, dinv: Any) -> Any:
    """In-place banded ``L D L'`` factorization, generic over numpy arrays and torch tensors.

    Args:
        ab0: ``(n, N)`` diagonal of ``W + lam P``.
        bands: ``(d + 1, n)`` float64 penalty bands (read as python floats).
        lam: lambda.
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
            for m in range(max(i - p, 0), j):
                s = s - low[i - m, i] * low[j - m, j] * piv[m]
            low[k, i] = s * dinv[j]
        di = ab0[i]
        for k in range(1, kmax + 1):
            di = di - low[k, i] * low[k, i] * piv[i - k]
        piv[i] = di
        dinv[i] = 1.0 / di
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


def whittaker(
    y: np.ndarray,
    w: np.ndarray,
    lambda_: float,
    order: int = 2,
    *,
    min_points: int | None = None,
    chunk: int = 2048,
) -> WhittakerResult:
    """Weighted Whittaker smoothing of many series on one regular grid (numpy, float64).

    Args:
        y: values ``(n, B, N)`` or ``(n, N)`` (time first, pixels last); may hold NaN/inf where
            the weight is 0.
        w: weights ``(n, N)``, finite and ``>= 0``; shared by the ``B`` bands of a pixel.
        lambda_: smoothing strength on this grid's spacing (> 0).
        order: difference order ``d`` (2 = the reference).
        min_points: fewest nodes with positive weight for a valid pixel (default and minimum
            ``order``, below which the system is singular).
        chunk: pixels per block (bounds the scratch memory: ``~8 (d + B + 3) n chunk`` bytes).

    Returns:
        :class:`WhittakerResult` with ``z`` float64 shaped like ``y`` (NaN on invalid pixels).
    """
    check_lambda(lambda_, order)
    y = np.asarray(y)
    w = np.asarray(w, dtype=np.float64)
    n, npx, squeeze = _check_inputs(y, w)
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
    for s in range(0, npx, chunk):
        e = min(s + chunk, npx)
        wc = w[:, s:e]
        b = np.multiply(yv[:, :, s:e], wc[:, None, :], dtype=np.float64)  # W y
        pos = wc > 0
        ok = pos.sum(axis=0) >= need
        if not np.isfinite(b).all():  # NaN/inf values: allowed only under zero weight
            finite = np.isfinite(yv[:, :, s:e])
            if (pos[:, None, :] & ~finite).any():
                raise InvalidInputError(
                    "Whittaker values are NaN/inf where the weight is positive; give those "
                    "observations weight 0."
                )
            b[~finite] = 0.0
        if not ok.all():
            wc = np.where(ok[None, :], wc, 1.0)  # dummy weights keep the system regular
            b[:, :, ~ok] = 0.0
        ab0 = wc + lambda_ * bands[0][:, None]
        low = np.zeros((order + 1, n, e - s))
        dinv = np.empty((n, e - s))
        piv = _factor(ab0, bands, float(lambda_), low, dinv)
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
) -> WhittakerResult:
    """Torch twin of :func:`whittaker` on the tensors' device (CPU or CUDA).

    Same arguments and result as :func:`whittaker`, with torch tensors (numpy arrays are
    converted, on CPU). Computes in the dtype of ``y`` promoted to at least float32; pass
    float64 to match the numpy path to round-off (1e-10 in tests/test_whittaker.py); float32
    loses about three digits inside long gaps (2e-3 absolute on reflectance-like values at
    lambda = 100 in the tests), so the pipeline uses float64 on every device.
    """
    import torch

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
    bands0 = torch.as_tensor(bands[0], dtype=dtype, device=y.device)
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
            raise InvalidInputError(
                "Whittaker values are NaN/inf where the weight is positive; give those "
                "observations weight 0."
            )
        ok = pos.sum(dim=0) >= need
        wc = torch.where(ok[None, :], wc, torch.ones_like(wc))
        keep = pos[:, None, :] & ok[None, None, :]
        b = torch.where(keep, wc[:, None, :] * torch.nan_to_num(yc), torch.zeros_like(yc))
        ab0 = wc + float(lambda_) * bands0[:, None]
        low = torch.zeros((order + 1, n, e - s), dtype=dtype, device=y.device)
        dinv = torch.empty((n, e - s), dtype=dtype, device=y.device)
        piv = _factor(ab0, bands, float(lambda_), low, dinv)
        _solve_torch(b, low, dinv)
        ok = ok & (piv > 0).all(dim=0)
        b[:, :, ~ok] = float("nan")
        z[:, :, s:e] = b
        valid[s:e] = ok
    return WhittakerResult(z=z[:, 0, :] if squeeze else z, valid=valid)
