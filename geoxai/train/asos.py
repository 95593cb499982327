"""Training of the ASOS network (``geoxai train asos``): images with natural/anthropogenic
labels, activation occlusion during training, then the sensitivity table is fitted
(:func:`geoxai.xai.asos.fit_partial`) and an ASOS bundle written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError
from geoxai.io.config_file import save_config
from geoxai.io.eurosat import read_eurosat
from geoxai.models.asos_net import (
    ASOSNet,
    as_float32,
    check_image,
    predict_scores,
    to_network_input,
)
from geoxai.strict import StrictModel
from geoxai.train.distributed import is_main_process, shard
from geoxai.train.registry import CONFIG_FILE, BundleOptions, register_workflow
from geoxai.train.trainer import BaseTask, FitParams, fit, prepare_out_dir
from geoxai.xai.asos import ASOSParams, bundle_spec, fit_partial, save_asos_bundle

__all__ = [
    "ASOS_FIT",
    "train_asos",
    "AsosTask",
    "load_labelled_images",
    "AsosConfig",
    "train_asos_workflow",
]


ASOS_FIT = FitParams(epochs=20, lr=2e-3)
"""Default trainer settings of :func:`train_asos` (20 epochs, Adam at 2e-3, 16 images a step)."""


def train_asos(
    net: ASOSNet,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    params: FitParams = ASOS_FIT,
    *,
    occlusion_p: float = 0.2,
    occlusion_every: float = 0.5,
    augment: bool = True,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``net`` in place on network-input images; return the per-epoch history.

    Runs :class:`geoxai.train.asos.AsosTask` through :func:`geoxai.train.trainer.fit`
    (checkpoints in a temporary directory; deterministic on CPU for a given seed). With
    ``val`` the network ends with the weights of the epoch of lowest ``val_loss``.

    Args:
        net: the network (its device is used).
        images: ``(N, in_bands, H, W)`` network input (see :func:`to_network_input`).
        labels: ``(N,)`` targets in {0, 1} (1 = the positive class, e.g. natural).
        params: trainer settings (epochs, lr, weight decay, batch size, seed); checkpoints are
            written once, at the end, without a progress bar.
        occlusion_p: probability that a pixel of A is zeroed in an occluded pass (paper: 0.2).
        occlusion_every: fraction of forward passes (batches) that are occluded (paper: half).
        augment: random flips and 90-degree rotations of each batch.
        val: optional ``(images, labels)`` evaluated after each epoch.
        on_epoch: called with each epoch's record (for progress bars).

    Returns:
        One dict per epoch: ``epoch``, ``loss`` (mean BCE), ``accuracy`` (threshold 0.5) and,
        with ``val``, ``val_loss`` and ``val_accuracy``.
    """

    task = AsosTask(
        net, images, labels, batch_size=params.batch_size, occlusion_p=occlusion_p,
        occlusion_every=occlusion_every, augment=augment, val=val, on_epoch=on_epoch,
    )  # fmt: skip
    fp = params.model_copy(update={"checkpoint_every": params.epochs, "progress": False})
    with tempfile.TemporaryDirectory(prefix="geoxai-asos-") as tmp:
        fit(task, fp, tmp, resume=False)
    net.occlusion_p = 0.0
    net._occ_gen = None
    return task.history


def _augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if xb.shape[-1] == xb.shape[-2]:
        xb = torch.rot90(xb, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))
    if torch.rand((), generator=gen).item() < 0.5:
        xb = torch.flip(xb, dims=(-1,))
    return xb


class AsosTask(BaseTask):
    """Train an :class:`geoxai.models.asos_net.ASOSNet` on labelled images (Adam, BCE on the image
    logit, activation occlusion with probability ``occlusion_p`` in a share ``occlusion_every`` of
    the batches, random 90-degree rotations and flips).

    The network is trained in place (``build_model`` returns it). ``history`` holds one record
    per epoch (``epoch``, ``loss``, ``accuracy`` weighted by batch size, and with ``val``
    ``val_loss``, ``val_accuracy``); ``on_epoch`` is called with each.
    """

    def __init__(
        self,
        net: Any,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        *,
        batch_size: int = 16,
        occlusion_p: float = 0.2,
        occlusion_every: float = 0.5,
        augment: bool = True,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch: Any = None,
    ) -> None:

        x = as_float32(images)
        y = as_float32(labels).reshape(-1)
        check_image(x, net.in_bands, what="training images")
        if x.ndim != 4 or y.shape[0] != x.shape[0]:
            raise InvalidInputError(
                f"training images {tuple(x.shape)} and labels {tuple(y.shape)} disagree; give "
                "(N, bands, y, x) images and N labels."
            )
        if torch.isnan(x).any() or torch.isnan(y).any():
            raise InvalidInputError("training images or labels contain NaN; scale them first.")
        if not bool(((y == 0) | (y == 1)).all()):
            raise InvalidInputError(f"labels must be 0 or 1, got values {sorted(set(y.tolist()))}.")
        if not 0 <= occlusion_p <= 1 or not 0 <= occlusion_every <= 1:
            raise ConfigError("occlusion_p and occlusion_every must lie in [0, 1].")
        self.net, self.x, self.y = net, x, y
        self.batch_size, self.augment = int(batch_size), bool(augment)
        self.occlusion_p, self.occlusion_every = float(occlusion_p), float(occlusion_every)
        self.val = val
        self.on_epoch = on_epoch
        self.history: list[dict[str, float]] = []
        self._sums = [0.0, 0.0, 0]
        self._occ_gen: torch.Generator | None = None

    def build_model(self) -> torch.nn.Module:
        """The network given to the task."""
        return self.net

    def train_batches(
        self, epoch: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """``(images, labels, occluded)`` batches of a seeded permutation."""

        device = next(self.net.parameters()).device
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) + rank
        self._occ_gen = torch.Generator(device=device).manual_seed(seed)
        self._sums = [0.0, 0.0, 0]
        n = self.x.shape[0]
        order = torch.randperm(n, generator=generator)
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        for idx in shard(batches, rank, world_size):
            xb, yb = self.x[idx].to(device), self.y[idx].to(device)
            if self.augment:
                xb = _augment(xb, generator)
            occluded = torch.rand((), generator=generator).item() < self.occlusion_every
            yield xb, yb, occluded

    def training_step(
        self, model: torch.nn.Module, batch: Any, optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """BCE of the image logit; metric ``accuracy`` (threshold 0.5)."""
        xb, yb, occluded = batch
        self.net.occlusion_p = self.occlusion_p if occluded else 0.0
        self.net._occ_gen = self._occ_gen
        logit = model(xb)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logit, yb)
        correct = int(((logit > 0).float() == yb).sum())
        self._sums[0] += float(loss.detach()) * len(yb)
        self._sums[1] += correct
        self._sums[2] += len(yb)
        return loss, {"accuracy": correct / len(yb)}

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """``val_loss`` / ``val_accuracy`` with ``val``; records the epoch in ``history``."""

        self.net.occlusion_p = 0.0
        n = max(self._sums[2], 1)
        rec = {
            "epoch": float(len(self.history) + 1),
            "loss": self._sums[0] / n,
            "accuracy": self._sums[1] / n,
        }
        out: dict[str, float] = {}
        if self.val is not None:
            vx, vy = as_float32(self.val[0]), as_float32(self.val[1]).reshape(-1)
            p = torch.from_numpy(predict_scores(self.net, vx)).clamp(1e-7, 1 - 1e-7)
            logits = torch.logit(p).float()
            out["val_loss"] = float(F.binary_cross_entropy_with_logits(logits, vy))
            out["val_accuracy"] = float(((logits > 0).float() == vy).float().mean())
        rec.update(out)
        self.history.append(rec)
        if self.on_epoch is not None:
            self.on_epoch(rec)
        return out

    def state_dict(self) -> dict:
        """The per-epoch history (so a resumed run reports every epoch)."""
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the history."""
        self.history = list(state.get("history", []))


def load_labelled_images(
    path: str | Path,
    *,
    split: str | None = None,
    units: str = "reflectance",
    dn_offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str] | None]:
    """Images for the ASOS network from an ``.npz`` or a EuroSAT folder.

    Returns:
        ``(x, labels, valid, bands)``: network input ``(N, C, H, W)`` in [0, 1] (NaN pixels 0),
        labels ``(N,)`` float32 0/1, valid ``(N, H, W)`` bool or None when all valid, band
        names (EuroSAT: the ten canonical bands; ``.npz``: its ``bands`` array or None).

    Raises:
        DataAccessError: the path is neither an ``.npz`` file nor a folder.
        InvalidInputError: no ``images`` or ``labels`` array.
    """

    p = Path(path)
    bands: list[str] | None = None
    valid = None
    if p.suffix == ".npz" and p.is_file():
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("images", "labels") if k not in z]
            if missing:
                raise InvalidInputError(
                    f"{p} has arrays {sorted(z.files)}; it lacks {missing} (images (N, C, H, W) "
                    "and labels (N,) of 0/1)."
                )
            imgs, labels = z["images"], z["labels"]
            valid = z["valid"].astype(bool) if "valid" in z else None
            bands = [str(b) for b in z["bands"]] if "bands" in z else None
        if split is not None:
            raise ConfigError(f"split {split!r} applies to EuroSAT folders, not to {p}.")
    elif p.is_dir():
        ds = read_eurosat(p, split=split)
        imgs, labels, bands, units = ds.images, ds.labels, list(ds.bands), "reflectance"
    else:
        raise DataAccessError(
            f"training images {p} are neither an .npz file nor a EuroSAT folder; check the path."
        )
    if imgs.ndim != 4:
        raise InvalidInputError(f"{p}: images have shape {imgs.shape}; need (N, C, H, W).")
    x, ok = to_network_input(imgs, units, dn_offset=dn_offset, nan="mask", what=str(p))
    if valid is not None:
        ok = ok & valid
    return x, np.asarray(labels, np.float32).reshape(-1), (None if ok.all() else ok), bands


class AsosTableOptions(StrictModel):
    """The sensitivity table fitted after training (:class:`geoxai.xai.asos.ASOSParams`)."""

    fit: bool = Field(True, description="Fit the table on the training images (else: no table).")
    edge: float = Field(0.2, gt=0, le=2, description="Activation-space cube edge (paper 0.2).")
    min_pixels: int = Field(100, ge=1, description="Pixels of an image in a cube to occlude it.")
    fill: float = Field(0.0, description="Value occluded activations are set to.")


class AsosConfig(StrictModel):
    """Train an ASOS network on labelled images and fit its sensitivity table."""

    data: str = Field(description="Training images: .npz (images, labels) or EuroSAT folder.")
    split: str | None = Field(
        None, description="EuroSAT split of the training images (train/validate/test)."
    )
    val_data: str | None = Field(None, description="Validation images (default: data).")
    val_split: str | None = Field(
        None, description="EuroSAT split for validation (e.g. validate); null = no validation."
    )
    units: str = Field("reflectance", description=".npz units: reflectance or dn.")
    dn_offset: float = Field(0.0, description="Reflectance offset of DN inputs (-0.1 from 04.00).")
    k: int = Field(3, ge=1, description="Activation channels (paper 3).")
    width: int = Field(16, ge=1, description="U-Net width (first level channels).")
    head_width: int = Field(16, ge=1, description="Head convolution channels.")
    occlusion_p: float = Field(0.2, ge=0, le=1, description="Activation occlusion probability.")
    occlusion_every: float = Field(0.5, ge=0, le=1, description="Share of occluded batches.")
    augment: bool = Field(True, description="Random 90-degree rotations and flips.")
    table: AsosTableOptions = Field(default_factory=AsosTableOptions, description="Table fit.")
    bundle: BundleOptions = Field(default_factory=BundleOptions, description="Bundle settings.")
    training: FitParams = Field(default_factory=FitParams, description="Training.")
    out_dir: str = Field(description="Checkpoints, metrics; the bundle goes to out_dir/bundle.")


@register_workflow("asos", AsosConfig)
def train_asos_workflow(config: AsosConfig, *, resume: bool = True) -> Path:
    """Train (and table-fit) an ASOS network per ``config``; returns the bundle directory."""

    out = prepare_out_dir(config.out_dir)
    x, labels, valid, bands = load_labelled_images(
        config.data, split=config.split, units=config.units, dn_offset=config.dn_offset
    )
    val = None
    if config.val_split is not None or config.val_data is not None:
        vx, vy, _, _ = load_labelled_images(
            config.val_data or config.data,
            split=config.val_split,
            units=config.units,
            dn_offset=config.dn_offset,
        )
        val = (vx, vy)
    params = config.training
    torch.manual_seed(params.seed)
    net = ASOSNet(x.shape[1], config.k, width=config.width, head_width=config.head_width)
    task = AsosTask(
        net, x, labels, batch_size=params.batch_size, occlusion_p=config.occlusion_p,
        occlusion_every=config.occlusion_every, augment=config.augment, val=val,
    )  # fmt: skip
    fit(task, params, out, resume=resume)  # trains `net` in place (best or last weights)
    table = None
    if config.table.fit:
        ap = ASOSParams(
            edge=config.table.edge, fill=config.table.fill, min_pixels=config.table.min_pixels
        )
        table = fit_partial(net, x, ap, valid=valid)
    b = config.bundle
    spec = bundle_spec(
        net, name=b.name or f"asos-{out.name}", bands=bands, window=b.window,
        stride=b.stride, context=b.context, description=b.description,
    )  # fmt: skip
    bundle = out / "bundle"
    if is_main_process():  # every rank holds the same weights; one writes
        save_asos_bundle(bundle, net, spec, table)
        save_config(config, Path(bundle) / CONFIG_FILE)
    return bundle
