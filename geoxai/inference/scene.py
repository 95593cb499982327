"""Class maps of a whole scene from a scene classifier: windows slide over the scene and each
window's class probabilities are spread over its pixels with Gaussian weights and averaged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from geoxai.inference.windows import REFERENCE_SIGMA_RATIO, WindowMerger, gaussian_weights

__all__ = ["scene_probabilities"]


def _axis_starts(n: int, window: int, stride: int) -> list[int]:
    """Window starts along an axis of ``n`` px: every ``stride`` px, the last flush with the end."""
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def scene_probabilities(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: np.ndarray,
    valid: np.ndarray,
    window: int,
    stride: int,
    n_classes: int,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, int]:
    """Blended class probabilities of a scene.

    Windows of ``window`` px start every ``stride`` px (the last row/column flush with the
    scene's edge, so every pixel is covered without padding); a window holding an invalid pixel
    is skipped. Each window's probabilities are spread over its pixels with Gaussian weights
    (sigma ``window * 36 / 158``) and averaged.

    Args:
        model: ``(B, 1, C, P, P)`` normalized windows -> ``(B, K)`` probabilities.
        x: ``(C, H, W)`` float32 normalized scene.
        valid: ``(H, W)`` bool, pixels with data in every band.
        window: patch size P, px.
        stride: window step, px (1..P).
        n_classes: K.
        batch_size: windows per model call.
        device: torch device of the model.

    Returns:
        ``(probabilities (K, H, W) float, NaN where no window covers; number of windows)``.
    """
    h, w = valid.shape
    p, step, k = window, stride, n_classes
    origins = [
        (r, c)
        for r in _axis_starts(h, p, step)
        for c in _axis_starts(w, p, step)
        if valid[r : r + p, c : c + p].all()
    ]
    merger = WindowMerger(k, (h, w), p)
    g = torch.from_numpy(gaussian_weights(p, p * REFERENCE_SIGMA_RATIO))
    with torch.inference_mode():
        for i in range(0, len(origins), batch_size):
            chunk = origins[i : i + batch_size]
            xb = np.stack([x[:, r : r + p, c : c + p] for r, c in chunk])
            prob = model(torch.from_numpy(xb)[:, None].to(device)).float().cpu()
            preds = prob[:, :, None, None].expand(-1, -1, p, p)
            merger.add(np.asarray(chunk), preds, g.expand(len(chunk), p, p))
    blended = merger.finalize().values  # (K, H, W), NaN where no window
    return blended, len(origins)
