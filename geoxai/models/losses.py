"""Per-pixel binary segmentation losses for strongly imbalanced masks.

Every loss takes logits and a 0/1 target of the same shape, ``(B, 1, H, W)`` (any shape works),
and an optional bool ``valid`` mask of that shape: pixels with ``valid == False`` (nodata,
outside the labelled area) add nothing. The result is a scalar tensor; pixel-wise losses are
means over the valid pixels, set-wise losses (Dice) are computed over all valid pixels of the
batch at once (per-tile Dice is undefined for the many tiles without a positive pixel).

- :func:`bce`: binary cross-entropy on logits (numerically stable, log-sum-exp form);
- :func:`weighted_bce`: BCE with positives weighted by ``pos_weight`` (default from the class
  frequency, :func:`pos_weight_from_frequency`: ``n_negative / n_positive``);
- :func:`dice`: soft Dice loss ``1 - (2 sum(p t) + s) / (sum p + sum t + s)``, ``p = sigmoid``;
- :func:`bce_dice`: ``bce + dice`` (BCE for calibrated probabilities, Dice for overlap);
- :func:`focal`: focal loss ``-(1 - p_t)^gamma log(p_t)`` (Lin et al. 2017), which down-weights
  the easy (mostly negative) pixels; ``gamma = 0`` is BCE.

:func:`make_loss` builds one of them by name from the segmentation config.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from geoxai.errors import ConfigError, InvalidInputError, look_up_option

__all__ = [
    "LOSSES",
    "LossFn",
    "bce",
    "weighted_bce",
    "dice",
    "bce_dice",
    "focal",
    "pos_weight_from_frequency",
    "make_loss",
]

LOSSES = ("bce", "weighted_bce", "dice", "bce_dice", "focal")
"""Names accepted by :func:`make_loss` (and ``SegmentConfig.loss``)."""


LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``loss(logits, target, valid) -> scalar``."""


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if logits.shape != target.shape:
        raise InvalidInputError(
            f"Loss: logits have shape {tuple(logits.shape)} but the target "
            f"{tuple(target.shape)}; they must match (B, 1, H, W)."
        )
    w = (
        torch.ones_like(logits)
        if valid is None
        else valid.to(device=logits.device, dtype=logits.dtype)
    )
    if w.shape != logits.shape:
        raise InvalidInputError(
            f"Loss: valid mask has shape {tuple(w.shape)}, expected {tuple(logits.shape)}."
        )
    return logits, target.to(logits.dtype), w


def _masked_mean(per_pixel: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # an all-invalid batch gives 0 (with a graph), not NaN
    return (per_pixel * w).sum() / w.sum().clamp_min(1.0)


def bce(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy over valid pixels: ``-(t log p + (1 - t) log(1 - p))``."""
    x, t, w = _prepare(logits, target, valid)
    return _masked_mean(F.binary_cross_entropy_with_logits(x, t, reduction="none"), w)


def weighted_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    pos_weight: float = 1.0,
) -> torch.Tensor:
    """BCE with the positive term weighted: ``-(pw t log p + (1 - t) log(1 - p))``.

    The mean is over valid pixels (not over weights), as in ``torch.nn.BCEWithLogitsLoss``.

    Args:
        pos_weight: weight of positive pixels (> 0); ``n_neg / n_pos`` balances the classes.
    """
    if not (math.isfinite(pos_weight) and pos_weight > 0):
        raise ConfigError(f"pos_weight must be a positive number, got {pos_weight}.")
    x, t, w = _prepare(logits, target, valid)
    pw = torch.tensor(pos_weight, dtype=x.dtype, device=x.device)
    per = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw)
    return _masked_mean(per, w)


def dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice loss over all valid pixels of the batch.

    ``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` with ``p = sigmoid(logits)``;
    ``smooth`` (pixels) keeps batches without positives defined (their loss is then
    ``sum(p) / (sum(p) + smooth)``: predicted positives are penalised).
    """
    x, t, w = _prepare(logits, target, valid)
    p = torch.sigmoid(x) * w
    t = t * w
    inter = (p * t).sum()
    return 1.0 - (2.0 * inter + smooth) / (p.sum() + t.sum() + smooth)


def bce_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """``bce + dice`` (weighted BCE when ``pos_weight`` is given)."""
    first = (
        bce(logits, target, valid)
        if pos_weight is None
        else weighted_bce(logits, target, valid, pos_weight=pos_weight)
    )
    return first + dice(logits, target, valid)


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> torch.Tensor:
    """Focal loss, mean over valid pixels: ``-a_t (1 - p_t)^gamma log(p_t)``.

    ``p_t = p`` for positives and ``1 - p`` for negatives; ``a_t = alpha`` for positives and
    ``1 - alpha`` for negatives (no class weighting when ``alpha`` is None).

    Args:
        gamma: focusing exponent (>= 0); 0 gives BCE.
        alpha: optional weight of the positive class in (0, 1).
    """
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ConfigError(f"focal_gamma must be >= 0, got {gamma}.")
    if alpha is not None and not 0 < alpha < 1:
        raise ConfigError(f"focal alpha must be in (0, 1), got {alpha}.")
    x, t, w = _prepare(logits, target, valid)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")  # = -log(p_t)
    p_t = torch.exp(-ce)
    per = (1.0 - p_t).pow(gamma) * ce
    if alpha is not None:
        per = per * (alpha * t + (1.0 - alpha) * (1.0 - t))
    return _masked_mean(per, w)


def pos_weight_from_frequency(n_positive: int, n_negative: int, *, cap: float = 100.0) -> float:
    """``n_negative / n_positive`` clipped to ``[1, cap]`` (weights positives up, never down).

    Raises:
        InvalidInputError: there are no positive pixels (nothing to learn).
    """
    if n_positive <= 0:
        raise InvalidInputError(
            "The training mask has no positive pixel, so no positive class weight can be "
            "derived; check the mask file, its attribute/values filter and the bounds."
        )
    return float(min(max(n_negative / n_positive, 1.0), cap))


def make_loss(name: str, *, pos_weight: float | None = None, gamma: float = 2.0) -> LossFn:
    """The loss ``name`` (one of :data:`LOSSES`) as ``loss(logits, target, valid)``.

    Args:
        name: loss name.
        pos_weight: positive weight for ``weighted_bce`` (required) and ``bce_dice``
            (optional: plain BCE + Dice when None).
        gamma: focal exponent for ``focal``.
    """
    look_up_option(name, LOSSES, what="loss")
    if name == "bce":
        return bce
    if name == "dice":
        return dice
    pw = pos_weight
    if name == "weighted_bce" and pw is None:
        raise ConfigError("loss 'weighted_bce' needs pos_weight (a number > 0).")

    def loss(x: torch.Tensor, t: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        if name == "focal":
            return focal(x, t, v, gamma=gamma)
        if name == "bce_dice":
            return bce_dice(x, t, v, pos_weight=pw)
        return weighted_bce(x, t, v, pos_weight=float(pw if pw is not None else 1.0))

    return loss
