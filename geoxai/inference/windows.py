"""Gaussian-blended window inference on a lattice fixed per UTM zone (seamless across tiles).

A CNN is run over a tile in overlapping square windows and the window predictions are blended
with Gaussian weights, as WRI's tropical tree cover pipeline does, with two differences that
make adjacent tiles agree exactly in their overlap:

1. **Windows sit on a zone-global lattice.** A window's kept part starts at an *absolute* zone
   pixel position (row, col) that is a multiple of ``stride``, where the zone pixel of a point
   ``(x, y)`` metres is ``(-y / res, x / res)``. Two tiles whose arrays both contain a window's
   whole input therefore feed it the same pixels and get the same prediction.
2. **The halo is large enough.** With ``halo_px >= required_halo(window, stride, context)``
   every window that covers a core pixel lies wholly inside the haloed array, so each core
   pixel receives the same set of windows, with the same weights, in every tile that holds it.

Pieces (after MONAI's Splitter / importance map / Merger):

- :func:`window_origins` lists the lattice windows of an array (row-major, array-relative);
- :func:`gaussian_weights` is the pure importance map ``exp(-(x^2 + y^2) / (2 sigma^2))``;
- :class:`WindowMerger` accumulates ``sum(w * p)`` and ``sum(w)`` in float64 (nodata-aware);
- :func:`predict_windows` gathers batches of windows, runs the model under
  ``torch.inference_mode`` (optional bf16/fp16 autocast) and merges.

"Context pixels": the model sees ``window + 2 * context`` pixels and only the central
``window x window`` part of its output is kept and blended (the reference crops 7 px of a 172 px
input to keep 158 px). The default ``sigma`` follows the reference's ratio, 36 px for a 158 px
window (``sigma = window * 36 / 158``).

Cost: on CPU everything around the model call runs in numpy on the calling thread: masks,
window counts (a summed-area table), slice copies of the windows into one reused batch buffer,
the merge by in-place slice adds (a window is a slice, not a scatter; a fully valid window's
weight map is the Gaussian itself) and the final division. Each small torch operation wakes the
intra-op thread pool, which costs milliseconds (over 100 ms measured) when other processes hold
the cores; numpy has no pool. With the built-in TemporalUNet the total stays within ~5 % of
the bare forward passes (benchmarks/bench_blending.py). Accelerators, and dtypes numpy lacks
(bfloat16), take the general path: one indexing op per batch to gather, one scatter-add to merge.
The two paths do the same float64 arithmetic (tests/inference/test_inference.py checks them bit for
bit).

Exactness: accumulation is in float64 and the result is rounded to float32 once, so a model that
returns its input comes back bit-exact in float32 (the float64 relative error of the weighted
mean, ~1e-16, is far below half a float32 ulp).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from geoxai.errors import ConfigError, InvalidInputError

__all__ = [
    "REFERENCE_SIGMA_RATIO",
    "MIN_WEIGHT",
    "WindowParams",
    "Blended",
    "lattice_origin",
    "window_origins",
    "gaussian_weights",
    "required_halo",
    "check_halo",
    "WindowMerger",
]

REFERENCE_SIGMA_RATIO = 36.0 / 158.0
"""Gaussian sigma per kept-window pixel in WRI's tree cover pipeline (sigma 36 px, window 158)."""


MIN_WEIGHT = 1e-6
"""Floor of the Gaussian weights (relative to the peak 1); only reached for sigma << window."""


@dataclass(frozen=True)
class WindowParams:
    """How a tile is cut into lattice windows and blended.

    Attributes:
        window: edge of the kept (blended) part of a window, pixels.
        stride: lattice step between window origins, pixels (<= window, so windows cover).
        context: extra input pixels on each side; the model sees ``window + 2 * context``.
        sigma: Gaussian sigma in pixels over the kept window; None = ``window * 36 / 158``.
        batch_size: windows per model call.
        pad_edges: also run windows that stick out of the array (zero input outside, no
            weight there), so every pixel is covered; False runs only windows wholly inside.
    """

    window: int = 64
    stride: int = 32
    context: int = 8
    sigma: float | None = None
    batch_size: int = 16
    pad_edges: bool = True

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"window must be >= 1 pixel, got {self.window}.")
        if not 1 <= self.stride <= self.window:
            raise ConfigError(
                f"stride must be in 1..window ({self.window}) so windows cover every pixel, "
                f"got {self.stride}."
            )
        if self.context < 0:
            raise ConfigError(f"context must be >= 0 pixels, got {self.context}.")
        if self.sigma is not None and not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(
                f"sigma must be a positive number of pixels or None, got {self.sigma}."
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")

    @property
    def input_size(self) -> int:
        """Edge of the model input, ``window + 2 * context`` pixels."""
        return self.window + 2 * self.context

    @property
    def sigma_px(self) -> float:
        """The Gaussian sigma actually used, pixels."""
        return self.sigma if self.sigma is not None else self.window * REFERENCE_SIGMA_RATIO


class Blended(NamedTuple):
    """Result of :func:`predict_windows`.

    Attributes:
        values: ``(K, H, W)`` float32 weighted mean of the window outputs; NaN where no window
            with valid input covers the pixel.
        weight: ``(H, W)`` float32 sum of the Gaussian weights that went into each pixel
            (0 = nodata).
    """

    values: np.ndarray
    weight: np.ndarray


def _check_int(value: float, what: str) -> int:
    r = round(value)
    if abs(value - r) > 1e-6:
        raise InvalidInputError(
            f"{what} is {value!r} pixels, not on the zone pixel lattice; the grid transform must "
            "have its origin at a multiple of the pixel size (tiles of geoxai.geo.grid do)."
        )
    return int(r)


def lattice_origin(transform: Sequence[float]) -> tuple[int, int]:
    """Zone pixel ``(row, col)`` of array pixel ``(0, 0)``.

    Args:
        transform: affine ``(a, b, c, d, e, f)`` of a north-up grid (an ``affine.Affine`` or
            the first six numbers of one), metres of a UTM zone; ``a = -e`` = pixel size.

    Returns:
        ``(-f / res, c / res)``: rows count southwards from northing 0, columns eastwards
        from easting 0.
    """
    try:
        a, b, c, d, e, f = (float(v) for v in list(transform)[:6])
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"grid transform {transform!r} is not six numbers (a, b, c, d, e, f)."
        ) from exc
    if b != 0 or d != 0 or a <= 0 or not math.isclose(a, -e, rel_tol=1e-9):
        raise InvalidInputError(
            f"grid transform {(a, b, c, d, e, f)} is not north-up with square pixels "
            "(need b = d = 0 and a = -e > 0); reproject the cube to the tile grid first."
        )
    return _check_int(-f / a, "the grid's top edge"), _check_int(c / a, "the grid's left edge")


def _axis_origins(n: int, zone0: int, p: WindowParams) -> np.ndarray:
    """Array-relative kept-window origins along one axis of length ``n`` (ascending)."""
    if p.pad_edges:
        lo, hi = -p.window + 1, n - 1  # kept part intersects [0, n)
    else:
        lo, hi = p.context, n - p.window - p.context  # whole input inside [0, n)
    s = p.stride
    first = -((-(zone0 + lo)) // s) * s  # ceil to a multiple of s, in zone coordinates
    return np.arange(first, zone0 + hi + 1, s, dtype=np.int64) - zone0


def window_origins(
    shape: tuple[int, int], transform: Sequence[float], params: WindowParams
) -> np.ndarray:
    """The lattice windows of an ``(H, W)`` array.

    Returns:
        ``(N, 2)`` int64 array-relative ``(row, col)`` of each window's kept part (row-major
        order); the model input starts ``context`` pixels up and left of it. With
        ``pad_edges`` rows/cols may be negative or reach past the array.
    """
    zr, zc = lattice_origin(transform)
    rows = _axis_origins(int(shape[0]), zr, params)
    cols = _axis_origins(int(shape[1]), zc, params)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def gaussian_weights(window: int, sigma: float) -> np.ndarray:
    """Importance map of one kept window.

    Args:
        window: edge in pixels.
        sigma: standard deviation in pixels.

    Returns:
        ``(window, window)`` float64 ``exp(-(x^2 + y^2) / (2 sigma^2))`` with ``x, y`` the
        pixel offsets from the window centre ``(window - 1) / 2``; 1 at the centre, floored at
        :data:`MIN_WEIGHT` so that a small sigma never leaves a covered pixel without weight.
    """
    if window < 1 or not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(
            f"gaussian_weights needs window >= 1 and sigma > 0, got {window}, {sigma}."
        )
    d = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    g = np.exp(-(d**2) / (2.0 * sigma**2))
    return np.maximum(np.outer(g, g), MIN_WEIGHT)


def required_halo(window: int, stride: int, context: int, core_px: int = 600) -> int:
    """Smallest halo (pixels) that makes tile cores seamless for this window lattice.

    Every window whose kept part covers a core pixel must have its whole input
    (``window + 2 * context``) inside the haloed tile. Cores start at multiples of ``core_px``
    in zone pixels; the worst offset of the core relative to the stride lattice is taken.
    """
    worst = 0
    for c0 in range(0, stride, math.gcd(core_px, stride)):
        r_min = -((-(c0 - window + 1)) // stride) * stride  # first origin covering c0
        c1 = c0 + core_px
        r_max = ((c1 - 1) // stride) * stride  # last origin covering c1 - 1
        worst = max(worst, c0 - r_min + context, r_max + window + context - c1)
    return worst


def check_halo(
    halo_px: int, params: WindowParams, core_px: int = 600, *, what: str = "cube"
) -> None:
    """Raise :class:`ConfigError` if ``halo_px`` is too small for seamless tiles."""
    need = required_halo(params.window, params.stride, params.context, core_px)
    if halo_px < need:
        raise ConfigError(
            f"The {what} has a halo of {halo_px} px but windows of {params.window} px with stride "
            f"{params.stride} and context {params.context} need >= {need} px for adjacent tiles "
            f"to agree; rebuild the cube with halo_px >= {need} (or use smaller windows)."
        )


@lru_cache(maxsize=16)
def weights_tensor(window: int, sigma: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(gaussian_weights(window, sigma), dtype=dtype, device=device)


class WindowMerger:
    """Accumulates ``sum(w * p)`` and ``sum(w)`` of lattice windows over an ``(H, W)`` array.

    Windows may stick out of the array by up to ``window - 1`` pixels; what falls outside is
    dropped. Accumulation is float64 by default, so the finalized mean is exact to float32.
    """

    def __init__(
        self,
        n_outputs: int,
        shape: tuple[int, int],
        window: int,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        """Args:
        n_outputs: K, output maps per window.
        shape: ``(H, W)`` of the array, pixels.
        window: kept window edge, pixels.
        device: torch device of the accumulators.
        dtype: accumulator dtype (float64 for exactness).
        """
        self.k, self.h, self.w, self.window = int(n_outputs), int(shape[0]), int(shape[1]), window
        pad = window
        self._pw = self.w + 2 * pad
        self._ph = self.h + 2 * pad
        self._pad = pad
        if torch.device(device).type == "cpu" and dtype == torch.float64:
            # np.zeros maps lazily zeroed pages: no fill pass, no thread-pool wake-up
            self.num = torch.from_numpy(np.zeros((self.k, self._ph * self._pw)))
            self.den = torch.from_numpy(np.zeros((self._ph * self._pw,)))
        else:
            self.num = torch.zeros((self.k, self._ph * self._pw), dtype=dtype, device=device)
            self.den = torch.zeros((self._ph * self._pw,), dtype=dtype, device=device)
        d = torch.arange(window, device=device)
        self._offs = (d[:, None] * self._pw + d[None, :]).reshape(-1)

    def add(
        self, origins: torch.Tensor | np.ndarray, preds: torch.Tensor, weights: torch.Tensor
    ) -> None:
        """Add a batch of windows.

        Args:
            origins: ``(B, 2)`` array-relative ``(row, col)`` of each kept window.
            preds: ``(B, K, window, window)`` outputs (any float dtype; NaN/inf get no weight).
            weights: ``(B, window, window)`` weights (Gaussian x validity), >= 0.
        """
        dev, dt = self.num.device, self.num.dtype
        o = torch.as_tensor(origins, device=dev, dtype=torch.int64)
        if preds.shape[1:] != (self.k, self.window, self.window) or o.shape[0] != preds.shape[0]:
            raise InvalidInputError(
                f"merger expects ({o.shape[0]}, {self.k}, {self.window}, {self.window}) window "
                f"outputs, got {tuple(preds.shape)}."
            )
        if dev.type == "cpu" and dt == torch.float64:
            self._add_cpu(o.tolist(), as_numpy(preds), as_numpy(weights))
            return
        p = preds.to(device=dev, dtype=dt)
        wt = weights.to(device=dev, dtype=dt)
        bad = ~torch.isfinite(p).all(dim=1)
        if bool(bad.any()):
            wt = wt.masked_fill(bad, 0.0)
            p = torch.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0)
        if dev.type == "cpu":  # in-place slice updates: no index arrays, cache friendly
            num = self.num.view(self.k, self._ph, self._pw)
            den = self.den.view(self._ph, self._pw)
            n = self.window
            for j, (r, c) in enumerate((o + self._pad).tolist()):
                den[r : r + n, c : c + n] += wt[j]
                num[:, r : r + n, c : c + n].addcmul_(p[j], wt[j])
            return
        # accelerators: one scatter-add per batch instead of 2 B small kernels
        base = (o[:, 0] + self._pad) * self._pw + (o[:, 1] + self._pad)
        idx = (base[:, None] + self._offs[None, :]).reshape(-1)
        self.den.index_add_(0, idx, wt.reshape(-1))
        wp = (p * wt[:, None]).permute(1, 0, 2, 3).reshape(self.k, -1)
        self.num.index_add_(1, idx, wp)

    def _add_cpu(
        self,
        origins: list[list[int]],
        preds: np.ndarray,
        weights: np.ndarray | Sequence[np.ndarray],
    ) -> None:
        """CPU merge: per window one in-place slice add of ``w`` and of ``w * p`` (float64).

        numpy ops run on the calling thread (no thread-pool wake-up per small op, which costs
        milliseconds on a loaded machine); a window is a slice, so there is no scatter.
        ``weights`` is ``(B, window, window)`` or a sequence of B such maps (shared maps are
        fine). Non-finite outputs get no weight, exactly as in the general path.
        """
        num = self.num.numpy().reshape(self.k, self._ph, self._pw)
        den = self.den.numpy().reshape(self._ph, self._pw)
        n, pad = self.window, self._pad
        tmp = np.empty((self.k, n, n), dtype=np.float64)
        # a float64 sum of float32/float64 values is finite iff every value is finite (float32
        # values cannot overflow it; float64 ones may, which only sends us to the slow check)
        all_finite = bool(np.isfinite(preds.sum(dtype=np.float64)))
        for j, (r, c) in enumerate(origins):
            wt = weights[j]
            pj = preds[j]
            if not all_finite:
                bad = ~np.isfinite(pj).all(axis=0)
                if bad.any():
                    wt = np.where(bad, 0.0, wt)
                    pj = np.where(np.isfinite(pj), pj, 0.0)
            r, c = r + pad, c + pad
            den[r : r + n, c : c + n] += wt
            np.multiply(pj, wt, out=tmp)
            num[:, r : r + n, c : c + n] += tmp

    def finalize(self) -> Blended:
        """Weighted mean ``(K, H, W)`` float32 (NaN where no weight) and weight sum ``(H, W)``."""
        pad = self._pad
        if self.num.device.type == "cpu":  # same IEEE ops in numpy, on this thread
            nn_ = self.num.numpy().reshape(self.k, self._ph, self._pw)
            dn = self.den.numpy().reshape(self._ph, self._pw)[
                pad : pad + self.h, pad : pad + self.w
            ]
            with np.errstate(invalid="ignore", divide="ignore"):
                q = nn_[:, pad : pad + self.h, pad : pad + self.w] / dn
            vals = np.where(dn > 0, q, np.nan).astype(np.float32)
            return Blended(values=vals, weight=dn.astype(np.float32))
        num = self.num.view(self.k, self._ph, self._pw)[:, pad : pad + self.h, pad : pad + self.w]
        den = self.den.view(self._ph, self._pw)[pad : pad + self.h, pad : pad + self.w]
        out = torch.where(den > 0, num / den, torch.full_like(num, float("nan")))
        return Blended(
            values=out.to(torch.float32).cpu().numpy(),
            weight=den.to(torch.float32).cpu().numpy(),
        )


def as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array without a copy where possible (bf16/fp16 -> float32)."""
    if isinstance(x, np.ndarray):
        return x
    if x.dtype in (torch.bfloat16, torch.float16):
        x = x.to(torch.float32)
    return x.detach().cpu().numpy()


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t
