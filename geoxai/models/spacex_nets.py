"""SpacEX networks: ResNet-style generators, PatchGAN discriminators, the image replay buffer.

The pieces of the cycle-consistent GAN of SpacEX (Emam, Stomberg, Roscher, IEEE GRSL 2024),
sized by their constructor arguments so that a small version trains on a CPU in seconds:

- :class:`ResnetGenerator`: 7x7 conv, two stride-2 downsamplings, ``n_res`` residual blocks,
  two stride-2 upsamplings, 7x7 conv, tanh; instance norm throughout (the CycleGAN generator).
  ``(N, C, H, W)`` in [-1, 1] -> ``(N, C, H, W)`` in [-1, 1]; any H, W (reflect-padded to a
  multiple of 4 inside and cropped back).
- :class:`PatchDiscriminator`: 4x4 convolutions (``n_layers`` of stride 2, then two of stride 1)
  with instance norm and LeakyReLU(0.2) -> a map of real/fake logits, one per image patch.
- :class:`SpacexGenerators`: the pattern maximizer ``g_max`` and minimizer ``g_min`` together;
  its ``forward`` is the SpacEX attribution map, so a bundle of it blends like any other model.
- :class:`ImageBuffer`: the CycleGAN history of generated images (size 50) the discriminators
  are trained on, with its own seeded generator so a resumed run draws the same images.
- :func:`score_shift` (classifier scores of inputs vs maximized / minimized images),
  :func:`attribution` (the SpacEX map of one image) and :func:`spacex_figure` (PNG).

Value spaces: the generators work in ``[-1, 1]``; the classifier's input space is the interval
``[lo, hi]`` (reflectance clipped to ``[0, 1]`` for ASOS networks). :func:`to_gan` and
:func:`from_gan` map linearly between them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoxai.errors import ConfigError, InvalidInputError

__all__ = [
    "ResnetGenerator",
    "PatchDiscriminator",
    "SpacexGenerators",
    "ImageBuffer",
    "to_gan",
    "from_gan",
]


def to_gan(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Classifier input space ``[lo, hi]`` -> generator space ``[-1, 1]`` (clamped)."""
    return ((x - lo) * (2.0 / (hi - lo)) - 1.0).clamp(-1.0, 1.0)


def from_gan(y: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Generator space ``[-1, 1]`` -> classifier input space ``[lo, hi]``."""
    return (y + 1.0) * ((hi - lo) / 2.0) + lo


def _check_sizes(what: str, **sizes: int) -> None:
    for name, v in sizes.items():
        if int(v) < 1:
            raise ConfigError(f"{what} {name}={v} must be >= 1.")


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: ``(N, C, H, W)`` in [-1, 1] -> same shape in [-1, 1].

    Args:
        in_bands: image channels C (in and out).
        base: channels after the 7x7 stem (x2 and x4 after the downsamplings; reference 64).
        n_res: residual blocks at 1/4 resolution (reference 9).
    """

    def __init__(self, in_bands: int = 10, base: int = 64, n_res: int = 9) -> None:
        super().__init__()
        _check_sizes("ResnetGenerator", in_bands=in_bands, base=base)
        if int(n_res) < 0:
            raise ConfigError(f"ResnetGenerator n_res={n_res} must be >= 0.")
        self.config = {"in_bands": int(in_bands), "base": int(base), "n_res": int(n_res)}
        c, b = int(in_bands), int(base)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(c, b, 7),
            nn.InstanceNorm2d(b),
            nn.ReLU(),
        ]
        for m in (1, 2):  # two stride-2 downsamplings
            layers += [
                nn.Conv2d(b * m, b * m * 2, 3, stride=2, padding=1),
                nn.InstanceNorm2d(b * m * 2),
                nn.ReLU(),
            ]
        layers += [_ResBlock(b * 4) for _ in range(int(n_res))]
        for m in (4, 2):  # two stride-2 upsamplings
            layers += [
                nn.ConvTranspose2d(b * m, b * m // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(b * m // 2),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(b, c, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.net(x)[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: ``(N, C, H, W)`` -> ``(N, 1, h, w)`` real/fake logits per patch.

    Args:
        in_bands: image channels C.
        base: channels of the first convolution (doubled per layer, at most x8; reference 64).
        n_layers: stride-2 convolutions (reference 3: 70x70 px receptive field); images must
            be at least ``2 ** n_layers * 4`` px on a side.
    """

    def __init__(self, in_bands: int = 10, base: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        _check_sizes("PatchDiscriminator", in_bands=in_bands, base=base, n_layers=n_layers)
        self.config = {"in_bands": int(in_bands), "base": int(base), "n_layers": int(n_layers)}
        b = int(base)
        layers: list[nn.Module] = [nn.Conv2d(int(in_bands), b, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = b
        for i in range(1, int(n_layers) + 1):
            out = b * min(2**i, 8)
            stride = 2 if i < int(n_layers) else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), nn.InstanceNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.min_size = 2 ** int(n_layers) * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise InvalidInputError(
                f"images of {tuple(x.shape[-2:])} px are too small for a PatchGAN discriminator "
                f"with n_layers={self.config['n_layers']} (needs >= {self.min_size} px); lower "
                "disc_layers or use larger images."
            )
        return self.net(x)


class SpacexGenerators(nn.Module):
    """The pattern maximizer and minimizer of one classifier, and the SpacEX attribution.

    Both generators work in ``[-1, 1]``; the public methods take and return the classifier's
    input space ``[lo, hi]`` (for ASOS networks reflectance clipped to ``[0, 1]``).

    ``forward(x)``: ``(N, C, H, W)`` classifier input -> ``(N, 1, H, W)`` attribution, the mean
    over bands of ``|maximize(x) - minimize(x)|`` in classifier input units (reflectance).

    Args:
        in_bands: image channels C.
        base: generator stem channels.
        n_res: residual blocks per generator.
        lo: lower end of the classifier's input range.
        hi: upper end of the classifier's input range.
    """

    def __init__(
        self, in_bands: int = 10, base: int = 64, n_res: int = 9, lo: float = 0.0, hi: float = 1.0
    ) -> None:
        super().__init__()
        if not float(hi) > float(lo):
            raise ConfigError(f"SpacEX input range [{lo}, {hi}] is empty; need hi > lo.")
        self.config: dict[str, Any] = {
            "in_bands": int(in_bands), "base": int(base), "n_res": int(n_res),
            "lo": float(lo), "hi": float(hi),
        }  # fmt: skip
        self.in_bands = int(in_bands)
        self.lo, self.hi = float(lo), float(hi)
        self.g_max = ResnetGenerator(in_bands, base, n_res)
        self.g_min = ResnetGenerator(in_bands, base, n_res)

    def maximize(self, x: torch.Tensor) -> torch.Tensor:
        """Pattern-maximized image, ``(N, C, H, W)`` in classifier input space."""
        return from_gan(self.g_max(to_gan(x, self.lo, self.hi)), self.lo, self.hi)

    def minimize(self, x: torch.Tensor) -> torch.Tensor:
        """Pattern-minimized image, ``(N, C, H, W)`` in classifier input space."""
        return from_gan(self.g_min(to_gan(x, self.lo, self.hi)), self.lo, self.hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.maximize(x) - self.minimize(x)).abs().mean(dim=1, keepdim=True)


class ImageBuffer:
    """History of generated images for the discriminators (CycleGAN's image pool).

    While fewer than ``size`` images are stored, every new image is stored and returned. Then
    each new image is, with probability 1/2, swapped for a random stored one (the stored one is
    returned, the new one kept), else returned as is. ``size=0`` returns the input unchanged.

    Args:
        size: images kept (reference 50).
        seed: seed of the buffer's own random generator (checkpointed with the images).
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if int(size) < 0:
            raise ConfigError(f"replay buffer size={size} must be >= 0.")
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(int(seed))

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` new (detached) images -> ``(N, C, H, W)`` images for the critic."""
        if self.size == 0:
            return images.detach()
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone().cpu())
                out.append(img)
            elif torch.rand((), generator=self.gen).item() < 0.5:
                j = int(torch.randint(0, self.size, (), generator=self.gen))
                old = self.images[j]
                self.images[j] = img.clone().cpu()
                out.append(old.to(img.device))
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Images, size and RNG state (restore with :meth:`load_state_dict`)."""
        stacked = torch.stack(self.images) if self.images else torch.empty(0)
        return {"size": self.size, "images": stacked, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        if int(state["size"]) != self.size:
            raise ConfigError(
                f"checkpointed replay buffer has size {state['size']}, this run {self.size}; "
                "resume with the same replay_buffer setting or start a new out_dir."
            )
        imgs = state["images"]
        self.images = [t.clone() for t in imgs] if imgs.numel() else []
        self.gen.set_state(state["rng"])
