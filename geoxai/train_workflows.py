"""Training workflows of the mapping models: ``geoxai train temporal`` and ``geoxai train asos``.

**temporal**: a :class:`geoxai.models.TemporalUNet` learns a per-pixel map (e.g. tree cover)
from model-ready cubes (``features`` ``(time, band, y, x)`` + ``valid``, as ``geoxai smooth`` or
a run's store writes them) and per-pixel labels (a raster reprojected onto each cube's grid, or
an array stored beside the features). Validation is spatially held out: whole ``val_tiles``,
or else the eastern ``val_fraction`` of every training tile (training windows stay ``margin``
px away from it). Output: a model bundle the run reads (``models.prediction``)::

    # geoxai train temporal temporal.yaml
    tiles:
      - {cube: store/features/32631_E0096_N0938.zarr, labels: truth/tree_cover.tif}
      - {cube: s3://bucket/features/32631_E0097_N0938.zarr, label_variable: tree_cover}
    val_tiles:
      - {cube: store/features/32631_E0096_N0939.zarr, labels: truth/tree_cover.tif}
    window: 64
    training: {epochs: 20, lr: 0.003, batch_size: 8, patience: 5, monitor: val_iou, mode: max}
    out_dir: models/treecover-run1           # bundle in models/treecover-run1/bundle

**asos**: an :class:`geoxai.asos.ASOSNet` learns image labels (natural 1 / anthropogenic 0)
from an ``.npz`` (``images`` ``(N, C, H, W)``, ``labels`` ``(N,)``, optional ``valid``) or a
EuroSAT folder (split from ``splits.csv``), with activation occlusion; its sensitivity table is
then fitted on the training images (``fit_table``). Output: an ASOS bundle (``models.asos``).

Memory: the temporal workflow holds every cube in memory, ``T * C * H * W * 4`` bytes each
(24 x 15 features of a 728 px tile: 760 MB).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.trainer import BaseTask, FitParams, fit, is_main_process, prepare_out_dir, shard
from geoxai.workflows import FitParamsModel, save_config

__all__ = [
    "AsosTask",
    "load_labelled_images",
    "AsosConfig",
    "train_asos_workflow",
    "train_asos_images",
    "TemporalTile",
    "TemporalConfig",
    "load_training_tile",
    "train_temporal_workflow",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleOptions(_Strict):
    """How the written bundle is described and run (inference windows)."""

    name: str | None = Field(None, description="Bundle name (default from out_dir).")
    description: str = Field("", description="Free text stored in model.json.")
    window: int = Field(128, ge=8, description="Inference window kept per model call, px.")
    stride: int = Field(64, ge=1, description="Step between inference windows, px.")
    context: int = Field(16, ge=0, description="Extra input px around each window.")

    @model_validator(mode="after")
    def _stride(self) -> BundleOptions:
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} must be <= window {self.window}.")
        return self


# ---- ASOS -------------------------------------------------------------------------------------


class AsosTask(BaseTask):
    """Train an :class:`geoxai.asos.ASOSNet` on labelled images (Adam, BCE on the image logit,
    activation occlusion with probability ``occlusion_p`` in a share ``occlusion_every`` of the
    batches, random 90-degree rotations and flips).

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
        from geoxai.asos import _as_tensor, check_image

        x = _as_tensor(images)
        y = _as_tensor(labels).reshape(-1)
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
        from geoxai.asos import _augment

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
        from geoxai.asos import _as_tensor, predict_scores

        self.net.occlusion_p = 0.0
        n = max(self._sums[2], 1)
        rec = {
            "epoch": float(len(self.history) + 1),
            "loss": self._sums[0] / n,
            "accuracy": self._sums[1] / n,
        }
        out: dict[str, float] = {}
        if self.val is not None:
            vx, vy = _as_tensor(self.val[0]), _as_tensor(self.val[1]).reshape(-1)
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
    from geoxai.asos import to_network_input
    from geoxai.errors import DataAccessError

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
        from geoxai.eurosat import read_eurosat

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


class AsosTableOptions(_Strict):
    """The sensitivity table fitted after training (:class:`geoxai.asos.ASOSParams`)."""

    fit: bool = Field(True, description="Fit the table on the training images (else: no table).")
    edge: float = Field(0.2, gt=0, le=2, description="Activation-space cube edge (paper 0.2).")
    min_pixels: int = Field(100, ge=1, description="Pixels of an image in a cube to occlude it.")
    fill: float = Field(0.0, description="Value occluded activations are set to.")


class AsosConfig(_Strict):
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
    training: FitParamsModel = Field(default_factory=FitParamsModel, description="Training.")
    out_dir: str = Field(description="Checkpoints, metrics; the bundle goes to out_dir/bundle.")


def train_asos_workflow(config: AsosConfig, *, resume: bool = True) -> Path:
    """Train (and table-fit) an ASOS network per ``config``; returns the bundle directory."""
    from geoxai.asos import ASOSNet, ASOSParams, bundle_spec, fit_partial, save_asos_bundle

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
    params = config.training.to_params()
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
        save_config(config, bundle)
    return bundle


def train_asos_images(
    net: Any,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    params: Any,
    *,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Any = None,
) -> list[dict[str, float]]:
    """:func:`geoxai.asos.train_asos` through :func:`geoxai.trainer.fit` (temporary checkpoints)."""
    import tempfile

    task = AsosTask(
        net, images, labels, batch_size=params.batch_size, occlusion_p=params.occlusion_p,
        occlusion_every=params.occlusion_every, augment=params.augment, val=val,
        on_epoch=on_epoch,
    )  # fmt: skip
    fp = FitParams(
        epochs=params.epochs, lr=params.lr, weight_decay=params.weight_decay,
        batch_size=params.batch_size, seed=params.seed, checkpoint_every=params.epochs,
        progress=False,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="geoxai-asos-") as tmp:
        fit(task, fp, tmp, resume=False)
    net.occlusion_p = 0.0
    net._occ_gen = None
    return task.history


# ---- temporal ---------------------------------------------------------------------------------


class TemporalTile(_Strict):
    """One model-ready cube and its per-pixel labels."""

    cube: str = Field(description="Store URL of a model-ready cube (features + valid).")
    labels: str | None = Field(
        None, description="Label raster (GeoTIFF, any CRS; reprojected onto the cube grid)."
    )
    label_variable: str | None = Field(
        None, description="Or: name of a (y, x) label array in the cube's store."
    )
    label_scale: float = Field(
        1.0, gt=0, description="Labels are divided by this (100 for percent) to give 0..1."
    )
    resampling: str = Field(
        "average", description="Label reprojection: average (fractions) or nearest (classes)."
    )

    @model_validator(mode="after")
    def _one_label(self) -> TemporalTile:
        if (self.labels is None) == (self.label_variable is None):
            raise ValueError(
                f"tile {self.cube!r}: give exactly one of labels (a raster) and label_variable "
                "(an array in the cube's store)."
            )
        if self.resampling not in ("average", "nearest", "bilinear"):
            raise ValueError(
                f"resampling {self.resampling!r} must be average, nearest or bilinear."
            )
        return self


class TemporalConfig(_Strict):
    """Train the temporal segmentation U-Net on model-ready cubes with per-pixel labels."""

    tiles: list[TemporalTile] = Field(min_length=1, description="Training cubes and labels.")
    val_tiles: list[TemporalTile] = Field(
        default_factory=list, description="Held-out validation tiles (default: val_fraction)."
    )
    val_fraction: float = Field(
        0.2, ge=0, le=0.5, description="Without val_tiles: eastern share of each tile held out."
    )
    features: list[str] | None = Field(
        None, description="Features (cube band names) the model reads; default all."
    )
    window: int = Field(64, ge=16, description="Training window edge, px (multiple of 2**depth).")
    margin: int = Field(8, ge=0, description="Window border left out of the loss, px.")
    steps_per_epoch: int = Field(50, ge=1, description="Optimisation steps per epoch.")
    embed: int = Field(16, ge=1, description="Per-step embedding channels.")
    base: int = Field(16, ge=1, description="First U-Net level channels.")
    depth: int = Field(2, ge=0, le=5, description="U-Net down-sampling levels.")
    output: str = Field("tree_cover", description="Name of the output layer in the bundle.")
    bundle: BundleOptions = Field(default_factory=BundleOptions, description="Bundle settings.")
    training: FitParamsModel = Field(
        default_factory=lambda: FitParamsModel(lr=3e-3, batch_size=8, monitor="val_loss"),
        description="Training.",
    )
    out_dir: str = Field(description="Checkpoints, metrics; the bundle goes to out_dir/bundle.")

    @model_validator(mode="after")
    def _window(self) -> TemporalConfig:
        m = 2**self.depth
        if self.window % m or self.window <= 2 * self.margin:
            raise ValueError(
                f"window {self.window} must be a multiple of 2**depth ({m}) and exceed "
                f"2 * margin ({2 * self.margin})."
            )
        return self


def _labels_on_grid(tile: TemporalTile, crs: str, transform: Sequence[float], shape) -> np.ndarray:
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    from geoxai.errors import DataAccessError

    dst = np.full(shape, np.nan, np.float32)
    try:
        with rasterio.open(tile.labels) as src:
            reproject(
                source=rasterio.band(src, 1), destination=dst, src_transform=src.transform,
                src_crs=src.crs, src_nodata=src.nodata, dst_transform=Affine(*transform[:6]),
                dst_crs=crs, dst_nodata=np.nan, resampling=Resampling[tile.resampling],
            )  # fmt: skip
    except rasterio.errors.RasterioIOError as exc:
        raise DataAccessError(f"cannot read label raster {tile.labels}: {exc}") from exc
    if not np.isfinite(dst).any():
        raise InvalidInputError(
            f"label raster {tile.labels} does not overlap the cube {tile.cube} ({crs}); give "
            "labels that cover the cube's area."
        )
    return dst


def load_training_tile(tile: TemporalTile, features: Sequence[str] | None = None) -> dict[str, Any]:
    """Read one cube and its labels.

    Returns:
        ``{"x": (T, C, H, W) float32, "valid": (H, W) bool, "y": (H, W) float32 in [0, 1] with
        NaN = unlabelled, "features": names, "time": (T,) datetime64}``.

    Raises:
        InvalidInputError: no ``features``/``valid`` arrays, missing features, labels outside
            [0, 1] after ``label_scale``, no overlap.
    """
    from geoxai.errors import look_up_option
    from geoxai.store import read_dataset

    ds = read_dataset(tile.cube)
    for name in ("features", "valid"):
        if name not in ds.data_vars:
            raise InvalidInputError(
                f"{tile.cube} has arrays {sorted(map(str, ds.data_vars))}, no {name!r}: give a "
                "model-ready cube (from `geoxai smooth` or a run's store)."
            )
    da = ds["features"]
    names = [str(b) for b in da["band"].values]
    want = list(features) if features is not None else names
    for f in want:
        look_up_option(f, names, what=f"feature of {tile.cube}", error=InvalidInputError)
    x = np.asarray(da.sel(band=want).values, np.float32)
    valid = np.asarray(ds["valid"].values, bool)
    if tile.label_variable is not None:
        if tile.label_variable not in ds.data_vars:
            look_up_option(
                tile.label_variable, [str(v) for v in ds.data_vars],
                what=f"label array in {tile.cube}", error=InvalidInputError,
            )  # fmt: skip
        y = np.asarray(ds[tile.label_variable].values, np.float32)
    else:
        attrs = {**ds.attrs, **da.attrs}
        if "crs" not in attrs or "transform" not in attrs:
            raise InvalidInputError(
                f"{tile.cube} has no crs/transform attributes, so a label raster cannot be "
                "placed on it; store the labels in the cube and use label_variable."
            )
        y = _labels_on_grid(tile, str(attrs["crs"]), list(attrs["transform"]), valid.shape)
    if y.shape != valid.shape:
        raise InvalidInputError(f"labels of {tile.cube} are {y.shape}, the cube {valid.shape}.")
    y = y / np.float32(tile.label_scale)
    if not np.isfinite(y).any():
        raise InvalidInputError(f"labels of {tile.cube} are all nodata; nothing to learn from.")
    lo, hi = float(np.nanmin(y)), float(np.nanmax(y))
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InvalidInputError(
            f"labels of {tile.cube} range {lo:g}..{hi:g} after dividing by label_scale "
            f"{tile.label_scale:g}; they must be fractions in 0..1 (set label_scale: 100 for "
            "percent)."
        )
    return {
        "x": x,
        "valid": valid,
        "y": np.clip(y, 0, 1),
        "features": want,
        "time": np.asarray(da["time"].values),
    }


def _check_same_axes(tiles: list[dict[str, Any]], cfg: list[TemporalTile]) -> None:
    ref = tiles[0]
    for t, c in zip(tiles[1:], cfg[1:], strict=True):
        if t["x"].shape[:2] != ref["x"].shape[:2] or t["features"] != ref["features"]:
            raise InvalidInputError(
                f"cube {c.cube} has {t['x'].shape[0]} time steps and features {t['features']}; "
                f"{cfg[0].cube} has {ref['x'].shape[0]} and {ref['features']}: train on cubes "
                "smoothed onto one time axis with the same features."
            )


def train_temporal_workflow(config: TemporalConfig, *, resume: bool = True) -> Path:
    """Train the TemporalUNet per ``config``; returns the bundle directory (``out_dir/bundle``).

    The bundle's normalization is :func:`geoxai.train.fit_normalization` of the training
    pixels; metrics (``val_loss``, ``val_iou``, ``val_mae`` on held-out pixels) are in
    ``out_dir/metrics.json``.
    """
    from geoxai.train import TemporalTask, fit_normalization, save_temporal_bundle

    out = prepare_out_dir(config.out_dir)
    train = [load_training_tile(t, config.features) for t in config.tiles]
    val_tiles = [load_training_tile(t, config.features) for t in config.val_tiles]
    _check_same_axes(train + val_tiles, list(config.tiles) + list(config.val_tiles))
    regions: list[np.ndarray | None] = [None] * len(train)
    val: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = [
        (t["x"], t["y"], t["valid"], np.ones_like(t["valid"])) for t in val_tiles
    ]
    if not val_tiles and config.val_fraction > 0:
        regions = []
        for t in train:
            w = t["valid"].shape[1]
            split = int(round(w * (1 - config.val_fraction)))
            cols = np.arange(w)[None, :]
            regions.append(np.broadcast_to(cols < split - config.margin, t["valid"].shape))
            val.append((t["x"], t["y"], t["valid"], np.broadcast_to(cols >= split, t["y"].shape)))
    norm = fit_normalization(
        [t["x"] for t in train],
        [t["valid"] & (r if r is not None else True) for t, r in zip(train, regions, strict=True)],
    )
    params = config.training.to_params()
    task = TemporalTask(
        [t["x"] for t in train], [t["y"] for t in train], [t["valid"] for t in train],
        normalization=norm, window=config.window, margin=config.margin,
        steps_per_epoch=config.steps_per_epoch, batch_size=params.batch_size,
        regions=regions, val=val,
        net_kwargs={"embed": config.embed, "base": config.base, "depth": config.depth},
    )  # fmt: skip
    res = fit(task, params, out, resume=resume)
    b = config.bundle
    bundle = out / "bundle"
    if not is_main_process():  # every rank holds the same weights; rank 0 writes
        return bundle
    save_temporal_bundle(
        bundle, res.model, train[0]["features"], norm,
        name=b.name or f"temporal-{out.name}", output=config.output, window=b.window,
        stride=b.stride, context=b.context, description=b.description or (
            f"TemporalUNet trained on {len(train)} tile(s) by geoxai train temporal."
        ),
    )  # fmt: skip
    save_config(config, bundle)
    return bundle
