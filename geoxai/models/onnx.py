"""ONNX in and out for model bundles: export a bundle's network, run an ONNX graph as a bundle.

**Out** (:func:`onnx_graph_bytes`; checked and written by
:func:`geoxai.models.onnx_export.export_onnx`, ``geoxai models export-onnx BUNDLE OUT.onnx``): the
bundle's network is exported with torch's TorchScript-based exporter (``dynamo=False``: it needs no
``onnxscript``, exports these convolutional networks in well under a second, and every graph
it makes is static but for the batch axis), with

- one input ``input``: ``(batch, T, C, n, n)`` for ``inputs.layout = "TCHW"`` or
  ``(batch, T*C, n, n)`` for ``"CHW"``, ``n = window + 2 * context`` px, float32, normalized
  as the bundle's ``normalization`` says (the graph holds the network only);
- one output per network method: ``output`` (``forward``), and for the ASOS network also
  ``activations`` (the ``k`` maps its tiles blend) next to ``logit`` (its ``forward``);
- the ONNX bundle's ``model.json`` (architecture ``"onnx"``, the same inputs, normalization,
  window and output, with the method -> output names) as metadata ``geoxai.model_json``, and
  the source bundle's name and weight hash as ``geoxai.source_*``.

The result is checked with ``onnx.checker`` (full check) and run through ``onnxruntime`` on a
batch of windows against torch; the maximum difference is reported and must be <= ``atol``.

**In** (``architecture = "onnx"`` in ``model.json``, or a bare ``.onnx`` file carrying the
metadata above): :func:`onnx_network` checks the graph against ``model.json`` (input name,
rank, time steps, channels, window size and which axes are dynamic; output count; opset) and
returns :class:`OnnxNet`, an ``nn.Module`` whose calls run an ``onnxruntime`` session (CUDA
execution provider when the bundle is loaded on a CUDA device and the provider is installed,
else CPU). Inference then runs in the same lattice windows and Gaussian blending as torch
bundles (:func:`geoxai.inference.predict.predict_windows`). A third-party model needs only a
short ``model.json`` (see the README):

.. code-block:: json

    {"name": "my-segmenter", "architecture": "onnx", "weights": "model.onnx",
     "inputs": {"features": ["B02", "B03", "B04", "B08"], "time_steps": 1, "layout": "CHW"},
     "window": {"window": 64, "stride": 32, "context": 0},
     "output": {"kind": "probability", "names": ["water"], "transform": "none"}}

**CPU runtime** (:func:`forward_runtime`): ``load_bundle(..., runtime="auto")`` exports a
torch bundle in memory and runs its forward pass on onnxruntime on CPU when the two agree to
1e-4 on a check batch (``benchmarks/bench_onnx.py`` measures the gain); the network itself
stays the torch module (ASOS/SpacEX/XAI code reaches into it).
"""

from __future__ import annotations

import functools
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoxai.errors import ConfigError, ModelBundleError
from geoxai.models.bundle_spec import BundleSpec, OnnxSpec

__all__ = [
    "ONNX_ARCHITECTURE",
    "METADATA_KEY",
    "DEFAULT_OPSET",
    "EXPORTABLE",
    "OnnxInputError",
    "OnnxOpsetError",
    "OnnxNet",
    "onnx_network",
    "onnx_graph_bytes",
    "onnx_bundle_spec",
    "onnx_module",
    "example_windows",
    "max_abs_diff",
    "read_onnx_file",
    "RUNTIMES",
    "forward_runtime",
    "onnxruntime_twin",
]

ONNX_ARCHITECTURE = "onnx"
"""``architecture`` of a bundle whose weights file is an ONNX graph."""

METADATA_KEY = "geoxai.model_json"
"""ONNX ``metadata_props`` key holding the ONNX bundle's ``model.json`` text."""

DEFAULT_OPSET = 17
"""Opset of exported graphs (onnxruntime >= 1.14 runs it; so do most other runtimes)."""

MIN_OPSET = 7
"""Oldest ``ai.onnx`` opset onnxruntime supports."""

EXPORTABLE = ("temporal_unet", "asos", "unet2d", "scene_simple_cnn", "scene_resnet18")
"""Registered architectures :func:`export_onnx` writes (SpacEX generators are not window models)."""

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


class OnnxInputError(ModelBundleError):
    """An ONNX graph's inputs or outputs do not match its ``model.json``."""


class OnnxOpsetError(ModelBundleError):
    """An ONNX graph's opset (or an operator in it) is one onnxruntime cannot run."""


def _ort() -> Any:
    try:
        import onnxruntime  # lazy: onnxruntime only for ONNX bundles and the CPU runtime
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ModelBundleError(
            "ONNX bundles run on onnxruntime, which is not installed: pip install onnxruntime "
            "(or onnxruntime-gpu for the CUDA execution provider)."
        ) from exc
    return onnxruntime


def onnx_module() -> Any:
    try:
        import onnx  # lazy: onnx only when a graph is exported or inspected
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ModelBundleError("ONNX export needs the onnx package: pip install onnx.") from exc
    return onnx


def _providers(device: torch.device) -> list[str]:
    """onnxruntime execution providers for a torch device: CUDA first when asked and present."""
    have = _ort().get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _opset(model: Any) -> int | None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def _session(data: bytes, device: torch.device, where: str) -> Any:
    """An onnxruntime session of ``data`` (threads as torch's), opset problems made typed."""
    ort = _ort()
    onnx = onnx_module()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError types
        raise ModelBundleError(
            f"{where}: the weights file is not an ONNX model ({type(exc).__name__}: {exc}); "
            "give the .onnx file written by your exporter."
        ) from exc
    ops = _opset(model)
    if ops is not None and ops < MIN_OPSET:
        raise OnnxOpsetError(
            f"{where}: the graph uses ai.onnx opset {ops}; onnxruntime runs opset >= "
            f"{MIN_OPSET}. Convert it: onnx.version_converter.convert_version(model, "
            f"{DEFAULT_OPSET}), or re-export with opset_version={DEFAULT_OPSET}."
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(data, so, providers=_providers(device))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's pybind errors share no base class
        msg = str(exc).replace("\n", " ")
        if "opset" in msg.lower() or "Could not find an implementation" in msg:
            raise OnnxOpsetError(
                f"{where}: onnxruntime {ort.__version__} cannot run this graph (ai.onnx opset "
                f"{ops}): {msg[-300:]} Re-export with an opset it supports (e.g. "
                f"opset_version={DEFAULT_OPSET}) or convert with "
                "onnx.version_converter.convert_version."
            ) from exc
        raise ModelBundleError(f"{where}: onnxruntime cannot load the graph: {msg[:500]}") from exc


@dataclass(frozen=True)
class _Io:
    """What the checks found: input name and dtype, fixed batch size (None = dynamic)."""

    input: str
    dtype: Any
    batch: int | None
    outputs: dict[str, str]


def _dims(shape: Sequence[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _check_io(sess: Any, spec: BundleSpec, where: str) -> _Io:
    """Compare the session's inputs/outputs with ``model.json``; name the fix."""
    ins = {i.name: i for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    cfg = spec.onnx
    want_in = cfg.input if cfg is not None else None
    if want_in is None:
        if len(ins) != 1:
            raise OnnxInputError(
                f"{where}: the graph has {len(ins)} inputs {sorted(ins)}; geoxai feeds one "
                'window tensor. Name it in model.json: "onnx": {"input": "<name>"} (the '
                "others must have defaults), or re-export with one input."
            )
        want_in = next(iter(ins))
    elif want_in not in ins:
        raise OnnxInputError(
            f"{where}: model.json onnx.input is {want_in!r} but the graph's inputs are "
            f"{sorted(ins)}; set onnx.input to one of them."
        )
    node = ins[want_in]
    dtype = _NP_TYPES.get(node.type)
    if dtype is None:
        raise OnnxInputError(
            f"{where}: input {want_in!r} has type {node.type}; geoxai feeds float windows "
            "(tensor(float), float16 or double). Re-export with a float input."
        )
    s, dims = spec, _dims(node.shape)
    t, c = s.inputs.time_steps, len(s.inputs.features)
    n = s.window.window + 2 * s.window.context
    if s.inputs.layout == "TCHW":
        want = [("time steps", 1, t), ("features", 2, c), ("height", 3, n), ("width", 4, n)]
        layout = f"(batch, T={t}, C={c}, {n}, {n})"
    else:
        want = [("channels (time steps x features)", 1, t * c), ("height", 2, n), ("width", 3, n)]
        layout = f"(batch, {t * c}, {n}, {n})"
    if len(dims) != len(want) + 1:
        raise OnnxInputError(
            f"{where}: input {want_in!r} has rank {len(dims)} {list(node.shape)}; model.json "
            f"(layout {s.inputs.layout}) feeds {layout}. Set inputs.layout to "
            f"{'CHW' if len(dims) == 4 else 'TCHW'} or export the model with that input."
        )
    for what, axis, value in want:
        got = dims[axis]
        if got is not None and got != value:
            fix = (
                f"set window.window + 2 * window.context = {got} in model.json"
                if what in ("height", "width")
                else f"model.json lists {c} features x {t} time steps; fix inputs"
            )
            raise OnnxInputError(
                f"{where}: input {want_in!r} has {what} {got} (shape {list(node.shape)}) but "
                f"geoxai feeds {layout}; {fix}, or export the graph with a dynamic axis there."
            )
    methods = dict(cfg.outputs) if cfg is not None else {}
    methods.setdefault("forward", outs[0])
    for m, o in methods.items():
        if m != "forward" and (not m.isidentifier() or hasattr(nn.Module, m)):
            raise OnnxInputError(
                f"{where}: model.json onnx.outputs names a method {m!r}; use 'forward' or a "
                "plain name that is not a torch.nn.Module attribute (e.g. 'activations')."
            )
        if o not in outs:
            raise OnnxInputError(
                f"{where}: model.json onnx.outputs maps {m!r} to {o!r} but the graph's outputs "
                f"are {outs}; use one of them."
            )
    named = sess.get_outputs()[outs.index(next(iter(methods.values())))]  # what output.names names
    k = _dims(named.shape)[1] if len(named.shape) >= 2 else None
    if k is not None and k != len(s.output.names):
        raise OnnxInputError(
            f"{where}: output {named.name!r} has {k} maps (shape {list(named.shape)}) but "
            f"model.json output.names lists {len(s.output.names)} ({s.output.names}); name "
            "every map."
        )
    return _Io(want_in, dtype, dims[0], methods)


class OnnxNet(nn.Module):
    """An ONNX graph run by onnxruntime, callable like the torch network it replaces.

    ``net(x)``: ``x`` a ``(B, T, C, n, n)`` (TCHW) or ``(B, T*C, n, n)`` (CHW) float tensor
    -> the graph's ``forward`` output as a float32 tensor on ``x``'s device; other methods
    named in ``model.json`` ``onnx.outputs`` (e.g. ``activations``) are attributes with the
    same signature. A graph with a fixed batch size is fed in chunks of that size (the last
    zero-padded). Holds no parameters; ``.to()`` and ``.eval()`` are no-ops.

    Attributes:
        providers: the execution providers in use (``["CPUExecutionProvider"]`` ...).
        config: ``{"onnx_input": name, "onnx_outputs": {method: output}}``.
    """

    def __init__(self, session: Any, io_: _Io) -> None:
        super().__init__()
        self._sess = session
        self._io = io_
        self.providers: list[str] = list(session.get_providers())
        self.config: dict[str, Any] = {"onnx_input": io_.input, "onnx_outputs": dict(io_.outputs)}
        for method, out in io_.outputs.items():
            if method != "forward":
                object.__setattr__(self, method, functools.partial(self._run, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self._io.outputs["forward"], x)

    def _run(self, output: str, x: torch.Tensor) -> torch.Tensor:
        dev = x.device
        xn = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy(), self._io.dtype)
        fixed = self._io.batch
        if fixed is None or fixed == xn.shape[0]:
            y = self._sess.run([output], {self._io.input: xn})[0]
        else:
            parts = []
            for i in range(0, xn.shape[0], fixed):
                chunk = xn[i : i + fixed]
                b = chunk.shape[0]
                if b < fixed:
                    pad = np.zeros((fixed - b, *chunk.shape[1:]), chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                parts.append(self._sess.run([output], {self._io.input: chunk})[0][:b])
            y = np.concatenate(parts)
        return torch.from_numpy(np.asarray(y, np.float32)).to(dev)


def onnx_network(data: bytes, spec: BundleSpec, where: str, device: torch.device) -> OnnxNet:
    """The :class:`OnnxNet` of an ONNX bundle's graph, checked against ``model.json``.

    Raises:
        OnnxInputError: input name/rank/time steps/channels/window size or output count
            differ from ``model.json``.
        OnnxOpsetError: an opset or operator onnxruntime cannot run.
        ModelBundleError: the bytes are not an ONNX model.
    """
    sess = _session(data, device, where)
    return OnnxNet(sess, _check_io(sess, spec, where))


# ---- export --------------------------------------------------------------------------------


class _Exported(nn.Module):
    """The network's methods as one module with a tuple of outputs (order = ``names``)."""

    def __init__(self, net: nn.Module, methods: Sequence[str]) -> None:
        super().__init__()
        self.net = net
        self.methods = list(methods)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(
            self.net(x) if m == "forward" else getattr(self.net, m)(x) for m in self.methods
        )


def _export_methods(spec: BundleSpec) -> dict[str, str]:
    """method -> ONNX output name of an exported bundle (the first is the blended one)."""
    if spec.architecture == "asos":
        return {"activations": "activations", "forward": "logit"}
    return {"forward": "output"}


def example_windows(spec: BundleSpec, batch: int, seed: int = 0) -> torch.Tensor:
    """A batch of normalized-looking windows (standard normal, clipped as the bundle clips)."""
    t, c = spec.inputs.time_steps, len(spec.inputs.features)
    n = spec.window.window + 2 * spec.window.context
    shape = (batch, t, c, n, n) if spec.inputs.layout == "TCHW" else (batch, t * c, n, n)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    clip = spec.normalization.clip
    return x.clamp(clip[0], clip[1]) if clip is not None else x


def onnx_bundle_spec(spec: BundleSpec, methods: dict[str, str] | None = None) -> BundleSpec:
    """The ``model.json`` of the ONNX twin of a torch bundle (architecture ``"onnx"``)."""
    m = methods if methods is not None else _export_methods(spec)
    return spec.model_copy(
        update={
            "architecture": ONNX_ARCHITECTURE,
            "arch_kwargs": {},
            "weights": "model.onnx",
            "weights_sha256": None,
            "onnx": OnnxSpec(input="input", outputs=m),
        }
    )


def onnx_graph_bytes(
    net: nn.Module, spec: BundleSpec, *, opset: int = DEFAULT_OPSET, metadata: bool = True
) -> bytes:
    """Export ``net`` (a bundle's torch network, eval mode, CPU) to ONNX bytes.

    Batch is the only dynamic axis; spatial size is ``window + 2 * context`` px. With
    ``metadata``, the ONNX bundle's ``model.json`` is embedded as :data:`METADATA_KEY`.
    """
    onnx = onnx_module()
    methods = _export_methods(spec)
    mod = _Exported(net, list(methods)).eval()
    names = list(methods.values())
    dyn = {name: {0: "batch"} for name in ["input", *names]}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarning on int(shape): spatial size is fixed
        torch.onnx.export(
            mod,
            (example_windows(spec, 2),),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects
            input_names=["input"],
            output_names=names,
            dynamic_axes=dyn,
            opset_version=opset,
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    if metadata:
        text = json.dumps(onnx_bundle_spec(spec, methods).model_dump(mode="json"))
        props = {METADATA_KEY: text, "geoxai.source_name": spec.name}
        props["geoxai.source_architecture"] = spec.architecture
        props["geoxai.source_weights_sha256"] = spec.weights_sha256 or ""
        onnx.helper.set_model_props(model, props)
        model.doc_string = f"geoxai bundle {spec.name!r} ({spec.architecture})"
    return bytes(model.SerializeToString())


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def read_onnx_file(path: Path) -> tuple[BundleSpec, bytes]:
    """``model.json`` (from the metadata) and bytes of a bare ``.onnx`` file made by
    :func:`export_onnx`.

    Raises:
        ModelBundleError: unreadable file, or no :data:`METADATA_KEY` metadata (wrap such a
            graph in a bundle directory with a ``model.json``).
    """
    onnx = onnx_module()
    try:
        data = path.read_bytes()
        model = onnx.load_from_string(data)
    except OSError as exc:
        raise ModelBundleError(f"Cannot read ONNX file {path}: {exc}.") from exc
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise ModelBundleError(f"{path} is not an ONNX model ({exc}).") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelBundleError(
            f"{path} carries no geoxai model.json (metadata {METADATA_KEY!r}); put it in a "
            'bundle folder beside a model.json with "architecture": "onnx" and '
            f'"weights": "{path.name}" (see the README, \'ONNX models\').'
        )
    try:
        spec = BundleSpec.model_validate(json.loads(props[METADATA_KEY]))
    except ValueError as exc:
        raise ModelBundleError(f"{path}: its embedded model.json is invalid: {exc}.") from exc
    return spec.model_copy(update={"weights": path.name}), data


RUNTIMES = ("torch", "auto", "onnxruntime")
"""What may run a bundle's forward pass (see :func:`forward_runtime`)."""


def forward_runtime(
    net: nn.Module, spec: BundleSpec, where: str, device: torch.device, runtime: str
) -> tuple[nn.Module, str]:
    """The network that runs a bundle's forward pass, and ``"torch"`` or ``"onnxruntime"``.

    An ONNX bundle's :class:`OnnxNet` always runs on onnxruntime. For torch networks,
    ``runtime``: ``"torch"``; ``"auto"``: the :func:`onnxruntime_twin` when ``device`` is the
    CPU and it agrees with torch (faster on CPU, ``benchmarks/bench_onnx.py``), else torch;
    ``"onnxruntime"``: the twin, or :class:`ModelBundleError` saying why not.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}.")
    if isinstance(net, OnnxNet):
        return net, "onnxruntime"
    if runtime == "torch" or (runtime == "auto" and device.type != "cpu"):
        return net, "torch"
    twin, why = onnxruntime_twin(net, spec, where)
    if twin is not None:
        return twin, "onnxruntime"
    if runtime == "onnxruntime":
        raise ModelBundleError(f"{where} cannot run on onnxruntime: {why}.")
    return net, "torch"


def onnxruntime_twin(
    net: nn.Module, spec: BundleSpec, where: str, *, atol: float = 1e-4
) -> tuple[OnnxNet | None, str]:
    """The forward pass of a torch bundle on onnxruntime (CPU), if it agrees with torch.

    Returns:
        ``(twin, reason)``: the :class:`OnnxNet` when its outputs on a check batch of two
        windows are within ``atol`` of torch's, else ``(None, why)`` (not exportable, export
        failed, or outputs differ): the caller keeps torch.
    """
    if spec.architecture not in EXPORTABLE:
        return None, f"architecture {spec.architecture!r} is not exported"
    try:
        data = onnx_graph_bytes(net, spec, metadata=False)
        twin = onnx_network(data, onnx_bundle_spec(spec), where, torch.device("cpu"))
        x = example_windows(spec, 2, seed=2)
        with torch.inference_mode():
            d = max_abs_diff(twin(x), net(x))
    except (ModelBundleError, RuntimeError, ValueError) as exc:
        return None, f"export failed: {exc}"
    if not d <= atol:
        return None, f"onnxruntime differs from torch by {d:.3g} > {atol:g}"
    return twin, f"onnxruntime agrees with torch to {d:.2g}"
