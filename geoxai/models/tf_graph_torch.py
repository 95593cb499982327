"""Torch execution of a parsed frozen TensorFlow graph (:mod:`geoxai.models.tf_graph`), bundles.

:class:`GraphModule` runs a :class:`~geoxai.models.tf_graph.GraphProgram` (TF's NHWC tensors as
NCHW torch tensors, TF's padding and broadcasting rules); :class:`TFGraphNet` is the ``tf-graph``
bundle architecture around it (one image in, graph inputs fed from its channels);
:func:`import_tf_bundle` makes such a bundle from a ``.pb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoxai.errors import GraphImportError, InvalidInputError
from geoxai.inference.windows import WindowParams
from geoxai.models.bundle import save_bundle
from geoxai.models.bundle_spec import BundleSpec, InputSpec, OutputSpec, SourceSpec
from geoxai.models.tf_graph import GraphProgram, read_graph

__all__ = ["GraphModule", "TFGraphNet", "import_tf_bundle"]

_NHWC_TO_NCHW = (0, 2, 3, 1)  # TF dimension i of a 4-D tensor is torch dimension _NHWC_TO_NCHW[i]


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


def import_tf_bundle(
    graph: str | Path,
    out: str | Path,
    *,
    features: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    url: str | None = None,
    licence: str | None = None,
    window_px: int = 256,
) -> Path:
    """Import a one-input frozen graph as a ``tf-graph`` bundle (safetensors + ``model.json``).

    Args:
        graph: the ``.pb`` file.
        out: bundle directory to create.
        features: names of the input channels, in order (default ``c0, c1, ...``).
        outputs: names of the output channels (default ``out0, out1, ...``).
        url, licence: recorded in ``model.json`` ``source`` with the graph's SHA-256.
        window_px: window core edge for windowed application.

    Raises:
        GraphImportError: see :func:`read_graph`; several graph inputs, or channel names that
            do not match the graph's input/output channels.
    """
    g = read_graph(graph)
    if len(g.program["inputs"]) != 1:
        raise GraphImportError(
            f"{graph}: the graph has inputs {list(g.input_channels)}; a tf-graph bundle feeds "
            "one image. Graphs with several inputs need a dedicated architecture (e.g. "
            "wri-dsen2-lite)."
        )
    c = next(iter(g.input_channels.values()))
    names = list(features) if features else [f"c{i}" for i in range(max(c, 0))]
    if c == -1 or len(names) != c:
        raise GraphImportError(
            f"{graph}: the graph's input takes {c} channels but {len(names)} feature names "
            f"were given ({names}); name every input channel, in order."
        )
    net = TFGraphNet(g.program)
    net.load_state_dict({f"graph.{k}": v for k, v in g.state_dict.items()}, strict=True)
    net.eval()
    try:
        lo, hi = net.reach()
        reach = max(-lo, hi)
    except GraphImportError:
        reach = 0
    with torch.no_grad():
        probe = net(torch.zeros(1, c, 2 * reach + 8, 2 * reach + 8))
    if isinstance(probe, tuple):
        raise GraphImportError(f"{graph}: the graph has several outputs; pick one (outputs=).")
    k = int(probe.shape[1])
    out_names = list(outputs) if outputs else [f"out{i}" for i in range(k)]
    if len(out_names) != k:
        raise GraphImportError(
            f"{graph}: the graph returns {k} channels but {len(out_names)} output names were given."
        )
    spec = BundleSpec(
        name=Path(graph).stem,
        architecture="tf-graph",
        weights="weights.safetensors",
        inputs=InputSpec(features=names, time_steps=1, layout="CHW"),
        window=WindowParams(window=window_px, stride=window_px, context=reach),
        output=OutputSpec(kind="regression", names=out_names),
        source=SourceSpec(file=Path(graph).name, sha256=g.sha256, url=url, licence=licence),
        description=f"Frozen TF graph, {g.n_weights} float weights (geoxai.models.tf_graph).",
    )
    return save_bundle(out, net, spec)
