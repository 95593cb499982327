"""Frozen TensorFlow GraphDefs of small convolutional networks -> torch modules, without TensorFlow.

A frozen TF 1.x graph is a protobuf ``GraphDef``: a list of ``NodeDef`` (name, op, inputs,
attributes) whose weights are ``Const`` nodes holding ``TensorProto`` values. The protobuf is
parsed with the ``protobuf`` runtime and the compiled ``GraphDef``/``NodeDef``/``AttrValue``/
``TensorProto`` schema that ``tensorboardX`` ships (the same field numbers as TensorFlow's
``tensorflow/core/framework/*.proto``; no TensorFlow, no hand-written wire decoder).

:func:`read_graph` turns the file into a :class:`GraphProgram`: a JSON-serializable description
(graph inputs with their declared shapes, the nodes the outputs need in topological order,
integer constants such as paddings inline) plus a ``state_dict`` of the float constants (the
weights, in TensorFlow layout). :class:`geoxai.models.tf_graph_torch.GraphModule` runs a
program with torch:

=========== ==================================================================================
op          semantics (TensorFlow's, NHWC graph tensors run as NCHW torch tensors)
=========== ==================================================================================
Placeholder a graph input, ``(N, H, W, C)`` in TF, fed as ``(N, C, H, W)``
Const       a tensor (float: a buffer of the state_dict; integer: inline in the program)
Identity    pass-through (``ReadVariableOp`` leftovers of frozen variables)
Conv2D      ``strides``/``dilations`` NHWC, ``padding`` SAME (TF's asymmetric rule), VALID or
            EXPLICIT; filter ``(kh, kw, in, out)``; ``data_format`` NHWC only
BiasAdd     per-channel bias, NHWC
MirrorPad   ``REFLECT`` (edge not repeated) or ``SYMMETRIC`` (edge repeated), any dimension
Relu, Tanh  element-wise
Add, AddV2, ``Mul``: element-wise with TF broadcasting; a constant operand of rank 0, 1 (per
Mul         channel), 3 (HWC) or 4 (NHWC) is laid out for NCHW
=========== ==================================================================================

Anything else is a :class:`~geoxai.errors.GraphImportError` naming the op and the node, raised by
:func:`read_graph` before any compute. ``GraphModule.reach`` gives the spatial dependency
interval of the outputs (e.g. +-6 px for six 3x3 convolutions), which windowed application needs
to be exact (:func:`geoxai.temporal.superres.apply_windows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from geoxai.errors import GraphImportError

__all__ = [
    "SUPPORTED_OPS",
    "GraphProgram",
    "read_graph",
    "parse_graphdef",
]

SUPPORTED_OPS = (
    "Placeholder",
    "Const",
    "Identity",
    "Conv2D",
    "BiasAdd",
    "MirrorPad",
    "Relu",
    "Tanh",
    "Add",
    "AddV2",
    "Mul",
)
"""Ops :func:`read_graph` maps to torch; any other op is refused with its node name."""

_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64 = 1, 2, 3, 9
_NP_DTYPES = {_DT_FLOAT: "<f4", _DT_DOUBLE: "<f8", _DT_INT32: "<i4", _DT_INT64: "<i8"}
_DT_NAMES = {_DT_FLOAT: "float32", _DT_DOUBLE: "float64", _DT_INT32: "int32", _DT_INT64: "int64"}


@dataclass(frozen=True)
class GraphProgram:
    """A parsed graph, ready for :class:`GraphModule`.

    Attributes:
        program: JSON-serializable dict with ``inputs`` (``[{"name", "shape"}]``, TF NHWC shapes,
            -1 = any), ``outputs`` (node names), ``nodes`` (``[{"name", "op", "inputs",
            "attrs"}]`` in topological order, only what the outputs need) and ``consts``
            (node name -> ``{"shape", "buffer"}`` for float tensors, ``{"value"}`` for integers).
        state_dict: buffer name -> float32 tensor in TensorFlow layout (the weights).
        sha256: SHA-256 of the GraphDef bytes.
        n_weights: number of float values in the constants.
    """

    program: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    sha256: str
    n_weights: int

    @property
    def input_channels(self) -> dict[str, int]:
        """Graph input name -> declared channel count (last NHWC dimension; -1 = undeclared)."""
        return {i["name"]: int(i["shape"][-1]) for i in self.program["inputs"]}


def parse_graphdef(data: bytes, where: str = "graph") -> Any:
    """``data`` as a TensorFlow ``GraphDef`` message (tensorboardX's compiled schema).

    Raises:
        GraphImportError: not a protobuf GraphDef (truncated or another file), or no nodes.
    """
    from tensorboardX.proto.graph_pb2 import GraphDef  # lazy: tensorboardX loads in seconds

    g = GraphDef()
    try:
        g.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise GraphImportError(
            f"{where} ({len(data)} bytes) is not a readable TensorFlow GraphDef ({exc}): the file "
            "is truncated or is not a frozen graph (.pb). Download it again and compare its "
            "SHA-256 with the release."
        ) from exc
    if len(g.node) == 0:
        raise GraphImportError(
            f"{where} ({len(data)} bytes) holds no graph nodes; it is empty or not a GraphDef."
        )
    # TensorFlow writes the function library (field 2, even when empty) and/or the versions
    # (field 4) after the nodes; a file cut between two nodes still parses, but lacks both.
    has_library = any(f.field_number == 2 for f in UnknownFieldSet(g))
    if not (has_library or g.HasField("versions")):
        raise GraphImportError(
            f"{where} ({len(data)} bytes) ends after node {g.node[-1].name!r} without the "
            "library/versions TensorFlow writes after the nodes: the file is truncated. "
            "Download it again and compare its SHA-256 with the release."
        )
    return g


def _attr(node: Any, key: str, default: Any = None) -> Any:
    if key not in node.attr:
        return default
    a = node.attr[key]
    kind = a.WhichOneof("value")
    if kind == "s":
        return a.s.decode("utf-8", "replace")
    if kind == "list":
        return [int(i) for i in a.list.i]
    if kind == "shape":
        return [int(d.size) for d in a.shape.dim] if not a.shape.unknown_rank else None
    return getattr(a, kind) if kind else default


def _tensor(node: Any, where: str) -> np.ndarray:
    t = node.attr["value"].tensor
    dtype = int(t.dtype)
    name = node.name
    if dtype not in _NP_DTYPES:
        raise GraphImportError(
            f"{where}: Const node {name!r} has TensorFlow dtype {dtype}; only float32/float64/"
            "int32/int64 constants are supported."
        )
    shape = tuple(int(d.size) for d in t.tensor_shape.dim)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if t.tensor_content:
        raw = np.frombuffer(t.tensor_content, dtype=_NP_DTYPES[dtype])
    else:
        field_name = {
            _DT_FLOAT: "float_val",
            _DT_DOUBLE: "double_val",
            _DT_INT32: "int_val",
            _DT_INT64: "int64_val",
        }
        raw = np.asarray(list(getattr(t, field_name[dtype])), dtype=_NP_DTYPES[dtype])
        if raw.size == 0:
            raw = np.zeros(n, dtype=_NP_DTYPES[dtype])
        elif raw.size < n:  # TF repeats the last value to fill the tensor
            raw = np.concatenate([raw, np.full(n - raw.size, raw[-1], raw.dtype)])
    if raw.size != n:
        raise GraphImportError(
            f"{where}: Const node {name!r} declares shape {list(shape)} ({n} values) but holds "
            f"{raw.size}; the file is truncated or corrupt."
        )
    return raw.reshape(shape)


def _check_attrs(node: Any, where: str) -> dict[str, Any]:
    op, name = node.op, node.name
    dt = _attr(node, "T", _DT_FLOAT)
    if op not in ("Const", "Placeholder") and dt != _DT_FLOAT:
        raise GraphImportError(
            f"{where}: node {name!r} ({op}) computes in TensorFlow dtype "
            f"{_DT_NAMES.get(dt, dt)}; only float32 graphs are supported."
        )
    attrs: dict[str, Any] = {}
    if op in ("Conv2D", "BiasAdd"):
        fmt = _attr(node, "data_format", "NHWC")
        if fmt != "NHWC":
            raise GraphImportError(
                f"{where}: node {name!r} ({op}) has data_format {fmt!r}; only NHWC graphs "
                "(TensorFlow's default) are supported."
            )
    if op == "Conv2D":
        pad = _attr(node, "padding", "VALID")
        if pad not in ("SAME", "VALID", "EXPLICIT"):
            raise GraphImportError(f"{where}: Conv2D node {name!r} has padding {pad!r}.")
        strides = _attr(node, "strides") or [1, 1, 1, 1]
        dil = _attr(node, "dilations") or [1, 1, 1, 1]
        if strides[0] != 1 or strides[3] != 1 or dil[0] != 1 or dil[3] != 1:
            raise GraphImportError(
                f"{where}: Conv2D node {name!r} strides {strides} / dilations {dil} act on the "
                "batch or channel dimension; only spatial strides are supported."
            )
        attrs = {"padding": pad, "strides": strides[1:3], "dilations": dil[1:3]}
        if pad == "EXPLICIT":
            attrs["explicit_paddings"] = _attr(node, "explicit_paddings") or [0] * 8
    elif op == "MirrorPad":
        mode = _attr(node, "mode", "")
        if mode not in ("REFLECT", "SYMMETRIC"):
            raise GraphImportError(
                f"{where}: MirrorPad node {name!r} has mode {mode!r}; REFLECT or SYMMETRIC."
            )
        attrs = {"mode": mode}
    elif op == "Placeholder":
        if _attr(node, "dtype", _DT_FLOAT) != _DT_FLOAT:
            raise GraphImportError(f"{where}: graph input {name!r} is not float32.")
        shape = _attr(node, "shape")
        if shape is None or len(shape) != 4:
            raise GraphImportError(
                f"{where}: graph input {name!r} has shape {shape}; only 4-D NHWC image inputs "
                "(N, H, W, C) are supported."
            )
        attrs = {"shape": shape}
    return attrs


def _source(ref: str) -> str:
    """``"node:0"`` / ``"node"`` -> ``"node"``; other output indices are refused by the caller."""
    return ref.split(":")[0]


def read_graph(path: str | Path | bytes, *, outputs: Sequence[str] | None = None) -> GraphProgram:
    """Parse a frozen GraphDef into a :class:`GraphProgram` (no TensorFlow needed).

    Args:
        path: the ``.pb`` file, or its bytes.
        outputs: node names to compute; default the graph's sinks (nodes nothing reads).

    Raises:
        GraphImportError: missing/unreadable/truncated file, an op outside
            :data:`SUPPORTED_OPS` (naming op and node), unsupported attributes, a node reading
            a missing node, or an output that is not in the graph.
    """
    if isinstance(path, bytes):
        data, where = path, "graph bytes"
    else:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise GraphImportError(f"Graph file {p} does not exist; pass the path of the .pb.")
        data = p.read_bytes()
    g = parse_graphdef(data, where)
    nodes = {}
    for n in g.node:
        if n.name in nodes:
            raise GraphImportError(f"{where}: node name {n.name!r} appears twice.")
        nodes[n.name] = n
    readers: set[str] = set()
    for n in g.node:
        for ref in n.input:
            if ref.startswith("^"):
                continue
            src = _source(ref)
            if src not in nodes:
                raise GraphImportError(
                    f"{where}: node {n.name!r} ({n.op}) reads {ref!r}, which is not in the "
                    f"graph ({len(nodes)} nodes): the file is truncated or not a complete frozen "
                    "graph."
                )
            if ":" in ref and ref.split(":")[1] not in ("", "0"):
                raise GraphImportError(
                    f"{where}: node {n.name!r} reads output {ref!r}; only single-output ops are "
                    "supported."
                )
            readers.add(src)
    if outputs is None:
        outs = [n.name for n in g.node if n.name not in readers and n.op not in ("Const", "NoOp")]
    else:
        outs = [_source(o) for o in outputs]
        missing = [o for o in outs if o not in nodes]
        if missing:
            raise GraphImportError(
                f"{where}: outputs {missing} are not nodes of the graph; it has e.g. "
                f"{[n.name for n in g.node][-5:]}."
            )
    if not outs:
        raise GraphImportError(f"{where}: the graph has no output node.")

    order: list[str] = []  # depth-first post-order from the outputs = topological order
    state: dict[str, int] = {}
    for out in outs:
        stack: list[tuple[str, bool]] = [(out, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise GraphImportError(f"{where}: node {name!r} is part of a cycle.")
            state[name] = 1
            stack.append((name, True))
            for ref in reversed(nodes[name].input):
                if not ref.startswith("^") and state.get(_source(ref)) != 2:
                    stack.append((_source(ref), False))

    unknown = [(nodes[n].op, n) for n in order if nodes[n].op not in SUPPORTED_OPS]
    if unknown:
        op, name = unknown[0]
        raise GraphImportError(
            f"{where}: node {name!r} uses op {op!r}, which the importer does not support "
            f"({len(unknown)} such node(s)). Supported ops: {', '.join(SUPPORTED_OPS)}."
        )

    prog_nodes, inputs, consts = [], [], {}
    state_dict: dict[str, torch.Tensor] = {}
    n_weights = 0
    for name in order:
        n = nodes[name]
        attrs = _check_attrs(n, where)
        if n.op == "Placeholder":
            inputs.append({"name": name, "shape": attrs["shape"]})
            continue
        if n.op == "Const":
            value = _tensor(n, where)
            if value.dtype.kind == "f":
                buf = f"c{len(state_dict)}"
                state_dict[buf] = torch.from_numpy(value.astype(np.float32).copy())
                consts[name] = {"shape": list(value.shape), "buffer": buf}
                n_weights += value.size
            else:
                consts[name] = {"value": value.astype(np.int64).tolist()}
            continue
        ins = [_source(r) for r in n.input if not r.startswith("^")]
        prog_nodes.append({"name": name, "op": n.op, "inputs": ins, "attrs": attrs})
    if not inputs:
        raise GraphImportError(f"{where}: the graph has no Placeholder input.")
    position = {n.name: k for k, n in enumerate(g.node)}
    inputs.sort(key=lambda i: position[i["name"]])  # the graph's order, not the visiting order
    program = {"inputs": inputs, "outputs": outs, "nodes": prog_nodes, "consts": consts}
    return GraphProgram(program, state_dict, hashlib.sha256(data).hexdigest(), n_weights)
