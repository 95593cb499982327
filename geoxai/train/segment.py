"""Rasters + mask -> U-Net: train a binary segmentation model on your own rasters, predict a COG.

The geoscience workflow of issue 7. Given feature rasters of any resolution and CRS (e.g. a DEM
at 5 m and a 5-band image at 10 m) and a mask (polygons or a raster), :func:`train_segment`

1. stacks all bands on one grid and rasterizes the mask (:mod:`geoxai.io.rasters`: grid,
   nodata conventions, labelled area = convex hull of the mask polygons or ``bounds``);
2. cuts ``tile_size`` px tiles, holds out a compact region of them for validation with a
   one-tile gap (no training tile touches a validation tile), normalizes every band with the
   mean / standard deviation of the training tiles;
3. trains a :class:`geoxai.models.UNet2d` (GroupNorm) with :func:`geoxai.train.trainer.fit`: random
   flips and 90 degree rotations, a loss for imbalanced masks (:mod:`geoxai.models.losses`), the
   validation IoU after every epoch, the best epoch by validation IoU;
4. writes a model bundle (``model.json`` + safetensors + ``grid.json`` + ``train_config.yaml``)
   and predicts the whole stacked area to ``prediction.tif`` (a COG of probabilities) with the
   Gaussian-blended windows of :mod:`geoxai.inference`, and reports the IoU of that blended
   prediction on the held-out tiles (``evaluation.json``).

:func:`predict_segment` runs a bundle over the training area again or over new rasters (same
bands in the same order; the grid keeps the bundle's CRS and resolution, bounds = where all new
rasters overlap).

Output directory (``out_dir``)::

    checkpoints/last.pt, checkpoints/best.pt, metrics.json, metrics.png   (geoxai.train.trainer)
    bundle/        model.json, model.safetensors, grid.json, train_config.yaml
    prediction.tif probability of the positive class, float32 COG, NaN = no data
    evaluation.json held-out IoU / precision / recall of prediction.tif, tile counts, pos_weight

Pixels without data in any band are given no label and no loss, and come out NaN.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import Field, model_validator

from geoxai.errors import ConfigError, InvalidInputError, ModelBundleError, StoreError
from geoxai.inference.windows import WindowParams
from geoxai.io.cog import write_array_cog
from geoxai.io.config_file import save_config
from geoxai.io.location import same_location
from geoxai.io.rasters import (
    Grid,
    MaskInput,
    RasterInput,
    grid_for_rasters,
    prepare_scene,
    raster_meta,
    stack_rasters,
)
from geoxai.models.bundle import load_bundle, save_bundle
from geoxai.models.bundle_spec import (
    BundleSpec,
    InputSpec,
    NormalizationSpec,
    OutputSpec,
)
from geoxai.models.losses import make_loss, pos_weight_from_frequency
from geoxai.models.unet import UNet2d
from geoxai.strict import StrictModel
from geoxai.train.distributed import shard
from geoxai.train.registry import CONFIG_FILE, register_workflow
from geoxai.train.segment_data import TileSplit, band_statistics, split_tiles
from geoxai.train.trainer import BaseTask, FitParams, fit

__all__ = [
    "SegmentConfig",
    "SegmentTask",
    "train_segment",
    "check_segment",
    "predict_segment",
    "training_rasters",
    "iou_counts",
    "ARCHITECTURE",
]

ARCHITECTURE = "unet2d"
"""Bundle architecture name of :class:`geoxai.models.UNet2d`."""


GRID_FILE = "grid.json"
"""Bundle extra file: training grid, band names, rasters, split and normalization."""


class SegmentConfig(StrictModel):
    """Train a U-Net on feature rasters and a mask (``geoxai train segment CONFIG``)."""

    rasters: list[RasterInput] = Field(
        min_length=1, description="Feature rasters (any CRS/resolution); bands are stacked."
    )
    mask: MaskInput = Field(description="Target: polygons (positive inside) or a raster (> 0).")
    resolution: float | None = Field(
        None, gt=0, description="Grid pixel size in CRS units (metres); default the finest input."
    )
    crs: str | None = Field(
        None, description="Grid CRS, e.g. EPSG:32631; default the first raster's."
    )
    bounds: list[float] | None = Field(
        None,
        description="[minx, miny, maxx, maxy] in crs: the labelled area; default the convex hull "
        "of the mask polygons.",
    )
    tile_size: int = Field(128, ge=16, le=2048, description="Training tile edge, pixels.")
    val_fraction: float = Field(
        0.2, gt=0, lt=0.9, description="Share of tiles held out (one compact region + 1-tile gap)."
    )
    loss: Literal["bce", "weighted_bce", "dice", "bce_dice", "focal"] = Field(
        "bce_dice", description="bce | weighted_bce | dice | bce_dice | focal (imbalanced masks)."
    )
    pos_weight: float | None = Field(
        None,
        gt=0,
        description="Positive-pixel weight of weighted_bce (default negatives/positives of the "
        "training tiles); with bce_dice, weights the BCE term when set.",
    )
    focal_gamma: float = Field(2.0, ge=0, description="Focusing exponent of the focal loss.")
    base_channels: int = Field(16, ge=4, le=256, description="U-Net channels at full resolution.")
    depth: int = Field(3, ge=1, le=6, description="U-Net down-sampling levels.")
    training: FitParams = Field(
        default_factory=lambda: FitParams.model_validate({}),
        description="Epochs, learning rate, batch size, seed ... (monitor defaults to val_iou).",
    )
    out_dir: str = Field(description="Folder for checkpoints, metrics, the bundle and the COG.")

    @model_validator(mode="after")
    def _check(self) -> SegmentConfig:
        if self.tile_size < 2**self.depth * 2:
            raise ValueError(
                f"tile_size {self.tile_size} is too small for depth {self.depth}: use "
                f">= {2**self.depth * 2} px or a smaller depth."
            )
        return self

    def fit_params(self) -> FitParams:
        """Training parameters; the best epoch is by ``val_iou`` unless ``monitor`` is set."""
        p = self.training
        if "monitor" not in p.model_fields_set:
            p = p.model_copy(update={"monitor": "val_iou", "mode": "max"})
        return p


def iou_counts(prob: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """IoU, precision and recall of ``prob >= 0.5`` against ``target`` over ``mask`` pixels."""
    pred = (prob >= 0.5) & mask
    t = target.astype(bool) & mask
    tp = float((pred & t).sum())
    fp = float((pred & ~t).sum())
    fn = float((~pred & t).sum())
    return {
        "iou": tp / max(tp + fp + fn, 1.0),
        "precision": tp / max(tp + fp, 1.0),
        "recall": tp / max(tp + fn, 1.0),
    }


class SegmentTask(BaseTask):
    """The :class:`~geoxai.train.trainer.TrainTask` of the workflow: tiles of one in-memory scene.

    Args:
        x: ``(C, H, W)`` float32 normalized bands, 0 where nodata.
        target: ``(H, W)`` 0/1.
        weight: ``(H, W)`` bool pixels that count in the loss (labelled and valid).
        split: the tiles.
        loss: ``loss(logits, target, valid)``.
        base, depth: U-Net width and depth.
        batch_size: tiles per step.
    """

    def __init__(
        self,
        x: np.ndarray,
        target: np.ndarray,
        weight: np.ndarray,
        split: TileSplit,
        loss: Any,
        *,
        base: int,
        depth: int,
        batch_size: int,
    ) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.t = torch.from_numpy(target.astype(np.float32))[None]
        self.m = torch.from_numpy(weight.astype(bool))[None]
        self.split = split
        self._train_set = set(split.train)
        self.loss = loss
        self.base, self.depth, self.batch_size = base, depth, batch_size

    def build_model(self) -> torch.nn.Module:

        return UNet2d(int(self.x.shape[0]), 1, self.base, self.depth)

    def _tiles(self, origins: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
        n = self.split.tile_size
        xs = torch.stack([self.x[:, r : r + n, c : c + n] for r, c in origins])
        ts = torch.stack([self.t[:, r : r + n, c : c + n] for r, c in origins])
        ms = torch.stack([self.m[:, r : r + n, c : c + n] for r, c in origins])
        return xs, ts, ms

    def _shifted(self, origin: tuple[int, int], shift: list[int]) -> tuple[int, int]:
        """``origin`` moved by ``shift`` px if the moved tile lies wholly on training tiles
        (so a crop never reaches a gap or validation tile), else ``origin``."""
        n = self.split.tile_size
        r, c = origin[0] + shift[0], origin[1] + shift[1]
        corners = {(r // n * n, c // n * n), (r // n * n, (c + n - 1) // n * n)}
        corners |= {
            ((r + n - 1) // n * n, c // n * n),
            ((r + n - 1) // n * n, (c + n - 1) // n * n),
        }
        return (r, c) if r >= 0 and c >= 0 and corners <= self._train_set else origin

    def train_batches(
        self, epoch: int, generator: torch.Generator, rank: int, world_size: int
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Shuffled training tiles, each shifted by up to half a tile when the shifted crop
        stays on training tiles, rotated by a random multiple of 90 degrees and flipped with
        probability 1/2: ``(x (B, C, n, n), target, valid (B, 1, n, n))``."""
        n = self.split.tile_size
        order = torch.randperm(len(self.split.train), generator=generator).tolist()
        mine = shard(order, rank, world_size)
        k = len(order)
        rot = torch.randint(0, 4, (k,), generator=generator).tolist()
        flip = torch.randint(0, 2, (k,), generator=generator).tolist()
        shift = torch.randint(-(n // 2), n // 2 + 1, (k, 2), generator=generator).tolist()
        origins = [self._shifted(self.split.train[j], shift[j]) for j in range(k)]
        for i in range(0, len(mine), self.batch_size):
            idx = mine[i : i + self.batch_size]
            parts = self._tiles([origins[j] for j in idx])
            out = []
            for a in parts:
                a = torch.stack(
                    [
                        torch.rot90(a[k], rot[j], dims=(1, 2)).flip(2)
                        if flip[j]
                        else torch.rot90(a[k], rot[j], dims=(1, 2))
                        for k, j in enumerate(idx)
                    ]
                )
                out.append(a.contiguous())
            yield tuple(out)

    def training_step(
        self, model: torch.nn.Module, batch: Any, optimizers: dict[str, torch.optim.Optimizer]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        x, t, m = batch
        logits = model(x)
        loss = self.loss(logits, t, m)
        with torch.no_grad():
            r = iou_counts(torch.sigmoid(logits).numpy(), t.numpy(), m.numpy())
        return loss, {"loss": float(loss.detach()), "iou": r["iou"]}

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """``val_loss`` (pixel-weighted mean) and ``val_iou`` / precision / recall over all
        validation tiles (each predicted whole, without blending)."""
        losses, weights, probs, ts, ms = [], [], [], [], []
        for i in range(0, len(self.split.val), self.batch_size):
            x, t, m = self._tiles(self.split.val[i : i + self.batch_size])
            logits = model(x)
            losses.append(float(self.loss(logits, t, m)))
            weights.append(float(m.sum()))
            probs.append(torch.sigmoid(logits).numpy())
            ts.append(t.numpy())
            ms.append(m.numpy())
        r = iou_counts(np.concatenate(probs), np.concatenate(ts), np.concatenate(ms))
        val_loss = float(np.average(losses, weights=np.maximum(weights, 1e-9)))
        return {
            "val_loss": val_loss,
            "val_iou": r["iou"],
            "val_precision": r["precision"],
            "val_recall": r["recall"],
        }


def _check_writable_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".geoxai_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"{what} {str(path)!r} is not writable ({exc.strerror or exc}); choose a folder you "
            "can write to."
        ) from exc


def _check_out_file(out: Path) -> None:
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"Output {str(out)!r} must be a .tif (a Cloud-Optimized GeoTIFF).")
    if out.is_dir():
        raise StoreError(f"Output {str(out)!r} is a directory; give a file name ending in .tif.")
    _check_writable_dir(out.parent, "The folder of the output")
    if out.exists() and not os.access(out, os.W_OK):
        raise StoreError(f"Output {str(out)!r} exists and is not writable; remove it first.")


def _check_not_an_input(out: Path, inputs: list[RasterInput]) -> None:
    """Refuse an output file that is one of the inputs: writing it would destroy the input."""
    for path in (r.path for r in inputs):
        if same_location(out, path):
            raise InvalidInputError(
                f"Output {str(out)!r} is the input raster {path!r}: predicting would overwrite "
                "it. Give another --out file."
            )


def _absolute(config: SegmentConfig) -> SegmentConfig:
    """The config with absolute input paths (the saved config works from any folder)."""
    rasters = [r.model_copy(update={"path": str(Path(r.path).resolve())}) for r in config.rasters]
    mask = config.mask.model_copy(update={"path": str(Path(config.mask.path).resolve())})
    return config.model_copy(update={"rasters": rasters, "mask": mask})


def _window_params(tile_size: int) -> WindowParams:
    """Inference windows whose model input equals the training tile (context = tile / 8)."""
    context = max(4, tile_size // 8)
    window = tile_size - 2 * context
    return WindowParams(window=window, stride=max(1, window // 2), context=context, sigma=None)


def _predict_scene(bundle_dir: Path, data: np.ndarray, valid: np.ndarray, grid: Grid) -> np.ndarray:
    """Blended ``(H, W)`` probabilities of a stacked scene (NaN where no data)."""

    b = load_bundle(bundle_dir)
    cube = xr.DataArray(
        data[None],
        dims=("time", "band", "y", "x"),
        coords={"band": b.spec.inputs.features},
        attrs={"transform": list(grid.transform)[:6], "crs": grid.crs},
    )
    out = b.predict(cube, valid)
    return np.where(valid, out.values[0], np.nan).astype(np.float32)


def _write_prediction(prob: np.ndarray, grid: Grid, out: Path, tags: dict[str, Any]) -> Path:

    write_array_cog(
        prob[None].astype(np.float32),
        str(out),
        crs=grid.crs,
        transform=grid.transform,
        band_names=["probability"],
        tags=tags,
    )
    return out


def _training_counts(scene: Any, split: Any, ts: int) -> tuple[int, int]:
    """(positive, labelled) pixels of the training tiles."""
    pos = sum(
        int(scene.target[r : r + ts, c : c + ts][scene.labelled[r : r + ts, c : c + ts]].sum())
        for r, c in split.train
    )
    n_lab = sum(int(scene.labelled[r : r + ts, c : c + ts].sum()) for r, c in split.train)
    return pos, n_lab


def check_segment(config: SegmentConfig) -> tuple[Any, Any]:
    """Every check :func:`train_segment` makes before training, writing nothing.

    ``out_dir`` can be created and written; :func:`geoxai.io.rasters.prepare_scene` (files
    exist and overlap, the tile fits the area, bands have data, the mask has positives and
    negatives); :func:`~geoxai.train.segment_data.split_tiles` (enough tiles for a separated
    validation region); the training tiles hold a positive pixel. Reads the rasters over the
    training grid (what training reads first anyway).

    Returns:
        ``(scene, split)``: the stacked :class:`~geoxai.io.rasters.Scene` and the tile split.

    Raises:
        StoreError: ``out_dir`` is not writable.
        ConfigError, InvalidInputError, DataAccessError: bad inputs.
    """
    out = Path(config.out_dir)
    p = out
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK):
        raise StoreError(
            f"out_dir {str(out)!r} cannot be written ({p} is not a writable folder); choose "
            "another output folder."
        )
    ts = config.tile_size
    scene = prepare_scene(
        list(config.rasters),
        config.mask,
        crs=config.crs,
        resolution=config.resolution,
        bounds=config.bounds,
        tile_size=ts,
    )
    split = split_tiles(scene.labelled, ts, config.val_fraction, seed=config.training.seed)
    if _training_counts(scene, split, ts)[0] == 0:
        raise InvalidInputError(
            "The training tiles hold no positive pixel (all positives fell into validation or "
            "gap tiles); use a smaller val_fraction, a smaller tile_size or another seed."
        )
    return scene, split


@register_workflow("segment", SegmentConfig)
def train_segment(config: SegmentConfig, *, resume: bool = True) -> Path:
    """Train the U-Net of ``config``, write the bundle and ``prediction.tif``; return the bundle.

    Everything that can be checked is checked before training starts: the output folder is
    writable, the files exist and overlap, the mask has positives in the area, the tile size
    fits, and there are enough tiles for a spatially separated split.

    Raises:
        StoreError: ``out_dir`` is not writable.
        ConfigError, InvalidInputError, DataAccessError: bad inputs (see
            :func:`geoxai.io.rasters.prepare_scene` and
            :func:`~geoxai.train.segment_data.split_tiles`).
    """
    out = Path(config.out_dir)
    _check_writable_dir(out, "out_dir")
    config = _absolute(config)
    params = config.fit_params()
    ts = config.tile_size
    scene, split = check_segment(config)
    offset, scale = band_statistics(scene.data, scene.valid, split.train, ts)
    off = np.asarray(offset, np.float32)[:, None, None]
    sc = np.asarray(scale, np.float32)[:, None, None]
    x = np.nan_to_num((scene.data - off) / sc, nan=0.0)
    pos, n_lab = _training_counts(scene, split, ts)
    pos_weight = config.pos_weight
    if config.loss == "weighted_bce" and pos_weight is None:
        pos_weight = pos_weight_from_frequency(pos, n_lab - pos)
    loss = make_loss(config.loss, pos_weight=pos_weight, gamma=config.focal_gamma)
    task = SegmentTask(
        x,
        scene.target,
        scene.labelled,
        split,
        loss,
        base=config.base_channels,
        depth=config.depth,
        batch_size=params.batch_size,
    )
    result = fit(task, params, out, resume=resume)

    bundle_dir = out / "bundle"
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_rank() != 0:
            return bundle_dir  # rank 0 writes the bundle and the prediction
    info = {
        "grid": scene.grid.to_json(),
        "band_names": scene.band_names,
        "rasters": [r.model_dump(mode="json") for r in config.rasters],
        "bands_per_raster": scene.bands_per_raster,
        "tile_size": ts,
        "split": {k: getattr(split, k) for k in ("train", "val", "gap")},
        "positive_fraction_train": pos / max(n_lab, 1),
        "pos_weight": pos_weight,
    }
    spec = BundleSpec(
        name=f"segment-{Path(config.mask.path).stem}",
        architecture=ARCHITECTURE,
        arch_kwargs=dict(result.model.config),  # type: ignore[arg-type]
        weights="model.safetensors",
        inputs=InputSpec(features=scene.band_names, time_steps=1, layout="CHW"),
        normalization=NormalizationSpec(kind="affine", offset=offset, scale=scale),
        window=_window_params(ts),
        output=OutputSpec(kind="probability", names=["probability"], transform="sigmoid"),
        description=f"U-Net (rasters + mask) trained by geoxai train segment; best epoch "
        f"{result.best_epoch} by {params.monitor}.",
    )
    save_bundle(
        bundle_dir,
        result.model,
        spec,
        extra_files={"grid": (GRID_FILE, json.dumps(info).encode())},
    )
    save_config(config, Path(bundle_dir) / CONFIG_FILE)

    prob = _predict_scene(bundle_dir, scene.data, scene.valid, scene.grid)
    _write_prediction(prob, scene.grid, out / "prediction.tif", {"bundle": str(bundle_dir)})
    val = np.zeros(scene.valid.shape, bool)
    for r, c in split.val:
        val[r : r + ts, c : c + ts] = True
    held = iou_counts(np.nan_to_num(prob), scene.target, val & scene.labelled)
    evaluation = {
        "heldout_iou": held["iou"],
        "heldout_precision": held["precision"],
        "heldout_recall": held["recall"],
        "heldout_pixels": int((val & scene.labelled).sum()),
        "tiles": {k: len(getattr(split, k)) for k in ("train", "val", "gap", "unused")},
        "best_epoch": result.best_epoch,
        "best_val_iou_tiles": max((h.get("val_iou", 0.0) for h in result.history), default=0.0),
        "pos_weight": pos_weight,
        "grid": scene.grid.to_json(),
    }
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    return bundle_dir


def _bundle_info(bundle: Any) -> dict[str, Any]:
    try:
        return json.loads(bundle.extra_file("grid"))
    except ModelBundleError as exc:
        raise ModelBundleError(
            f"Bundle {bundle.path} has no {GRID_FILE}; it was not made by geoxai train segment "
            "(use `geoxai predict` for other bundles)."
        ) from exc


def predict_segment(bundle: str | Path, rasters: list[RasterInput] | None, out: str | Path) -> Path:
    """Predict a segmentation bundle to a COG of probabilities.

    Args:
        bundle: the bundle directory (``out_dir/bundle`` of :func:`train_segment`).
        rasters: new feature rasters, the same bands in the same order as in training (per
            raster: same band count after ``bands``); None = the training rasters over the
            training grid.
        out: the ``.tif`` to write.

    Returns:
        ``out``.

    Raises:
        StoreError: ``out`` is not writable (checked first).
        ModelBundleError: not a segmentation bundle, or the rasters' bands do not fit it.
        InvalidInputError: the new rasters do not overlap or are smaller than one window, or
            ``out`` is one of the input rasters.
    """
    out_path = Path(out)
    _check_out_file(out_path)
    b = load_bundle(bundle)
    info = _bundle_info(b)
    trained = [RasterInput.model_validate(r) for r in info["rasters"]]
    features = list(b.spec.inputs.features)
    _check_not_an_input(out_path, list(rasters or trained))
    if rasters is None:
        grid = Grid.from_json(info["grid"])
        metas = [raster_meta(r) for r in trained]
    else:
        tgrid = Grid.from_json(info["grid"])
        grid, metas = grid_for_rasters(list(rasters), crs=tgrid.crs, resolution=tgrid.resolution)
        counts = [len(m.bands) for m in metas]
        want = list(info["bands_per_raster"])
        if counts != want:
            raise ModelBundleError(
                f"Bundle {b.path} was trained on {len(trained)} rasters with {want} bands "
                f"({features}); the given rasters have {counts} bands. Give the same bands in "
                "the same order (set 'bands' to select them)."
            )
    n_in = b.window_params().input_size
    if min(grid.shape) < n_in:
        raise InvalidInputError(
            f"The area is {grid.shape[0]} x {grid.shape[1]} px, smaller than one model input of "
            f"{n_in} px; give larger rasters."
        )
    data, _ = stack_rasters(metas, grid)
    valid = np.isfinite(data).all(axis=0)
    if not valid.any():
        raise InvalidInputError("No pixel has data in every band; nothing to predict.")
    prob = _predict_scene(b.path, data, valid, grid)
    return _write_prediction(prob, grid, out_path, {"bundle": str(b.path)})


def training_rasters(bundle: str | Path, paths: list[str]) -> list[RasterInput]:
    """New raster paths dressed as the bundle's training rasters (same ``bands``, ``name``,
    ``nodata``, in order), for predicting the same kind of files elsewhere.

    Raises:
        ModelBundleError: a different number of rasters than the bundle was trained on.
    """
    b = load_bundle(bundle)
    trained = [RasterInput.model_validate(r) for r in _bundle_info(b)["rasters"]]
    if len(paths) != len(trained):
        raise ModelBundleError(
            f"Bundle {b.path} was trained on {len(trained)} rasters "
            f"({[Path(r.path).name for r in trained]}); got {len(paths)}. Give one --raster per "
            "training raster, in the same order."
        )
    return [r.model_copy(update={"path": str(p)}) for r, p in zip(trained, paths, strict=True)]
