"""Model bundles: weights loaded safely plus ``model.json``, checked against a cube before work.

A bundle is a directory (or a ``.zip`` of one) holding:

- ``model.json``: a :class:`BundleSpec` (pydantic, unknown keys refused): architecture (a
  registry name such as ``"temporal_unet"`` or ``"asos"``, or ``"torchscript"``), its keyword
  arguments, the input features and time steps, the normalization, the window lattice (window,
  stride, context, sigma), the output kind and layer names, optional extra files (e.g. the ASOS
  sensitivity table) and the SHA-256 of the weights;
- the weights: ``*.safetensors`` (preferred; never unpickled), a state_dict ``*.pt`` loaded with
  ``torch.load(weights_only=True)`` (a pickle of arbitrary objects is refused, not run), a
  TorchScript archive for ``architecture = "torchscript"`` (bring-your-own models), or an ONNX
  graph for ``"onnx"`` (:mod:`geoxai.models.onnx`; a geoxai ``.onnx`` file is a bundle too).

Architectures are resolved lazily from import strings in :data:`ARCHITECTURES` (so loading a
bundle never imports a module that ``model.json`` names freely); add your own with
:func:`register_architecture`. :func:`save_bundle` writes a built-in model, :func:`wrap_module`
turns any ``nn.Module`` (scripted or traced) or TorchScript file into a bundle.

:meth:`LoadedBundle.check_cube` runs before any compute and names the mismatch: missing
features, wrong number of time steps, a cube smaller than one window, a halo too small for
seamless tiles. :meth:`LoadedBundle.predict` then runs Gaussian-blended lattice inference
(:func:`geoxai.inference.predict_windows`) on a model-ready cube.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import io
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from geoxai.errors import ConfigError, GeoXAIError, ModelBundleError
from geoxai.inference.predict import predict_windows
from geoxai.inference.windows import Blended, WindowParams, required_halo
from geoxai.models.bundle_files import MODEL_JSON, BundleFiles, load_state_dict, read_spec
from geoxai.models.bundle_spec import BundleModel, BundleSpec
from geoxai.models.onnx import forward_runtime, onnx_network, read_onnx_file

__all__ = [
    "MODEL_JSON",
    "ARCHITECTURES",
    "register_architecture",
    "LoadedBundle",
    "load_bundle",
    "save_bundle",
    "wrap_module",
]


ARCHITECTURES: dict[str, str] = {
    "temporal_unet": "geoxai.models.unet:TemporalUNet",
    "asos": "geoxai.models.asos_net:ASOSNet",
    "spacex": "geoxai.models.spacex_nets:SpacexGenerators",
    "unet2d": "geoxai.models.unet:UNet2d",
    "scene_simple_cnn": "geoxai.models.backbones:SimpleCNN",
    "scene_resnet18": "geoxai.models.backbones:ResNet18Classifier",
    "tf-graph": "geoxai.models.tf_graph_torch:TFGraphNet",
    "wri-dsen2-lite": "geoxai.models.dsen2:DSen2Lite",
}
"""Registry name -> ``"module:Class"``; imported only when a bundle naming it is loaded."""


def register_architecture(name: str, target: str) -> None:
    """Make ``architecture = name`` in ``model.json`` build ``target`` (``"pkg.module:Class"``)."""
    if ":" not in target:
        raise ConfigError(f"Architecture target {target!r} must look like 'pkg.module:Class'.")
    if name in ("torchscript", "onnx"):
        raise ConfigError(f"{name!r} is reserved for {name} bundles.")
    ARCHITECTURES[name] = target


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle ready to run.

    Attributes:
        spec: the parsed ``model.json``.
        path: where it was loaded from.
        net: the bare network (eval mode, on ``device``).
        model: :class:`BundleModel` around ``net`` or its onnxruntime twin (what inference runs).
        device: torch device of the weights.
        runtime: ``"torch"`` or ``"onnxruntime"``: what runs ``model``.
    """

    spec: BundleSpec
    path: Path
    net: nn.Module
    model: BundleModel
    device: torch.device
    runtime: str = "torch"

    def window_params(self, *, batch_size: int = 16, pad_edges: bool = True) -> WindowParams:
        """Window lattice of the bundle."""
        return self.spec.window_params(batch_size=batch_size, pad_edges=pad_edges)

    def required_halo(self, core_px: int = 600) -> int:
        """Halo (px) a tile needs for seamless predictions with this bundle."""
        w = self.spec.window
        return required_halo(w.window, w.stride, w.context, core_px)

    def callable(self, method: str = "forward") -> BundleModel:
        """The model callable using another method of the network (e.g. ASOS ``activations``)."""
        if method == "forward":
            return self.model
        if not callable(getattr(self.net, method, None)):
            raise ModelBundleError(
                f"Bundle {self.path}: the {type(self.net).__name__} network has no method "
                f"{method!r}."
            )
        return BundleModel(self.net, self.spec, method).to(self.device).eval()

    def extra_file(self, key: str) -> bytes:
        """Bytes of an extra file (``spec.extra_files[key]``), e.g. the ASOS table."""
        if key not in self.spec.extra_files:
            raise ModelBundleError(
                f"Bundle {self.path} has no extra file {key!r}; it has "
                f"{sorted(self.spec.extra_files)}."
            )
        return BundleFiles(self.path).read(self.spec.extra_files[key])

    def check_cube(self, cube: Any, *, core_px: int | None = None) -> list[int]:
        """Check a model-ready cube against the bundle before any compute.

        Args:
            cube: ``xarray.DataArray`` with dims ``(time, band, y, x)``, a ``band`` coordinate of
                feature names and attrs ``transform`` (and ``halo_px`` for tiles).
            core_px: tile core edge, px, for the halo check; default ``H - 2 * halo_px``.

        Returns:
            Indices along ``band`` of the bundle's features, in model order.

        Raises:
            ModelBundleError: naming the mismatch (dims, features, time steps, size, halo).
        """
        where = f"Bundle {self.spec.name!r} ({self.path})"
        dims = tuple(getattr(cube, "dims", ()))
        if dims != ("time", "band", "y", "x"):
            raise ModelBundleError(
                f"{where}: the cube has dims {dims}; expected ('time', 'band', 'y', 'x') (a "
                "model-ready cube from `geoxai smooth`)."
            )
        names = [str(b) for b in cube["band"].values]
        want = self.spec.inputs.features
        missing = [f for f in want if f not in names]
        if missing:
            raise ModelBundleError(
                f"{where}: needs {len(want)} features {want}; the cube lacks {missing} (it has "
                f"{len(names)}: {names}). Build the cube with those features or use a bundle "
                "trained on the cube's."
            )
        t = int(cube.sizes["time"])
        if t != self.spec.inputs.time_steps:
            raise ModelBundleError(
                f"{where}: needs {self.spec.inputs.time_steps} time steps, the cube has {t}; "
                "smooth the series onto the bundle's time axis."
            )
        p = self.window_params()
        h, w = int(cube.sizes["y"]), int(cube.sizes["x"])
        if h < p.input_size or w < p.input_size:
            raise ModelBundleError(
                f"{where}: the cube is {h}x{w} px, smaller than one model input of "
                f"{p.input_size}x{p.input_size} px (window {p.window} + 2 x context {p.context})."
            )
        if "transform" not in cube.attrs:
            raise ModelBundleError(
                f"{where}: the cube has no 'transform' attribute, so the zone window lattice is "
                "unknown; write cubes with geoxai.io.store (attrs crs/transform/halo_px)."
            )
        halo = cube.attrs.get("halo_px")
        if halo is not None and "tile_id" in cube.attrs:
            core = core_px if core_px is not None else h - 2 * int(halo)
            need = self.required_halo(max(core, 1))
            if int(halo) < need:
                raise ModelBundleError(
                    f"{where}: tile {cube.attrs['tile_id']} has a halo of {int(halo)} px but "
                    f"windows of {p.window} px, stride {p.stride}, context {p.context} need "
                    f">= {need} px for seamless tiles; rebuild the cube with halo_px >= {need}."
                )
        return [names.index(f) for f in want]

    def prepare(self, cube: Any) -> np.ndarray:
        """Checked, selected and normalized model input ``(T, C, H, W)`` float32 (NaN kept).

        Runs :meth:`check_cube`, picks the bundle's features by name, applies the bundle's
        normalization ``(x - offset) / scale`` and clip.
        """
        idx = self.check_cube(cube)
        x = np.asarray(cube.isel(band=idx).values, dtype=np.float32)
        if not (x.flags.owndata and x.flags.writeable):  # maybe a view of the caller's cube
            x = x.copy()
        n = self.spec.normalization
        # in place: the same float32 operations as out of place, no full-cube temporaries
        if n.kind == "affine" and n.offset is not None and n.scale is not None:
            np.subtract(x, np.asarray(n.offset, np.float32)[None, :, None, None], out=x)
            np.divide(x, np.asarray(n.scale, np.float32)[None, :, None, None], out=x)
        if n.clip is not None:
            np.clip(x, n.clip[0], n.clip[1], out=x)
        return x

    def predict(
        self,
        cube: Any,
        valid: np.ndarray | None = None,
        *,
        batch_size: int = 16,
        autocast: str | None = None,
        pad_edges: bool | None = None,
        method: str = "forward",
        progress: Callable[[int, int], None] | None = None,
    ) -> Blended:
        """Blended predictions ``(K, H, W)`` of a model-ready cube (checked first).

        Args:
            cube: ``(time, band, y, x)`` DataArray (see :meth:`check_cube`).
            valid: optional ``(H, W)`` bool mask of pixels with data.
            batch_size: windows per model call.
            autocast: None, ``"bf16"`` or ``"fp16"`` (GPU).
            pad_edges: cover the whole array (True) or run only windows wholly inside (False).
                None: False for a tile cube (attrs ``tile_id``/``halo_px``, halo checked), whose
                core is then fully covered at less cost and the outer halo ring is NaN; True
                otherwise.
            method: network method to blend (``"forward"``, or e.g. ``"activations"``).
            progress: ``progress(done, total)`` callback.
        """
        x = self.prepare(cube)
        if pad_edges is None:
            pad_edges = not ("tile_id" in cube.attrs and "halo_px" in cube.attrs)
        return predict_windows(
            self.callable(method),
            x,
            list(cube.attrs["transform"])[:6],
            valid,
            self.window_params(batch_size=batch_size, pad_edges=pad_edges),
            device=self.device,
            autocast=autocast,
            progress=progress,
        )

    def predict_dataset(
        self,
        cube: Any,
        valid: np.ndarray | None = None,
        *,
        batch_size: int = 16,
        autocast: str | None = None,
        method: str = "forward",
        progress: Callable[[int, int], None] | None = None,
    ) -> Any:
        """Predict a tile cube and package it as an ``xarray.Dataset`` ready for geoxai.io.store.

        Returns:
            Dataset with ``prediction`` ``(output, y, x)`` float32 (NaN = nodata; ``output`` =
            the bundle's output names) and ``weight`` ``(y, x)`` float32 (sum of Gaussian
            weights, 0 = nodata), the cube's ``y``/``x`` coords and grid attrs, and the bundle's
            name, SHA-256, window lattice and output kind as attrs.
        """

        out = self.predict(
            cube,
            valid,
            batch_size=batch_size,
            autocast=autocast,
            method=method,
            progress=progress,
        )
        names = list(self.spec.output.names)
        if out.values.shape[0] != len(names):
            if method != "forward":
                names = [f"{method}_{i}" for i in range(out.values.shape[0])]
            else:
                raise ModelBundleError(
                    f"Bundle {self.path}: the network returned {out.values.shape[0]} maps but "
                    f"output.names lists {len(names)} ({names}); fix model.json."
                )
        grid_keys = ("crs", "transform", "tile_id", "halo_px", "resolution_m")
        attrs = {k: cube.attrs[k] for k in grid_keys if k in cube.attrs}
        attrs.update(
            {
                "bundle_name": self.spec.name,
                "bundle_weights_sha256": self.spec.weights_sha256 or "",
                "output_kind": self.spec.output.kind,
                "window_px": self.spec.window.window,
                "stride_px": self.spec.window.stride,
                "context_px": self.spec.window.context,
                "sigma_px": self.window_params().sigma_px,
            }
        )
        coords = {"output": names, "y": cube["y"].values, "x": cube["x"].values}
        return xr.Dataset(
            {
                "prediction": (("output", "y", "x"), out.values),
                "weight": (("y", "x"), out.weight),
            },
            coords=coords,
            attrs=attrs,
        )


def _resolve(name: str, where: Path) -> type[nn.Module]:
    if name not in ARCHITECTURES:
        close = difflib.get_close_matches(name, [*ARCHITECTURES, "torchscript", "onnx"], n=2)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelBundleError(
            f"Bundle {where}: unknown architecture {name!r}.{hint} Known: "
            f"{', '.join([*ARCHITECTURES, 'torchscript', 'onnx'])}; register others with "
            "geoxai.models.bundle.register_architecture."
        )
    mod_name, cls_name = ARCHITECTURES[name].split(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ModelBundleError(
            f"Bundle {where}: architecture {name!r} -> {ARCHITECTURES[name]} cannot be imported "
            f"({exc}); install the module that provides it."
        ) from exc
    return cls  # type: ignore[no-any-return]


def load_bundle(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    trust_torchscript: bool = True,
    runtime: str = "torch",
) -> LoadedBundle:
    """Load a model bundle (directory, zip or geoxai ``.onnx`` file) onto ``device``.

    Args:
        path: the bundle directory, ``.zip`` or ``.onnx`` file (model.json in its metadata).
        device: torch device for the weights (the caller chooses, e.g. ``"cuda:0"``).
        trust_torchscript: allow ``architecture = "torchscript"`` (TorchScript archives carry
            their own code; set False to accept only weights-only bundles).
        runtime: ``"torch"``, ``"auto"`` or ``"onnxruntime"``: what runs a torch bundle's
            forward pass (see :func:`geoxai.models.onnx.forward_runtime`).

    Raises:
        ModelBundleError: no/invalid ``model.json``, unknown architecture, missing, corrupt,
            tampered (SHA-256) or untrusted weights, or weights that do not fit the network.
    """
    p = Path(path)
    dev = torch.device(device)
    if p.is_file() and p.suffix.lower() == ".onnx":
        spec, data = read_onnx_file(p)
    else:
        spec = read_spec(BundleFiles(p))
        data = BundleFiles(p).read(spec.weights)
    if spec.weights_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != spec.weights_sha256.lower():
            raise ModelBundleError(
                f"Bundle {p}: weights {spec.weights} have SHA-256 {got[:16]}..., model.json "
                f"expects {spec.weights_sha256[:16]}...; the file was changed or is corrupt."
            )
    c = len(spec.inputs.features)
    if spec.normalization.kind == "affine":
        n = spec.normalization
        if n.offset is None or n.scale is None or len(n.offset) != c or len(n.scale) != c:
            raise ModelBundleError(
                f"Bundle {p}: affine normalization needs offset and scale with {c} values (one "
                "per input feature)."
            )
        if any(s == 0 for s in n.scale):
            raise ModelBundleError(f"Bundle {p}: normalization scale contains 0.")
    if len(spec.output.names) < 1:  # pragma: no cover - enforced by the schema
        raise ModelBundleError(f"Bundle {p}: output.names is empty.")
    if spec.window.stride > spec.window.window:
        raise ModelBundleError(
            f"Bundle {p}: window.stride {spec.window.stride} > window.window "
            f"{spec.window.window}; windows would leave gaps."
        )

    net: nn.Module
    if spec.architecture == "onnx":
        net = onnx_network(data, spec, f"Bundle {p}", dev)
    elif spec.architecture == "torchscript":
        if not trust_torchscript:
            raise ModelBundleError(
                f"Bundle {p} is a TorchScript program and trust_torchscript=False; only "
                "weights-only bundles (safetensors / state_dict) are accepted here."
            )
        try:
            with _quiet_jit():
                net = torch.jit.load(io.BytesIO(data), map_location=dev)
        except (RuntimeError, ValueError) as exc:
            raise ModelBundleError(
                f"Bundle {p}: {spec.weights} is not a loadable TorchScript archive ({exc})."
            ) from exc
    else:
        cls = _resolve(spec.architecture, p)
        try:
            net = cls(**spec.arch_kwargs)
        except (TypeError, GeoXAIError, ValueError) as exc:
            raise ModelBundleError(
                f"Bundle {p}: cannot build {spec.architecture} with arch_kwargs "
                f"{spec.arch_kwargs} ({exc})."
            ) from exc
        state = load_state_dict(data, spec.weights, p)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            msg = str(exc).replace("\n", " ").replace("\t", "")
            raise ModelBundleError(
                f"Bundle {p}: weights {spec.weights} do not fit {spec.architecture}"
                f"({spec.arch_kwargs}): {msg[:600]}"
            ) from exc
        _check_arch_inputs(net, spec, p)
    net = net.to(dev).eval()
    fwd, rt = forward_runtime(net, spec, f"Bundle {p}", dev, runtime)
    model = BundleModel(fwd, spec).to(dev).eval()
    return LoadedBundle(spec=spec, path=p, net=net, model=model, device=dev, runtime=rt)


def _check_arch_inputs(net: nn.Module, spec: BundleSpec, where: Path) -> None:
    """Compare the network's declared input size with model.json (band count, time steps)."""
    c, t = len(spec.inputs.features), spec.inputs.time_steps
    cfg = getattr(net, "config", None)
    if not isinstance(cfg, Mapping):
        return
    expect = {"in_features": c, "time_steps": t}
    if spec.inputs.layout == "CHW":
        expect = {"in_bands": c * t, "in_channels": c * t}
    for key, want in expect.items():
        if key in cfg and int(cfg[key]) != want:
            raise ModelBundleError(
                f"Bundle {where}: the network has {key}={cfg[key]} but model.json lists "
                f"{c} features x {t} time steps ({spec.inputs.layout}) = {want}; fix inputs or "
                "arch_kwargs."
            )


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """TorchScript is deprecated upstream but is the portable bring-your-own format here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _write_json(spec: BundleSpec, out: Path) -> None:
    text = json.dumps(spec.model_dump(mode="json"), indent=2)
    (out / MODEL_JSON).write_text(text + "\n", encoding="utf-8")


def save_bundle(
    path: str | Path,
    net: nn.Module,
    spec: BundleSpec,
    extra_files: Mapping[str, tuple[str, bytes]] | None = None,
) -> Path:
    """Write a registered-architecture network as a bundle (safetensors + ``model.json``).

    Args:
        path: directory to create (or fill).
        net: the network; its ``config`` dict (if any) becomes ``arch_kwargs`` when the spec
            has none.
        spec: the description; ``weights`` should end with ``.safetensors``; the SHA-256 is
            filled in.
        extra_files: key -> (file name, bytes), recorded in ``extra_files``.

    Returns:
        The bundle directory.
    """
    from safetensors.torch import save  # lazy: safetensors only when weights are read or written

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if spec.architecture == "torchscript" or spec.architecture not in ARCHITECTURES:
        raise ModelBundleError(
            f"save_bundle writes registered architectures ({', '.join(ARCHITECTURES)}), not "
            f"{spec.architecture!r}; use wrap_module for other modules."
        )
    if not spec.weights.endswith(".safetensors"):
        raise ModelBundleError(
            f"save_bundle writes safetensors; name the weights '*.safetensors', not "
            f"{spec.weights!r}."
        )
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    data = save(state)
    (out / spec.weights).write_bytes(data)
    update: dict[str, Any] = {"weights_sha256": hashlib.sha256(data).hexdigest()}
    if not spec.arch_kwargs and isinstance(getattr(net, "config", None), Mapping):
        update["arch_kwargs"] = dict(net.config)  # type: ignore[arg-type]
    files = dict(spec.extra_files)
    for key, (fname, content) in (extra_files or {}).items():
        (out / fname).write_bytes(content)
        files[key] = fname
    update["extra_files"] = files
    _write_json(spec.model_copy(update=update), out)
    return out


def wrap_module(
    module: nn.Module | str | Path,
    spec: BundleSpec,
    path: str | Path,
    *,
    example: torch.Tensor | None = None,
) -> Path:
    """Bring your own model: turn a plain ``nn.Module`` or a TorchScript file into a bundle.

    The module is compiled with ``torch.jit.script`` (or, if that fails, traced on ``example``,
    by default zeros of one window ``(1, T, C, n, n)``), so loading needs no Python class.

    Args:
        module: an ``nn.Module`` taking windows as laid out by ``spec.inputs.layout``, or the
            path of a TorchScript file.
        spec: the description; ``architecture`` is set to ``"torchscript"`` and ``weights``
            to ``"model.torchscript.pt"``.
        path: directory to create.
        example: input for tracing.

    Returns:
        The bundle directory.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    fname = "model.torchscript.pt"
    if isinstance(module, str | Path):
        src = Path(module)
        try:
            with _quiet_jit():
                torch.jit.load(str(src), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelBundleError(f"{src} is not a loadable TorchScript file ({exc}).") from exc
        data = src.read_bytes()
    else:
        module = module.eval()
        try:
            with _quiet_jit():
                scripted = torch.jit.script(module)
        except Exception:  # noqa: BLE001 - scripting fails on many plain modules; trace instead
            if example is None:
                n = spec.window.window + 2 * spec.window.context
                c, t = len(spec.inputs.features), spec.inputs.time_steps
                shape = (1, t, c, n, n) if spec.inputs.layout == "TCHW" else (1, t * c, n, n)
                example = torch.zeros(shape)
            with torch.no_grad(), _quiet_jit():
                scripted = torch.jit.trace(module, example)
        buf = io.BytesIO()
        with _quiet_jit():
            torch.jit.save(scripted, buf)
        data = buf.getvalue()
    (out / fname).write_bytes(data)
    update = {
        "architecture": "torchscript",
        "arch_kwargs": {},
        "weights": fname,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    _write_json(spec.model_copy(update=update), out)
    return out
