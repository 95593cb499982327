"""SpacEX attribution: pattern maximizer/minimizer generators explain a frozen classifier
(Emam et al. 2024); score shifts, attribution maps and figures, the SpacEX bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoxai.errors import InvalidInputError, ModelBundleError
from geoxai.inference.predict import predict_windows
from geoxai.models.asos_net import check_image, to_network_input
from geoxai.models.bundle import load_bundle
from geoxai.models.spacex_nets import SpacexGenerators
from geoxai.xai.asos import DEFAULT_TRANSFORM, load_asos_bundle
from geoxai.xai.baselines import save_figure

__all__ = [
    "ScoreShift",
    "score_shift",
    "attribution",
    "spacex_figure",
    "freeze",
    "set_grad",
    "load_classifier",
    "generators_of",
    "spacex_attribution",
    "load_spacex_bundle",
    "META_KEY",
    "META_FILE",
]


def as_images(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    t = x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float32))
    if t.ndim != 4 or t.shape[0] < 1:
        raise InvalidInputError(f"{what} have shape {tuple(t.shape)}; expected (N, C, H, W).")
    if not bool(torch.isfinite(t).all()):
        raise InvalidInputError(f"{what} contain NaN or inf; scale them with to_network_input.")
    return t


def device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass(frozen=True)
class ScoreShift:
    """Per-image classifier scores (``sigmoid`` of the logit) of inputs and generated images.

    All arrays are ``(N,)`` float64. ``shift_max = score_max - score_real``, ``shift_min =
    score_min - score_real``; ``change_*`` are the mean absolute pixel changes (classifier units).
    """

    score_real: np.ndarray
    score_max: np.ndarray
    score_min: np.ndarray
    logit_real: np.ndarray
    logit_max: np.ndarray
    logit_min: np.ndarray
    change_max: np.ndarray
    change_min: np.ndarray

    @property
    def shift_max(self) -> np.ndarray:
        return self.score_max - self.score_real

    @property
    def shift_min(self) -> np.ndarray:
        return self.score_min - self.score_real

    def summary(self) -> dict[str, float]:
        """Means of the scores, shifts and pixel changes."""
        return {
            "score_real": float(self.score_real.mean()),
            "score_max": float(self.score_max.mean()),
            "score_min": float(self.score_min.mean()),
            "shift_max": float(self.shift_max.mean()),
            "shift_min": float(self.shift_min.mean()),
            "change_max": float(self.change_max.mean()),
            "change_min": float(self.change_min.mean()),
            "n_images": int(self.score_real.size),
        }


@torch.no_grad()
def score_shift(
    gens: SpacexGenerators,
    classifier: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 16,
) -> ScoreShift:
    """Scores of ``(N, C, H, W)`` classifier-space images and their maximized/minimized ones."""
    x = as_images(images, "images")
    was = gens.training
    gens.eval()
    classifier.eval()
    dev = device_of(gens)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("lr", "lx", "ln", "cx", "cn")}
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size].to(dev)
        mx, mn = gens.maximize(xb), gens.minimize(xb)
        for key, t in (("lr", xb), ("lx", mx), ("ln", mn)):
            cols[key].append(classifier(t)[:, 0].double().cpu().numpy())
        cols["cx"].append((mx - xb).abs().mean(dim=(1, 2, 3)).double().cpu().numpy())
        cols["cn"].append((mn - xb).abs().mean(dim=(1, 2, 3)).double().cpu().numpy())
    gens.train(was)
    lr, lx, ln, cx, cn = (np.concatenate(cols[k]) for k in ("lr", "lx", "ln", "cx", "cn"))

    def sig(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    return ScoreShift(sig(lr), sig(lx), sig(ln), lr, lx, ln, cx, cn)


@torch.no_grad()
def attribution(gens: SpacexGenerators, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """SpacEX attribution of one ``(C, H, W)`` classifier-space image -> ``(H, W)`` float32.

    Mean over bands of ``|G_max(x) - G_min(x)|``, in classifier input units (reflectance).
    """
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float32))
    if t.ndim != 3 or t.shape[0] != gens.in_bands:
        raise InvalidInputError(
            f"SpacEX attribution takes one ({gens.in_bands}, y, x) image, got {tuple(t.shape)}."
        )
    gens.eval()
    return gens(t[None].float().to(device_of(gens)))[0, 0].float().cpu().numpy()


def spacex_figure(
    path: str | Path,
    gens: SpacexGenerators,
    x: np.ndarray,
    attr: np.ndarray,
    *,
    title: str = "",
    mask: np.ndarray | None = None,
) -> Path:
    """PNG of image | maximized | minimized | attribution (true colour from B04 B03 B02).

    Args:
        path: PNG to write.
        gens: the generators.
        x: ``(C, H, W)`` classifier input (reflectance in [0, 1]).
        attr: ``(H, W)`` attribution (NaN drawn grey).
        title: figure title.
        mask: optional ``(H, W)`` bool class mask, contoured.
    """
    import matplotlib  # lazy: matplotlib only for figures (~0.5 s import)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: matplotlib only for figures (~0.5 s import)

    t = torch.from_numpy(np.asarray(x, np.float32))[None].to(device_of(gens))
    gens.eval()
    with torch.no_grad():
        mx = gens.maximize(t)[0].cpu().numpy()
        mn = gens.minimize(t)[0].cpu().numpy()
    # one stretch for the three images, so their colours compare
    hi = float(np.nanpercentile(np.stack([x[[2, 1, 0]], mx[[2, 1, 0]], mn[[2, 1, 0]]]), 98))
    panels = [("image", x), ("maximized", mx), ("minimized", mn)]
    fig, axes = plt.subplots(1, 4, figsize=(12.8, 3.4), squeeze=False)
    for ax, (name, img) in zip(axes[0][:3], panels, strict=True):
        rgb = np.clip(np.nan_to_num(img[[2, 1, 0]].transpose(1, 2, 0) / max(hi, 1e-6)), 0, 1)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    v = np.ma.masked_invalid(np.asarray(attr, np.float64))
    cm = plt.get_cmap("magma").with_extremes(bad="0.6")
    im = axes[0][3].imshow(v, cmap=cm, vmin=0.0)
    fig.colorbar(im, ax=axes[0][3], fraction=0.046, pad=0.02)
    axes[0][3].set_title("SpacEX |max - min|", fontsize=9)
    for ax in axes[0]:
        if mask is not None:
            ax.contour(np.asarray(mask, float), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_axis_off()

    return save_figure(fig, path, title)


META_KEY = "spacex"


META_FILE = "spacex.json"
"""File name of the SpacEX description inside a bundle."""


def module_dict(model: nn.Module) -> nn.ModuleDict:
    if not isinstance(model, nn.ModuleDict) or not {"g_max", "g_min"} <= set(model.keys()):
        raise InvalidInputError(
            f"expected the SpacEX ModuleDict (g_max, g_min, d_max, d_min), got "
            f"{type(model).__name__}; build it with SpacexTask.build_model."
        )
    return model


def generators_of(model: nn.Module, lo: float = 0.0, hi: float = 1.0) -> SpacexGenerators:
    """A :class:`SpacexGenerators` holding (copies of) the trained ``g_max`` and ``g_min``."""
    model = module_dict(model)
    g = model["g_max"]
    cfg: dict[str, Any] = dict(getattr(g, "config", {}))
    gens = SpacexGenerators(cfg["in_bands"], cfg["base"], cfg["n_res"], lo, hi)
    gens.g_max.load_state_dict(model["g_max"].state_dict())
    gens.g_min.load_state_dict(model["g_min"].state_dict())
    return gens.to(device_of(g)).eval()


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, nn.Module]:
    """The frozen classifier of an ASOS bundle: ``(LoadedBundle, net)``.

    The network maps ``(N, C, H, W)`` reflectance clipped to [0, 1] to ``(N, 1)`` logits; it is
    returned in eval mode with ``requires_grad=False`` on every parameter.

    Raises:
        ModelBundleError: not a bundle, or not an ASOS network.
    """

    b, _ = load_asos_bundle(path, device, need_table=False)
    return b, freeze(b.net)


def input_range(spec: Any) -> tuple[float, float]:
    clip = spec.normalization.clip
    return (float(clip[0]), float(clip[1])) if clip is not None else (0.0, 1.0)


def load_spacex_bundle(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """Load a SpacEX bundle: ``(LoadedBundle, spacex.json contents)``.

    Raises:
        ModelBundleError: not a bundle, or not a SpacEX bundle (train one with
            ``geoxai train spacex CONFIG``).
    """

    b = load_bundle(path, device)
    if not isinstance(b.net, SpacexGenerators) or META_KEY not in b.spec.extra_files:
        raise ModelBundleError(
            f"Bundle {path} holds a {b.spec.architecture!r} model, not SpacEX generators "
            f"(architecture 'spacex' with {META_FILE}); train one with `geoxai train spacex "
            "CONFIG`."
        )
    try:
        meta = json.loads(b.extra_file(META_KEY))
    except json.JSONDecodeError as exc:
        raise ModelBundleError(f"Bundle {path}: {META_FILE} is not valid JSON ({exc}).") from exc
    return b, meta


def spacex_attribution(
    bundle: str | Path | Any,
    image: np.ndarray,
    *,
    units: str = "reflectance",
    dn_offset: float = 0.0,
    window: Any = None,
    transform: Any = None,
) -> np.ndarray:
    """SpacEX attribution of one image: ``(bands, H, W)`` -> ``(H, W)`` float32.

    Args:
        bundle: SpacEX bundle path or a loaded bundle (:func:`load_spacex_bundle`).
        image: ``(C, H, W)`` reflectance (or DNs with ``units="dn"``) in the classifier's band
            order; NaN pixels come out NaN.
        units: ``"reflectance"`` or ``"dn"``.
        dn_offset: reflectance offset of DN inputs.
        window: :class:`geoxai.inference.WindowParams` to blend the generators over lattice
            windows (big scenes, tiles; e.g. ``bundle.window_params()``); None = one pass.
        transform: the image's grid (6 numbers) fixing the window lattice.

    Returns:
        Per pixel the mean over bands of ``|G_max(x) - G_min(x)|``, reflectance units.
    """

    b = load_spacex_bundle(bundle)[0] if isinstance(bundle, str | Path) else bundle
    gens: SpacexGenerators = b.net
    check_image(image, gens.in_bands, what="image")
    if np.ndim(image) != 3:
        raise InvalidInputError(
            f"spacex_attribution takes one (bands, y, x) image, got {np.shape(image)}."
        )
    x, valid = to_network_input(image, units, dn_offset=dn_offset, nan="mask")
    x = np.clip(x, gens.lo, gens.hi)
    if window is None:
        out = attribution(gens, x)
    else:
        with torch.no_grad():
            blended = predict_windows(
                gens, x, list(transform or DEFAULT_TRANSFORM), valid, window, device=b.device
            )
        out = blended.values[0]
    out = np.asarray(out, np.float32)
    out[~valid] = np.nan
    return out


def set_grad(module: nn.Module, flag: bool) -> None:
    """Switch ``requires_grad`` of every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(flag)


def freeze(classifier: nn.Module) -> nn.Module:
    """``classifier`` in eval mode with ``requires_grad=False`` on every parameter (in place)."""
    classifier.eval()
    set_grad(classifier, False)
    return classifier
