"""Segmentation losses against hand computations (geoxai.models.losses)."""

from __future__ import annotations

import math

import pytest
import torch

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.models.losses import (
    bce,
    bce_dice,
    dice,
    focal,
    make_loss,
    pos_weight_from_frequency,
    weighted_bce,
)

# four pixels: logits, targets; the last one is masked out in the valid-mask tests
X = torch.tensor([2.0, -1.0, 0.0, 3.0]).reshape(1, 1, 2, 2)
T = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
V = torch.tensor([True, True, True, False]).reshape(1, 1, 2, 2)


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


P = [_sig(v) for v in (2.0, -1.0, 0.0, 3.0)]
TT = [1.0, 0.0, 1.0, 0.0]


def _ce(p: float, t: float) -> float:
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_bce_by_hand() -> None:
    want = sum(_ce(p, t) for p, t in zip(P, TT, strict=True)) / 4
    assert bce(X, T).item() == pytest.approx(want, rel=1e-6)
    want_v = sum(_ce(p, t) for p, t in zip(P[:3], TT[:3], strict=True)) / 3
    assert bce(X, T, V).item() == pytest.approx(want_v, rel=1e-6)


def test_weighted_bce_by_hand() -> None:
    pw = 3.0
    per = [-(pw * t * math.log(p) + (1 - t) * math.log(1 - p)) for p, t in zip(P, TT, strict=True)]
    assert weighted_bce(X, T, pos_weight=pw).item() == pytest.approx(sum(per) / 4, rel=1e-6)
    assert weighted_bce(X, T, V, pos_weight=pw).item() == pytest.approx(sum(per[:3]) / 3, rel=1e-6)
    assert weighted_bce(X, T, pos_weight=1.0).item() == pytest.approx(bce(X, T).item(), rel=1e-6)


def test_dice_by_hand() -> None:
    inter = sum(p * t for p, t in zip(P, TT, strict=True))
    want = 1 - (2 * inter + 1) / (sum(P) + sum(TT) + 1)
    assert dice(X, T).item() == pytest.approx(want, rel=1e-6)
    inter3 = sum(p * t for p, t in zip(P[:3], TT[:3], strict=True))
    want3 = 1 - (2 * inter3 + 1) / (sum(P[:3]) + sum(TT[:3]) + 1)
    assert dice(X, T, V).item() == pytest.approx(want3, rel=1e-6)
    # a perfect, confident prediction has (almost) zero loss
    perfect = torch.where(T > 0, 20.0, -20.0)
    assert dice(perfect, T).item() == pytest.approx(0.0, abs=1e-6)


def test_bce_dice_is_the_sum() -> None:
    assert bce_dice(X, T, V).item() == pytest.approx(
        bce(X, T, V).item() + dice(X, T, V).item(), rel=1e-6
    )
    assert bce_dice(X, T, V, pos_weight=2.0).item() == pytest.approx(
        weighted_bce(X, T, V, pos_weight=2.0).item() + dice(X, T, V).item(), rel=1e-6
    )


def test_focal_by_hand() -> None:
    g = 2.0
    pt = [p if t else 1 - p for p, t in zip(P, TT, strict=True)]
    per = [-((1 - q) ** g) * math.log(q) for q in pt]
    assert focal(X, T, gamma=g).item() == pytest.approx(sum(per) / 4, rel=1e-6)
    assert focal(X, T, V, gamma=g).item() == pytest.approx(sum(per[:3]) / 3, rel=1e-6)
    # gamma 0 is BCE; alpha weights positives by alpha, negatives by 1 - alpha
    assert focal(X, T, gamma=0.0).item() == pytest.approx(bce(X, T).item(), rel=1e-6)
    a = 0.25
    per_a = [(a if t else 1 - a) * v for v, t in zip(per, TT, strict=True)]
    assert focal(X, T, gamma=g, alpha=a).item() == pytest.approx(sum(per_a) / 4, rel=1e-6)


def test_focal_downweights_easy_pixels() -> None:
    easy = torch.full((1, 1, 1, 1), -4.0)  # confident, correct negative
    zero = torch.zeros(1, 1, 1, 1)
    assert focal(easy, zero).item() < 0.01 * bce(easy, zero).item()


def test_all_invalid_batch_is_zero_not_nan() -> None:
    none = torch.zeros_like(V)
    for fn in (bce, focal):
        assert fn(X, T, none).item() == 0.0
    assert dice(X, T, none).item() == 0.0


def test_gradients_flow_only_through_valid_pixels() -> None:
    x = X.clone().requires_grad_(True)
    (bce_dice(x, T, V) + focal(x, T, V)).backward()
    assert x.grad is not None
    assert x.grad.reshape(-1)[3].item() == 0.0
    assert (x.grad.reshape(-1)[:3] != 0).all()


def test_pos_weight_from_frequency() -> None:
    assert pos_weight_from_frequency(10, 90) == pytest.approx(9.0)
    assert pos_weight_from_frequency(90, 10) == 1.0  # never below 1
    assert pos_weight_from_frequency(1, 10_000) == 100.0  # capped
    with pytest.raises(InvalidInputError, match="no positive"):
        pos_weight_from_frequency(0, 100)


def test_make_loss() -> None:
    assert make_loss("bce")(X, T, V).item() == pytest.approx(bce(X, T, V).item())
    assert make_loss("weighted_bce", pos_weight=4.0)(X, T, V).item() == pytest.approx(
        weighted_bce(X, T, V, pos_weight=4.0).item()
    )
    assert make_loss("focal", gamma=1.0)(X, T, V).item() == pytest.approx(
        focal(X, T, V, gamma=1.0).item()
    )
    with pytest.raises(ConfigError, match="Did you mean 'focal'"):
        make_loss("focall")
    with pytest.raises(ConfigError, match="pos_weight"):
        make_loss("weighted_bce")
    with pytest.raises(InvalidInputError, match="shape"):
        bce(X, T[..., :1])
