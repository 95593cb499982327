"""``geoxai train temporal``: a :class:`~geoxai.models.unet.TemporalUNet` learns a per-pixel map
(e.g. tree cover) from model-ready cubes and per-pixel labels, spatially held out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from pydantic import Field, model_validator

from geoxai.errors import DataAccessError, InvalidInputError, look_up_option
from geoxai.io.config_file import save_config
from geoxai.io.store import read_dataset
from geoxai.strict import StrictModel
from geoxai.train.distributed import is_main_process
from geoxai.train.registry import CONFIG_FILE, BundleOptions, register_workflow
from geoxai.train.temporal import TemporalTask, fit_normalization, save_temporal_bundle
from geoxai.train.trainer import FitParams, fit, prepare_out_dir

__all__ = [
    "TemporalTile",
    "TemporalConfig",
    "load_training_tile",
    "train_temporal_workflow",
]


class TemporalTile(StrictModel):
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


class TemporalConfig(StrictModel):
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
    training: FitParams = Field(
        default_factory=lambda: FitParams(lr=3e-3, batch_size=8, monitor="val_loss"),
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
    import rasterio  # lazy: rasterio (GDAL) only on this path
    from rasterio.warp import Resampling, reproject  # lazy: rasterio (GDAL) only on this path

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


@register_workflow("temporal", TemporalConfig)
def train_temporal_workflow(config: TemporalConfig, *, resume: bool = True) -> Path:
    """Train the TemporalUNet per ``config``; returns the bundle directory (``out_dir/bundle``).

    The bundle's normalization is :func:`geoxai.train.fit_normalization` of the training
    pixels; metrics (``val_loss``, ``val_iou``, ``val_mae`` on held-out pixels) are in
    ``out_dir/metrics.json``.
    """

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
    params = config.training
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
    save_config(config, Path(bundle) / CONFIG_FILE)
    return bundle
