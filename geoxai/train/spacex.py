"""SpacEX: pattern-enhancement explanations with a cycle-consistent GAN (Emam et al., GRSL 2024).

For a frozen classifier (the ASOS network of :mod:`geoxai.xai.asos`: image -> one logit, e.g.
natural vs anthropogenic), two ResNet generators are trained on the classifier's images
(:mod:`geoxai.models.spacex_nets`): a **pattern maximizer** ``G_max`` whose outputs the classifier
scores higher and a **pattern minimizer** ``G_min`` whose outputs it scores lower, each with a
PatchGAN discriminator. Both generators map the image distribution to itself (every training
image is a real example for both discriminators), so the generators' only reason to change an
image is the activation term; adversarial, cycle and identity losses keep the change small and
realistic. Generator objective per batch ``x`` (in ``[-1, 1]``)::

    adversarial * (LS(D_max(G_max x), 1) + LS(D_min(G_min x), 1))        least squares
  + cycle       * (|G_min G_max x - x| + |G_max G_min x - x|)             L1
  + identity    * (|G_max x - x| + |G_min x - x|)                          L1
  + activation  * (softplus(-f(G_max x)) + softplus(f(G_min x)))         f = classifier logit

with reference weights 1 / 5 / 13 / 5. The activation term is the binary cross-entropy of the
classifier's logit of the generated image towards 1 (maximizer) and 0 (minimizer); it pushes the
logit like plain activation maximization (``-f(G_max x) + f(G_min x)``, ``activation_form=
"logit"``) while the classifier is unsure and stops pushing once it is sure. Measured on the
synthetic forest scenes (README, SpacEX), the saturating form changes the images less (mean
|change| 0.053 vs 0.073 reflectance) and its maps overlap the causing class more (top-10 % IoU
0.100 vs 0.043).

The activation term scores the **generated** images with the frozen classifier, so its
gradient flows through the classifier into the generators (the public code scored the real
image: its activation term had no gradient at all). The classifier's parameters are frozen
(``requires_grad=False``, eval mode) and never updated.
Each discriminator is trained with the least-squares loss on real images against generated
ones drawn from an image replay buffer (50 images). Adam 2e-4, betas (0.5, 0.999), learning
rate constant for the first half of the epochs, then linearly to 0 (:func:`geoxai.train.trainer.fit`
with ``lr_schedule="linear_decay"``).

The attribution map of an image ``x`` is the per-pixel mean over bands of
``|G_max(x) - G_min(x)|`` in reflectance (:func:`spacex_attribution`): where the two
generators disagree most is where the pattern the classifier responds to lives.

Bundles (:func:`save_spacex_bundle`): a model bundle of architecture ``"spacex"``
(:class:`~geoxai.models.spacex_nets.SpacexGenerators`, both generators in one safetensors file,
whose ``forward`` is the attribution), with ``spacex.json`` (the classifier bundle's path and
weights SHA-256, the loss weights, the score shifts measured after training) and
``train_config.yaml``. A run tile can blend it like any other bundle (``LoadedBundle.predict``), or
call
:func:`spacex_attribution` on a ``(bands, y, x)`` image.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, field_validator
from torch import nn

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError
from geoxai.io.config_file import save_config
from geoxai.io.eurosat import read_eurosat
from geoxai.models.asos_net import to_network_input
from geoxai.models.bundle import save_bundle
from geoxai.models.bundle_spec import BundleSpec
from geoxai.models.spacex_nets import (
    ImageBuffer,
    PatchDiscriminator,
    ResnetGenerator,
    SpacexGenerators,
    from_gan,
    to_gan,
)
from geoxai.strict import StrictModel
from geoxai.train.distributed import shard
from geoxai.train.registry import CONFIG_FILE, register_workflow
from geoxai.train.trainer import BaseTask, FitParams, fit
from geoxai.xai.spacex import (
    META_FILE,
    META_KEY,
    ScoreShift,
    as_images,
    device_of,
    freeze,
    generators_of,
    input_range,
    load_classifier,
    module_dict,
    score_shift,
    set_grad,
)

__all__ = [
    "save_spacex_bundle",
    "SpacexParams",
    "SpacexTask",
    "SpacexConfig",
    "lsgan_loss",
    "activation_loss",
    "generator_losses",
    "train_gan",
    "TrainReport",
    "train_spacex",
]
"""Key of the SpacEX description in ``model.json``'s ``extra_files``."""


@dataclass(frozen=True)
class SpacexParams:
    """Network sizes, loss weights and GAN settings (everything but the trainer's settings)."""

    gen_base: int = 64
    """Generator stem channels (reference 64; 8 trains on a CPU in seconds)."""
    gen_res_blocks: int = 9
    """Residual blocks per generator (reference 9)."""
    disc_base: int = 64
    """Discriminator first-layer channels (reference 64)."""
    disc_layers: int = 3
    """Stride-2 layers of the PatchGAN discriminator (reference 3; images >= 2**n * 4 px)."""
    adversarial: float = 1.0
    """Weight of the least-squares adversarial loss of the generators."""
    cycle: float = 5.0
    """Weight of the L1 cycle-consistency loss."""
    identity: float = 13.0
    """Weight of the L1 identity loss."""
    activation: float = 5.0
    """Weight of the activation-maximization term on the classifier's logit (0 = off)."""
    activation_form: Literal["logit", "bce"] = "bce"
    """``bce``: ``softplus(-logit)`` / ``softplus(logit)`` (the default; saturates once the
    classifier is sure); ``logit``: maximize / minimize the raw logit (unbounded)."""
    replay_buffer: int = 50
    """Generated images kept for the discriminators (0 = no buffer)."""
    beta1: float = 0.5
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""

    def __post_init__(self) -> None:
        for name in ("gen_base", "disc_base", "disc_layers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"SpacEX {name}={getattr(self, name)} must be >= 1.")
        if self.gen_res_blocks < 0 or self.replay_buffer < 0:
            raise ConfigError("SpacEX gen_res_blocks and replay_buffer must be >= 0.")
        for name in ("adversarial", "cycle", "identity", "activation"):
            v = float(getattr(self, name))
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"SpacEX loss weight {name}={v} must be a finite number >= 0.")
        if self.activation_form not in ("logit", "bce"):
            raise ConfigError(
                f"SpacEX activation_form={self.activation_form!r}; use 'logit' or 'bce'."
            )
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"Adam betas ({self.beta1}, {self.beta2}) must be in [0, 1).")


def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean of ``(pred - 1)**2`` (real) or ``pred**2`` (fake)."""
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    return F.mse_loss(pred, target)


def activation_loss(
    logit_max: torch.Tensor, logit_min: torch.Tensor, form: str = "bce"
) -> torch.Tensor:
    """Activation term from the classifier's ``(N, 1)`` logits of the generated images.

    ``logit``: ``-mean(logit_max) + mean(logit_min)``; ``bce``: ``mean(softplus(-logit_max))
    + mean(softplus(logit_min))``. Lower is better for both generators.
    """
    if form == "bce":
        return F.softplus(-logit_max).mean() + F.softplus(logit_min).mean()
    return -logit_max.mean() + logit_min.mean()


def generator_losses(
    nets: nn.ModuleDict,
    classifier: nn.Module,
    x: torch.Tensor,
    params: SpacexParams,
    *,
    lo: float = 0.0,
    hi: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The weighted generator objective of a batch (see the module docstring).

    Args:
        nets: ``ModuleDict`` with ``g_max``, ``g_min``, ``d_max``, ``d_min``.
        classifier: the frozen classifier (classifier input space -> ``(N, 1)`` logit).
        x: ``(N, C, H, W)`` batch in the classifier's input space ``[lo, hi]``.
        params: loss weights.

    Returns:
        ``(total, parts, (fake_max, fake_min))``: the scalar objective, its unweighted parts
        (``adversarial``, ``cycle``, ``identity``, ``activation``, ``logit_max``,
        ``logit_min``) and the generated images in ``[-1, 1]`` (for the discriminators).
    """
    xg = to_gan(x, lo, hi)
    fake_max, fake_min = nets["g_max"](xg), nets["g_min"](xg)
    adv = lsgan_loss(nets["d_max"](fake_max), True) + lsgan_loss(nets["d_min"](fake_min), True)
    cyc = F.l1_loss(nets["g_min"](fake_max), xg) + F.l1_loss(nets["g_max"](fake_min), xg)
    idt = F.l1_loss(fake_max, xg) + F.l1_loss(fake_min, xg)
    # the classifier scores the GENERATED images: this is the gradient path to the generators
    logit_max = classifier(from_gan(fake_max, lo, hi))
    logit_min = classifier(from_gan(fake_min, lo, hi))
    act = activation_loss(logit_max, logit_min, params.activation_form)
    total = (
        params.adversarial * adv
        + params.cycle * cyc
        + params.identity * idt
        + params.activation * act
    )
    parts = {
        "adversarial": adv,
        "cycle": cyc,
        "identity": idt,
        "activation": act,
        "logit_max": logit_max.mean(),
        "logit_min": logit_min.mean(),
    }
    return total, parts, (fake_max, fake_min)


class SpacexTask(BaseTask):
    """The :class:`~geoxai.train.trainer.BaseTask` of SpacEX (manual optimization: a G step, then
    a D step).

    Args:
        classifier: the classifier to explain (frozen here: eval mode, no gradients).
        images: ``(N, C, H, W)`` float32 training images in the classifier's input space.
        params: networks, loss weights, replay buffer, Adam betas.
        batch_size: images per step.
        val_images: ``(M, C, H, W)`` images for the per-epoch score shifts (optional).
        lo: lower end of the classifier's input range (0 for reflectance).
        hi: upper end of the classifier's input range (1 for reflectance).
        seed: seed of the replay buffers.
    """

    manual_optimization = True

    def __init__(
        self,
        classifier: nn.Module,
        images: np.ndarray | torch.Tensor,
        params: SpacexParams = SpacexParams(),
        *,
        batch_size: int = 4,
        val_images: np.ndarray | torch.Tensor | None = None,
        lo: float = 0.0,
        hi: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.x = as_images(images, "SpacEX training images")
        self.val = (
            as_images(val_images, "SpacEX validation images") if val_images is not None else None
        )
        self.in_bands = int(self.x.shape[1])
        want = int(getattr(classifier, "in_bands", self.in_bands))
        if want != self.in_bands:
            raise InvalidInputError(
                f"SpacEX training images have {self.in_bands} bands but the classifier takes "
                f"{want}; give the bands it was trained on, in its order."
            )
        self.classifier = freeze(classifier)
        self.device = device_of(classifier)
        self.params, self.batch_size = params, int(batch_size)
        self.lo, self.hi = float(lo), float(hi)
        need = 2**params.disc_layers * 4
        if min(self.x.shape[-2:]) < need:
            raise InvalidInputError(
                f"SpacEX training images are {tuple(self.x.shape[-2:])} px but the discriminator "
                f"(disc_layers={params.disc_layers}) needs >= {need} px; lower disc_layers."
            )
        self.buffers = {
            "d_max": ImageBuffer(params.replay_buffer, seed=seed * 2 + 1),
            "d_min": ImageBuffer(params.replay_buffer, seed=seed * 2 + 2),
        }

    def build_model(self) -> nn.ModuleDict:
        """``ModuleDict(g_max, g_min, d_max, d_min)`` on the classifier's device."""
        p, c = self.params, self.in_bands
        return nn.ModuleDict(
            {
                "g_max": ResnetGenerator(c, p.gen_base, p.gen_res_blocks),
                "g_min": ResnetGenerator(c, p.gen_base, p.gen_res_blocks),
                "d_max": PatchDiscriminator(c, p.disc_base, p.disc_layers),
                "d_min": PatchDiscriminator(c, p.disc_base, p.disc_layers),
            }
        ).to(self.device)

    def configure_optimizers(
        self, model: nn.Module, params: FitParams
    ) -> dict[str, torch.optim.Optimizer]:
        """``{"g": Adam(both generators), "d": Adam(both discriminators)}``, betas from params."""
        betas = (self.params.beta1, self.params.beta2)
        model = module_dict(model)
        gens = [*model["g_max"].parameters(), *model["g_min"].parameters()]
        discs = [*model["d_max"].parameters(), *model["d_min"].parameters()]
        return {
            "g": torch.optim.Adam(gens, lr=params.lr, betas=betas),
            "d": torch.optim.Adam(discs, lr=params.lr, betas=betas),
        }

    def train_batches(
        self, epoch: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Any:
        """Shuffled batches of this rank's share (random flips / 90-degree turns per batch)."""

        order = shard(torch.randperm(self.x.shape[0], generator=generator), rank, world_size)
        for s in range(0, len(order), self.batch_size):
            xb = self.x[order[s : s + self.batch_size]]
            k = int(torch.randint(0, 4, (), generator=generator))
            if torch.rand((), generator=generator).item() < 0.5:
                xb = xb.flip(-1)
            yield torch.rot90(xb, k, dims=(-2, -1)).contiguous()

    def training_step(
        self, model: nn.Module, batch: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[None, dict[str, float]]:
        """Generator step (discriminators frozen), then discriminator step on buffered fakes."""
        x = batch.to(self.device)
        p = self.params
        model = module_dict(model)
        discs = (model["d_max"], model["d_min"])
        for d in discs:
            set_grad(d, False)
        total, parts, (fake_max, fake_min) = generator_losses(
            model, self.classifier, x, p, lo=self.lo, hi=self.hi
        )
        if not torch.isfinite(total):
            raise InvalidInputError(
                f"the SpacEX generator loss became {float(total)} (parts "
                f"{ {k: float(v) for k, v in parts.items()} }); lower the learning rate or the "
                "activation weight, or use activation_form='bce'."
            )
        optimizers["g"].zero_grad(set_to_none=True)
        total.backward()
        optimizers["g"].step()
        for d in discs:
            set_grad(d, True)
        xg = to_gan(x, self.lo, self.hi)
        d_loss = x.new_zeros(())
        for name, fake in (("d_max", fake_max), ("d_min", fake_min)):
            pool = self.buffers[name].query(fake.detach())
            d = model[name]
            d_loss = d_loss + 0.5 * (lsgan_loss(d(xg), True) + lsgan_loss(d(pool), False))
        optimizers["d"].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers["d"].step()
        with torch.no_grad():
            logit_real = self.classifier(x)
        metrics = {"loss_g": float(total.detach()), "loss_d": float(d_loss.detach())}
        metrics.update({k: float(v.detach()) for k, v in parts.items()})
        metrics["logit_real"] = float(logit_real.mean())
        return None, metrics

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Mean score shifts of the validation images (probabilities): ``val_shift_max`` =
        score(G_max x) - score(x), ``val_shift_min`` = score(G_min x) - score(x), and
        ``val_l1`` = mean |G_max x - x| + |G_min x - x| in classifier units."""
        if self.val is None:
            return {}
        gens = generators_of(model, self.lo, self.hi)
        s = score_shift(gens, self.classifier, self.val)
        return {
            "val_shift_max": float(s.shift_max.mean()),
            "val_shift_min": float(s.shift_min.mean()),
            "val_l1": float(s.change_max.mean() + s.change_min.mean()),
        }

    def state_dict(self) -> dict:
        """The two replay buffers (images and their RNG states)."""
        return {k: b.state_dict() for k, b in self.buffers.items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the replay buffers."""
        for k, b in self.buffers.items():
            if k in state:
                b.load_state_dict(state[k])


@dataclass(frozen=True)
class TrainReport:
    """What :func:`train_gan` returns."""

    generators: SpacexGenerators
    history: list[dict]
    shift: ScoreShift | None
    """Score shifts of the validation images after training (None without validation)."""


def train_gan(
    classifier: nn.Module,
    images: np.ndarray | torch.Tensor,
    params: SpacexParams,
    fit_params: Any,
    out_dir: str | Path,
    *,
    val_images: np.ndarray | torch.Tensor | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
    resume: bool = True,
) -> TrainReport:
    """Train the SpacEX generators of ``classifier`` with :func:`geoxai.train.trainer.fit`.

    Args:
        classifier: the classifier to explain (frozen).
        images: ``(N, C, H, W)`` training images in the classifier's input space.
        params: networks, loss weights, replay buffer, Adam betas.
        fit_params: :class:`geoxai.train.trainer.FitParams` (epochs, lr, batch size, seed,
        schedule). out_dir: checkpoints and metrics (``checkpoints/last.pt`` resumes). val_images:
        images for the per-epoch score shifts (and the final :class:`ScoreShift`).

    Returns:
        :class:`TrainReport` with the last epoch's generators (a GAN has no "best" epoch: the
        generators' validation metrics are not returned as ``val_loss``, so ``fit`` keeps the
        last weights unless ``monitor`` names one of them).
    """

    task = SpacexTask(
        classifier, images, params, batch_size=fit_params.batch_size, val_images=val_images,
        lo=lo, hi=hi, seed=fit_params.seed,
    )  # fmt: skip
    res = fit(task, fit_params, out_dir, resume=resume)
    gens = generators_of(res.model, lo, hi)
    shift = score_shift(gens, task.classifier, task.val) if task.val is not None else None
    return TrainReport(gens, res.history, shift)


def _load_images(config: SpacexConfig) -> np.ndarray:
    """``(N, C, H, W)`` float32 classifier input (reflectance clipped to [0, 1]) of the config."""

    p = Path(config.data)
    if p.suffix == ".npz" and p.is_file():
        with np.load(p, allow_pickle=False) as z:
            if "images" not in z:
                raise InvalidInputError(
                    f"{p} has arrays {sorted(z.files)}; expected 'images' (N, C, H, W)."
                )
            imgs = np.asarray(z["images"], np.float32)
    elif p.is_dir():
        imgs = read_eurosat(p, split=config.split).images
    else:
        raise DataAccessError(
            f"SpacEX data {p} is neither an .npz file (with 'images') nor a EuroSAT folder; "
            "check `data` in the config."
        )
    if imgs.ndim != 4:
        raise InvalidInputError(f"{p}: images have shape {imgs.shape}; need (N, C, H, W).")
    x, _ = to_network_input(imgs, config.units, dn_offset=config.dn_offset, nan="mask", what=str(p))
    return x


def _training_default() -> FitParams:
    return FitParams.model_validate(dict(_SPACEX_TRAINING))


_SPACEX_TRAINING: dict[str, Any] = {"lr": 2e-4, "lr_schedule": "linear_decay", "batch_size": 4}
"""Trainer settings SpacEX changes from the trainer's defaults (CycleGAN's Adam rate, decay)."""


class SpacexConfig(StrictModel):
    """``geoxai train spacex CONFIG``: explain a frozen ASOS classifier with two generators.

    Example::

        classifier: models/asos            # ASOS bundle (the frozen classifier)
        data: data/scenes.npz              # 'images' (N, 10, H, W) reflectance, or EuroSAT folder
        gen_base: 32
        gen_res_blocks: 6
        training: {epochs: 50, batch_size: 4}   # lr 2e-4 and linear_decay unless given
        out_dir: runs/spacex
    """

    classifier: str = Field(description="ASOS bundle whose network is explained (kept frozen).")
    data: str = Field(description=".npz with 'images' (N, C, H, W), or a EuroSAT folder.")
    split: str | None = Field(None, description="EuroSAT split to train on (None = all).")
    units: Literal["reflectance", "dn"] = Field("reflectance", description="Units of .npz images.")
    dn_offset: float = Field(0.0, description="Reflectance offset of DN inputs (-0.1 ...).")
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Images held out for the per-epoch score shifts."
    )
    gen_base: int = Field(64, ge=1, description="Generator stem channels (reference 64).")
    gen_res_blocks: int = Field(9, ge=0, description="Residual blocks per generator (ref. 9).")
    disc_base: int = Field(64, ge=1, description="Discriminator first-layer channels (ref. 64).")
    disc_layers: int = Field(3, ge=1, description="PatchGAN stride-2 layers (reference 3).")
    adversarial: float = Field(1.0, ge=0, description="Least-squares adversarial loss weight.")
    cycle: float = Field(5.0, ge=0, description="L1 cycle-consistency loss weight.")
    identity: float = Field(13.0, ge=0, description="L1 identity loss weight.")
    activation: float = Field(5.0, ge=0, description="Activation-maximization weight (0 = off).")
    activation_form: Literal["logit", "bce"] = Field(
        "bce", description="bce: softplus of the logit (saturating); logit: the raw logit."
    )
    replay_buffer: int = Field(50, ge=0, description="Generated images kept for the critics.")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="Torch device ('cpu', 'cuda:0')."
    )
    training: FitParams = Field(
        default_factory=_training_default,
        description="Trainer settings (geoxai.train.trainer.FitParams); SpacEX defaults: lr "
        "2e-4, lr_schedule linear_decay, batch_size 4.",
    )
    out_dir: str = Field(description="Checkpoints, metrics and the bundle (out_dir/bundle).")

    @field_validator("training", mode="before")
    @classmethod
    def _spacex_training(cls, v: Any) -> Any:
        if isinstance(v, FitParams):
            return v
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise ValueError("training must be a mapping of trainer settings (epochs, lr ...)")
        return FitParams.model_validate({**_SPACEX_TRAINING, **v})

    def params(self) -> SpacexParams:
        """The :class:`SpacexParams` of this config."""
        names = {f for f in SpacexParams.__dataclass_fields__}
        return SpacexParams(**{k: v for k, v in self.model_dump().items() if k in names})


@register_workflow("spacex", SpacexConfig)
def train_spacex(config: SpacexConfig, *, resume: bool = True) -> Path:
    """Train SpacEX generators for a frozen ASOS classifier; write the bundle.

    Validates everything (classifier bundle, data, sizes) before training. Output:
    ``out_dir/checkpoints``, ``out_dir/metrics.json|png`` (trainer) and the bundle
    ``out_dir/bundle`` (model.json, weights, spacex.json, train_config.yaml).

    Returns:
        The bundle directory.
    """
    params = config.params()
    fit_params = config.training
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"SpacEX device {config.device!r} but this machine has no CUDA device; set "
            "device: cpu (or run on a GPU node)."
        )
    cb, classifier = load_classifier(config.classifier, config.device)
    lo, hi = input_range(cb.spec)
    x = _load_images(config)
    if x.shape[1] != classifier.in_bands:
        raise InvalidInputError(
            f"SpacEX data {config.data} has {x.shape[1]} bands but the classifier "
            f"{config.classifier} takes {classifier.in_bands}; use the bands it was trained on."
        )
    rng = np.random.default_rng(fit_params.seed)
    order = rng.permutation(x.shape[0])
    n_val = int(round(config.val_fraction * x.shape[0]))
    if x.shape[0] - n_val < 1:
        raise InvalidInputError(f"SpacEX data {config.data} leaves no training image.")
    val = x[order[:n_val]] if n_val else None
    train = x[order[n_val:]]
    rep = train_gan(
        classifier, train, params, fit_params, config.out_dir, val_images=val, lo=lo, hi=hi,
        resume=resume,
    )  # fmt: skip
    out = Path(config.out_dir) / "bundle"
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_rank() != 0:
            return out  # rank 0 writes the bundle
    meta = {
        "classifier_bundle": str(Path(config.classifier).resolve()),
        "classifier_weights_sha256": cb.spec.weights_sha256,
        "params": asdict(params),
        "n_train": int(train.shape[0]),
        "n_val": int(n_val),
        "epochs": len(rep.history),
        "val_score_shift": rep.shift.summary() if rep.shift is not None else None,
    }
    save_spacex_bundle(out, rep.generators, cb.spec, meta=meta, train_config=config)
    return out


def save_spacex_bundle(
    path: str | Path,
    gens: SpacexGenerators,
    classifier_spec: Any,
    *,
    meta: dict[str, Any] | None = None,
    train_config: BaseModel | None = None,
) -> Path:
    """Write a SpacEX bundle: both generators, ``spacex.json``, ``train_config.yaml``.

    Args:
        path: bundle directory to create.
        gens: the trained generators.
        classifier_spec: the classifier bundle's :class:`~geoxai.models.bundle_spec.BundleSpec`
        (its input
            bands, normalization and window lattice are reused).
        meta: what ``spacex.json`` records (classifier bundle path and SHA-256 ...).
        train_config: the workflow config, saved as ``train_config.yaml``.
    """

    spec = BundleSpec.model_validate(
        {
            "name": "spacex",
            "architecture": "spacex",
            "arch_kwargs": dict(gens.config),
            "weights": "weights.safetensors",
            "inputs": classifier_spec.inputs.model_dump(mode="json"),
            "normalization": classifier_spec.normalization.model_dump(mode="json"),
            "window": classifier_spec.window.model_dump(mode="json"),
            "output": {"kind": "regression", "names": ["spacex_attribution"], "transform": "none"},
            "description": "SpacEX: mean over bands of |G_max(x) - G_min(x)| (reflectance) for "
            f"the classifier {classifier_spec.name!r} (Emam et al. 2024).",
        }
    )
    doc = json.dumps({"format": "geoxai.spacex/1", **(meta or {})}, indent=2, default=str)
    out = save_bundle(path, gens, spec, extra_files={META_KEY: (META_FILE, doc.encode())})
    if train_config is not None:
        save_config(train_config, Path(out) / CONFIG_FILE)
    return out
