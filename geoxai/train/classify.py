"""Scene classification on EuroSAT-format patches (CNN-Sentinel), and class maps of whole scenes.

Training (:func:`train_classifier`, ``geoxai train classify CONFIG``) reads a folder of class
sub-folders of 64 x 64 px patches (13-band Sentinel-2 GeoTIFFs in EuroSAT's band order, or
3-band RGB), splits them (the folder's ``splits.csv`` or a given split file; else a seeded
stratified split), normalizes every band by the mean and standard deviation of the *training*
patches, augments with the 8 rotations/flips of the square, and trains with
:func:`geoxai.train.trainer.fit` (early stopping, checkpoints, resume, metrics). Models
(:mod:`geoxai.models.backbones`): ``simple_cnn`` from scratch, or ``resnet18``, from scratch or
from a local torchvision ResNet-18 weights file (``pretrained``) adapted to the bands by a 1 x 1
band-mixing layer or by widening the first convolution, optionally with the backbone frozen for
the first epochs. Nothing is downloaded.

Files in ``out_dir``::

    checkpoints/ metrics.json metrics.png   the trainer's (see geoxai.train.trainer)
    evaluation.json                         confusion matrix, per-class and overall accuracy
    confusion_matrix.png                    the confusion matrix (rows true, columns predicted)
    bundle/                                 model.json, model.safetensors, classify.json,
                                            train_config.yaml

The bundle is a :mod:`geoxai.models.bundle` bundle: ``inputs.features`` is the band list (model
channel order, layout CHW, one time step), ``normalization`` the training mean (offset) and standard
deviation (scale) in the files' units (DN), ``window.window`` the patch size, ``output.names``
the classes (softmax probabilities); ``classify.json`` adds the files' band layout and the
evaluation.

Class maps (:func:`classify_scene`, ``geoxai classify``): the classifier slides over a scene in
windows of the patch size; each window's class probabilities are spread over the window with
Gaussian weights (:func:`geoxai.inference.gaussian_weights`, merged by
:class:`geoxai.inference.WindowMerger`), so every pixel gets the probabilities of the windows
centred nearest to it; the class map is their argmax, written as a COG.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from geoxai.errors import (
    ConfigError,
    DataAccessError,
    InvalidInputError,
    look_up_option,
)
from geoxai.inference.windows import WindowParams
from geoxai.io.config_file import save_config
from geoxai.io.eurosat import EUROSAT_FILE_BANDS, list_patches, open_patch
from geoxai.models.backbones import (
    RGB_BANDS,
    ResNet18Classifier,
    SimpleCNN,
    find_cached_resnet18,
    load_pretrained_resnet18,
    read_state_dict,
)
from geoxai.models.bundle import save_bundle
from geoxai.models.bundle_spec import (
    BundleSpec,
    InputSpec,
    NormalizationSpec,
    OutputSpec,
)
from geoxai.strict import StrictModel
from geoxai.train.distributed import shard
from geoxai.train.history import plot_history
from geoxai.train.registry import CONFIG_FILE, register_workflow
from geoxai.train.trainer import BaseTask, FitParams, fit

__all__ = [
    "MODELS",
    "BAND_PRESETS",
    "FILE_LAYOUTS",
    "ClassifyConfig",
    "PatchData",
    "read_patches",
    "resolve_bands",
    "ClassifyTask",
    "evaluate_classifier",
    "train_classifier",
]

MODELS = ("simple_cnn", "resnet18")
"""Classifier networks (see :mod:`geoxai.models.backbones`)."""


BAND_PRESETS = ("all13", "rgb")
"""Named band selections: all 13 EuroSAT bands (file order) or B04, B03, B02 (R, G, B)."""


FILE_LAYOUTS: dict[int, tuple[str, ...]] = {13: EUROSAT_FILE_BANDS, 3: RGB_BANDS}
"""Band names of a patch file by its band count: EuroSAT MS (B8A last) or RGB."""


CACHE_KEYWORD = "torchvision-cache"
"""``pretrained`` value that takes ``resnet18-*.pth`` from torch's hub cache folder."""


_ARCH = {"simple_cnn": "scene_simple_cnn", "resnet18": "scene_resnet18"}


class ClassifyConfig(StrictModel):
    """``geoxai train classify CONFIG``: a scene classifier on EuroSAT-format patch folders."""

    data: str = Field(
        description="Folder with one sub-folder per class of 64x64 patches (13-band GeoTIFFs "
        "in EuroSAT order, or 3-band RGB)."
    )
    splits: str | None = Field(
        None,
        description="file,class,split CSV (train/validate/test); default <data>/splits.csv if "
        "present, else a seeded stratified split by val_fraction/test_fraction.",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Validation share per class.")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="Test share per class.")
    bands: str | list[str] = Field(
        "all13",
        description="'all13', 'rgb' (B04 B03 B02) or a list of band names (B01..B12, B8A).",
    )
    model: Literal["simple_cnn", "resnet18"] = Field(
        "simple_cnn", description="simple_cnn (from scratch) or resnet18."
    )
    width: int = Field(32, ge=4, le=256, description="simple_cnn channels of the first stage.")
    pretrained: str | None = Field(
        None,
        description="resnet18 only: local torchvision resnet18 weights (.pth/.safetensors), "
        f"or '{CACHE_KEYWORD}' for torch's hub cache; None = from scratch.",
    )
    band_adapter: Literal["mix1x1", "widen"] = Field(
        "mix1x1",
        description="resnet18 with bands != 3: 1x1 conv mixing the bands to RGB, or conv1 "
        "widened to the bands.",
    )
    freeze_backbone: int = Field(
        0, ge=0, description="Epochs to train only the head and band adapter (needs pretrained)."
    )
    augment: bool = Field(True, description="Random rotations by 90 degrees and flips.")
    training: FitParams = Field(default_factory=FitParams, description="Trainer settings.")
    out_dir: str = Field(description="Checkpoints, metrics, evaluation and bundle/ go here.")


@dataclass(frozen=True, eq=False)
class PatchData:
    """Patches of an EuroSAT-format folder, in the files' units.

    Attributes:
        images: ``(N, C, P, P)`` patches of the selected bands, the files' dtype (uint16 DN
            for EuroSAT MS, uint8 for RGB) to keep memory at 2 bytes per value.
        labels: ``(N,)`` int64 class index into ``classes``.
        splits: ``(N,)`` "train" / "validate" / "test".
        files: the patch paths.
        classes: sorted class names.
        bands: names of the C bands.
        file_bands: band names of the files (:data:`FILE_LAYOUTS`).
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    files: tuple[str, ...]
    classes: tuple[str, ...]
    bands: tuple[str, ...]
    file_bands: tuple[str, ...]

    @property
    def patch_size(self) -> int:
        """Patch edge, px."""
        return int(self.images.shape[-1])

    def index(self, split: str) -> np.ndarray:
        """Positions of the patches of ``split``."""
        return np.flatnonzero(self.splits == split)


def resolve_bands(bands: str | Sequence[str], file_bands: Sequence[str]) -> list[str]:
    """Band names selected by ``bands`` from files with ``file_bands``.

    Raises:
        ConfigError: unknown preset or band name (did-you-mean), a band the files lack (e.g.
            'all13' on RGB patches), or a band named twice.
    """
    if isinstance(bands, str):
        look_up_option(bands, BAND_PRESETS, what="band selection")
        if bands == "rgb":
            want = list(RGB_BANDS)
        else:
            want = list(EUROSAT_FILE_BANDS)
    else:
        want = list(bands)
        if not want:
            raise ConfigError("bands is an empty list; name at least one band or use 'all13'.")
        for b in want:
            look_up_option(b, EUROSAT_FILE_BANDS, what="band name")
        dupes = sorted({b for b in want if want.count(b) > 1})
        if dupes:
            raise ConfigError(f"bands names {dupes} more than once.")
    lacking = [b for b in want if b not in file_bands]
    if lacking:
        raise ConfigError(
            f"bands {bands!r} needs {lacking}, which the patches lack: they have "
            f"{len(file_bands)} bands ({' '.join(file_bands)}); choose bands among those "
            "(RGB patches: bands 'rgb')."
        )
    return want


def _file_layout(path: Path) -> tuple[str, ...]:
    with open_patch(path) as src:
        count = src.count
    if count not in FILE_LAYOUTS:
        raise InvalidInputError(
            f"patch {path} has {count} bands; EuroSAT-format patches have 13 (Sentinel-2 "
            f"{' '.join(EUROSAT_FILE_BANDS)}) or 3 (R G B)."
        )
    return FILE_LAYOUTS[count]


def read_patches(
    root: str | Path,
    bands: str | Sequence[str] = "all13",
    *,
    splits: str | Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> PatchData:
    """Read an EuroSAT-format folder: band selection checked on the first file, then pixels.

    Without a split file each class is split at random (``seed``) into ``test_fraction``,
    ``val_fraction`` and the rest for training (at least one validation patch per class with
    3 or more patches).

    Raises:
        DataAccessError / InvalidInputError: see :func:`geoxai.io.eurosat.list_patches`; patches
            with another band count or size than the first; no training or validation patch.
        ConfigError: a bad band selection (:func:`resolve_bands`).
        CorruptDataError: an unreadable patch.
    """
    rows = list_patches(root, splits)
    file_bands = _file_layout(rows[0][0])
    names = resolve_bands(bands, file_bands)
    pick = [file_bands.index(b) + 1 for b in names]  # rasterio bands are 1-based
    classes = tuple(sorted({r[1] for r in rows}))
    split = np.asarray([r[2] for r in rows], dtype=object)
    if not any(split):
        split = _stratified_split([r[1] for r in rows], val_fraction, test_fraction, seed)
    images = []
    shape = None
    for path, _, _ in rows:
        with open_patch(path) as src:
            if src.count != len(file_bands):
                raise InvalidInputError(
                    f"patch {path} has {src.count} bands, {rows[0][0]} has "
                    f"{len(file_bands)}; all patches need the same bands."
                )
            a = src.read(pick)
        if shape is None:
            shape = a.shape
            if a.shape[1] != a.shape[2]:
                raise InvalidInputError(f"patch {path} is {a.shape[1:]} px; patches are square.")
        elif a.shape != shape:
            raise InvalidInputError(
                f"patch {path} is {a.shape[1:]} px, {rows[0][0]} is {shape[1:]}; all patches "
                "need the same size."
            )
        images.append(a)
    data = PatchData(
        images=np.stack(images),
        labels=np.asarray([classes.index(r[1]) for r in rows], np.int64),
        splits=split.astype(str),
        files=tuple(str(r[0]) for r in rows),
        classes=classes,
        bands=tuple(names),
        file_bands=file_bands,
    )
    for s in ("train", "validate"):
        if data.index(s).size == 0:
            raise InvalidInputError(
                f"no {s} patches in {root}; the split file needs train and validate rows."
            )
    if len(classes) < 2:
        raise InvalidInputError(f"{root} has one class ({classes[0]}); a classifier needs two.")
    return data


def _stratified_split(
    classes: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.full(len(classes), "train", dtype=object)
    arr = np.asarray(classes)
    for c in sorted(set(classes)):
        idx = rng.permutation(np.flatnonzero(arr == c))
        n = idx.size
        n_test = int(round(test_fraction * n))
        n_val = max(int(round(val_fraction * n)), 1 if n >= 3 else 0)
        out[idx[:n_test]] = "test"
        out[idx[n_test : n_test + n_val]] = "validate"
    return out


def band_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation ``(C,)`` float64 of ``(N, C, P, P)`` patches.

    A constant band gets a standard deviation of 1 (its normalized values are then 0).
    """
    x = images.astype(np.float64, copy=False)
    mean = x.mean(axis=(0, 2, 3))
    std = x.std(axis=(0, 2, 3))
    return mean, np.where(std > 0, std, 1.0)


def dihedral_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each ``(C, P, P)`` sample of ``(B, C, P, P)`` rotated by a random multiple of 90 degrees
    and flipped left-right with probability 1/2 (the 8 symmetries of the square, uniformly)."""
    b = x.shape[0]
    k = torch.randint(0, 4, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.empty_like(x)
    for j in range(b):
        y = torch.rot90(x[j], int(k[j]), dims=(1, 2))
        out[j] = y.flip(2) if bool(flip[j]) else y
    return out


class ClassifyTask(BaseTask):
    """The :class:`geoxai.train.trainer.TrainTask` of a scene classifier (cross-entropy).

    Batches are ``(x, y)``: ``x`` ``(B, C, P, P)`` float32 normalized bands, ``y`` ``(B,)``
    int64 class indices; training batches are shuffled per epoch and augmented.
    """

    def __init__(
        self,
        config: ClassifyConfig,
        data: PatchData,
        mean: np.ndarray,
        std: np.ndarray,
        pretrained: Path | None,
    ) -> None:
        self.config = config
        self.data = data
        self.params = config.training
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
        self.pretrained = pretrained
        self.train_idx = data.index("train")
        self.val_idx = data.index("validate")
        self.epoch = 0

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized ``(x, y)`` of the patches at positions ``idx``."""
        x = torch.from_numpy(self.data.images[idx].astype(np.float32))
        return (x - self.mean) / self.std, torch.from_numpy(self.data.labels[idx])

    def build_model(self) -> torch.nn.Module:
        """The network; with ``pretrained``, ImageNet weights adapted to the bands."""
        c, k = len(self.data.bands), len(self.data.classes)
        if self.config.model == "simple_cnn":
            return SimpleCNN(c, k, width=self.config.width)
        net = ResNet18Classifier(c, k, self.config.band_adapter, bands=self.data.bands)
        if self.pretrained is not None:
            load_pretrained_resnet18(net, self.pretrained)
        return net

    def train_batches(
        self, epoch: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented batches of this rank's share of the training patches."""
        self.epoch = epoch
        order = self.train_idx[torch.randperm(self.train_idx.size, generator=generator).numpy()]
        bs = self.params.batch_size
        chunks = [order[i : i + bs] for i in range(0, order.size, bs)]
        for idx in shard(chunks, rank, world_size):
            x, y = self.batch(idx)
            if self.config.augment:
                x = dihedral_augment(x, generator)
            yield x, y

    def _set_frozen(self, net: torch.nn.Module) -> None:
        if not isinstance(net, ResNet18Classifier) or self.config.freeze_backbone == 0:
            return
        frozen = self.epoch < self.config.freeze_backbone
        keep = set(net.adapter_parameters())
        for name, p in net.named_parameters():
            p.requires_grad_(name in keep or not frozen)
        if frozen:  # keep the pretrained batch statistics while the backbone is frozen
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()

    def training_step(
        self, model: torch.nn.Module, batch: Any, optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy loss and batch accuracy."""
        self._set_frozen(model)
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        acc = float((logits.argmax(1) == y).float().mean())
        return loss, {"acc": acc}

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """``val_loss`` (mean cross-entropy) and ``val_acc`` on the validation patches."""
        probs = predict_proba(model, self, self.val_idx)
        y = torch.from_numpy(self.data.labels[self.val_idx])
        p = torch.from_numpy(probs)
        loss = F.nll_loss(torch.log(p.clamp_min(1e-12)), y)
        return {"val_loss": float(loss), "val_acc": float((p.argmax(1) == y).float().mean())}


def predict_proba(
    model: torch.nn.Module, task: ClassifyTask, idx: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Softmax probabilities ``(n, K)`` float32 of the patches at ``idx`` (eval mode)."""
    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, idx.size, batch_size):
            x, _ = task.batch(idx[i : i + batch_size])
            out.append(torch.softmax(model(x), dim=1).numpy())
    model.train(was_training)
    k = len(task.data.classes)
    return np.concatenate(out) if out else np.zeros((0, k), np.float32)


def evaluate_classifier(
    labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Confusion matrix and accuracies.

    Args:
        labels: ``(n,)`` true class indices.
        predicted: ``(n,)`` predicted class indices.
        classes: the K class names.

    Returns:
        ``{"n", "overall_accuracy", "per_class_accuracy" {class: recall or None}, "support"
        {class: n}, "confusion_matrix" (K x K counts, rows true, columns predicted),
        "classes"}``.
    """
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (labels, predicted), 1)
    support = cm.sum(1)
    per = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    n = int(labels.size)
    return {
        "n": n,
        "overall_accuracy": float(np.trace(cm) / n) if n else None,
        "per_class_accuracy": per,
        "support": {c: int(support[i]) for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def plot_confusion(evaluation: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """The confusion matrix of :func:`evaluate_classifier` as a PNG (counts in the cells)."""
    from matplotlib.backends.backend_agg import (
        FigureCanvasAgg,  # lazy: matplotlib only for figures (~0.5 s import)
    )
    from matplotlib.figure import Figure  # lazy: matplotlib only for figures (~0.5 s import)

    cm = np.asarray(evaluation["confusion_matrix"])
    classes = evaluation["classes"]
    k = len(classes)
    size = max(4.0, 0.6 * k + 2)
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                color = "white" if cm[i, j] > cm.max() / 2 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = evaluation.get("overall_accuracy")
    ax.set_title(f"{title} overall accuracy {acc:.3f}" if acc is not None else title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def _resolve_pretrained(config: ClassifyConfig) -> Path | None:
    if config.pretrained is None:
        if config.freeze_backbone:
            raise ConfigError(
                f"freeze_backbone is {config.freeze_backbone} epochs but there are no "
                "pretrained weights to keep; set pretrained or freeze_backbone: 0."
            )
        return None
    if config.model != "resnet18":
        raise ConfigError(
            f"pretrained weights are for model 'resnet18', not {config.model!r}; set model: "
            "resnet18 or pretrained: null."
        )
    if config.pretrained == CACHE_KEYWORD:
        found = find_cached_resnet18()
        if found is None:
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise DataAccessError(
                f"pretrained: {CACHE_KEYWORD} but {hub} holds no resnet18-*.pth; copy "
                "torchvision's ImageNet file (resnet18-f37072fd.pth) there, give its path, or "
                "set pretrained: null. geoxai downloads nothing."
            )
        return found
    p = Path(config.pretrained).expanduser()
    if not p.is_file():
        raise DataAccessError(
            f"pretrained weights file {p} does not exist; put a torchvision resnet18 "
            "state_dict there (.pth from torch.save, or .safetensors; e.g. copy "
            "resnet18-f37072fd.pth from ~/.cache/torch/hub/checkpoints/ of a machine where "
            "torchvision fetched it), or set pretrained: null to train from scratch. geoxai "
            "downloads nothing."
        )
    return p


@register_workflow("classify", ClassifyConfig)
def train_classifier(config: ClassifyConfig, *, resume: bool = True) -> Path:
    """Train, evaluate and bundle a scene classifier (see the module docstring).

    Returns:
        The bundle directory ``out_dir/bundle``.

    Raises:
        ConfigError: inconsistent settings or bands (before reading pixels).
        DataAccessError: missing data folder, split file or pretrained weights file.
        InvalidInputError: bad patches (band count, size, empty class folder, no train split).
        StoreError: ``out_dir`` is not writable.
    """
    params: FitParams = config.training
    pretrained = _resolve_pretrained(config)
    if pretrained is not None:  # fail on an unreadable file before reading any pixel
        read_state_dict(pretrained)
    data = read_patches(
        config.data,
        config.bands,
        splits=config.splits,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=params.seed,
    )
    if data.patch_size < 8 or (config.model == "resnet18" and data.patch_size < 32):
        raise InvalidInputError(
            f"patches of {data.patch_size} px are too small for {config.model} (>= 8 px, "
            "resnet18 >= 32 px)."
        )
    mean, std = band_statistics(data.images[data.index("train")])
    out = Path(config.out_dir)
    task = ClassifyTask(config, data, mean, std, pretrained)
    result = fit(task, params, out, resume=resume)

    test_idx = data.index("test")
    split = "test" if test_idx.size else "validate"
    idx = test_idx if test_idx.size else data.index("validate")
    probs = predict_proba(result.model, task, idx)
    ev = evaluate_classifier(data.labels[idx], probs.argmax(1), data.classes)
    ev = {
        "split": split,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        **ev,
    }
    (out / "evaluation.json").write_text(json.dumps(ev, indent=1) + "\n")
    plot_confusion(ev, out / "confusion_matrix.png", title=f"{split}:")
    if result.history and not (out / "metrics.png").exists():
        plot_history(result.history, out / "metrics.png")

    bundle = out / "bundle"
    p = data.patch_size
    spec = BundleSpec(
        name=f"scene classifier ({config.model}, {len(data.bands)} bands)",
        architecture=_ARCH[config.model],
        weights="model.safetensors",
        inputs=InputSpec(features=list(data.bands), time_steps=1, layout="CHW"),
        normalization=NormalizationSpec(
            kind="affine", offset=[float(v) for v in mean], scale=[float(v) for v in std]
        ),
        window=WindowParams(window=p, stride=max(1, p // 2), context=0),
        output=OutputSpec(
            kind="class_probabilities", names=list(data.classes), transform="softmax"
        ),
        description=f"Trained on {config.data}; {split} accuracy "
        f"{ev['overall_accuracy']:.3f} on {ev['n']} patches.",
    )
    info = {
        "file_bands": list(data.file_bands),
        "patch_size": p,
        "classes": list(data.classes),
        "bands": list(data.bands),
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "evaluation": ev,
    }
    save_bundle(
        bundle,
        result.model,
        spec,
        extra_files={"classify": ("classify.json", json.dumps(info, indent=1).encode())},
    )
    save_config(config, Path(bundle) / CONFIG_FILE)
    return bundle
