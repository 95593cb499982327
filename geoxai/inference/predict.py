"""Gaussian-blended inference of a tile: a model run over lattice windows, merged by
:class:`~geoxai.inference.windows.WindowMerger` (numpy or torch, CPU or CUDA, fp32/bf16).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from geoxai.errors import ConfigError, InvalidInputError, NoDataError
from geoxai.inference.windows import (
    Blended,
    WindowMerger,
    WindowParams,
    as_numpy,
    as_tensor,
    weights_tensor,
    window_origins,
)

__all__ = [
    "predict_windows",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]
"""A model: ``(B, T, C, h, w)`` (or ``(B, C, h, w)``) windows -> ``(B, K, h', w')`` maps."""


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def predict_windows(
    model: ModelFn,
    x: np.ndarray | torch.Tensor,
    transform: Sequence[float],
    valid: np.ndarray | torch.Tensor | None = None,
    params: WindowParams | None = None,
    *,
    device: str | torch.device = "cpu",
    autocast: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Blended:
    """Run ``model`` over lattice windows of ``x`` and blend the outputs with Gaussian weights.

    Args:
        model: callable mapping a batch of windows ``(B, T, C, n, n)`` (or ``(B, C, n, n)`` for
            a 3-D ``x``), ``n = window + 2 * context``, to ``(B, K, n, n)`` or
            ``(B, K, window, window)`` maps; of an ``n``-sized output only the central
            ``window`` part is kept. Called under ``torch.inference_mode``.
        x: ``(T, C, H, W)`` or ``(C, H, W)`` float input on the grid of ``transform``. NaN
            pixels are nodata (fed to the model as 0, given no weight).
        transform: affine of the grid (see :func:`lattice_origin`); fixes the window lattice.
        valid: optional ``(H, W)`` bool mask; False pixels are nodata.
        params: window size, stride, context, sigma, batch size.
        device: torch device to run the model and the merge on (chosen by the caller).
        autocast: None, ``"bf16"`` or ``"fp16"``: mixed precision for the model call.
        progress: called as ``progress(done_windows, total_windows)`` after every batch.

    Returns:
        :class:`Blended` with ``(K, H, W)`` float32 values and the ``(H, W)`` weight sum.

    Raises:
        InvalidInputError: ``x`` has the wrong rank, is smaller than one model input, or the
            model returns maps of the wrong shape.
        NoDataError: no pixel of ``x`` is valid.
    """
    p = params or WindowParams()
    dev = torch.device(device)
    t = as_tensor(x)
    if t.ndim not in (3, 4):
        raise InvalidInputError(
            f"predict_windows needs a (T, C, H, W) or (C, H, W) array, got shape {tuple(t.shape)}."
        )
    has_time = t.ndim == 4
    if not has_time:
        t = t.unsqueeze(0)
    n_t, n_c, h, w = (int(v) for v in t.shape)
    n = p.input_size
    if h < n or w < n:
        raise InvalidInputError(
            f"The array is {h}x{w} px, smaller than one model input of {n}x{n} px (window "
            f"{p.window} + 2 x context {p.context}); use a larger tile/halo or smaller windows."
        )
    if autocast is not None and autocast not in _AUTOCAST:
        raise ConfigError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}.")

    t = t.to(dev)
    vm: torch.Tensor | None = None
    if valid is not None:
        vm = torch.as_tensor(np.asarray(valid) if not isinstance(valid, torch.Tensor) else valid)
        if tuple(vm.shape) != (h, w):
            raise InvalidInputError(
                f"valid mask has shape {tuple(vm.shape)}, expected the array's (H, W) = ({h}, {w})."
            )
    # CPU: masks, window gathering (slice copies into one reused batch buffer), merge and
    # finalize run in numpy on this thread. Every small torch op wakes the intra-op thread
    # pool, which costs milliseconds (100+ ms measured) when other processes hold the cores;
    # numpy has no pool, and the reused buffer avoids per-batch allocations. The model gets
    # the same batches and the merge does the same float64 operations as the general path.
    fast = dev.type == "cpu" and t.dtype in (torch.float16, torch.float32, torch.float64)
    # NaN/inf anywhere in a pixel's series makes its sum non-finite: one pass, no bool cube
    if fast:
        xs = t.detach().numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            acc = np.float64 if xs.dtype == np.float64 else np.float32  # fp16: no overflow
            finite_np = np.isfinite(xs.sum(axis=(0, 1), dtype=acc))  # (H, W)
        ok_np = finite_np if vm is None else finite_np & vm.cpu().numpy().astype(bool)
        any_ok, all_finite = bool(ok_np.any()), bool(finite_np.all())
    else:
        finite = torch.isfinite(t.sum(dim=(0, 1)))  # (H, W)
        ok = finite if vm is None else finite & vm.to(device=dev, dtype=torch.bool)
        any_ok, all_finite = bool(ok.any()), bool(finite.all())
    if not any_ok:
        raise NoDataError(
            f"No valid pixel in the {h}x{w} input (all NaN or masked): nothing to predict."
        )
    if not all_finite:
        if fast:
            xs = np.nan_to_num(xs, nan=0.0, posinf=0.0, neginf=0.0)
        else:
            t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)

    origins = window_origins((h, w), transform, p)
    if len(origins) == 0:
        raise InvalidInputError(
            f"No lattice window of {n}x{n} px (stride {p.stride}) fits wholly inside the {h}x{w} "
            "array; use a larger array or pad_edges=True."
        )
    win, ctx = p.window, p.context
    gauss = weights_tensor(win, float(p.sigma_px), str(dev), torch.float64)
    if fast:
        # validity padded so that any window (kept part) is a slice of it; valid-pixel count
        # per window from a summed-area table: live (> 0) and wholly valid (= win^2) windows
        vpad_np = np.zeros((h + 2 * win, w + 2 * win))
        vpad_np[win : win + h, win : win + w] = ok_np
        sat = np.zeros((h + 2 * win + 1, w + 2 * win + 1), dtype=np.int64)
        sat[1:, 1:] = (vpad_np > 0).cumsum(axis=0).cumsum(axis=1)
        ra, ca = origins[:, 0] + win, origins[:, 1] + win
        cnt = sat[ra + win, ca + win] - sat[ra, ca + win] - sat[ra + win, ca] + sat[ra, ca]
        live_np = cnt > 0
        origins, full = origins[live_np], cnt[live_np] == win * win
        g64 = gauss.numpy()
    else:
        # validity padded so that any window (kept part) can be cut out of it
        vpad = torch.zeros((h + 2 * win, w + 2 * win), dtype=torch.float64, device=dev)
        vpad[win : win + h, win : win + w] = ok.to(torch.float64)
        vwin = vpad.unfold(0, win, 1).unfold(1, win, 1)  # (H+win+1, W+win+1, win, win) view
        o_t = torch.as_tensor(origins, device=dev)
        kept_valid = vwin[o_t[:, 0] + win, o_t[:, 1] + win]  # (N, win, win)
        live = kept_valid.flatten(1).any(dim=1)
        origins, kept_valid = origins[live.cpu().numpy()], kept_valid[live]

    r0 = origins[:, 0] - ctx
    c0 = origins[:, 1] - ctx
    inside = (r0 >= 0) & (c0 >= 0) & (r0 + n <= h) & (c0 + n <= w)
    total = len(origins)
    if fast:
        # allocated by torch (64-byte aligned, as the model's own tensors), filled through numpy
        tbuf = torch.empty((min(p.batch_size, total), n_t, n_c, n, n), dtype=t.dtype)
        buf = tbuf.numpy()
    else:  # interior windows are gathered from a strided view in one indexing op
        view = t.unfold(2, n, 1).unfold(3, n, 1).permute(2, 3, 0, 1, 4, 5)  # (h', w', T, C, n, n)

    merger: WindowMerger | None = None
    ac = _AUTOCAST.get(autocast or "")
    with torch.inference_mode():
        for start in range(0, total, p.batch_size):
            sl = slice(start, min(start + p.batch_size, total))
            b = sl.stop - sl.start
            ins = inside[sl]
            if fast:
                bt = buf[:b]
                for k in range(b):
                    rr, cc = int(r0[start + k]), int(c0[start + k])
                    if ins[k]:
                        bt[k] = xs[:, :, rr : rr + n, cc : cc + n]
                    else:  # edge window: zeros outside the array
                        ya, yb, xa, xb = max(rr, 0), min(rr + n, h), max(cc, 0), min(cc + n, w)
                        bt[k] = 0
                        bt[k, :, :, ya - rr : yb - rr, xa - cc : xb - cc] = xs[:, :, ya:yb, xa:xb]
                batch = tbuf[:b]
            elif ins.all():
                batch = view[
                    torch.as_tensor(r0[sl], device=dev), torch.as_tensor(c0[sl], device=dev)
                ]
            else:
                batch = torch.zeros((b, n_t, n_c, n, n), dtype=t.dtype, device=dev)
                if ins.any():
                    ii = np.flatnonzero(ins)
                    batch[torch.as_tensor(ii, device=dev)] = view[
                        torch.as_tensor(r0[sl][ii], device=dev),
                        torch.as_tensor(c0[sl][ii], device=dev),
                    ]
                for j in np.flatnonzero(~ins):  # edge windows: copy the part inside the array
                    rr, cc = int(r0[sl][j]), int(c0[sl][j])
                    ya, yb, xa, xb = max(rr, 0), min(rr + n, h), max(cc, 0), min(cc + n, w)
                    batch[j, :, :, ya - rr : yb - rr, xa - cc : xb - cc] = t[:, :, ya:yb, xa:xb]
            if not has_time:
                batch = batch[:, 0]
            if ac is not None:
                with torch.autocast(device_type=dev.type, dtype=ac):
                    out = model(batch)
            else:
                out = model(batch)
            out = _crop_output(out, b, p)
            if merger is None:
                merger = WindowMerger(int(out.shape[1]), (h, w), win, device=dev)
            if fast:  # the Gaussian itself for fully valid windows (no product, no copy)
                wts = [
                    g64 if full[i] else vpad_np[ra_ : ra_ + win, ca_ : ca_ + win] * g64
                    for i, (ra_, ca_) in zip(
                        range(sl.start, sl.stop), (origins[sl] + win).tolist(), strict=True
                    )
                ]
                merger._add_cpu(origins[sl].tolist(), as_numpy(out), wts)
            else:
                merger.add(origins[sl], out, kept_valid[sl] * gauss)
            if progress is not None:
                progress(sl.stop, total)
    if merger is None:  # pragma: no cover - live windows exist whenever a pixel is valid
        raise NoDataError("No window holds a valid pixel: nothing to predict.")
    return merger.finalize()


def _crop_output(out: torch.Tensor, b: int, p: WindowParams) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != b:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidInputError(
            f"The model returned {shape}; it must return a (B={b}, K, h, w) tensor of maps."
        )
    hh, ww = int(out.shape[2]), int(out.shape[3])
    if hh == ww == p.window:
        return out
    if hh == ww == p.input_size:
        c = p.context
        return out[:, :, c : c + p.window, c : c + p.window]
    raise InvalidInputError(
        f"The model returned {hh}x{ww} maps; expected {p.input_size}x{p.input_size} (its input) "
        f"or {p.window}x{p.window} (the kept window)."
    )
