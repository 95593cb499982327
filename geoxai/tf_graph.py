"""Frozen TensorFlow GraphDefs of small convolutional networks -> torch modules, without TensorFlow.

A frozen TF 1.x graph is a protobuf ``GraphDef``: a list of ``NodeDef`` (name, op, inputs,
attributes) whose weights are ``Const`` nodes holding ``TensorProto`` values. The protobuf is
parsed with the ``protobuf`` runtime and the compiled ``GraphDef``/``NodeDef``/``AttrValue``/
``TensorProto`` schema that ``tensorboardX`` ships (the same field numbers as TensorFlow's
``tensorflow/core/framework/*.proto``; no TensorFlow, no hand-written wire decoder).

:func:`read_graph` turns the file into a :class:`GraphProgram`: a JSON-serializable description
(graph inputs with their declared shapes, the nodes the outputs need in topological order,
integer constants such as paddings inline) plus a ``state_dict`` of the float constants (the
weights, in TensorFlow layout). :class:`GraphModule` runs a program with torch:

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
:func:`read_graph` before any compute. :meth:`GraphModule.reach` gives the spatial dependency
interval of the outputs (e.g. +-6 px for six 3x3 convolutions), which windowed application needs
to be exact (:func:`geoxai.superres.apply_windows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoxai.errors import GraphImportError, InvalidInputError

__all__ = [
    "SUPPORTED_OPS",
    "GraphProgram",
    "GraphModule",
    "TFGraphNet",
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
_NHWC_TO_NCHW = (0, 2, 3, 1)  # TF dimension i of a 4-D tensor is torch dimension _NHWC_TO_NCHW[i]


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
    from google.protobuf.message import DecodeError
    from tensorboardX.proto.graph_pb2 import GraphDef

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


# ---- execution ---------------------------------------------------------------------------------


def _mirror_index(n: int, before: int, after: int, symmetric: bool) -> torch.Tensor:
    """Indices of a dimension of size ``n`` mirror-padded by ``before``/``after``."""
    limit = n if symmetric else n - 1
    if before > limit or after > limit:
        raise InvalidInputError(
            f"MirrorPad of ({before}, {after}) needs a dimension of more than "
            f"{max(before, after) - (1 if symmetric else 0)} px, the input has {n}; feed a "
            "larger window."
        )
    i = torch.arange(-before, n + after)
    if symmetric:
        i = torch.where(i < 0, -i - 1, i)
        i = torch.where(i >= n, 2 * n - 1 - i, i)
    else:
        i = torch.where(i < 0, -i, i)
        i = torch.where(i >= n, 2 * (n - 1) - i, i)
    return i


class GraphModule(nn.Module):
    """Runs a :class:`GraphProgram`'s ``program`` with torch.

    Build it with ``GraphModule(program)`` (weights zero) and ``load_state_dict`` the program's
    ``state_dict``, or with :meth:`from_graph`. ``forward(*inputs)`` takes one ``(N, C, H, W)``
    float tensor per graph input, in ``program["inputs"]`` order, and returns ``(N, C', H', W')``
    (a tuple when the graph has several outputs).
    """

    def __init__(self, program: dict[str, Any]) -> None:
        super().__init__()
        self.program = program
        for spec in program["consts"].values():
            if "buffer" in spec:
                self.register_buffer(spec["buffer"], torch.zeros(spec["shape"]))
        self._layout: dict[str, str] = {}
        for i in program["inputs"]:
            self._layout[i["name"]] = "act"
        for name in program["consts"]:
            self._layout[name] = "const"
        for node in program["nodes"]:
            kinds = [self._layout[i] for i in node["inputs"]]
            self._layout[node["name"]] = "act" if "act" in kinds else "const"

    @classmethod
    def from_graph(cls, graph: GraphProgram) -> GraphModule:
        """A module holding the graph's weights."""
        m = cls(graph.program)
        m.load_state_dict(graph.state_dict, strict=True)
        return m.eval()

    def reach(self) -> tuple[int, int]:
        """``(lo, hi)``: output pixel ``j`` depends on input pixels ``j+lo .. j+hi`` (both
        spatial dimensions, all inputs, ignoring mirroring at the array edge); outputs must be
        as large as the inputs.

        Raises:
            GraphImportError: a strided convolution, or outputs of another size than the inputs.
        """
        prog = self.program
        span = {i["name"]: (0, 0) for i in prog["inputs"]}
        grow = {i["name"]: (0, 0) for i in prog["inputs"]}  # size change (H, W) vs the inputs
        for node in prog["nodes"]:
            acts = [i for i in node["inputs"] if i in span]
            if not acts:
                continue
            lo, hi = min(span[i][0] for i in acts), max(span[i][1] for i in acts)
            gh, gw = grow[acts[0]]
            op, a = node["op"], node["attrs"]
            if op == "MirrorPad":
                pads = self._const(node["inputs"][1])["value"]
                (bh, ah), (bw, aw) = pads[1], pads[2]
                lo, hi = lo - max(bh, bw), hi - min(bh, bw)
                gh, gw = gh + bh + ah, gw + bw + aw
            elif op == "Conv2D":
                if a["strides"] != [1, 1]:
                    raise GraphImportError(
                        f"Node {node['name']!r}: a strided Conv2D has no per-pixel reach; "
                        "windowed application needs stride 1."
                    )
                k = self._const(node["inputs"][1])["shape"][:2]
                ext = [(kk - 1) * d for kk, d in zip(k, a["dilations"], strict=True)]
                if a["padding"] == "SAME":
                    pad = [(e // 2, e - e // 2) for e in ext]
                elif a["padding"] == "EXPLICIT":
                    ep = a["explicit_paddings"]
                    pad = [(ep[2], ep[3]), (ep[4], ep[5])]
                else:
                    pad = [(0, 0), (0, 0)]
                lo = lo - max(p[0] for p in pad)
                hi = hi + max(e - p[0] for e, p in zip(ext, pad, strict=True))
                gh += pad[0][0] + pad[0][1] - ext[0]
                gw += pad[1][0] + pad[1][1] - ext[1]
            span[node["name"]], grow[node["name"]] = (lo, hi), (gh, gw)
        changed = [o for o in prog["outputs"] if grow.get(o, (0, 0)) != (0, 0)]
        if changed:
            raise GraphImportError(
                f"Graph outputs {changed} are not the size of the inputs; windowed application "
                "needs size-preserving graphs."
            )
        outs = [o for o in prog["outputs"] if o in span]
        return min(span[o][0] for o in outs), max(span[o][1] for o in outs)

    def _const(self, name: str) -> dict[str, Any]:
        """The constant behind ``name`` (through Identity nodes)."""
        nodes = {n["name"]: n for n in self.program["nodes"]}
        while name in nodes and nodes[name]["op"] == "Identity":
            name = nodes[name]["inputs"][0]
        spec = self.program["consts"].get(name)
        if spec is None:
            raise GraphImportError(f"{name!r} is not a constant of the graph.")
        return dict(spec)

    def _value(self, name: str, values: dict[str, torch.Tensor]) -> Any:
        if name in values:
            return values[name]
        spec = self.program["consts"][name]
        if "buffer" in spec:
            return getattr(self, spec["buffer"])
        return spec["value"]

    def _nchw_const(self, t: torch.Tensor, node: str) -> torch.Tensor:
        """A TF-layout constant operand of an element-wise op, laid out to broadcast on NCHW."""
        if t.dim() == 0:
            return t
        if t.dim() == 1:
            return t.reshape(-1, 1, 1)
        if t.dim() == 3:
            return t.permute(2, 0, 1)
        if t.dim() == 4:
            return t.permute(0, 3, 1, 2)
        raise GraphImportError(
            f"Node {node!r}: a constant operand of rank {t.dim()} cannot be broadcast against "
            "an NHWC image; ranks 0, 1, 3 and 4 are supported."
        )

    def forward(self, *inputs: torch.Tensor) -> Any:
        prog = self.program
        if len(inputs) != len(prog["inputs"]):
            raise InvalidInputError(
                f"The graph has {len(prog['inputs'])} inputs "
                f"{[i['name'] for i in prog['inputs']]}, got {len(inputs)} tensors."
            )
        values: dict[str, torch.Tensor] = {}
        for spec, x in zip(prog["inputs"], inputs, strict=True):
            c = int(spec["shape"][-1])
            if x.dim() != 4 or (c != -1 and x.shape[1] != c):
                raise InvalidInputError(
                    f"Graph input {spec['name']!r} takes (N, {c}, H, W) tensors (TF shape "
                    f"{spec['shape']}), got {tuple(x.shape)}."
                )
            values[spec["name"]] = x
        for node in prog["nodes"]:
            values[node["name"]] = self._run(node, values)
        outs = [values[o] for o in prog["outputs"]]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run(self, node: dict[str, Any], values: dict[str, torch.Tensor]) -> torch.Tensor:
        op, a, name = node["op"], node["attrs"], node["name"]
        args = [self._value(i, values) for i in node["inputs"]]
        if op == "Identity":
            return args[0]
        if op == "Relu":
            return torch.relu(args[0])
        if op == "Tanh":
            return torch.tanh(args[0])
        if op in ("Add", "AddV2", "Mul"):
            if self._layout[name] == "act":
                args = [
                    v if self._layout[i] == "act" else self._nchw_const(torch.as_tensor(v), name)
                    for i, v in zip(node["inputs"], args, strict=True)
                ]
            return args[0] + args[1] if op != "Mul" else args[0] * args[1]
        if op == "BiasAdd":
            return args[0] + args[1].reshape(1, -1, 1, 1)
        if op == "MirrorPad":
            x, pads = args[0], args[1]
            for tf_dim, (before, after) in enumerate(pads):
                if before == 0 and after == 0:
                    continue
                dim = _NHWC_TO_NCHW[tf_dim] if x.dim() == 4 else tf_dim
                idx = _mirror_index(x.shape[dim], before, after, a["mode"] == "SYMMETRIC")
                x = x.index_select(dim, idx.to(x.device))
            return x
        if op == "Conv2D":
            x, w = args[0], args[1].permute(3, 2, 0, 1)  # HWIO -> OIHW
            if a["padding"] == "SAME":
                pad = []
                for size, k, s, d in zip(
                    x.shape[2:], w.shape[2:], a["strides"], a["dilations"], strict=True
                ):
                    out = -(-size // s)
                    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                    pad.append((total // 2, total - total // 2))
                x = F.pad(x, (pad[1][0], pad[1][1], pad[0][0], pad[0][1]))
            elif a["padding"] == "EXPLICIT":
                ep = a["explicit_paddings"]
                x = F.pad(x, (ep[4], ep[5], ep[2], ep[3]))
            return F.conv2d(x, w, stride=a["strides"], dilation=a["dilations"])
        raise GraphImportError(f"Node {name!r}: op {op!r} is not supported.")  # pragma: no cover


class TFGraphNet(nn.Module):
    """A bundle architecture around a :class:`GraphModule`: one image in, graph inputs fed from it.

    Args:
        program: :attr:`GraphProgram.program`.
        feeds: per graph input (in ``program["inputs"]`` order), the channel indices of the
            bundle's input that it receives; default: the only graph input gets every channel.

    ``forward(x)``: ``x`` ``(N, C, H, W)`` -> the graph's output ``(N, C', H, W)``.
    """

    def __init__(
        self, program: dict[str, Any], feeds: Sequence[Sequence[int]] | None = None
    ) -> None:
        super().__init__()
        n_in = len(program["inputs"])
        if feeds is None:
            if n_in != 1:
                raise GraphImportError(
                    f"The graph has {n_in} inputs; say which channels feed each (feeds=...)."
                )
            c = int(program["inputs"][0]["shape"][-1])
            feeds = [list(range(c))] if c > 0 else [[]]
        if len(feeds) != n_in:
            raise GraphImportError(f"feeds lists {len(feeds)} inputs, the graph has {n_in}.")
        for spec, idx in zip(program["inputs"], feeds, strict=True):
            c = int(spec["shape"][-1])
            if c != -1 and c != len(idx) and idx:
                raise GraphImportError(
                    f"Graph input {spec['name']!r} takes {c} channels, feeds give {len(idx)}."
                )
        self.graph = GraphModule(program)
        self.feeds = [list(map(int, f)) for f in feeds]
        self.config = {"program": program, "feeds": self.feeds}

    def reach(self) -> tuple[int, int]:
        """See :meth:`GraphModule.reach`."""
        return self.graph.reach()

    def forward(self, x: torch.Tensor) -> Any:
        args = [x[:, f] if f else x for f in self.feeds]
        return self.graph(*args)
