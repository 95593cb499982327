"""Training of the per-pixel temporal model on model-ready cubes (the mapping model of a run).

:func:`fit_normalization` derives the bundle's per-feature normalization from training cubes,
:func:`train_temporal` trains a :class:`geoxai.models.TemporalUNet` on random windows of one or
more tiles with a per-pixel target (e.g. tree-cover fraction), and :func:`save_temporal_bundle`
writes the model bundle a run reads. Deterministic on CPU for a given seed (torch's CPU kernels
used here are deterministic; CUDA convolutions may not be, see ``torch.use_deterministic_
algorithms``).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.inference.predict import predict_windows
from geoxai.inference.windows import WindowParams
from geoxai.models.bundle import save_bundle
from geoxai.models.bundle_spec import BundleSpec
from geoxai.models.unet import TemporalUNet
from geoxai.train.distributed import shard
from geoxai.train.trainer import BaseTask, FitParams, fit

__all__ = [
    "TemporalTrainParams",
    "TemporalTask",
    "window_origins",
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


def _window_sums(mask: np.ndarray, w: int) -> np.ndarray:
    """``(H - w + 1, W - w + 1)`` count of True pixels of every ``w`` x ``w`` window."""
    cs = np.pad(np.asarray(mask, np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return cs[w:, w:] - cs[:-w, w:] - cs[w:, :-w] + cs[:-w, :-w]


def window_origins(
    valid: np.ndarray,
    target: np.ndarray,
    window: int,
    *,
    region: np.ndarray | None = None,
    stride: int | None = None,
    min_valid: float = 0.5,
    min_labelled: float = 0.05,
) -> np.ndarray:
    """Origins of the training windows of one tile.

    A window qualifies when it lies wholly inside ``region`` (default everywhere), more than
    ``min_valid`` of its pixels are valid and at least ``min_labelled`` are valid and labelled
    (finite target; sparse labels, e.g. held-out blocks, still give windows).

    Args:
        valid: ``(H, W)`` bool, False = nodata.
        target: ``(H, W)`` float, NaN = unlabelled.
        window: window edge, px.
        region: ``(H, W)`` bool area windows may cover (e.g. the training side of a split).
        stride: spacing of candidate origins, px (default ``max(1, window // 8)``).
        min_valid: share of valid pixels a window needs (more than).
        min_labelled: share of valid, labelled pixels a window needs (at least).

    Returns:
        ``(N, 2)`` int64 ``(row, col)`` of the upper-left corners (N may be 0).
    """
    h, w = np.shape(valid)
    if h < window or w < window:
        return np.zeros((0, 2), np.int64)
    area = np.ones((h, w), bool) if region is None else np.asarray(region, bool)
    ok_px = np.asarray(valid, bool) & area
    labelled = ok_px & np.isfinite(np.asarray(target, np.float32))
    s = stride or max(1, window // 8)
    n = window * window
    ok = (
        (_window_sums(area, window) == n)
        & (_window_sums(ok_px, window) > min_valid * n)
        & (_window_sums(labelled, window) >= max(1.0, min_labelled * n))
    )
    rows, cols = np.nonzero(ok[::s, ::s])
    return np.stack([rows * s, cols * s], axis=1).astype(np.int64)


class TemporalTask(BaseTask):
    """A :class:`geoxai.train.trainer.TrainTask` for a TemporalUNet on per-pixel targets.

    Every batch draws its windows uniformly from the qualifying windows of *all* training
    tiles (:func:`window_origins`), so a batch mixes tiles: BatchNorm statistics are those of
    the whole training set, not of one tile (with per-tile batches one fully clouded tile gave
    batch statistics the model never sees at inference). Each batch is rotated by a random
    multiple of 90 degrees and flipped with probability 0.5. The loss is binary cross-entropy
    on the logits over valid, labelled pixels, ``margin`` px inside each window.

    Args:
        cubes: ``(T, C, H, W)`` float32 features per tile (physical units).
        targets: ``(H, W)`` float targets in [0, 1], NaN = unlabelled.
        valid: ``(H, W)`` bool, False where the cube is nodata.
        normalization: ``(offset, scale)`` of length C (the bundle's).
        window: training window edge, px (a multiple of ``2 ** depth``).
        margin: window border left out of the loss, px.
        steps_per_epoch: optimisation steps per epoch (over all ranks).
        batch_size: windows per step.
        regions: optional ``(H, W)`` bool per tile: where training windows may lie.
        val: optional ``(cube, target, valid, mask)`` tuples scored after each epoch with
            blended windows (:func:`geoxai.inference.predict_windows`) on ``mask`` pixels:
            ``val_loss`` (BCE of probabilities), ``val_iou`` and ``val_mae`` (threshold 0.5).
        max_steps: stop drawing batches after this many steps in total (last epoch short).
        net_kwargs: TemporalUNet ``embed``, ``base``, ``depth``, ``temporal_kernel``.
        on_step: called as ``on_step(step, loss)`` after every step's forward pass.
    """

    def __init__(
        self,
        cubes: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        valid: Sequence[np.ndarray],
        *,
        normalization: tuple[list[float], list[float]],
        window: int = 64,
        margin: int = 8,
        steps_per_epoch: int = 50,
        batch_size: int = 8,
        regions: Sequence[np.ndarray | None] | None = None,
        val: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = (),
        max_steps: int | None = None,
        net_kwargs: dict[str, int] | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        if not cubes or len(cubes) != len(targets) or len(cubes) != len(valid):
            raise InvalidInputError("give as many cubes as targets and valid masks (at least one).")
        shapes = {tuple(np.shape(x)[:2]) for x in cubes}
        if len(shapes) != 1 or len(np.shape(cubes[0])) != 4:
            raise InvalidInputError(
                f"training cubes must all be (T, C, H, W) with the same T and C, got "
                f"{sorted(shapes)}; smooth them onto one time axis with the same features."
            )
        for i, (x, y, v) in enumerate(zip(cubes, targets, valid, strict=True)):
            if np.shape(y) != np.shape(x)[-2:] or np.shape(v) != np.shape(x)[-2:]:
                raise InvalidInputError(
                    f"training tile {i}: cube {np.shape(x)}, target {np.shape(y)} and valid "
                    f"{np.shape(v)} do not share one (H, W) grid."
                )
        if window <= 2 * margin:
            raise ConfigError(f"window {window} must exceed 2 * margin ({2 * margin}).")
        self.t, self.c = (int(v) for v in np.shape(cubes[0])[:2])
        self.net_kwargs = dict(net_kwargs or {})
        m = 2 ** int(self.net_kwargs.get("depth", 2))
        if window % m:
            raise ConfigError(f"window {window} must be a multiple of 2**depth ({m}).")
        self.window, self.margin = int(window), int(margin)
        self.steps_per_epoch, self.batch_size = int(steps_per_epoch), int(batch_size)
        self.max_steps = max_steps
        self.on_step = on_step
        self.steps = 0
        off, sc = normalization
        if len(off) != self.c or len(sc) != self.c:
            raise InvalidInputError(
                f"normalization has {len(off)}/{len(sc)} values for {self.c} features."
            )
        self.offset = torch.tensor(off, dtype=torch.float32)[None, None, :, None, None]
        self.scale = torch.tensor(sc, dtype=torch.float32)[None, None, :, None, None]
        self.xs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in cubes]
        self.ys = [torch.from_numpy(np.asarray(y, dtype=np.float32)) for y in targets]
        self.ms = [torch.from_numpy(np.asarray(v, bool)) for v in valid]
        regs = list(regions) if regions is not None else [None] * len(cubes)
        found = []
        for i, (y, v, r) in enumerate(zip(targets, valid, regs, strict=True)):
            o = window_origins(v, y, self.window, region=r)
            found.append(np.concatenate([np.full((len(o), 1), i, np.int64), o], axis=1))
        self.origins = np.concatenate(found)
        if len(self.origins) == 0:
            raise InvalidInputError(
                f"no training window of {self.window} px is mostly valid and has labels in any "
                "of the training tiles (too much nodata or too few labels); give more tiles, "
                "more labels or a smaller window."
            )
        self.val = list(val)

    def build_model(self) -> torch.nn.Module:
        """A fresh TemporalUNet for the cubes' T and C."""

        return TemporalUNet(in_features=self.c, time_steps=self.t, **self.net_kwargs)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.offset) / self.scale, -3, 3)

    def train_batches(
        self, epoch: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(x (B, T, C, w, w) normalized, target (B, w, w), valid (B, w, w))`` batches."""
        n = self.steps_per_epoch
        if self.max_steps is not None:
            n = max(0, min(n, self.max_steps - epoch * self.steps_per_epoch))
        pick = torch.randint(len(self.origins), (n, self.batch_size), generator=generator)
        turns = torch.randint(0, 4, (n,), generator=generator)
        flips = torch.rand((n,), generator=generator) < 0.5
        w = self.window
        for b in shard(range(n), rank, world_size):
            rows = self.origins[pick[b].numpy()]
            xb = torch.stack([self.xs[t][:, :, r : r + w, c : c + w] for t, r, c in rows])
            yb = torch.stack([self.ys[t][r : r + w, c : c + w] for t, r, c in rows])
            mb = torch.stack([self.ms[t][r : r + w, c : c + w] for t, r, c in rows])
            k = int(turns[b])
            xb, yb, mb = (torch.rot90(a, k, dims=(-2, -1)) for a in (xb, yb, mb))
            if bool(flips[b]):
                xb, yb, mb = (torch.flip(a, dims=(-1,)) for a in (xb, yb, mb))
            yield self._norm(xb), yb, mb

    def training_step(
        self, model: torch.nn.Module, batch: Any, optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked BCE on the logits of the window interiors."""
        xb, yb, mb = batch
        m = self.margin
        inner = (slice(None), slice(m, yb.shape[-2] - m), slice(m, yb.shape[-1] - m))
        logit = model(xb)[:, 0][inner]
        target = yb[inner]
        mask = mb[inner] & ~torch.isnan(target)
        if not bool(mask.any()):
            loss = logit.sum() * 0.0  # keeps every rank's backward in step
        else:
            loss = F.binary_cross_entropy_with_logits(logit[mask], target[mask])
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps, float(loss.detach()))
        return loss, {}

    def predict(self, model: torch.nn.Module, cube: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(H, W)`` probabilities of one cube by Gaussian-blended windows (NaN = nodata)."""

        x = self._norm(torch.from_numpy(np.ascontiguousarray(cube, np.float32))[None])[0]
        size = min(self.window, *np.shape(valid))
        ctx = min(self.margin, (min(np.shape(valid)) - size) // 2)
        p = WindowParams(window=size, stride=max(1, size // 2), context=ctx, batch_size=4)
        out = predict_windows(
            lambda b: torch.sigmoid(model(b)), x, (1, 0, 0, 0, -1, 0), np.asarray(valid, bool), p
        )
        return out.values[0]

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """``val_loss``, ``val_iou``, ``val_mae`` over the validation pixels (``{}`` if none)."""
        if not self.val:
            return {}
        preds, truths = [], []
        for cube, target, valid, mask in self.val:
            p = self.predict(model, cube, valid)
            sel = np.asarray(mask, bool) & np.isfinite(p) & np.isfinite(target)
            preds.append(p[sel])
            truths.append(np.asarray(target, np.float32)[sel])
        p, t = np.concatenate(preds), np.concatenate(truths)
        if p.size == 0:
            raise InvalidInputError("no validation pixel is valid and labelled.")
        loss = F.binary_cross_entropy(
            torch.from_numpy(np.clip(p, 1e-6, 1 - 1e-6)), torch.from_numpy(t)
        )
        m = evaluate_map(p, t)
        return {"val_loss": float(loss), "val_iou": m["iou"], "val_mae": m["mae"]}

    def state_dict(self) -> dict:
        """The step counter (for ``on_step`` and ``max_steps`` across a resume)."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore the step counter."""
        self.steps = int(state.get("steps", 0))


def train_temporal(
    cubes: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    params: TemporalTrainParams = TemporalTrainParams(),
    *,
    normalization: tuple[list[float], list[float]] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Train a TemporalUNet on per-pixel targets (a :class:`TemporalTask` through
    :func:`geoxai.train.trainer.fit`, epochs of 10 steps, checkpoints in a temporary directory).

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
        10 steps (``loss``: mean over those steps).
    """

    if not cubes or len(cubes) != len(targets) or len(cubes) != len(valid):
        raise InvalidInputError("give as many cubes as targets and valid masks (at least one).")
    task = TemporalTask(
        cubes,
        targets,
        valid,
        normalization=normalization or fit_normalization(cubes, valid),
        window=params.window,
        margin=params.margin,
        steps_per_epoch=10,
        batch_size=params.batch_size,
        max_steps=params.steps,
        net_kwargs={"embed": params.embed, "base": params.base, "depth": params.depth},
        on_step=on_step,
    )
    epochs = math.ceil(params.steps / 10)
    fp = FitParams(
        epochs=epochs,
        lr=params.lr,
        batch_size=params.batch_size,
        seed=params.seed,
        checkpoint_every=epochs,
        progress=False,
    )
    with tempfile.TemporaryDirectory(prefix="geoxai-temporal-") as tmp:
        res = fit(task, fp, tmp, resume=False)
    history = [
        {"step": float(min(10 * r["epoch"], params.steps)), "loss": float(r["loss"])}
        for r in res.history
    ]
    return res.model, history


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
