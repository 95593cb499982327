"""The ASOS network (Stomberg et al. 2022): a U-Net to a small activation map and a shallow
score head, activation occlusion, and the input convention (surface reflectance clipped to
[0, 1]).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoxai.errors import ConfigError, InvalidInputError, look_up_option

__all__ = [
    "ASOSNet",
    "INPUT_UNITS",
    "to_network_input",
    "check_image",
    "occlude",
    "random_occlusion",
    "predict_scores",
]

INPUT_UNITS: tuple[str, ...] = ("reflectance", "dn")


def check_image(x: np.ndarray | torch.Tensor, in_bands: int, *, what: str = "image") -> None:
    """Raise :class:`InvalidInputError` unless ``x`` is ``([N,] in_bands, H, W)``."""
    shape = tuple(x.shape)
    if len(shape) not in (3, 4):
        raise InvalidInputError(
            f"{what} has shape {shape}; expected (bands, y, x) or (n, bands, y, x) with "
            f"{in_bands} bands."
        )
    c = shape[-3]
    if c != in_bands:
        raise InvalidInputError(
            f"{what} has {c} bands (shape {shape}) but the ASOS network takes {in_bands}; "
            "select the bands the bundle was trained on (model.json 'bands'), in that order."
        )
    if min(shape[-2:]) < 1:
        raise InvalidInputError(f"{what} has an empty spatial extent {shape[-2:]}.")


def to_network_input(
    x: np.ndarray,
    units: str = "reflectance",
    *,
    dn_offset: float = 0.0,
    nan: str = "raise",
    what: str = "image",
) -> tuple[np.ndarray, np.ndarray]:
    """Scale an image to the network's input: reflectance clipped to [0, 1], float32.

    Args:
        x: ``(..., C, H, W)`` reflectance (``units="reflectance"``) or digital numbers (``"dn"``).
        units: ``"reflectance"`` or ``"dn"`` (reflectance = ``DN * 1e-4 + dn_offset``).
        dn_offset: reflectance offset of DN inputs, e.g. -0.1 for processing baseline >= 04.00.
        nan: ``"raise"`` (NaNs are an error) or ``"mask"`` (NaN pixels become 0 and invalid).
        what: name of the input for error messages.

    Returns:
        ``(scaled, valid)``: scaled float32 array of ``x``'s shape and a bool ``(..., H, W)``
        mask, False where any band is NaN.
    """
    units = look_up_option(units, INPUT_UNITS, what="input units", error=InvalidInputError)
    nan = look_up_option(nan, ("raise", "mask"), what="NaN policy", error=InvalidInputError)
    arr = np.asarray(x, dtype=np.float32)
    bad = np.isnan(arr).any(axis=-3)
    if bad.any() and nan == "raise":
        raise InvalidInputError(
            f"{what} has {int(bad.sum())} pixels with NaN bands (of {bad.size}); fill or mask "
            "them first (the temporal stage gives NaN-free features), or pass nan='mask' to "
            "leave them out."
        )
    scaled = arr * np.float32(1e-4) + np.float32(dn_offset) if units == "dn" else arr
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0).astype(np.float32)
    return np.asarray(scaled), np.asarray(~bad)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class ASOSNet(nn.Module):
    """U-Net to a k-channel activation map in [-1, 1], then a shallow head to one logit.

    ``activations(x)``: ``(N, in_bands, H, W)`` network input -> ``(N, k, H, W)`` in [-1, 1]
    (tanh); any H, W (padded internally to a multiple of 4 and cropped back).
    ``head(A)``: ``(N, k, H, W)`` -> ``(N, 1)`` logit; three 5x5 stride-3 convolutions with
    ReLU, global average and max pooling (so any image size works), two linear layers.
    ``forward(x) = head(activations(x))``. The score is ``sigmoid(logit)``.

    Args:
        in_bands: input channels (10 Sentinel-2 bands by default).
        k: activation channels (reference 3).
        width: channels of the first U-Net level (doubled per level).
        head_width: channels of the head's convolutions.
    """

    def __init__(self, in_bands: int = 10, k: int = 3, width: int = 16, head_width: int = 16):
        super().__init__()
        for name, v in (("in_bands", in_bands), ("k", k), ("width", width)):
            if int(v) < 1:
                raise ConfigError(f"ASOSNet {name}={v} must be >= 1.")
        self.config = {"in_bands": in_bands, "k": k, "width": width, "head_width": head_width}
        self.in_bands, self.k = int(in_bands), int(k)
        w = int(width)
        self.enc1 = _double_conv(in_bands, w)
        self.enc2 = _double_conv(w, 2 * w)
        self.bottleneck = _double_conv(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _double_conv(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _double_conv(2 * w, w)
        self.to_activation = nn.Conv2d(w, k, 1)
        h = int(head_width)
        self.head_convs = nn.Sequential(
            nn.Conv2d(k, h, 5, stride=3, padding=2),
            nn.ReLU(),
            nn.Conv2d(h, h, 5, stride=3, padding=2),
            nn.ReLU(),
            nn.Conv2d(h, h, 5, stride=3, padding=2),
            nn.ReLU(),
        )
        self.head_fc = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))
        self.occlusion_p = 0.0
        """Training-time pixel occlusion probability in activation space (0 = off)."""
        self._occ_gen: torch.Generator | None = None

    @property
    def last_unet_layer(self) -> nn.Module:
        """The last full-resolution U-Net block (``width`` channels): the Grad-CAM layer."""
        return self.dec1

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_bands, H, W)`` -> ``(N, k, H, W)`` in [-1, 1]."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        a = torch.tanh(self.to_activation(d1))
        return a[..., :h, :w]

    def head(self, a: torch.Tensor) -> torch.Tensor:
        """``(N, k, H, W)`` activations -> ``(N, 1)`` logit."""
        f = self.head_convs(a)
        return self.head_fc(f.mean(dim=(-2, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_bands, H, W)`` -> ``(N, 1)`` logit; occludes activations when training."""
        a = self.activations(x)
        if self.training and self.occlusion_p > 0:
            a = random_occlusion(a, self.occlusion_p, generator=self._occ_gen)
        return self.head(a)


def random_occlusion(
    a: torch.Tensor, p: float, *, fill: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Set each pixel's activation vector of ``(N, k, H, W)`` ``a`` to ``fill`` with prob. ``p``."""
    n, _, h, w = a.shape
    drop = torch.rand((n, 1, h, w), generator=generator, device=a.device) < p
    return torch.where(drop, torch.full_like(a, fill), a)


def occlude(a: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Occlude ``(k, H, W)`` activations by ``(M, H, W)`` bool masks -> ``(M, k, H, W)``."""
    rep = a.unsqueeze(0).expand(masks.shape[0], *a.shape)
    return torch.where(masks.unsqueeze(1), torch.full_like(rep, fill), rep)


def as_float32(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, "float32"))


@torch.no_grad()
def predict_scores(net: ASOSNet, images: np.ndarray | torch.Tensor, batch: int = 32) -> np.ndarray:
    """Scores ``sigmoid(net(x))`` of ``(N, in_bands, H, W)`` network input -> ``(N,)`` float64."""
    x = as_float32(images)
    check_image(x, net.in_bands, what="images")
    x = x if x.ndim == 4 else x[None]
    net.eval()
    device = next(net.parameters()).device
    out = [
        torch.sigmoid(net(x[i : i + batch].to(device)))[:, 0].cpu() for i in range(0, len(x), batch)
    ]
    return torch.cat(out).double().numpy()
