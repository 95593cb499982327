"""The smoothing stage's solve on a torch device (CPU or CUDA): binning, solve, sampling.

:func:`smooth_block_torch` is the device twin of :func:`geoxai.temporal.binning.bin_to_grid`
+ :func:`geoxai.temporal.smoothing.solve_and_sample` for one row block: the block's values
and weights go to the device once, the binning (``index_add_`` onto the nodes), the Whittaker
solve per lambda candidate (:func:`geoxai.temporal.whittaker.whittaker_torch`) and the held
sampling (a gather of the two nodes around each step) stay there, and only the sampled
``(S, C, N)`` result and ``valid`` come back: no host round-trip inside the block. Float64 on
the device, like the numpy path (float32 loses ~3 digits inside long gaps, see
:func:`~geoxai.temporal.whittaker.whittaker_torch`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geoxai.temporal.axis import SmoothingParams, solve_groups
from geoxai.temporal.binning import interp_nodes, obs_nodes
from geoxai.temporal.whittaker import whittaker_torch

__all__ = ["bin_torch", "sample_held_torch", "smooth_block_torch"]


def bin_torch(
    vals: Any, w: Any, at: tuple[np.ndarray, np.ndarray], n_nodes: int
) -> tuple[Any, Any, Any, Any, Any]:
    """Device binning: ``vals`` ``(T, C, N)``, ``w`` ``(T, N)`` tensors, ``at`` ``(lo, frac)``
    ``(T,)`` (:func:`geoxai.temporal.binning.obs_nodes`; ``lo = -1`` = outside) -> ``ybar``
    ``(G, C, N)`` (NaN where no weight), ``wsum`` ``(G, N)``, ``woff`` ``(G, N)``, ``n_obs``
    ``(N,)``, ``ends`` ``(2, N)`` (the fields of :class:`geoxai.temporal.binning.Binned`)."""
    import torch  # lazy: torch only on this path

    lo, frac = at
    inside = np.nonzero(lo >= 0)[0]
    dev = vals.device
    it = torch.as_tensor(inside, device=dev)
    lt = torch.as_tensor(lo[inside], device=dev)
    f = torch.as_tensor(frac[inside], dtype=w.dtype, device=dev)[:, None]
    wi = w.index_select(0, it)
    pos = wi > 0
    wy = torch.where(pos[:, None, :], vals.index_select(0, it), 0.0) * wi[:, None, :]
    c, n = vals.shape[1], vals.shape[2]
    wsum = torch.zeros((n_nodes, n), dtype=w.dtype, device=dev)
    wsum.index_add_(0, lt, wi * (1.0 - f) ** 2).index_add_(0, lt + 1, wi * f**2)
    woff = torch.zeros((n_nodes, n), dtype=w.dtype, device=dev)
    woff.index_add_(0, lt + 1, wi * (f * (1.0 - f)))
    acc = torch.zeros((n_nodes, c, n), dtype=w.dtype, device=dev)
    acc.index_add_(0, lt, wy * (1.0 - f)[:, :, None]).index_add_(0, lt + 1, wy * f[:, :, None])
    ybar = torch.where(wsum[:, None, :] > 0, acc / wsum[:, None, :], float("nan"))
    p = torch.as_tensor(lo[inside] + frac[inside], dtype=w.dtype, device=dev)[:, None]
    n_obs = pos.sum(dim=0)
    first, last = torch.zeros_like(wsum[0]), torch.full_like(wsum[0], n_nodes - 1.0)
    if inside.size:  # positions of each pixel's first/last weighted observation
        first = torch.where(n_obs > 0, torch.where(pos, p, float("inf")).amin(dim=0), first)
        last = torch.where(n_obs > 0, torch.where(pos, p, -float("inf")).amax(dim=0), last)
    return ybar, wsum, woff, n_obs, torch.stack([first, last])


def sample_held_torch(z: Any, ends: Any, lo: np.ndarray, frac: np.ndarray, valid: Any) -> Any:
    """Device twin of :func:`geoxai.temporal.binning.sample_held`: ``z`` ``(G, C, N)`` read
    at ``(lo, frac)`` ``(S,)``, held beyond each pixel's first/last observation (``ends``
    ``(2, N)`` grid positions); NaN where not ``valid``. Returns ``(S, C, N)``."""
    import torch  # lazy: torch only on this path

    g = z.shape[0]
    at = torch.as_tensor(lo + frac, dtype=z.dtype, device=z.device)[:, None]
    pos = torch.minimum(torch.maximum(at, ends[0][None]), ends[1][None])  # (S, N)
    a = torch.clamp(torch.floor(pos).to(torch.int64), max=g - 2)
    f = (pos - a)[:, None, :]
    shape = (a.shape[0], z.shape[1], z.shape[2])
    za = torch.gather(z, 0, a[:, None, :].expand(shape))
    zb = torch.gather(z, 0, (a + 1)[:, None, :].expand(shape))
    out = (1.0 - f) * za + f * zb
    return torch.where(valid[None, None, :], out, float("nan"))


def smooth_block_torch(
    parts: list[np.ndarray],
    weights: np.ndarray,
    obs_days: np.ndarray,
    nodes: np.ndarray,
    params: SmoothingParams,
    at_days: np.ndarray,
    *,
    choice: np.ndarray | None,
    device: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One block on the device: bin, solve (per candidate when ``params.lambda_`` is None,
    ``choice`` ``(N,)`` then required), hold, sample.

    Args:
        parts: ``(T, C_i, N)`` observation arrays, channels stacked in order.
        weights: ``(T, N)`` weights (0 where a channel is NaN).
        obs_days: ``(T,)`` days from the axis start; ``nodes`` ``(G,)`` the fine grid.
        params: smoothing parameters; ``at_days`` ``(S,)`` where to sample.
        choice: per-pixel candidate index (lambda_ None).
        device: torch device ("cpu", "cuda").

    Returns:
        ``(S, C, N)`` float64 sampled values (NaN where invalid), ``(N,)`` valid, ``(N,)``
        weighted observations.
    """
    import torch  # lazy: torch only on this path

    dt = torch.float64
    vals = torch.cat([torch.as_tensor(np.asarray(p)).to(device) for p in parts], dim=1).to(dt)
    w = torch.as_tensor(np.asarray(weights)).to(device).to(dt)
    ybar, wsum, woff, n_obs, ends = bin_torch(vals, w, obs_nodes(obs_days, nodes), nodes.size)
    del vals
    lo, frac = interp_nodes(nodes, at_days)
    n = ybar.shape[2]
    out = torch.full((lo.size, ybar.shape[1], n), float("nan"), dtype=dt, device=ybar.device)
    valid = torch.zeros(n, dtype=torch.bool, device=ybar.device)
    if params.lambda_ is None and choice is None:
        raise ValueError("smooth_block_torch: lambda_ is None and no per-pixel choice.")
    groups = solve_groups(params)
    if params.lambda_ is None:
        ch = torch.as_tensor(np.asarray(choice), device=ybar.device)
    for k, order, lam in groups:
        sel = None if k < 0 else torch.nonzero(ch == k).ravel()
        if sel is not None and sel.numel() == 0:
            continue
        yk = ybar if sel is None else ybar[:, :, sel]
        wk = wsum if sel is None else wsum[:, sel]
        ofk = woff if sel is None else woff[:, sel]
        res = whittaker_torch(yk, wk, lam, order, min_points=order, off=ofk)
        ok = res.valid & ((n_obs if sel is None else n_obs[sel]) >= params.min_obs)
        sampled = sample_held_torch(res.z, ends if sel is None else ends[:, sel], lo, frac, ok)
        if sel is None:
            out, valid = sampled, ok
        else:
            out[:, :, sel] = sampled
            valid[sel] = ok
    return out.cpu().numpy(), valid.cpu().numpy(), n_obs.cpu().numpy()
