"""Image-space explanation baselines (through Captum), overlap scores and the comparison figure.

Baselines for ASOS (:mod:`geoxai.xai.asos`), as in the comparison of Stomberg et al. 2022:

- :func:`occlusion_map`: image-space occlusion sensitivity (OSM), Captum ``Occlusion`` with
  square patches (default 8 px, stride 4, fill 0 in network-input space) over all bands;
- :func:`gradcam_map`: Grad-CAM (Captum ``LayerGradCam``) on the last full-resolution U-Net
  block, upsampled to the image size;
- :func:`deeplift_map`: DeepLIFT (Captum ``DeepLift``) against an all-zero baseline, summed over
  bands.

Every map is ``(H, W)`` float32 of the image, positive = pushes the score (``sigmoid`` of the
logit) up. :func:`top_iou` scores a map against a known class mask; :func:`comparison_figure`
draws image, activation map (as RGB), ASOS, OSM and Grad-CAM side by side as a PNG.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoxai.errors import InvalidInputError, look_up_option

__all__ = [
    "ScoreModel",
    "occlusion_map",
    "gradcam_map",
    "deeplift_map",
    "top_mask",
    "top_iou",
    "activation_rgb",
    "image_rgb",
    "comparison_figure",
    "CLASS_SPECTRA",
    "cause_scenes",
]


class ScoreModel(nn.Module):
    """``x -> sigmoid(net(x))``: the ``(N, 1)`` score Captum attributes (target 0)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.score = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.net(x))


def _input(net: nn.Module, x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float32))
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] != 1:
        raise InvalidInputError(
            f"explanations take one (bands, y, x) image, got shape {tuple(t.shape)}."
        )
    bands = getattr(net, "in_bands", t.shape[1])
    if t.shape[1] != bands:
        raise InvalidInputError(
            f"image has {t.shape[1]} bands but the network takes {bands}; select its bands."
        )
    if torch.isnan(t).any():
        raise InvalidInputError("image contains NaN; scale it with to_network_input first.")
    device = next(net.parameters()).device
    return t.float().to(device)


def occlusion_map(
    net: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    patch: int = 8,
    stride: int = 4,
    fill: float = 0.0,
    per_eval: int = 64,
) -> np.ndarray:
    """Image-space occlusion sensitivity (Captum ``Occlusion``), ``(H, W)`` float32.

    Args:
        net: a network whose forward gives ``(N, 1)`` logits.
        x: ``(C, H, W)`` network input.
        patch: occluding square, px (paper: 8), over all bands at once.
        stride: patch step, px (paper: 4).
        fill: value of the occluded pixels (paper: 0).
        per_eval: occluded images per forward pass.

    Returns:
        Per pixel the mean of ``score(x) - score(x occluded)`` over the patches covering it.
    """
    from captum.attr import Occlusion  # lazy: captum only for the attribution baselines

    t = _input(net, x)
    c = int(t.shape[1])
    net.eval()
    attr = Occlusion(ScoreModel(net)).attribute(
        t,
        sliding_window_shapes=(c, patch, patch),
        strides=(c, stride, stride),
        baselines=fill,
        target=0,
        perturbations_per_eval=per_eval,
    )
    # every band of a pixel gets the same value (the patch spans all bands)
    return attr[0, 0].detach().float().cpu().numpy()


def gradcam_map(
    net: nn.Module, x: np.ndarray | torch.Tensor, *, layer: nn.Module | None = None
) -> np.ndarray:
    """Grad-CAM (Captum ``LayerGradCam``, ReLU applied) upsampled to ``(H, W)`` float32.

    Args:
        net: a network; ``layer`` defaults to ``net.last_unet_layer``.
        x: ``(C, H, W)`` network input.
        layer: the convolutional block to attribute to.
    """
    from captum.attr import (  # lazy: captum only for the attribution baselines
        LayerAttribution,
        LayerGradCam,
    )

    t = _input(net, x)
    target_layer = layer if layer is not None else getattr(net, "last_unet_layer", None)
    if target_layer is None:
        raise InvalidInputError(
            f"{type(net).__name__} has no last_unet_layer; pass the Grad-CAM layer explicitly."
        )
    net.eval()
    cam = LayerGradCam(ScoreModel(net), target_layer).attribute(t, target=0, relu_attributions=True)
    if tuple(cam.shape[-2:]) != tuple(t.shape[-2:]):
        cam = LayerAttribution.interpolate(cam, tuple(t.shape[-2:]), interpolate_mode="bilinear")
    return cam[0, 0].detach().float().cpu().numpy()


def deeplift_map(
    net: nn.Module, x: np.ndarray | torch.Tensor, *, baseline: float = 0.0
) -> np.ndarray:
    """DeepLIFT (Captum ``DeepLift``, rescale rule) summed over bands, ``(H, W)`` float32.

    Attributions sum (over pixels and bands) to ``score(x) - score(baseline)``.
    """

    from captum.attr import DeepLift  # lazy: captum only for the attribution baselines

    t = _input(net, x)
    net.eval()
    with warnings.catch_warnings():
        # Captum warns that it sets hooks on the ReLUs and that adaptive pools use plain gradients
        warnings.simplefilter("ignore", UserWarning)
        attr = DeepLift(ScoreModel(net)).attribute(
            t, baselines=torch.full_like(t, baseline), target=0
        )
    return attr[0].sum(dim=0).detach().float().cpu().numpy()


def top_mask(values: np.ndarray, q: float) -> np.ndarray:
    """Bool ``(H, W)``: the ``q`` fraction (0..1) of finite pixels with the highest values."""
    v = np.asarray(values, dtype=np.float64)
    if not 0 < q <= 1:
        raise InvalidInputError(f"top fraction q={q} must be in (0, 1].")
    finite = np.isfinite(v)
    n = int(round(q * finite.sum()))
    out = np.zeros(v.shape, dtype=bool)
    if n == 0:
        return out
    flat = np.where(finite, v, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:n]
    out.ravel()[order] = True
    return out


def top_iou(values: np.ndarray, mask: np.ndarray, q: float | None = None) -> float:
    """IoU of the top-``q`` pixels of a map with a bool class mask.

    ``q`` defaults to the mask's area fraction (so a perfect map scores 1); ties are broken by
    pixel order, NaN pixels are never selected.
    """
    m = np.asarray(mask, dtype=bool)
    if m.shape != np.shape(values):
        raise InvalidInputError(f"mask {m.shape} and map {np.shape(values)} differ in shape.")
    if not m.any():
        raise InvalidInputError("the class mask is empty; IoU is undefined.")
    top = top_mask(values, q if q is not None else m.mean())
    return float((top & m).sum() / (top | m).sum())


def activation_rgb(a: np.ndarray) -> np.ndarray:
    """``(k, H, W)`` activations in [-1, 1] -> ``(H, W, 3)`` RGB in [0, 1] (first 3 channels)."""
    arr = np.asarray(a, dtype=np.float32)
    rgb = np.zeros((3, *arr.shape[1:]), np.float32)
    rgb[: min(3, arr.shape[0])] = arr[:3]
    return np.clip(np.nan_to_num((rgb + 1) / 2, nan=0.0), 0, 1).transpose(1, 2, 0)


def image_rgb(
    x: np.ndarray, bands: Sequence[int] = (2, 1, 0), *, percentile: float = 98.0
) -> np.ndarray:
    """``(C, H, W)`` reflectance -> ``(H, W, 3)`` true colour stretched to [0, 1].

    ``bands`` are the R, G, B indices (default B04 B03 B02 of the canonical order).
    """
    rgb = np.stack([np.asarray(x[i], np.float32) for i in bands], axis=-1)
    hi = np.nanpercentile(rgb, percentile) if np.isfinite(rgb).any() else 1.0
    return np.clip(np.nan_to_num(rgb / max(float(hi), 1e-6), nan=0.0), 0, 1)


def comparison_figure(
    path: str | Path,
    image: np.ndarray,
    activations: np.ndarray,
    asos: np.ndarray,
    osm: np.ndarray | None = None,
    gradcam: np.ndarray | None = None,
    *,
    title: str = "",
    mask: np.ndarray | None = None,
) -> Path:
    """PNG of image | activation map (RGB) | ASOS | OSM | Grad-CAM, side by side.

    Args:
        path: PNG to write.
        image: ``(C, H, W)`` reflectance (true colour from B04 B03 B02) or ``(H, W, 3)`` RGB.
        activations: ``(k, H, W)`` in [-1, 1].
        asos: ``(H, W)`` ASOS sensitivity (NaN = masked, drawn grey).
        osm: ``(H, W)`` occlusion sensitivity, optional.
        gradcam: ``(H, W)`` Grad-CAM, optional.
        title: figure title.
        mask: optional ``(H, W)`` bool (e.g. the class that causes the label), contoured.
    """
    import matplotlib  # lazy: matplotlib only for figures (~0.5 s import)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: matplotlib only for figures (~0.5 s import)

    rgb = image if np.ndim(image) == 3 and np.shape(image)[-1] == 3 else image_rgb(image)
    panels: list[tuple[str, np.ndarray, str | None]] = [
        ("image", rgb, None),
        ("activations (RGB)", activation_rgb(activations), None),
        ("ASOS", asos, "RdBu_r"),
    ]
    if osm is not None:
        panels.append(("occlusion (8/4)", osm, "RdBu_r"))
    if gradcam is not None:
        panels.append(("Grad-CAM", gradcam, "magma"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, arr, cmap) in zip(axes[0], panels, strict=True):
        if cmap is None:
            ax.imshow(arr, interpolation="nearest")
        else:
            v = np.asarray(arr, np.float64)
            lim = float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0
            lim = lim or 1.0
            vmin = 0.0 if cmap == "magma" else -lim
            cm = plt.get_cmap(cmap).with_extremes(bad="0.6")
            im = ax.imshow(np.ma.masked_invalid(v), cmap=cm, vmin=vmin, vmax=lim)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if mask is not None:
            ax.contour(np.asarray(mask, float), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    return save_figure(fig, path, title)


def save_figure(fig: Any, path: str | Path, title: str = "") -> Path:
    """Title (if any), tight layout, write ``path`` as a 110 dpi PNG (folders created), close."""
    import matplotlib.pyplot as plt  # lazy: matplotlib only for figures (~0.5 s import)

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


CLASS_SPECTRA: dict[str, tuple[float, ...]] = {
    "forest": (0.020, 0.040, 0.022, 0.065, 0.200, 0.280, 0.300, 0.310, 0.140, 0.060),
    "grassland": (0.035, 0.065, 0.045, 0.100, 0.230, 0.280, 0.300, 0.310, 0.210, 0.110),
    "cropland": (0.050, 0.080, 0.075, 0.120, 0.200, 0.240, 0.260, 0.270, 0.260, 0.160),
    "urban": (0.100, 0.110, 0.120, 0.140, 0.150, 0.160, 0.170, 0.180, 0.220, 0.200),
    "water": (0.060, 0.050, 0.030, 0.020, 0.012, 0.010, 0.010, 0.008, 0.005, 0.003),
    "bare": (0.120, 0.150, 0.180, 0.210, 0.230, 0.240, 0.250, 0.260, 0.320, 0.280),
}
"""Typical surface reflectance of a few land covers in B02..B12 (canonical order)."""


def cause_scenes(
    n: int,
    size: int = 48,
    *,
    cause: str = "forest",
    fraction: tuple[float, float] = (0.15, 0.35),
    negative_fraction: tuple[float, float] = (0.0, 0.0),
    noise: float = 0.01,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scenes whose label is caused by one land-cover class (for explanation checks).

    The background is a patchwork of the other classes (blocks of 6-12 px); in half of the
    scenes (label 1) rectangles of ``cause`` cover ``fraction`` of the scene, in the others
    (label 0) ``negative_fraction`` (so the label is the *amount* of ``cause`` when that is
    not zero). Every pixel gets its class spectrum times a per-scene brightness (0.9-1.1) plus
    Gaussian noise.

    Returns:
        ``(images, labels, masks)``: ``(n, 10, size, size)`` float32 reflectance, ``(n,)``
        float32 labels in {0, 1}, ``(n, size, size)`` bool masks of the ``cause`` class.
    """

    look_up_option(cause, list(CLASS_SPECTRA), what="land-cover class", error=InvalidInputError)
    rng = np.random.default_rng(seed)
    others = [c for c in CLASS_SPECTRA if c != cause]
    spectra = np.asarray([CLASS_SPECTRA[c] for c in others], np.float32)
    images = np.empty((n, 10, size, size), np.float32)
    labels = (np.arange(n) % 2).astype(np.float32)
    rng.shuffle(labels)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        block = int(rng.integers(6, 13))
        cells = -(-size // block)
        cls = rng.integers(0, len(others), size=(cells, cells))
        cls = np.kron(cls, np.ones((block, block), int))[:size, :size]
        img = spectra[cls].transpose(2, 0, 1).copy()
        lo, hi = fraction if labels[i] == 1 else negative_fraction
        target = rng.uniform(lo, hi) * size * size
        if target > 0:
            while masks[i].sum() < target:
                h, w = rng.integers(size // 8, size // 3, size=2)
                r, c = rng.integers(0, size - h), rng.integers(0, size - w)
                if masks[i].sum() + h * w > max(target * 1.3, target + 4):
                    h, w = max(1, h // 2), max(1, w // 2)
                masks[i, r : r + h, c : c + w] = True
            img[:, masks[i]] = np.asarray(CLASS_SPECTRA[cause], np.float32)[:, None]
        img *= np.float32(rng.uniform(0.9, 1.1))
        img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
        images[i] = img
    return images, labels, masks
