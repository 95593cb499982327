"""Frozen TensorFlow graphs -> torch without TensorFlow (geoxai.models.tf_graph, tf_graph_torch).

Small graphs are written here as real GraphDef protobufs (TensorFlow's schema, as compiled in
tensorboardX) and their torch execution is compared with NumPy implementations of TensorFlow's
documented semantics (SAME padding's asymmetric rule, REFLECT vs SYMMETRIC mirror padding, NHWC
broadcasting). The real WRI graph is exercised in tests/test_superres.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoxai.errors import GraphImportError, ModelBundleError
from geoxai.models.tf_graph import SUPPORTED_OPS, read_graph
from geoxai.models.tf_graph_torch import GraphModule, import_tf_bundle

RNG = np.random.default_rng(0)


# ---- writing GraphDefs -------------------------------------------------------------------------


def _node(name: str, op: str, inputs=(), **attrs):
    from tensorboardX.proto.node_def_pb2 import NodeDef

    n = NodeDef(name=name, op=op)
    n.input.extend(inputs)
    if op not in ("Const", "Placeholder"):
        n.attr["T"].type = 1
    for k, v in attrs.items():
        a = n.attr[k]
        if isinstance(v, bytes):
            a.s = v
        elif isinstance(v, list):
            a.list.i.extend(v)
        elif isinstance(v, np.ndarray):
            t = a.tensor
            t.dtype = {np.float32: 1, np.int32: 3}[v.dtype.type]
            for d in v.shape:
                t.tensor_shape.dim.add().size = d
            t.tensor_content = v.tobytes()
        elif isinstance(v, tuple):  # a shape
            for d in v:
                a.shape.dim.add().size = d
        elif isinstance(v, int):
            a.type = v
    return n


def placeholder(name: str, channels: int):
    return _node(name, "Placeholder", dtype=1, shape=(-1, -1, -1, channels))


def const(name: str, value: np.ndarray):
    return _node(name, "Const", value=value, dtype=1 if value.dtype == np.float32 else 3)


def graph_bytes(*nodes) -> bytes:
    from tensorboardX.proto.graph_pb2 import GraphDef

    g = GraphDef()
    g.node.extend(nodes)
    g.versions.producer = 27  # as TensorFlow writes it, after the nodes
    return g.SerializeToString()


def run(data: bytes, *inputs: np.ndarray) -> np.ndarray:
    """Run a graph on NHWC arrays, return NHWC."""
    m = GraphModule.from_graph(read_graph(data))
    with torch.no_grad():
        y = m(*[torch.from_numpy(x).permute(0, 3, 1, 2) for x in inputs])
    return y.permute(0, 2, 3, 1).numpy()


# ---- NumPy references of TensorFlow's semantics ---------------------------------------------


def tf_conv2d(x, w, strides, dilations, padding):
    """NHWC x HWIO, TF rules: SAME pads total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0),
    the smaller half before."""
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    pads = []
    for size, k, s, d in zip((h, wd), (kh, kw), strides, dilations, strict=True):
        if padding == "VALID":
            pads.append((0, 0))
        else:
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh = (xp.shape[1] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (xp.shape[2] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    out = np.zeros((n, oh, ow, o), np.float64)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilations[0], j * dilations[1]
            patch = xp[:, y0 : y0 + (oh - 1) * strides[0] + 1 : strides[0]]
            patch = patch[:, :, x0 : x0 + (ow - 1) * strides[1] + 1 : strides[1]]
            out += patch @ w[i, j]
    return out


@pytest.mark.parametrize(
    ("padding", "strides", "dilations", "k"),
    [
        ("SAME", [1, 1], [1, 1], 3),
        ("VALID", [1, 1], [1, 1], 3),
        ("SAME", [2, 2], [1, 1], 4),  # even kernel, stride 2: the asymmetric SAME rule
        ("SAME", [1, 1], [2, 2], 3),
        ("VALID", [2, 1], [1, 2], 2),
    ],
)
def test_conv2d_matches_tensorflow_semantics(padding, strides, dilations, k):
    x = RNG.normal(size=(2, 11, 9, 3)).astype(np.float32)
    w = RNG.normal(size=(k, k, 3, 5)).astype(np.float32)
    b = RNG.normal(size=(5,)).astype(np.float32)
    data = graph_bytes(
        placeholder("x", 3),
        const("w", w),
        _node("w/read", "Identity", ["w"]),
        const("b", b),
        _node(
            "conv",
            "Conv2D",
            ["x", "w/read"],
            padding=padding.encode(),
            strides=[1, *strides, 1],
            dilations=[1, *dilations, 1],
            data_format=b"NHWC",
        ),
        _node("out", "BiasAdd", ["conv", "b"], data_format=b"NHWC"),
    )
    want = tf_conv2d(x, w, strides, dilations, padding) + b
    got = run(data, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
def test_mirror_pad_reflect_and_symmetric(mode):
    x = RNG.normal(size=(1, 5, 6, 2)).astype(np.float32)
    pads = np.array([[0, 0], [2, 1], [3, 0], [0, 0]], np.int32)
    data = graph_bytes(
        placeholder("x", 2),
        const("p", pads),
        _node("out", "MirrorPad", ["x", "p"], mode=mode.encode(), Tpaddings=3),
    )
    want = np.pad(x, pads, mode="reflect" if mode == "REFLECT" else "symmetric")
    np.testing.assert_array_equal(run(data, x), want)


def test_elementwise_ops_and_nhwc_broadcasting():
    """Relu, Tanh, Add/AddV2, Mul with a scalar, a per-channel and a full NHWC constant."""
    x = RNG.normal(size=(2, 4, 5, 3)).astype(np.float32)
    y = RNG.normal(size=(2, 4, 5, 3)).astype(np.float32)
    s = np.array(0.1, np.float32)
    c = RNG.normal(size=(3,)).astype(np.float32)
    full = RNG.normal(size=(1, 4, 5, 3)).astype(np.float32)
    data = graph_bytes(
        placeholder("x", 3),
        placeholder("y", 3),
        const("s", s),
        const("c", c),
        const("full", full),
        _node("r", "Relu", ["x"]),
        _node("m", "Mul", ["r", "s"]),
        _node("a", "Add", ["m", "c"]),
        _node("t", "Tanh", ["a"]),
        _node("m2", "Mul", ["full", "t"]),
        _node("out", "AddV2", ["y", "m2"]),
    )
    want = y + full * np.tanh(np.maximum(x, 0) * s + c)
    np.testing.assert_allclose(run(data, x, y), want, atol=1e-6)


def test_unknown_op_names_the_op_and_the_node():
    data = graph_bytes(
        placeholder("x", 3),
        _node("features/act", "Elu", ["x"]),
        _node("out", "Relu", ["features/act"]),
    )
    with pytest.raises(GraphImportError) as e:
        read_graph(data)
    msg = str(e.value)
    assert "'Elu'" in msg and "'features/act'" in msg and "Conv2D" in msg
    assert "Elu" not in SUPPORTED_OPS


def test_unsupported_attributes_are_typed_errors():
    bad_format = graph_bytes(
        placeholder("x", 3),
        const("w", np.zeros((1, 1, 3, 3), np.float32)),
        _node("out", "Conv2D", ["x", "w"], padding=b"SAME", data_format=b"NCHW"),
    )
    with pytest.raises(GraphImportError, match="NCHW"):
        read_graph(bad_format)
    bad_mode = graph_bytes(
        placeholder("x", 3),
        const("p", np.zeros((4, 2), np.int32)),
        _node("out", "MirrorPad", ["x", "p"], mode=b"EDGE"),
    )
    with pytest.raises(GraphImportError, match="EDGE"):
        read_graph(bad_mode)


def _small_net() -> bytes:
    w = RNG.normal(size=(3, 3, 2, 4)).astype(np.float32) * 0.3
    w2 = RNG.normal(size=(3, 3, 4, 2)).astype(np.float32) * 0.3
    pads = np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)
    return graph_bytes(
        placeholder("x", 2),
        const("p", pads),
        const("w", w),
        const("w2", w2),
        _node("pad", "MirrorPad", ["x", "p"], mode=b"REFLECT"),
        _node("c1", "Conv2D", ["pad", "w"], padding=b"VALID", strides=[1, 1, 1, 1]),
        _node("r", "Relu", ["c1"]),
        _node("c2", "Conv2D", ["r", "w2"], padding=b"SAME", strides=[1, 1, 1, 1]),
        _node("out", "Add", ["x", "c2"]),
    )


def test_truncated_file_is_a_typed_error(tmp_path):
    data = _small_net()
    cut = 0
    for n in range(1, len(data)):  # every prefix: a decode error or an incomplete graph
        with pytest.raises(GraphImportError, match="truncated|no graph nodes"):
            read_graph(data[:n])
        cut += 1
    assert cut == len(data) - 1
    f = tmp_path / "empty.pb"
    f.write_bytes(b"")
    with pytest.raises(GraphImportError, match="no graph nodes"):
        read_graph(f)
    with pytest.raises(GraphImportError, match="does not exist"):
        read_graph(tmp_path / "missing.pb")


def test_reach_of_a_padded_network():
    m = GraphModule.from_graph(read_graph(_small_net()))
    assert m.reach() == (-2, 2)  # two 3x3 convolutions


def test_tf_graph_bundle_round_trip(tmp_path):
    from geoxai.models.bundle import load_bundle

    pb = tmp_path / "net.pb"
    pb.write_bytes(_small_net())
    out = import_tf_bundle(pb, tmp_path / "bundle", features=["a", "b"], licence="MIT")
    b = load_bundle(out)
    assert b.spec.architecture == "tf-graph" and b.spec.source.licence == "MIT"
    assert b.spec.source.sha256 == read_graph(pb).sha256
    assert b.spec.window.context == 2
    x = RNG.normal(size=(1, 7, 8, 2)).astype(np.float32)
    want = run(pb.read_bytes(), x)
    with torch.no_grad():
        got = b.model(torch.from_numpy(x).permute(0, 3, 1, 2)[:, None])
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), want, atol=1e-6)
    with pytest.raises(GraphImportError, match="2 channels but 3"):
        import_tf_bundle(pb, tmp_path / "b2", features=["a", "b", "c"])


def test_dsen2_import_refuses_inputs_that_do_not_match_the_declared_bands(tmp_path):
    """A graph with a 9-band and a 6-band input is not WRI's: refused, naming the bands."""
    from geoxai.models.dsen2 import import_dsen2_lite

    w = np.zeros((1, 1, 9, 6), np.float32)
    pb = tmp_path / "other.pb"
    pb.write_bytes(
        graph_bytes(
            placeholder("Placeholder", 9),
            placeholder("Placeholder_1", 6),
            const("w", w),
            _node("c", "Conv2D", ["Placeholder", "w"], padding=b"SAME"),
            _node("Add_2", "Add", ["Placeholder_1", "c"]),
        )
    )
    with pytest.raises(GraphImportError, match=r"\[9, 6\] channels.*B02") as e:
        import_dsen2_lite(pb, tmp_path / "b")
    assert isinstance(e.value, ModelBundleError) and isinstance(e.value, ValueError)
    assert not (tmp_path / "b" / "model.json").exists()
