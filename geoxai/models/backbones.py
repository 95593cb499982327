"""Scene classifier networks: a small CNN from scratch and ResNet-18 with torchvision key names.

Both take ``(B, C, h, w)`` patches (normalized bands, e.g. 64 x 64 px EuroSAT patches) and
return ``(B, K)`` class logits. Their ``config`` dict is the constructor's keyword arguments, so
a model bundle (:mod:`geoxai.models.bundle`) rebuilds them from ``model.json``.

:class:`ResNet18Classifier` is a torch-only re-implementation of torchvision's ``resnet18``
(He et al. 2016) whose ``state_dict`` uses torchvision's key names (``conv1.weight``,
``layer2.0.downsample.0.weight``, ``fc.bias`` ...), so the ImageNet weights a user already has
(``resnet18-f37072fd.pth`` in ``~/.cache/torch/hub/checkpoints/``, or any torchvision
``resnet18`` ``state_dict`` saved with ``torch.save``/safetensors) load with
:func:`load_pretrained_resnet18`. torchvision itself is not needed and nothing is downloaded.

Adapting an RGB backbone to more bands (``band_adapter``):

- ``"mix1x1"``: a 1 x 1 convolution ``band_mix`` maps the C bands to 3 channels, then the
  pretrained 3-channel ``conv1``. Initialised to pass the bands B04, B03, B02 through as R, G, B
  when they are among the bands (the pretrained network starts from what it knows), else to the
  band mean.
- ``"widen"``: ``conv1`` takes C channels; the pretrained RGB kernels are copied to the channels
  of B04, B03, B02 and every other channel gets the mean of the three RGB kernels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError, look_up_option

__all__ = [
    "BAND_ADAPTERS",
    "RGB_BANDS",
    "SimpleCNN",
    "ResNet18Classifier",
    "resnet18_state_keys",
    "read_state_dict",
    "find_cached_resnet18",
    "load_pretrained_resnet18",
]

BAND_ADAPTERS = ("mix1x1", "widen")
"""Ways to feed C != 3 bands to an RGB backbone (see the module docstring)."""


RGB_BANDS = ("B04", "B03", "B02")
"""Sentinel-2 bands of the R, G, B input channels of an ImageNet backbone, in that order."""


class SimpleCNN(nn.Module):
    """Three stages of two 3 x 3 conv-BN-ReLU layers and a 2 x 2 max-pool, global mean, linear.

    Input ``(B, in_channels, h, w)`` with ``h, w >= 8``; output ``(B, num_classes)`` logits.
    Channels: ``width``, ``2 width``, ``4 width``; about ``283 width^2`` weights (width 32: 290k).
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or width < 1 or not 0 <= dropout < 1:
            raise ConfigError(
                f"SimpleCNN needs in_channels >= 1, num_classes >= 2, width >= 1 and 0 <= "
                f"dropout < 1; got {in_channels}, {num_classes}, {width}, {dropout}."
            )
        self.config = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "width": width,
            "dropout": dropout,
        }
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage in range(3):
            c_out = width * 2**stage
            for _ in range(2):
                layers += [
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, K)`` logits."""
        return self.head(self.features(x).mean(dim=(2, 3)))


class _BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (same attribute names: conv1 bn1 conv2 bn2 downsample)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class ResNet18Classifier(nn.Module):
    """ResNet-18 with torchvision ``state_dict`` names, C input bands and K classes.

    Input ``(B, in_channels, h, w)`` (h, w >= 32; a 64 px patch ends as 2 x 2 before the mean);
    output ``(B, num_classes)`` logits. With ``in_channels != 3`` the ``band_adapter`` decides
    how bands enter: ``"mix1x1"`` adds ``band_mix`` (C -> 3, 1 x 1 conv) before a 3-channel
    ``conv1``; ``"widen"`` gives ``conv1`` C input channels.

    Args:
        in_channels: number of input bands C.
        num_classes: number of classes K.
        band_adapter: ``"mix1x1"`` or ``"widen"`` (ignored for C = 3).
        bands: band names of the C channels (used to initialise the adapter from RGB weights).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        band_adapter: str = "widen",
        bands: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        look_up_option(band_adapter, BAND_ADAPTERS, what="band adapter")
        if in_channels < 1 or num_classes < 2:
            raise ConfigError(
                f"ResNet18Classifier needs in_channels >= 1 and num_classes >= 2, got "
                f"{in_channels}, {num_classes}."
            )
        if bands is not None and len(bands) != in_channels:
            raise ConfigError(f"{len(bands)} band names for {in_channels} input channels.")
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "band_adapter": band_adapter,
            "bands": list(bands) if bands is not None else None,
        }
        self.band_mix: nn.Conv2d | None = None
        conv1_in = in_channels
        if in_channels != 3 and band_adapter == "mix1x1":
            self.band_mix = nn.Conv2d(in_channels, 3, 1)
            conv1_in = 3
        self.conv1 = nn.Conv2d(conv1_in, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_BasicBlock(64, 64, 1), _BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(_BasicBlock(64, 128, 2), _BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(_BasicBlock(128, 256, 2), _BasicBlock(256, 256, 1))
        self.layer4 = nn.Sequential(_BasicBlock(256, 512, 2), _BasicBlock(512, 512, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d) and m is not self.band_mix:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.band_mix is not None:
            self._init_band_mix()

    def _rgb_index(self) -> list[int] | None:
        bands = self.config["bands"]
        if bands is None or not all(b in bands for b in RGB_BANDS):
            return None
        return [list(bands).index(b) for b in RGB_BANDS]

    def _init_band_mix(self) -> None:
        if self.band_mix is None:
            return
        c = self.config["in_channels"]
        with torch.no_grad():
            w = torch.zeros(3, c, 1, 1)
            rgb = self._rgb_index()
            if rgb is None:
                w.fill_(1.0 / c)
            else:
                for out_ch, band_ch in enumerate(rgb):
                    w[out_ch, band_ch] = 1.0
            self.band_mix.weight.copy_(w)
            if self.band_mix.bias is not None:
                nn.init.zeros_(self.band_mix.bias)

    def adapter_parameters(self) -> list[str]:
        """Names of the parameters that are new relative to an RGB ImageNet backbone.

        ``fc.*`` always, ``band_mix.*`` with ``mix1x1``, ``conv1.weight`` with ``widen`` and
        C != 3. These stay trainable while the backbone is frozen.
        """
        names = ["fc.weight", "fc.bias"]
        if self.band_mix is not None:
            names += ["band_mix.weight", "band_mix.bias"]
        elif self.config["in_channels"] != 3:
            names.append("conv1.weight")
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, K)`` logits."""
        if self.band_mix is not None:
            x = self.band_mix(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_state_keys() -> list[str]:
    """The 122 ``state_dict`` keys of torchvision's ``resnet18`` (3 bands, no adapter)."""
    return list(ResNet18Classifier(3, 1000).state_dict())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` from a ``.safetensors`` file or a torch file (weights only).

    A torch file is loaded with ``weights_only=True`` (no code runs); a checkpoint that wraps
    the weights under ``"state_dict"`` or ``"model"`` is unwrapped and a DataParallel
    ``module.`` prefix is removed.

    Raises:
        DataAccessError: the file is missing or unreadable.
        InvalidInputError: the file holds no mapping of names to tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise DataAccessError(f"weights file {p} does not exist.")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import (
                load_file,  # lazy: safetensors only when weights are read or written
            )

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
        raise DataAccessError(
            f"cannot read weights file {p} ({type(exc).__name__}: {exc}); it must be a "
            "state_dict saved with torch.save (.pth/.pt) or safetensors (.safetensors)."
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidInputError(
            f"weights file {p} is not a state_dict (a mapping of names to tensors) but a "
            f"{type(obj).__name__}."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def find_cached_resnet18() -> Path | None:
    """torchvision's cached ImageNet ResNet-18 file (``<torch hub>/checkpoints/resnet18-*.pth``).

    The hub folder is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``); nothing is fetched.
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(folder.glob("resnet18-*.pth")) if folder.is_dir() else []
    return found[0] if found else None


def load_pretrained_resnet18(model: ResNet18Classifier, path: str | Path) -> list[str]:
    """Load torchvision-format ResNet-18 weights into ``model``, adapting conv1 and fc.

    ``fc`` is kept from ``model`` unless the file's has the same shape (same class count);
    with ``widen`` and C != 3 bands, ``conv1`` is built from the file's RGB kernels (module
    docstring). Every other key must be present with the same shape.

    Returns:
        The keys kept from ``model``'s own initialisation (not taken from the file).

    Raises:
        DataAccessError: the file is missing or unreadable.
        InvalidInputError: the file is not a ResNet-18 state_dict (keys or shapes differ).
    """
    src = read_state_dict(path)
    own = model.state_dict()
    backbone = [k for k in resnet18_state_keys() if not k.startswith("fc.")]
    missing = [k for k in backbone if k not in src]
    if missing:
        raise InvalidInputError(
            f"weights file {path} is not a torchvision resnet18 state_dict: {len(missing)} keys "
            f"missing (e.g. {missing[:3]}); it has e.g. {list(src)[:3]}."
        )
    new = dict(own)
    kept = []
    for k in own:
        if k.startswith("band_mix."):
            kept.append(k)
            continue
        w = src.get(k)
        if k == "conv1.weight" and w is not None and w.shape[1] == 3 and own[k].shape[1] != 3:
            new[k] = _widen_conv1(w, model)
            continue
        if w is None or tuple(w.shape) != tuple(own[k].shape):
            if k.startswith("fc."):
                kept.append(k)
                continue
            raise InvalidInputError(
                f"weights file {path}: {k} has shape {None if w is None else tuple(w.shape)}, "
                f"the model needs {tuple(own[k].shape)}; is it a resnet18 state_dict?"
            )
        new[k] = w.to(own[k].dtype)
    model.load_state_dict(new, strict=True)
    return kept


def _widen_conv1(w: torch.Tensor, model: ResNet18Classifier) -> torch.Tensor:
    """``(64, 3, 7, 7)`` RGB kernels -> ``(64, C, 7, 7)``: RGB copied, other bands the mean."""
    c = model.config["in_channels"]
    mean = w.float().mean(dim=1)
    out = mean[:, None].repeat(1, c, 1, 1)
    rgb = model._rgb_index()  # noqa: SLF001 - same module
    if rgb is not None:
        for rgb_ch, band_ch in enumerate(rgb):
            out[:, band_ch] = w[:, rgb_ch].float()
    return out
