"""Built-in network: a temporal segmentation U-Net for per-pixel maps from a smoothed time series.

:class:`TemporalUNet` reads the model-ready cube of one window, ``(B, T, C, H, W)`` (time steps x
features, e.g. 24 x 15), and returns ``(B, K, H, W)`` logits, one per output layer and pixel
(a sigmoid makes them tree cover probabilities). In the spirit of WRI's tree cover model (a
ConvGRU over time steps then a U-Net), but cheaper to run at country scale:

1. a **temporal-conv encoder** applied per pixel: a 1x1 embedding of the C features of each time
   step, then strided convolutions along time (kernel ``temporal_kernel``, stride 2) that halve
   the time axis twice;
2. **attention pooling over time**: a 1x1 score per step, softmax over time, weighted sum; the
   temporal mean is concatenated, giving ``2 * embed`` channels per pixel;
3. a **2-D U-Net** (``depth`` levels of 2x2 max-pooling, nearest upsampling, skip connections,
   3x3 convolutions with batch norm) and a 1x1 head to K logits.

Everything is convolutional, so the network is translation-equivariant up to its zero padding
(the reason inference windows carry context pixels) and to shifts that are multiples of
``2 ** depth``. Inputs whose sides are not multiples of ``2 ** depth`` are replicate-padded and
the output cropped back.

:class:`UNet2d` is the same U-Net for single-date inputs ``(B, C, H, W)`` (stacked feature
rasters, :mod:`geoxai.train.segment`), with group normalization instead of batch normalization.

The ASOS network lives in :mod:`geoxai.xai.asos` (``ASOSNet``); bundles resolve both by name.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoxai.errors import ConfigError, InvalidInputError

__all__ = [
    "TemporalUNet",
    "UNet2d",
]


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "group":
        # GroupNorm: independent of the batch (small batches, DDP shards, train == eval)
        return nn.GroupNorm(math.gcd(c, 8), c)
    return nn.BatchNorm2d(c)


def _conv_block(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


def _he_init(net: nn.Module) -> None:
    for m in net.modules():  # He init: keeps activations O(1) through the ReLU stack
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _unet_levels(
    z: torch.Tensor, down: nn.ModuleList, up: nn.ModuleList, head: nn.Module
) -> torch.Tensor:
    """The U-Net core shared by both models: ``down`` blocks with 2x2 max-pooling between
    them, ``up`` blocks after nearest 2x upsampling and concatenation of the skip, ``head``.
    ``(B, C, H, W)`` with H, W multiples of ``2 ** (len(down) - 1)`` -> ``(B, K, H, W)``."""
    skips = []
    for i, block in enumerate(down):
        if i:
            z = F.max_pool2d(z, 2)
        z = block(z)
        skips.append(z)
    for i, block in enumerate(up):
        z = F.interpolate(z, scale_factor=2.0, mode="nearest")
        z = block(torch.cat([z, skips[-2 - i]], dim=1))
    return head(z)


class TemporalUNet(nn.Module):
    """Temporal-conv encoder + attention pooling over time + 2-D U-Net.

    Input ``(B, T, C, H, W)`` float (normalized features), output ``(B, K, H, W)`` logits.
    """

    def __init__(
        self,
        in_features: int,
        time_steps: int,
        out_channels: int = 1,
        embed: int = 16,
        base: int = 16,
        depth: int = 2,
        temporal_kernel: int = 3,
    ) -> None:
        """Args:
        in_features: C, features per time step (15 for the default model-ready cube).
        time_steps: T, length of the time axis the network was built for.
        out_channels: K, output maps (1 for tree cover).
        embed: channels of the per-step embedding and the temporal encoder.
        base: channels of the first U-Net level (doubled at every level).
        depth: U-Net down-sampling levels (each halves H and W).
        temporal_kernel: odd kernel length of the temporal convolutions, time steps.
        """
        super().__init__()
        for name, v, lo in [
            ("in_features", in_features, 1),
            ("time_steps", time_steps, 1),
            ("out_channels", out_channels, 1),
            ("embed", embed, 1),
            ("base", base, 1),
            ("depth", depth, 0),
        ]:
            if int(v) < lo:
                raise ConfigError(f"TemporalUNet {name} must be >= {lo}, got {v}.")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ConfigError(f"temporal_kernel must be odd and >= 1, got {temporal_kernel}.")
        self.config: dict[str, Any] = {
            "in_features": int(in_features),
            "time_steps": int(time_steps),
            "out_channels": int(out_channels),
            "embed": int(embed),
            "base": int(base),
            "depth": int(depth),
            "temporal_kernel": int(temporal_kernel),
        }
        e, k = int(embed), int(temporal_kernel)
        self.embed = nn.Sequential(nn.Conv2d(in_features, e, 1), nn.ReLU(inplace=True))
        self.temporal = nn.Sequential(
            nn.Conv2d(e, e, (k, 1), stride=(2, 1), padding=(k // 2, 0)),
            nn.ReLU(inplace=True),
            nn.Conv2d(e, e, (k, 1), stride=(2, 1), padding=(k // 2, 0)),
            nn.ReLU(inplace=True),
        )
        self.score = nn.Conv2d(e, 1, 1)
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = 2 * e
        for c in chans:
            self.down.append(_conv_block(cin, c))
            cin = c
        self.up = nn.ModuleList(
            _conv_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], out_channels, 1)
        self.depth = int(depth)
        self.in_features = int(in_features)
        self.time_steps = int(time_steps)
        _he_init(self)

    def encode_time(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> ``(B, 2 * embed, H, W)`` per-pixel temporal features."""
        if x.ndim != 5 or x.shape[2] != self.in_features or x.shape[1] != self.time_steps:
            raise InvalidInputError(
                f"TemporalUNet expects (B, T={self.time_steps}, C={self.in_features}, H, W), "
                f"got {tuple(x.shape)}; check the bundle's time steps and features."
            )
        b, t, c, h, w = x.shape
        z = x.transpose(1, 2).reshape(b, c, t, h * w)  # time as height, pixels as width
        if z.device.type == "cpu" and not torch.is_grad_enabled():
            # oneDNN runs the 1x1 and (k, 1) convolutions over these (T, H*W) planes ~4x faster
            # channels-last (pixels outer, channels inner: the layout x already nearly has)
            # than on the strided view, with the same sums up to float noise (<= 3e-7, measured
            # by benchmarks/bench_predict.py). Inference only: training keeps the strided path,
            # so its steps (and the model a seed trains) stay what they were.
            z = z.contiguous(memory_format=torch.channels_last)
        z = self.temporal(self.embed(z))  # (B, E, T', HW)
        a = torch.softmax(self.score(z), dim=2)
        pooled = torch.cat([(z * a).sum(dim=2), z.mean(dim=2)], dim=1)
        return pooled.reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` features -> ``(B, K, H, W)`` logits."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        z = self.encode_time(x)
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        return _unet_levels(z, self.down, self.up, self.head)[:, :, :h, :w]


class UNet2d(nn.Module):
    """A plain 2-D U-Net with group normalization: ``(B, C, H, W)`` -> ``(B, K, H, W)`` logits.

    ``depth`` levels of 2x2 max-pooling, nearest upsampling and skip connections; each level
    two 3x3 convolutions + GroupNorm + ReLU; ``base * 2**i`` channels at level ``i``; a 1x1 head.
    Sides that are not multiples of ``2 ** depth`` are replicate-padded and cropped back.
    """

    def __init__(
        self, in_channels: int, out_channels: int = 1, base: int = 16, depth: int = 3
    ) -> None:
        """Args:
        in_channels: C, input bands.
        out_channels: K, output maps (1 for a binary mask).
        base: channels of the first level (doubled at every level).
        depth: down-sampling levels (each halves H and W).
        """
        super().__init__()
        for name, v, lo in [
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("base", base, 1),
            ("depth", depth, 0),
        ]:
            if int(v) < lo:
                raise ConfigError(f"UNet2d {name} must be >= {lo}, got {v}.")
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "base": int(base),
            "depth": int(depth),
        }
        chans = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = int(in_channels)
        for c in chans:
            self.down.append(_conv_block(cin, c, "group"))
            cin = c
        self.up = nn.ModuleList(
            _conv_block(chans[i + 1] + chans[i], chans[i], "group") for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], out_channels, 1)
        self.depth = int(depth)
        self.in_channels = int(in_channels)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalized bands -> ``(B, K, H, W)`` logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InvalidInputError(
                f"UNet2d expects (B, C={self.in_channels}, H, W), got {tuple(x.shape)}; check "
                "the bundle's input features."
            )
        h, w = int(x.shape[-2]), int(x.shape[-1])
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        z = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        return _unet_levels(z, self.down, self.up, self.head)[:, :, :h, :w]
