"""A scene classifier over a whole scene: read the scene, blend window probabilities
(:func:`geoxai.inference.scene.scene_probabilities`), write the class map as a COG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.errors import DataAccessError, InvalidInputError, ModelBundleError
from geoxai.inference.scene import scene_probabilities
from geoxai.io.cog import write_array_cog
from geoxai.models.bundle import load_bundle

__all__ = ["classify_scene"]


def classify_scene(
    bundle: str | Path,
    scene: str | Path,
    out: str | Path,
    *,
    stride: int | None = None,
    probabilities: bool = False,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, Any]:
    """Slide a scene classifier over a scene and write the class map as a COG.

    Windows of the patch size P start every ``stride`` px (the last row/column of windows flush
    with the scene's edge, so every pixel is covered without padding); a window holding a
    nodata pixel is skipped. Each window's class probabilities are spread over its pixels with
    Gaussian weights (sigma ``P * 36 / 158``) and averaged, so a pixel takes the probabilities
    of the windows centred nearest to it.

    Args:
        bundle: a classifier bundle (:func:`train_classifier`).
        scene: GeoTIFF with the band layout of the training patches (13 EuroSAT bands, B8A
            last; or 3 RGB), or with band descriptions naming the bundle's bands; same units
            and resolution as the patches (EuroSAT: L1C DN at 10 m). Read whole into memory.
        out: the class map COG: band 1 ``class`` (uint8 class index, 255 = no data); with
            ``probabilities`` K more bands ``p_<class>`` in percent (uint8, 255 = no data).
        stride: window step, px (1..P); default the bundle's (P / 2).
        probabilities: also write the per-class probability bands.
        batch_size: windows per model call.
        device: torch device.

    Returns:
        ``{"href", "classes", "windows", "shape", "class_counts"}``.

    Raises:
        ModelBundleError: the bundle is not a scene classifier.
        InvalidInputError: the scene's bands do not fit, it is smaller than one patch, or the
            stride is out of range.
        DataAccessError: the scene cannot be read.
    """
    import rasterio  # lazy: rasterio (GDAL) only on this path

    b = load_bundle(bundle, device)
    spec = b.spec
    if spec.output.kind != "class_probabilities" or "classify" not in spec.extra_files:
        raise ModelBundleError(
            f"Bundle {bundle} is a {spec.output.kind} model ({spec.architecture}), not a scene "
            "classifier; train one with `geoxai train classify`."
        )
    info = json.loads(b.extra_file("classify"))
    p = spec.window.window
    step = spec.window.stride if stride is None else int(stride)
    if not 1 <= step <= p:
        raise InvalidInputError(f"stride must be 1..{p} px (the patch size), got {step}.")
    features = list(spec.inputs.features)
    try:
        src_ctx = rasterio.open(scene)
    except rasterio.errors.RasterioIOError as exc:
        raise DataAccessError(f"cannot read scene {scene}: {exc}") from exc
    with src_ctx as src:
        desc = [d or "" for d in src.descriptions]
        file_bands = list(info["file_bands"])
        if all(f in desc for f in features):
            pick = [desc.index(f) + 1 for f in features]
        elif src.count == len(file_bands):
            pick = [file_bands.index(f) + 1 for f in features]
        else:
            raise InvalidInputError(
                f"scene {scene} has {src.count} bands; the classifier was trained on patches "
                f"of {len(file_bands)} bands ({' '.join(file_bands)}) and uses "
                f"{' '.join(features)}. Give a scene with that band layout, or band "
                "descriptions naming those bands."
            )
        h, w = src.height, src.width
        if h < p or w < p:
            raise InvalidInputError(
                f"scene {scene} is {h}x{w} px, smaller than one {p}x{p} px patch."
            )
        x = src.read(pick).astype(np.float32)
        masks = src.read_masks(pick)
        crs, transform = src.crs, src.transform
    valid = (masks > 0).all(axis=0) & np.isfinite(x).all(axis=0)
    off = np.asarray(spec.normalization.offset, np.float32)[:, None, None]
    x = (x - off) / np.asarray(spec.normalization.scale, np.float32)[:, None, None]

    classes = list(spec.output.names)
    k = len(classes)
    blended, n_windows = scene_probabilities(
        b.model, x, valid, p, step, k, batch_size=batch_size, device=b.device
    )
    covered = np.isfinite(blended).all(axis=0)
    cls = np.where(covered, np.nan_to_num(blended, nan=-1.0).argmax(0), 255).astype(np.uint8)
    bands = [cls[None]]
    names = ["class"]
    if probabilities:
        pct = np.where(covered[None], np.round(np.nan_to_num(blended) * 100.0), 255)
        bands.append(pct.astype(np.uint8))
        names += [f"p_{c}" for c in classes]
    tags = {
        "classes": ";".join(f"{i}={c}" for i, c in enumerate(classes)),
        "bundle": spec.name,
        "bundle_weights_sha256": spec.weights_sha256 or "",
        "window_px": p,
        "stride_px": step,
    }
    res = write_array_cog(
        np.concatenate(bands),
        str(out),
        crs=crs,
        transform=transform,
        band_names=names,
        nodata=255,
        tags=tags,
        resampling="nearest",
    )
    counts = np.bincount(cls[covered].ravel(), minlength=k)
    return {
        "href": res["href"],
        "classes": classes,
        "windows": n_windows,
        "shape": (h, w),
        "class_counts": {c: int(counts[i]) for i, c in enumerate(classes)},
    }
