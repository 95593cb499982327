"""The one trainer under every training workflow (U-Net, scene classifier, GAN, mapping models).

A workflow describes *what* to train as a :class:`TrainTask` (model, optimizers, batches of an
epoch, one training step, validation); :func:`fit` does the rest the same way for all of them:
seeds, epochs, learning-rate schedule, progress bar with live loss/metrics, early stopping,
checkpoints and resume, ``metrics.json`` / ``metrics.png``, and data parallelism when
``torch.distributed`` is initialized (Ray Train's ``TorchTrainer`` sets it up).

Files written to ``out_dir`` (by rank 0 only)::

    checkpoints/last.pt   model, optimizers, base learning rates, RNG states, epoch, history,
                          best-so-far bookkeeping and task.state_dict()  (every checkpoint_every
                          epochs and after the last one)
    checkpoints/best.pt   the same, at the best epoch per ``monitor``
    metrics.json          the history: one record per epoch
    metrics.png           loss and metric curves

Reproducibility (``FitParams.deterministic=True``, the default):

* **Deterministic:** on CPU, a run is bit-for-bit reproducible for a given seed and number of
  ranks, and a run resumed from ``checkpoints/last.pt`` ends with exactly the weights of an
  uninterrupted run. The model is initialised after ``torch.manual_seed(seed)``; the batches of
  epoch ``e`` come from a ``torch.Generator`` seeded by ``(seed, e)`` and the global torch /
  numpy / ``random`` RNGs are re-seeded from ``(seed, e, rank)`` at the start of every epoch, so
  resuming never depends on how many random numbers earlier epochs drew.
  ``torch.use_deterministic_algorithms(True, warn_only=True)`` and cuDNN's deterministic mode
  are switched on for the duration of :func:`fit` (and restored afterwards).
* **Not deterministic:** on CUDA some kernels (atomics in scatter/index_add, some convolution
  backward algorithms, interpolation backward) have no deterministic implementation; torch
  warns about them instead of failing and results may differ in the last bits between runs.
  Results also differ between numbers of ranks (the batches are sharded differently), may
  differ in the last bits between torch thread counts (``torch.set_num_threads``: reduction
  order), and between torch versions / CPU instruction sets. DataLoader worker processes are
  not used: tasks produce their batches in the training process (no worker seeding issue).

Distributed (``torch.distributed.is_initialized()``): parameters and buffers are broadcast from
rank 0 at the start; every optimizer averages gradients over ranks before its ``step`` (a
step pre-hook, so the same code serves one model, several models in a ``ModuleDict`` and
manual optimization like a GAN's); ``train_batches`` gets ``rank``/``world_size`` and yields
that rank's shard; floating buffers (BatchNorm statistics) are averaged at the end of every
epoch; metrics are averaged over ranks, so early-stopping decisions agree. Every rank reads
``checkpoints/last.pt`` on resume, so ``out_dir`` must be on storage all ranks see.
"""

from __future__ import annotations

import abc
import copy
import math
import os
import random
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoxai.atomic import atomic_write
from geoxai.errors import ConfigError, InvalidInputError, StoreError, look_up_option
from geoxai.train.distributed import (
    average_buffers,
    average_metrics,
    broadcast_state,
    grad_average_hook,
    rank_and_world,
)
from geoxai.train.history import progress_bar, write_metrics

__all__ = [
    "FitParams",
    "TrainTask",
    "BaseTask",
    "FitResult",
    "fit",
    "prepare_out_dir",
    "lr_factor",
    "epoch_generator",
    "LR_SCHEDULES",
]

LR_SCHEDULES = ("constant", "cosine", "linear_decay")


def _check_fit(v: Any) -> None:
    """The trainer's own checks of :class:`FitParams` values (``v``: the params, or a mapping of
    every field); :class:`ConfigError` with what to change."""
    p: dict[str, Any] = dict(v) if isinstance(v, dict) else dict(v.__dict__)
    for name in ("epochs", "batch_size", "checkpoint_every"):
        if int(p[name]) < 1:
            raise ConfigError(f"training {name} must be >= 1, got {p[name]}.")
    if not (p["lr"] > 0 and math.isfinite(p["lr"])):
        raise ConfigError(f"training lr must be a positive number, got {p['lr']}.")
    if p["weight_decay"] < 0:
        raise ConfigError(f"training weight_decay must be >= 0, got {p['weight_decay']}.")
    if p["patience"] is not None and p["patience"] < 1:
        raise ConfigError(
            f"training patience must be >= 1 epoch or null (no early stopping), got "
            f"{p['patience']}."
        )
    look_up_option(p["mode"], ("min", "max"), what="training mode")
    look_up_option(p["lr_schedule"], LR_SCHEDULES, what="lr_schedule")


class FitParams(BaseModel):
    """How :func:`fit` trains; also the ``training:`` section of every workflow config.

    Built in code (``FitParams(epochs=3)``), a bad value raises :class:`ConfigError`; read from a
    config (``model_validate``), it is reported like every other config field (pydantic's
    messages, then the same checks).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(10, ge=1, description="Passes over the training data.")
    """Passes over the training batches (``train_batches`` of one epoch)."""
    lr: float = Field(1e-3, gt=0, description="Learning rate (base of the schedule).")
    """Base learning rate of the default optimizer (``BaseTask``); schedules scale it."""
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2) of the optimizer.")
    """Weight decay (L2) of the default optimizer."""
    batch_size: int = Field(16, ge=1, description="Samples per optimisation step.")
    """Samples per optimisation step (tasks read it when they build batches)."""
    seed: int = Field(0, description="Seed of initialisation, batch order and augmentation.")
    """Seed of initialisation, batch order, augmentation and every other random draw."""
    deterministic: bool = Field(
        True, description="Deterministic algorithms (bit-identical reruns and resume on CPU)."
    )
    """``torch.use_deterministic_algorithms`` + seeded generators (see the module docstring)."""
    patience: int | None = Field(
        None, ge=1, description="Early stopping: epochs without improvement; null = never."
    )
    """Stop after this many epochs without improvement of ``monitor``; None = never stop early."""
    monitor: str = Field("val_loss", description="Epoch metric that selects the best weights.")
    """Epoch metric that selects the best checkpoint (and drives early stopping)."""
    mode: Literal["min", "max"] = Field("min", description="Is a lower or higher monitor better.")
    """``"min"`` or ``"max"``: whether a lower or higher ``monitor`` is better."""
    lr_schedule: Literal["constant", "cosine", "linear_decay"] = Field(
        "constant",
        description="constant; cosine (to 0 at the end); linear_decay (constant for half "
        "the epochs, then linearly to 0).",
    )
    """``constant``, ``cosine`` (to 0 at the end) or ``linear_decay`` (constant for the first
    half of the epochs, then linearly towards 0, as CycleGAN does)."""
    checkpoint_every: int = Field(1, ge=1, description="Epochs between checkpoints.")
    """Write ``checkpoints/last.pt`` every this many epochs (and always after the last)."""
    progress: bool = Field(True, description="Progress bar with live loss/metrics (on a TTY).")
    """Show a tqdm progress bar with live loss/metrics (only on a TTY, only on rank 0)."""

    def __init__(self, **data: Any) -> None:
        # In code: the trainer's checks (ConfigError) before pydantic's own.
        defaults = {k: f.get_default() for k, f in type(self).model_fields.items()}
        _check_fit({**defaults, **data})
        super().__init__(**data)

    # A config's ``training:`` section is validated by pydantic's core, not through this
    # __init__ (so its errors stay pydantic's, listed per field): pydantic calls an __init__
    # that carries its own base-init mark only for construction in code.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _valid(self) -> FitParams:
        _check_fit(self)  # from a config: the same checks after pydantic's
        return self


@runtime_checkable
class TrainTask(Protocol):
    """What :func:`fit` needs from a workflow. See :class:`BaseTask` for defaults."""

    manual_optimization: bool
    """False: ``fit`` does zero_grad / backward / step on the loss ``training_step`` returns.
    True: ``training_step`` steps the optimizers itself (e.g. a GAN) and returns ``None``."""

    def build_model(self) -> torch.nn.Module:
        """The network (may be a ``ModuleDict`` of several). Called after seeding."""
        ...

    def configure_optimizers(
        self, model: torch.nn.Module, params: FitParams
    ) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers over ``model``'s parameters."""
        ...

    def train_batches(
        self, epoch: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterable[Any]:
        """Batches of epoch ``epoch`` (0-based) for ``rank``; draw randomness from ``generator``."""
        ...

    def training_step(
        self, model: torch.nn.Module, batch: Any, optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """One step: ``(loss or None, metrics)``; metrics are averaged over the epoch."""
        ...

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """Validation metrics after an epoch (model in eval mode, no grad); may be ``{}``."""
        ...

    def state_dict(self) -> dict:
        """Task state to checkpoint (e.g. a GAN's image pool); ``{}`` if none."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class BaseTask(abc.ABC):
    """Convenience base of a :class:`TrainTask`: one Adam optimizer ``"main"`` over all
    parameters (``lr``, ``weight_decay`` from :class:`FitParams`), no validation, no state."""

    manual_optimization: bool = False

    @abc.abstractmethod
    def build_model(self) -> torch.nn.Module:
        """The network to train."""

    def configure_optimizers(
        self, model: torch.nn.Module, params: FitParams
    ) -> dict[str, torch.optim.Optimizer]:
        """``{"main": Adam(model.parameters(), lr, weight_decay)}``."""
        return {
            "main": torch.optim.Adam(
                model.parameters(), lr=params.lr, weight_decay=params.weight_decay
            )
        }

    @abc.abstractmethod
    def train_batches(
        self, epoch: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterable[Any]:
        """Batches of one epoch for one rank."""

    @abc.abstractmethod
    def training_step(
        self, model: torch.nn.Module, batch: Any, optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """One step: ``(loss, metrics)``."""

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """No validation by default."""
        return {}

    def state_dict(self) -> dict:
        """No task state by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore by default."""
        del state


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    model: torch.nn.Module
    """The trained network with the best (per ``monitor``) or, without a monitor, last weights."""
    history: list[dict]
    """One record per epoch: ``epoch`` (1-based), train metric means (``loss`` ...), validation
    metrics, ``lr`` (first optimizer), ``seconds``."""
    out_dir: Path
    stopped_early: bool
    best_epoch: int | None = None
    """1-based epoch whose weights ``model`` holds (None: last, no monitor values)."""
    extra: dict[str, Any] = field(default_factory=dict)


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate in epoch ``epoch`` (0-based) of ``epochs``."""
    look_up_option(schedule, LR_SCHEDULES, what="lr_schedule")
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "linear_decay":
        half = epochs // 2
        return 1.0 - max(0, epoch + 1 - half) / float(epochs - half + 1)
    return 1.0


def _seed_int(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The ``torch.Generator`` :func:`fit` gives ``train_batches`` for ``epoch`` (same on all
    ranks, so every rank draws the same permutation and takes its own shard)."""
    return torch.Generator().manual_seed(_seed_int(seed, epoch, 0x5EED))


@contextmanager
def _determinism(on: bool) -> Iterator[None]:
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic = prev[2]
        torch.backends.cudnn.benchmark = prev[3]


def _seed_globals(*parts: int) -> None:
    s = _seed_int(*parts)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 - tasks may draw from the legacy global RNG
    random.seed(s)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - checkpointed for resume
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir/checkpoints`` and check it is writable (call before expensive work).

    Raises:
        StoreError: the directory cannot be created or written, naming it.
    """
    out_dir = Path(out_dir)
    try:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out_dir / "checkpoints" / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"training output directory {str(out_dir)!r} is not writable ({exc}); choose an "
            "out_dir you can write to."
        ) from exc
    return out_dir


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value < best if mode == "min" else value > best


_RESUME_MUST_MATCH = ("seed", "lr", "weight_decay", "batch_size", "lr_schedule")


def _check_resume(saved: dict[str, Any], params: FitParams, path: Path) -> None:
    diff = [k for k in _RESUME_MUST_MATCH if saved.get(k) != getattr(params, k)]
    if diff:
        warnings.warn(
            f"resuming {path} with different training settings "
            + ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(params, k)!r}" for k in diff)
            + "; the result will not equal an uninterrupted run.",
            stacklevel=3,
        )


def fit(
    task: TrainTask, params: FitParams, out_dir: str | Path, *, resume: bool = True
) -> FitResult:
    """Train ``task`` for ``params.epochs`` epochs; checkpoints and metrics go to ``out_dir``.

    Args:
        task: what to train (see :class:`TrainTask`).
        params: how to train.
        out_dir: directory for ``checkpoints/``, ``metrics.json`` and ``metrics.png``.
        resume: continue from ``out_dir/checkpoints/last.pt`` when it exists (a finished run
            is not trained again); False starts over and overwrites it.

    Returns:
        :class:`FitResult` with the best (or last) weights loaded into ``model``.

    Raises:
        StoreError: ``out_dir`` is not writable (before any training).
        ConfigError: ``patience`` is set but no epoch record has ``monitor``.
        InvalidInputError: an epoch without batches, or a non-finite loss.
    """
    if not isinstance(params, FitParams):
        raise ConfigError(f"params must be a FitParams, got {type(params).__name__}.")
    out_dir = Path(out_dir)
    rank, world = rank_and_world()
    if rank == 0:
        prepare_out_dir(out_dir)
    if world > 1:
        import torch.distributed as dist  # lazy: torch (~1 s import) only on this path

        dist.barrier()
    last_path = out_dir / "checkpoints" / "last.pt"
    best_path = out_dir / "checkpoints" / "best.pt"

    with _determinism(params.deterministic):
        torch.manual_seed(params.seed)
        model = task.build_model()
        optimizers = task.configure_optimizers(model, params)
        if not optimizers:
            raise ConfigError("the task configured no optimizer.")
        for opt in optimizers.values():
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])
        if world > 1:
            broadcast_state(model)
            for opt in optimizers.values():
                opt.register_step_pre_hook(grad_average_hook(world))

        history: list[dict] = []
        start, best_value, best_epoch, bad_epochs = 0, None, None, 0
        best_state: dict[str, Any] | None = None
        if resume and last_path.exists():
            ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
            _check_resume(ckpt.get("params", {}), params, last_path)
            model.load_state_dict(ckpt["model"])
            for name, opt in optimizers.items():
                opt.load_state_dict(ckpt["optimizers"][name])
            task.load_state_dict(ckpt.get("task", {}))
            _set_rng_state(ckpt["rng"])
            history = list(ckpt["history"])
            start = int(ckpt["epoch"])
            best_value, best_epoch = ckpt.get("best_value"), ckpt.get("best_epoch")
            bad_epochs = int(ckpt.get("bad_epochs", 0))
            if best_epoch is not None and best_path.exists():
                best_state = torch.load(best_path, map_location="cpu", weights_only=False)["model"]

        def checkpoint(epoch: int) -> dict[str, Any]:
            return {
                "model": model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "base_lrs": {
                    k: [g["initial_lr"] for g in o.param_groups] for k, o in optimizers.items()
                },
                "rng": _rng_state(),
                "epoch": epoch,
                "history": history,
                "task": task.state_dict(),
                "best_value": best_value,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "params": params.model_dump(),
                "world_size": world,
            }

        stopped_early = bool(history) and bool(history[-1].get("stopped_early"))
        bar = progress_bar(params.epochs, params.progress, rank, min(start, params.epochs))
        try:
            for epoch in range(start, params.epochs):
                if stopped_early:
                    break
                t0 = time.monotonic()
                factor = lr_factor(params.lr_schedule, epoch, params.epochs)
                for opt in optimizers.values():
                    for g in opt.param_groups:
                        g["lr"] = g["initial_lr"] * factor
                _seed_globals(params.seed, epoch, rank)
                gen = epoch_generator(params.seed, epoch)
                model.train()
                sums: dict[str, float] = {}
                n = 0
                for batch in task.train_batches(epoch, gen, rank, world):
                    loss, metrics = task.training_step(model, batch, optimizers)
                    step = dict(metrics)
                    if not task.manual_optimization:
                        if loss is None:
                            raise InvalidInputError(
                                "training_step returned no loss but the task has "
                                "manual_optimization=False."
                            )
                        lv = float(loss.detach())
                        if not math.isfinite(lv):
                            raise InvalidInputError(
                                f"the training loss became {lv} in epoch {epoch + 1}, step "
                                f"{n + 1}; lower the learning rate (now {params.lr}) or check "
                                "the inputs for NaN/inf."
                            )
                        for opt in optimizers.values():
                            opt.zero_grad(set_to_none=True)
                        loss.backward()
                        for opt in optimizers.values():
                            opt.step()
                        step["loss"] = lv
                    for k, v in step.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    n += 1
                    bar.set_postfix({k: f"{v / n:.4g}" for k, v in sums.items()}, refresh=False)
                    if n % 5 == 0:
                        bar.refresh()
                if n == 0:
                    raise InvalidInputError(
                        f"epoch {epoch + 1} produced no training batch on rank {rank}; the "
                        "training set is empty or smaller than one batch per worker."
                    )
                rec = average_metrics({k: v / n for k, v in sums.items()}, world)
                if world > 1:
                    average_buffers(model, world)
                model.eval()
                with torch.no_grad():
                    val = task.validate(model)
                model.train()
                rec.update(average_metrics({k: float(v) for k, v in val.items()}, world))
                first = next(iter(optimizers.values()))
                rec = {
                    "epoch": epoch + 1,
                    **rec,
                    "lr": float(first.param_groups[0]["lr"]),
                    "seconds": round(time.monotonic() - t0, 3),
                }
                history.append(rec)
                if params.monitor in rec:
                    value = float(rec[params.monitor])
                    if _improved(value, best_value, params.mode):
                        best_value, best_epoch, bad_epochs = value, epoch + 1, 0
                        best_state = copy.deepcopy(model.state_dict())
                        if rank == 0:
                            atomic_write(best_path, partial(torch.save, checkpoint(epoch + 1)))
                    else:
                        bad_epochs += 1
                elif params.patience is not None:
                    raise ConfigError(
                        f"early stopping monitors {params.monitor!r} but the epoch metrics are "
                        f"{sorted(k for k in rec if k not in ('epoch', 'seconds'))}; set "
                        "training.monitor to one of them."
                    )
                if params.patience is not None and bad_epochs >= params.patience:
                    rec["stopped_early"] = True
                    stopped_early = True
                last = epoch + 1 == params.epochs or stopped_early
                if rank == 0 and ((epoch + 1) % params.checkpoint_every == 0 or last):
                    atomic_write(last_path, partial(torch.save, checkpoint(epoch + 1)))
                    write_metrics(out_dir, history)
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in rec.items() if k not in ("epoch", "seconds")},
                    refresh=False,
                )
                bar.update(1)
        finally:
            bar.close()
        if rank == 0 and history and not (out_dir / "metrics.json").exists():
            write_metrics(out_dir, history)
        if world > 1:
            import torch.distributed as dist  # lazy: torch (~1 s import) only on this path

            dist.barrier()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
    return FitResult(
        model=model,
        history=history,
        out_dir=out_dir,
        stopped_early=stopped_early,
        best_epoch=best_epoch if best_state is not None else None,
    )
