"""Compare explanation maps by their overlap with a known class mask (the SpacEX/ASOS IoU table).

For every image with a non-empty class mask, each method's ``(H, W)`` map is reduced to its
top-``q`` % pixels (:func:`geoxai.xai.top_mask`) and scored by the IoU with the mask
(:func:`geoxai.xai.top_iou`); the table gives the mean (and spread) per method, as in the SpacEX
paper's comparison (IoU of high-attribution pixels with the wetland / bare-land classes).

Methods, all on the same frozen classifier (the ASOS network):

- ``spacex``: mean over bands of ``|G_max(x) - G_min(x)|``
  (:func:`geoxai.xai.spacex.spacex_attribution`);
- ``asos``: activation space occlusion sensitivity (:func:`geoxai.xai.asos.asos_map`);
- ``osm``: image-space occlusion, 8 px patches, stride 4 (:func:`geoxai.xai.occlusion_map`);
- ``gradcam``: Grad-CAM on the last U-Net block (:func:`geoxai.xai.gradcam_map`);
- ``deeplift``: DeepLIFT against a zero image, summed over bands (:func:`geoxai.xai.deeplift_map`).

Signed maps (ASOS, OSM, DeepLIFT) rank by value: the top pixels are those that push the score
up most. The chance level of a method that picks ``q`` of the pixels at random is
``q f / (q + f - q f)`` for a mask covering the fraction ``f``; the table reports its mean.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.errors import DataAccessError, InvalidInputError, ModelBundleError, look_up_option
from geoxai.models.asos_net import to_network_input
from geoxai.xai.asos import asos_map, load_asos_bundle
from geoxai.xai.baselines import deeplift_map, gradcam_map, occlusion_map, top_iou
from geoxai.xai.spacex import load_spacex_bundle, spacex_attribution

__all__ = [
    "METHODS",
    "IoUTable",
    "evaluate_attributions",
    "load_eval_images",
    "write_table",
]

METHODS: tuple[str, ...] = ("spacex", "asos", "osm", "gradcam", "deeplift")
"""Explanation methods of the table, in column order."""


@dataclass(frozen=True)
class IoUTable:
    """Top-q IoU of each method's map with the class mask, per image.

    Attributes:
        q: top fraction, percent of the image's pixels.
        methods: the methods, in table order.
        iou: method -> ``(n,)`` IoU per evaluated image.
        images: indices (in the input set) of the evaluated images.
        chance: ``(n,)`` chance IoU per image (random pick of ``q`` % of the pixels).
        seconds: method -> total seconds spent computing its maps.
        skipped: indices of images left out (empty mask).
    """

    q: float
    methods: tuple[str, ...]
    iou: dict[str, np.ndarray]
    images: list[int]
    chance: np.ndarray
    seconds: dict[str, float]
    skipped: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """method -> ``{"mean", "std", "min", "max", "seconds_per_image"}``."""
        n = max(len(self.images), 1)
        return {
            m: {
                "mean": float(np.mean(v)),
                "std": float(np.std(v)),
                "min": float(np.min(v)),
                "max": float(np.max(v)),
                "seconds_per_image": self.seconds[m] / n,
            }
            for m, v in self.iou.items()
        }

    def to_markdown(self) -> str:
        """A markdown table: one row per method (mean +- std, range, time per image)."""
        rows = [
            f"Top-{self.q:g} % IoU with the class mask over {len(self.images)} images "
            f"(chance {float(np.mean(self.chance)):.3f})",
            "",
            "| method | IoU mean | std | min | max | s / image |",
            "|---|---|---|---|---|---|",
        ]
        for m, s in self.summary().items():
            rows.append(
                f"| {m} | {s['mean']:.3f} | {s['std']:.3f} | {s['min']:.3f} | {s['max']:.3f} "
                f"| {s['seconds_per_image']:.3f} |"
            )
        return "\n".join(rows) + "\n"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: settings, summary and per-image values."""
        return {
            "q_percent": self.q,
            "methods": list(self.methods),
            "n_images": len(self.images),
            "images": self.images,
            "skipped": self.skipped,
            "chance_mean": float(np.mean(self.chance)) if len(self.chance) else None,
            "summary": self.summary(),
            "per_image": {m: [float(x) for x in v] for m, v in self.iou.items()},
        }


def load_eval_images(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read ``images`` ``(N, C, H, W)``, ``masks`` ``(N, H, W)`` and optional ``labels`` (N,).

    Raises:
        DataAccessError: the file does not exist.
        InvalidInputError: arrays missing or of mismatching shapes.
    """
    p = Path(path)
    if not p.is_file():
        raise DataAccessError(f"evaluation images {p} do not exist; give an .npz file.")
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            if not {"images", "masks"} <= files:
                raise InvalidInputError(
                    f"{p} has arrays {sorted(files)}; expected 'images' (N, C, H, W) and "
                    "'masks' (N, H, W) (the class the explanations should find), optionally "
                    "'labels' (N,)."
                )
            images = np.asarray(z["images"], np.float32)
            masks = np.asarray(z["masks"]).astype(bool)
            labels = np.asarray(z["labels"]) if "labels" in files else None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{p} is not a readable .npz file: {exc}") from exc
    if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise InvalidInputError(
            f"{p}: images {images.shape} and masks {masks.shape} do not match; need "
            "(N, C, H, W) and (N, H, W)."
        )
    if labels is not None and labels.shape != (images.shape[0],):
        raise InvalidInputError(f"{p}: labels {labels.shape} for {images.shape[0]} images.")
    return images, masks, labels


def evaluate_attributions(
    asos_bundle: str | Path,
    spacex_bundle: str | Path | None,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    q: float = 10.0,
    methods: Sequence[str] = METHODS,
    units: str = "reflectance",
    dn_offset: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> IoUTable:
    """IoU table of the top-``q`` % pixels of each method's map with ``masks``.

    Args:
        asos_bundle: ASOS bundle with a fitted table; its network is the classifier that
            every method explains.
        spacex_bundle: SpacEX bundle trained for that classifier (needed for ``"spacex"``).
        images: ``(N, C, H, W)`` reflectance (or DNs with ``units="dn"``).
        masks: ``(N, H, W)`` bool class masks; images with an empty mask are skipped.
        q: top fraction, percent (0 < q <= 100).
        methods: subset of :data:`METHODS`.
        units: ``"reflectance"`` or ``"dn"``.
        dn_offset: reflectance offset of DN inputs.
        progress: ``progress(done, total)`` after each image.

    Raises:
        InvalidInputError: bad ``q``, unknown method, shapes that do not match, or no image
            with a non-empty mask.
        ModelBundleError: missing table (fit first), not a SpacEX bundle.
    """

    if not 0 < q <= 100:
        raise InvalidInputError(f"q={q} must be a percentage in (0, 100].")
    methods = tuple(
        look_up_option(m, METHODS, what="explanation method", error=InvalidInputError)
        for m in methods
    )
    if not methods:
        raise InvalidInputError(f"no explanation method given; choose from {METHODS}.")
    imgs = np.asarray(images, np.float32)
    m = np.asarray(masks, bool)
    if imgs.ndim != 4 or m.shape != (imgs.shape[0], *imgs.shape[2:]):
        raise InvalidInputError(
            f"images {imgs.shape} and masks {m.shape} do not match; need (N, C, H, W), (N, H, W)."
        )
    ab, fitted = load_asos_bundle(asos_bundle)  # raises unless the table is fitted
    if fitted is None:  # pragma: no cover - load_asos_bundle(need_table=True) raises first
        raise ModelBundleError(f"ASOS bundle {asos_bundle} has no table; run geoxai asos fit.")
    table = fitted
    net = ab.net
    sb = None
    if "spacex" in methods:
        if spacex_bundle is None:
            raise InvalidInputError("method 'spacex' needs a SpacEX bundle (--spacex-bundle).")

        sb, meta = load_spacex_bundle(spacex_bundle, ab.device)
        want = meta.get("classifier_weights_sha256")
        if want and ab.spec.weights_sha256 and want != ab.spec.weights_sha256:
            warnings.warn(
                f"the SpacEX bundle {spacex_bundle} was trained for classifier weights "
                f"{want[:12]}..., the ASOS bundle {asos_bundle} holds {ab.spec.weights_sha256[:12]}"
                "...: the methods explain different networks.",
                UserWarning,
                stacklevel=2,
            )
    keep = [i for i in range(imgs.shape[0]) if m[i].any()]
    skipped = [i for i in range(imgs.shape[0]) if not m[i].any()]
    if not keep:
        raise InvalidInputError("every class mask is empty; the IoU is undefined.")

    def spacex_fn(img: np.ndarray, x: np.ndarray) -> np.ndarray:

        return spacex_attribution(sb, img, units=units, dn_offset=dn_offset)

    fns: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "spacex": spacex_fn,
        "asos": lambda img, x: asos_map(net, table, img, units=units, dn_offset=dn_offset)[0],
        "osm": lambda img, x: occlusion_map(net, x),
        "gradcam": lambda img, x: gradcam_map(net, x),
        "deeplift": lambda img, x: deeplift_map(net, x),
    }
    iou: dict[str, list[float]] = {k: [] for k in methods}
    seconds = dict.fromkeys(methods, 0.0)
    chance = []
    frac = q / 100.0
    for done, i in enumerate(keep, start=1):
        x, _ = to_network_input(imgs[i], units, dn_offset=dn_offset, nan="mask")
        for k in methods:
            t0 = time.perf_counter()
            values = fns[k](imgs[i], x)
            seconds[k] += time.perf_counter() - t0
            iou[k].append(top_iou(values, m[i], frac))
        f = float(m[i].mean())
        chance.append(frac * f / (frac + f - frac * f))
        if progress is not None:
            progress(done, len(keep))
    return IoUTable(
        q=float(q),
        methods=methods,
        iou={k: np.asarray(v) for k, v in iou.items()},
        images=keep,
        chance=np.asarray(chance),
        seconds=seconds,
        skipped=skipped,
    )


def write_table(table: IoUTable, out: str | Path) -> tuple[Path, Path]:
    """Write ``<out>.json`` and ``<out>.md`` (``out`` without or with any suffix)."""
    base = Path(out)
    base = base.with_suffix("") if base.suffix in (".json", ".md") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    js, md = base.with_suffix(".json"), base.with_suffix(".md")
    js.write_text(json.dumps(table.to_json(), indent=2) + "\n", encoding="utf-8")
    md.write_text(table.to_markdown(), encoding="utf-8")
    return js, md
