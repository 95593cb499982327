"""The ``model.json`` of a model bundle: inputs, normalization, window, output (pydantic models)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from geoxai.errors import ModelBundleError
from geoxai.inference.windows import WindowParams
from geoxai.strict import StrictModel

__all__ = [
    "InputSpec",
    "NormalizationSpec",
    "OutputSpec",
    "SourceSpec",
    "OnnxSpec",
    "BundleSpec",
    "BundleModel",
    "VALIDITY_NAMES",
    "validity_mask",
]

VALIDITY_NAMES = ("valid", "validity", "quality")


class InputSpec(StrictModel):
    """What the model reads from a model-ready cube."""

    features: list[str] = Field(min_length=1, description="Band names, in model channel order.")
    time_steps: int = Field(ge=1, description="Length of the cube's time axis.")
    layout: Literal["TCHW", "CHW"] = Field(
        "TCHW",
        description="TCHW: windows reach the model as (B, T, C, h, w); CHW: time and features "
        "are merged to T*C channels, (B, T*C, h, w), time-major.",
    )

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({f for f in v if v.count(f) > 1})
        if dupes:
            raise ValueError(f"features named more than once: {dupes}")
        return v


class NormalizationSpec(StrictModel):
    """Per-feature affine normalization of the cube before windowing: ``(x - offset) / scale``."""

    kind: Literal["none", "affine"] = Field("none", description="none: cube is model-ready.")
    offset: list[float] | None = Field(None, description="One value per input feature.")
    scale: list[float] | None = Field(None, description="One value per input feature, != 0.")
    clip: tuple[float, float] | None = Field(None, description="Clip after normalizing.")


class _WindowSection(StrictModel):
    """The ``window`` section of ``model.json``: the lattice of a
    :class:`~geoxai.inference.WindowParams` (pixels of 10 m) without its run-time knobs
    (``batch_size``, ``pad_edges``). Bundles are built with a ``WindowParams``; this is only
    its stored form."""

    window: int = Field(64, ge=1, description="Kept (blended) window edge, px.")
    stride: int = Field(32, ge=1, description="Lattice step, px (<= window).")
    context: int = Field(8, ge=0, description="Input context on each side, px.")
    sigma: float | None = Field(None, gt=0, description="Gaussian sigma, px; None = reference.")


class OutputSpec(StrictModel):
    """What the model returns per pixel."""

    kind: Literal["probability", "logit", "regression", "activation", "class_probabilities"] = (
        Field("probability", description="Meaning of the output maps.")
    )
    names: list[str] = Field(min_length=1, description="One name per output map (K).")
    transform: Literal["none", "sigmoid", "softmax", "tanh"] = Field(
        "none", description="Applied to the network output before blending."
    )


class SourceSpec(StrictModel):
    """Where imported weights came from (e.g. a frozen TensorFlow graph)."""

    file: str = Field(description="File name the weights were imported from.")
    sha256: str = Field(description="SHA-256 of that file.")
    url: str | None = Field(None, description="Where to get the file.")
    licence: str | None = Field(None, description="Licence of the weights (e.g. GPL-3.0).")
    note: str = ""


class OnnxSpec(StrictModel):
    """How an ONNX graph (``architecture = "onnx"``) is called; both fields optional."""

    input: str | None = Field(None, description="Graph input fed the windows; None = the only one.")
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="Network method -> graph output (e.g. {'activations': 'activations'}); "
        "'forward' defaults to the first output; output.names names the maps of the first "
        "method listed here (forward when empty).",
    )


class BundleSpec(StrictModel):
    """``model.json``."""

    format_version: Literal[1] = Field(1, description="Schema version of model.json.")
    name: str = Field(description="Human name of the model.")
    architecture: str = Field(
        description="Registry name (see ARCHITECTURES), 'torchscript' or 'onnx'."
    )
    arch_kwargs: dict[str, Any] = Field(default_factory=dict, description="Constructor kwargs.")
    weights: str = Field(description="Weights file inside the bundle.")
    weights_sha256: str | None = Field(None, description="Checked before loading when set.")
    inputs: InputSpec
    normalization: NormalizationSpec = Field(
        default_factory=lambda: NormalizationSpec.model_validate({})
    )
    window: _WindowSection = Field(default_factory=lambda: _WindowSection.model_validate({}))
    output: OutputSpec
    extra_files: dict[str, str] = Field(default_factory=dict, description="Key -> file name.")
    description: str = ""
    source: SourceSpec | None = Field(None, description="Origin of imported weights.")
    onnx: OnnxSpec | None = Field(None, description="Graph input/outputs of an 'onnx' bundle.")
    preparation: dict[str, Any] = Field(
        default_factory=dict,
        description="Input preparation before the network (architecture-specific, e.g. the "
        "resampling of the 20 m bands for wri-dsen2-lite; see geoxai.temporal.superres).",
    )

    @field_validator("window", mode="before")
    @classmethod
    def _stored_window(cls, v: Any) -> Any:
        """A :class:`WindowParams` is stored as its lattice (window, stride, context, sigma)."""
        if isinstance(v, WindowParams):
            return {"window": v.window, "stride": v.stride, "context": v.context, "sigma": v.sigma}
        return v

    @field_validator("weights")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v in ("", ".", ".."):
            raise ValueError(f"weights must be a file name inside the bundle, got {v!r}")
        return v

    def window_params(self, *, batch_size: int = 16, pad_edges: bool = True) -> WindowParams:
        """The :class:`~geoxai.inference.WindowParams` of this bundle."""
        w = self.window
        return WindowParams(w.window, w.stride, w.context, w.sigma, batch_size, pad_edges)


class BundleModel(nn.Module):
    """The callable handed to inference: (reshape) -> network method -> output transform.

    Input ``(B, T, C, h, w)`` windows of the bundle's features, already normalized (see
    :meth:`LoadedBundle.prepare`; normalizing the whole cube first makes the zero padding of
    edge windows and of NaN pixels mean "mid-range" for every feature); output ``(B, K, h, w)``.
    """

    def __init__(self, net: nn.Module, spec: BundleSpec, method: str = "forward") -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        if s.inputs.layout == "CHW":
            x = x.reshape(x.shape[0], -1, *x.shape[-2:])
        fn = self.net if self.method == "forward" else getattr(self.net, self.method)
        y = fn(x)
        t = s.output.transform
        if t == "sigmoid":
            y = torch.sigmoid(y)
        elif t == "softmax":
            y = torch.softmax(y, dim=1)
        elif t == "tanh":
            y = torch.tanh(y)
        return y


def validity_mask(ds: Any, name: str | None = None) -> np.ndarray | None:
    """The ``(y, x)`` bool validity layer of a model-ready dataset, or None if it has none.

    Args:
        ds: an ``xarray.Dataset`` holding the cube and possibly a validity/quality layer.
        name: the layer's name; default the first of :data:`VALIDITY_NAMES` present. A bool
            layer is used as is; a numeric one means valid where > 0 (NaN = invalid).
    """
    candidates = [name] if name else [n for n in VALIDITY_NAMES if n in ds.variables]
    if not candidates:
        return None
    key = candidates[0]
    if key not in ds.variables:
        raise ModelBundleError(
            f"The cube store has no validity layer {key!r}; it has "
            f"{sorted(map(str, ds.variables))}."
        )
    layer = ds[key]
    if tuple(layer.dims) != ("y", "x"):
        raise ModelBundleError(
            f"Validity layer {key!r} has dims {tuple(layer.dims)}, expected ('y', 'x')."
        )
    v = np.asarray(layer.values)
    if v.dtype == bool:
        return v
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(v.astype(np.float64), nan=0.0) > 0
