"""Training of the per-pixel temporal model on model-ready cubes (the mapping model of a run).

:func:`fit_normalization` derives the bundle's per-feature normalization from training cubes,
:func:`train_temporal` trains a :class:`geoxai.models.TemporalUNet` on random windows of one or
more tiles with a per-pixel target (e.g. tree-cover fraction), and :func:`save_temporal_bundle`
writes the model bundle a run reads. Deterministic on CPU for a given seed (torch's CPU kernels
used here are deterministic; CUDA convolutions may not be, see ``torch.use_deterministic_
algorithms``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geoxai.errors import ConfigError, InvalidInputError

__all__ = [
    "TemporalTrainParams",
    "fit_normalization",
    "train_temporal",
    "save_temporal_bundle",
    "evaluate_map",
]


@dataclass(frozen=True)
class TemporalTrainParams:
    """How :func:`train_temporal` trains.

    Attributes:
        steps: optimisation steps.
        batch_size: windows per step.
        window: training window edge, px (input = window; the loss skips ``margin`` px).
        margin: border of each window left out of the loss (padding effects), px.
        lr: Adam learning rate.
        embed: TemporalUNet per-step embedding channels.
        base: TemporalUNet first U-Net level channels.
        depth: TemporalUNet down-sampling levels.
        seed: seed of initialisation, window sampling and augmentation.
    """

    steps: int = 300
    batch_size: int = 8
    window: int = 64
    margin: int = 8
    lr: float = 3e-3
    embed: int = 16
    base: int = 16
    depth: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch_size must be >= 1.")
        if self.window <= 2 * self.margin or self.window % (2**self.depth):
            raise ConfigError(
                f"window {self.window} must exceed 2*margin ({2 * self.margin}) and be a "
                f"multiple of 2**depth ({2**self.depth})."
            )


def fit_normalization(
    cubes: Sequence[np.ndarray], valid: Sequence[np.ndarray], q: float = 2.0
) -> tuple[list[float], list[float]]:
    """Per-feature affine normalization to about [-1, 1] from percentiles of valid pixels.

    Args:
        cubes: ``(T, C, H, W)`` float32 feature arrays.
        valid: matching ``(H, W)`` bool masks.
        q: lower/upper percentile (``q`` and ``100 - q``).

    Returns:
        ``(offset, scale)`` lists of length C: ``(x - offset) / scale`` maps the percentile
        range to [-1, 1].
    """
    cols = []
    for x, v in zip(cubes, valid, strict=True):
        x = np.asarray(x)
        cols.append(x[:, :, np.asarray(v, bool)].transpose(1, 0, 2).reshape(x.shape[1], -1))
    allv = np.concatenate(cols, axis=1)
    if allv.shape[1] == 0:
        raise InvalidInputError("no valid pixel in the training cubes; nothing to normalize.")
    lo = np.percentile(allv, q, axis=1)
    hi = np.percentile(allv, 100 - q, axis=1)
    scale = np.maximum((hi - lo) / 2.0, 1e-6)
    return [float(v) for v in (hi + lo) / 2.0], [float(v) for v in scale]


def _windows(
    rng: np.random.Generator, shape: tuple[int, int], valid: np.ndarray, n: int, w: int
) -> list[tuple[int, int]]:
    h, wd = shape
    out: list[tuple[int, int]] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        r, c = int(rng.integers(0, h - w + 1)), int(rng.integers(0, wd - w + 1))
        if valid[r : r + w, c : c + w].mean() > 0.5:
            out.append((r, c))
    if len(out) < n:
        raise InvalidInputError(
            f"fewer than {n} training windows of {w} px are mostly valid; the training tile "
            "has too much nodata."
        )
    return out


def train_temporal(
    cubes: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    params: TemporalTrainParams = TemporalTrainParams(),
    *,
    normalization: tuple[list[float], list[float]] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Train a TemporalUNet on per-pixel targets.

    Args:
        cubes: ``(T, C, H, W)`` float32 model-ready features per training tile (physical units).
        targets: ``(H, W)`` float targets in [0, 1] (fraction or binary), NaN = unlabelled.
        valid: ``(H, W)`` bool, False where the cube is nodata.
        params: training settings.
        normalization: ``(offset, scale)`` applied to the features (the bundle's); default
            :func:`fit_normalization` of ``cubes``.
        on_step: called as ``on_step(step, loss)``.

    Returns:
        ``(net, history)``: the trained network (eval mode) and ``[{"step", "loss"}]`` every
        10 steps.
    """
    from geoxai.models import TemporalUNet

    if not cubes or len(cubes) != len(targets) or len(cubes) != len(valid):
        raise InvalidInputError("give as many cubes as targets and valid masks (at least one).")
    t, c = cubes[0].shape[:2]
    off, sc = normalization or fit_normalization(cubes, valid)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    net = TemporalUNet(
        in_features=c, time_steps=t, embed=params.embed, base=params.base, depth=params.depth
    )
    opt = torch.optim.Adam(net.parameters(), lr=params.lr)
    offset = torch.tensor(off, dtype=torch.float32)[None, None, :, None, None]
    scale = torch.tensor(sc, dtype=torch.float32)[None, None, :, None, None]
    xs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in cubes]
    ys = [torch.from_numpy(np.asarray(y, dtype=np.float32)) for y in targets]
    ms = [torch.from_numpy(np.asarray(v, bool)) for v in valid]
    w, m = params.window, params.margin
    history: list[dict[str, float]] = []
    net.train()
    for step in range(1, params.steps + 1):
        tile = int(rng.integers(0, len(xs)))
        h_px, w_px = xs[tile].shape[-2:]
        origins = _windows(rng, (h_px, w_px), valid[tile], params.batch_size, w)
        xb = torch.stack([xs[tile][:, :, r : r + w, c0 : c0 + w] for r, c0 in origins])
        yb = torch.stack([ys[tile][r : r + w, c0 : c0 + w] for r, c0 in origins])
        mb = torch.stack([ms[tile][r : r + w, c0 : c0 + w] for r, c0 in origins])
        k = int(rng.integers(0, 4))
        xb, yb, mb = (torch.rot90(a, k, dims=(-2, -1)) for a in (xb, yb, mb))
        xb = torch.clamp((xb - offset) / scale, -3, 3)
        logit = net(xb)[:, 0, m:-m, m:-m]
        target, mask = yb[:, m:-m, m:-m], mb[:, m:-m, m:-m] & ~torch.isnan(yb[:, m:-m, m:-m])
        loss = F.binary_cross_entropy_with_logits(logit[mask], target[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step, loss.item())
        if step % 10 == 0 or step == params.steps:
            history.append({"step": float(step), "loss": loss.item()})
    net.eval()
    return net, history


def save_temporal_bundle(
    path: str | Path,
    net: Any,
    features: Sequence[str],
    normalization: tuple[list[float], list[float]],
    *,
    name: str = "temporal-unet",
    output: str = "tree_cover",
    window: int = 128,
    stride: int = 64,
    context: int = 16,
    description: str = "",
    extra: dict[str, tuple[str, bytes]] | None = None,
) -> Path:
    """Write a TemporalUNet as a model bundle (sigmoid probability output)."""
    from geoxai.bundle import BundleSpec, save_bundle

    off, sc = normalization
    spec = BundleSpec.model_validate(
        {
            "name": name,
            "architecture": "temporal_unet",
            "arch_kwargs": dict(net.config),
            "weights": "weights.safetensors",
            "inputs": {
                "features": list(features),
                "time_steps": int(net.config["time_steps"]),
                "layout": "TCHW",
            },
            "normalization": {"kind": "affine", "offset": off, "scale": sc, "clip": [-3.0, 3.0]},
            "window": {"window": window, "stride": stride, "context": context},
            "output": {"kind": "probability", "names": [output], "transform": "sigmoid"},
            "description": description,
        }
    )
    return save_bundle(path, net, spec, extra_files=extra)


def evaluate_map(prediction: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict:
    """MAE and IoU of ``prediction > threshold`` vs ``truth > threshold`` over finite pixels."""
    p, t = np.asarray(prediction, float), np.asarray(truth, float)
    ok = np.isfinite(p) & np.isfinite(t)
    if not ok.any():
        raise InvalidInputError("no pixel where both prediction and truth are defined.")
    pb, tb = p[ok] > threshold, t[ok] > threshold
    union = (pb | tb).sum()
    return {
        "mae": float(np.abs(p[ok] - t[ok]).mean()),
        "iou": float((pb & tb).sum() / union) if union else 1.0,
        "pixels": int(ok.sum()),
    }
