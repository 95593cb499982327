"""ONNX out (export-onnx) and in (architecture 'onnx' bundles, bare .onnx files), runtime choice,
and the typed errors of graphs that do not fit their model.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from geoxai.errors import ModelBundleError
from geoxai.geo.grid import TileSpec
from geoxai.inference.windows import required_halo
from geoxai.models.bundle import MODEL_JSON, load_bundle, save_bundle
from geoxai.models.bundle_spec import BundleSpec
from geoxai.models.onnx import METADATA_KEY, OnnxInputError, OnnxOpsetError
from geoxai.models.onnx_export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

BANDS = ["B02", "B03", "B04", "B08"]


def _spec(arch: str, **kw) -> BundleSpec:
    doc = {
        "name": f"tiny {arch}",
        "architecture": arch,
        "weights": "weights.safetensors",
        "inputs": {"features": BANDS, "time_steps": 1, "layout": "CHW"},
        "window": {"window": 32, "stride": 16, "context": 0},
        "output": {"kind": "probability", "names": ["p"], "transform": "sigmoid"},
        **kw,
    }
    return BundleSpec.model_validate(doc)


def _tiny(kind: str):
    """(network, spec) of each exportable bundle kind, seeded."""
    from geoxai.models.asos_net import ASOSNet
    from geoxai.models.backbones import ResNet18Classifier, SimpleCNN
    from geoxai.models.unet import TemporalUNet, UNet2d
    from geoxai.xai.asos import bundle_spec

    torch.manual_seed(0)
    if kind == "temporal_unet":
        net = TemporalUNet(len(BANDS), 6, embed=4, base=4, depth=2)
        spec = _spec(
            kind,
            inputs={"features": BANDS, "time_steps": 6, "layout": "TCHW"},
            window={"window": 32, "stride": 16, "context": 8},
            normalization={"kind": "affine", "offset": [0.1] * 4, "scale": [0.2] * 4},
        )
    elif kind == "asos":
        net = ASOSNet(in_bands=10, k=2, width=4, head_width=4)
        spec = bundle_spec(net, window=32, stride=16, context=4)
    elif kind == "unet2d":
        net, spec = UNet2d(len(BANDS), base=4, depth=2), _spec(kind)
    else:
        classes = {"output": {"kind": "class_probabilities", "names": ["a", "b", "c"]}}
        if kind == "scene_simple_cnn":
            net = SimpleCNN(len(BANDS), 3, width=4)
        else:
            net = ResNet18Classifier(len(BANDS), 3, bands=BANDS)
        spec = _spec(kind, **classes)
        spec = spec.model_copy(
            update={"output": spec.output.model_copy(update={"transform": "softmax"})}
        )
    return net.eval(), spec


def _cube(features, t: int, halo: int, core: int = 60) -> xr.DataArray:
    tile = TileSpec(32631, 96, 938, halo, tile_size_m=core * 10)
    h = tile.shape[0]
    y, x = tile.coords()
    data = np.random.default_rng(0).random((t, len(features), h, h), dtype=np.float32)
    data[:, :, 5:9, 20:30] = np.nan  # a cloud: nodata in both runtimes
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"band": list(features), "y": y, "x": x},
        attrs={
            "crs": tile.crs,
            "transform": list(tile.transform)[:6],
            "tile_id": tile.id,
            "halo_px": halo,
            "resolution_m": 10,
        },
    )


KINDS = ["temporal_unet", "asos", "unet2d", "scene_simple_cnn", "scene_resnet18"]


@pytest.mark.parametrize("kind", KINDS)
def test_export_is_checked_carries_model_json_and_matches_torch(kind, tmp_path):
    net, spec = _tiny(kind)
    bundle = save_bundle(tmp_path / "b", net, spec)
    rep = export_onnx(bundle, tmp_path / "out" / "m.onnx")
    assert max(rep["max_abs_diff"].values()) <= 1e-4
    model = onnx.load(rep["out"])
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    embedded = json.loads(meta[METADATA_KEY])
    saved = json.loads((bundle / MODEL_JSON).read_text())
    for key in ("inputs", "normalization", "window", "output", "name"):
        assert embedded[key] == saved[key], key
    assert embedded["architecture"] == "onnx"
    assert meta["geoxai.source_weights_sha256"] == saved["weights_sha256"]
    # the .onnx file is a bundle on its own; a batch size other than the export's
    torch_b, onnx_b = load_bundle(bundle), load_bundle(rep["out"])
    assert onnx_b.runtime == "onnxruntime" and onnx_b.spec == torch_b.spec.model_copy(
        update={
            "architecture": "onnx",
            "arch_kwargs": {},
            "weights": "m.onnx",
            "weights_sha256": None,
            "onnx": onnx_b.spec.onnx,
        }
    )
    n = spec.window.window + 2 * spec.window.context
    x = torch.rand(5, spec.inputs.time_steps, len(spec.inputs.features), n, n)
    with torch.inference_mode():
        for method in ["forward", *(["activations"] if kind == "asos" else [])]:
            want = torch_b.callable(method)(x)
            got = onnx_b.callable(method)(x)
            assert got.shape == want.shape and got.shape[0] == 5
            assert float((got - want).abs().max()) <= 1e-4, method


def test_tile_prediction_onnx_equals_torch_and_auto_runtime(tmp_path):
    """Same lattice windows and blending: a bundle's tile prediction through onnxruntime (the
    exported file, and runtime='auto' on CPU) equals torch's to 1e-4, NaN where torch's is."""
    net, spec = _tiny("temporal_unet")
    bundle = save_bundle(tmp_path / "b", net, spec)
    export_onnx(bundle, tmp_path / "m.onnx")
    cube = _cube(BANDS, 6, required_halo(32, 16, 8, core_px=60))
    ref = load_bundle(bundle).predict_dataset(cube)["prediction"].values
    auto = load_bundle(bundle, runtime="auto")
    assert auto.runtime == "onnxruntime" and isinstance(auto.net, type(net))
    for b in (load_bundle(tmp_path / "m.onnx"), auto):
        got = b.predict_dataset(cube)["prediction"].values
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        assert np.isfinite(ref).mean() > 0.3
        assert np.nanmax(np.abs(got - ref)) <= 1e-4
    assert load_bundle(bundle, runtime="torch").runtime == "torch"


def test_third_party_graph_wrapped_with_a_short_model_json(tmp_path):
    """A graph not made by torch (onnx.helper), fixed batch 1, its own input/output names:
    a 4-line model.json makes it a bundle; a per-pixel model blends to itself exactly."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[[[0.5]], [[-1.0]], [[2.0]], [[0.25]]]], np.float32)  # (1, 4, 1, 1)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["pixels", "w", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["water"]),
        ],
        "third_party",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 4, 40, 40])],
        [helper.make_tensor_value_info("water", TensorProto.FLOAT, [1, 1, 40, 40])],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([0.1], np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    d = tmp_path / "water"
    d.mkdir()
    onnx.save(model, d / "water.onnx")
    (d / MODEL_JSON).write_text(
        json.dumps(
            {
                "name": "water",
                "architecture": "onnx",
                "weights": "water.onnx",
                "inputs": {"features": BANDS, "time_steps": 1, "layout": "CHW"},
                "window": {"window": 32, "stride": 16, "context": 4},
                "output": {"kind": "probability", "names": ["water"]},
            }
        )
    )
    b = load_bundle(d)
    assert b.runtime == "onnxruntime" and b.net.config["onnx_input"] == "pixels"
    cube = _cube(["B05", *BANDS], 1, required_halo(32, 16, 4, core_px=60))
    got = b.predict_dataset(cube)["prediction"].values[0]
    x = cube.sel(band=BANDS).values[0]
    want = 1 / (1 + np.exp(-(np.tensordot(w[0, :, 0, 0], x, axes=1) + 0.1)))
    ok = np.isfinite(got)
    assert ok.mean() > 0.5 and np.array_equal(ok, np.isfinite(want) & ok)
    assert np.abs(got[ok] - want[ok]).max() <= 1e-6


def _graph(tmp_path: Path, *, shape, name="input", opset=17, n_in=1, ir=8) -> Path:
    """A bundle directory around an Identity-like graph (Relu) with the given input shape."""
    from onnx import TensorProto, helper

    ins = [
        helper.make_tensor_value_info(f"{name}{i or ''}", TensorProto.FLOAT, shape)
        for i in range(n_in)
    ]
    graph = helper.make_graph(
        [helper.make_node("Relu", [name], ["out"])],
        "g",
        ins,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    d = tmp_path / "g"
    d.mkdir()
    onnx.save(model, d / "m.onnx")
    spec = _spec(
        "onnx", weights="m.onnx", output={"kind": "regression", "names": ["a", "b", "c", "d"]}
    )
    (d / MODEL_JSON).write_text(json.dumps(spec.model_dump(mode="json")))
    return d


@pytest.mark.parametrize(
    ("kw", "error", "words"),
    [
        (
            {"shape": ["b", 4, 32, 32], "name": "x", "n_in": 2},
            OnnxInputError,
            ["2 inputs", '"input"'],
        ),
        ({"shape": ["b", 5, 32, 32]}, OnnxInputError, ["channels", "5", "features"]),
        (
            {"shape": ["b", 4, 24, 24]},
            OnnxInputError,
            ["height 24", "window.window + 2 * window.context = 24"],
        ),
        ({"shape": ["b", 1, 4, 32, 32]}, OnnxInputError, ["rank 5", "TCHW"]),
        ({"shape": ["b", 4, 32, 32], "opset": 30}, OnnxOpsetError, ["opset", "opset_version=17"]),
        ({"shape": ["b", 4, 32, 32], "opset": 5}, OnnxOpsetError, ["opset 5", "convert_version"]),
    ],
)
def test_graphs_that_do_not_fit_get_typed_errors_naming_the_fix(tmp_path, kw, error, words):
    d = _graph(tmp_path, **kw)
    with pytest.raises(error) as e:
        load_bundle(d)
    assert isinstance(e.value, ModelBundleError | ValueError)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_named_input_and_outputs_are_checked(tmp_path):
    d = _graph(tmp_path, shape=["b", 4, 32, 32])
    doc = json.loads((d / MODEL_JSON).read_text())
    for onnx_cfg, word in (
        ({"input": "pixels"}, "'pixels'"),
        ({"outputs": {"forward": "logits"}}, "'logits'"),
        ({"outputs": {"eval": "out"}}, "not a torch.nn.Module attribute"),
    ):
        (d / MODEL_JSON).write_text(json.dumps({**doc, "onnx": onnx_cfg}))
        with pytest.raises(OnnxInputError, match=word):
            load_bundle(d)
    (d / MODEL_JSON).write_text(json.dumps({**doc, "output": {"names": ["one"]}}))
    with pytest.raises(OnnxInputError, match="4 maps"):
        load_bundle(d)  # fixed 4 channels out, one name
    (d / "m.onnx").write_bytes(b"not a graph")
    (d / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(ModelBundleError, match="not an ONNX model"):
        load_bundle(d)


def test_bare_onnx_without_metadata_and_unexportable_bundles(tmp_path):
    d = _graph(tmp_path, shape=["b", 4, 32, 32])
    with pytest.raises(ModelBundleError, match="model.json"):
        load_bundle(d / "m.onnx")
    from geoxai.models.spacex_nets import SpacexGenerators
    from geoxai.train.spacex import save_spacex_bundle

    _, aspec = _tiny("asos")
    sx = save_spacex_bundle(tmp_path / "sx", SpacexGenerators(in_bands=10, base=4, n_res=1), aspec)
    with pytest.raises(ModelBundleError, match="export-onnx writes"):
        export_onnx(sx, tmp_path / "sx.onnx")
    with pytest.raises(ModelBundleError, match="onnxruntime"):
        load_bundle(sx, runtime="onnxruntime")


def test_cli_export_onnx_and_show(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    net, spec = _tiny("unet2d")
    bundle = save_bundle(tmp_path / "b", net, spec)
    out = tmp_path / "u.onnx"
    r = CliRunner().invoke(app, ["models", "export-onnx", str(bundle), str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output.strip().splitlines()[-1])
    assert rep["out"] == str(out) and rep["max_abs_diff"]["forward"] <= 1e-4
    r = CliRunner().invoke(app, ["models", "show", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["runtime"] == "onnxruntime"
