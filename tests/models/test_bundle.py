"""Model bundles: safe loading, model.json schema, checks against a cube before any work."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from geoxai.errors import ModelBundleError
from geoxai.geo.grid import TileSpec
from geoxai.inference.predict import predict_windows
from geoxai.inference.windows import WindowParams, required_halo
from geoxai.models.bundle import (
    MODEL_JSON,
    load_bundle,
    register_architecture,
    save_bundle,
    wrap_module,
)
from geoxai.models.bundle_spec import BundleSpec
from geoxai.models.unet import TemporalUNet

FEATURES = ["B02", "B04", "B08", "NDVI"]
T = 4


def _spec(**kw) -> BundleSpec:
    doc = {
        "name": "test tree cover",
        "architecture": "temporal_unet",
        "weights": "weights.safetensors",
        "inputs": {"features": FEATURES, "time_steps": T},
        "window": {"window": 16, "stride": 8, "context": 4},
        "output": {"kind": "probability", "names": ["tree_cover"], "transform": "sigmoid"},
        **kw,
    }
    return BundleSpec.model_validate(doc)


def _net() -> TemporalUNet:
    torch.manual_seed(0)
    return TemporalUNet(len(FEATURES), T, embed=4, base=4).eval()


def _cube(halo: int | None = None, *, bands=None, t=T, size=None) -> xr.DataArray:
    need = required_halo(16, 8, 4, core_px=60)
    halo = need if halo is None else halo
    tile = TileSpec(32631, 96, 938, halo, tile_size_m=600)  # 60 px cores keep tests small
    h = size or tile.shape[0]
    y, x = tile.coords()
    rng = np.random.default_rng(0)
    bands = bands or ["B03", *reversed(FEATURES)]  # extra feature, other order
    data = rng.standard_normal((t, len(bands), h, h)).astype(np.float32)
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"band": bands, "y": y[:h], "x": x[:h]},
        name="features",
        attrs={
            "crs": tile.crs,
            "transform": list(tile.transform)[:6],
            "tile_id": tile.id,
            "halo_px": halo,
            "resolution_m": 10,
        },
    )


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    return save_bundle(tmp_path / "b", _net(), _spec())


def test_round_trip_predicts_like_the_network(bundle_dir):
    b = load_bundle(bundle_dir)
    doc = json.loads((bundle_dir / MODEL_JSON).read_text())
    assert doc["arch_kwargs"]["in_features"] == 4 and len(doc["weights_sha256"]) == 64
    cube = _cube()
    out = b.predict(cube, pad_edges=True)
    # same thing by hand: select features by name, raw network + sigmoid
    x = cube.sel(band=FEATURES).values
    net = _net()
    want = predict_windows(
        lambda w: torch.sigmoid(net(w)), x, cube.attrs["transform"], params=b.window_params()
    )
    np.testing.assert_allclose(out.values, want.values, atol=1e-6)
    assert out.values.shape == (1, *cube.shape[-2:])
    assert np.nanmin(out.values) >= 0 and np.nanmax(out.values) <= 1


def test_zip_bundle_loads(bundle_dir, tmp_path):
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w") as f:
        for p in bundle_dir.iterdir():
            f.write(p, arcname=f"b/{p.name}")
    b = load_bundle(z)
    assert b.spec.name == "test tree cover"


def test_state_dict_pt_is_accepted(tmp_path):
    d = tmp_path / "pt"
    d.mkdir()
    torch.save(_net().state_dict(), d / "weights.pt")
    spec = _spec(weights="weights.pt", arch_kwargs=_net().config)
    (d / MODEL_JSON).write_text(spec.model_dump_json())
    b = load_bundle(d)
    assert isinstance(b.net, TemporalUNet)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_untrusted_pickle_is_refused_not_run(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    marker = tmp_path / "pwned"
    state = dict(_net().state_dict())
    state["payload"] = _Evil(marker)
    with open(d / "weights.pt", "wb") as f:
        pickle.dump(state, f)
    torch.save(state, d / "weights2.pt")
    for name in ("weights.pt", "weights2.pt"):
        spec = _spec(weights=name, arch_kwargs=_net().config)
        (d / MODEL_JSON).write_text(spec.model_dump_json())
        with pytest.raises(ModelBundleError, match="refused|corrupt"):
            load_bundle(d)
    assert not marker.exists(), "the pickle payload must never run"


def test_corrupt_and_tampered_weights(bundle_dir):
    w = bundle_dir / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelBundleError, match="SHA-256"):
        load_bundle(bundle_dir)
    doc = json.loads((bundle_dir / MODEL_JSON).read_text())
    doc["weights_sha256"] = None
    (bundle_dir / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(ModelBundleError, match="corrupt or truncated"):
        load_bundle(bundle_dir)


def test_wrong_band_count_in_weights_vs_model_json(tmp_path):
    torch.manual_seed(0)
    net = TemporalUNet(5, T, embed=4, base=4)  # trained on 5 features
    d = save_bundle(tmp_path / "b", net, _spec())  # but model.json lists 4
    with pytest.raises(ModelBundleError, match="in_features=5 but model.json lists 4 features"):
        load_bundle(d)
    doc = json.loads((d / MODEL_JSON).read_text())
    doc["arch_kwargs"]["in_features"] = 4
    (d / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(ModelBundleError, match="do not fit temporal_unet.*size mismatch"):
        load_bundle(d)


def test_model_json_schema_errors(bundle_dir):
    doc = json.loads((bundle_dir / MODEL_JSON).read_text())
    bad = dict(doc, windw={"window": 3})
    (bundle_dir / MODEL_JSON).write_text(json.dumps(bad))
    with pytest.raises(ModelBundleError, match="windw: Extra inputs are not permitted"):
        load_bundle(bundle_dir)
    (bundle_dir / MODEL_JSON).write_text(json.dumps(dict(doc, architecture="temporal_unett")))
    with pytest.raises(ModelBundleError, match="Did you mean 'temporal_unet'"):
        load_bundle(bundle_dir)
    (bundle_dir / MODEL_JSON).write_text("{not json")
    with pytest.raises(ModelBundleError, match="not valid JSON"):
        load_bundle(bundle_dir)
    (bundle_dir / MODEL_JSON).unlink()
    with pytest.raises(ModelBundleError, match="has no model.json"):
        load_bundle(bundle_dir)
    with pytest.raises(ModelBundleError, match="neither a directory nor a zip"):
        load_bundle(bundle_dir / "nope")


def test_cube_mismatches_fail_before_work(bundle_dir):
    b = load_bundle(bundle_dir)
    calls = []
    b.net.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ModelBundleError, match=r"lacks \['NDVI'\]"):
        b.predict(_cube(bands=["B02", "B04", "B08", "EVI"]))
    with pytest.raises(ModelBundleError, match="needs 4 time steps, the cube has 3"):
        b.predict(_cube(t=3))
    with pytest.raises(ModelBundleError, match="smaller than one model input of 24x24"):
        b.predict(_cube(size=20))
    need = b.required_halo(core_px=60)
    with pytest.raises(ModelBundleError, match=f"halo_px >= {need}"):
        b.predict(_cube(halo=need - 1))
    with pytest.raises(ModelBundleError, match="dims"):
        b.predict(_cube().transpose("band", "time", "y", "x"))
    assert not calls, "no forward pass may run before the checks pass"


def test_all_nodata_and_nan_cube(bundle_dir):
    from geoxai.errors import NoDataError

    b = load_bundle(bundle_dir)
    cube = _cube()
    with pytest.raises(NoDataError):
        b.predict(cube, np.zeros(cube.shape[-2:], bool))
    cube.values[:, :, :5, :] = np.nan
    out = b.predict(cube, pad_edges=True)
    assert np.isnan(out.values[:, :5]).all() and np.isfinite(out.values[:, 5:]).all()


def test_bring_your_own_module_and_torchscript(tmp_path):
    class Mine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(len(FEATURES) * T, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    torch.manual_seed(0)
    mine = Mine().eval()
    spec = _spec(
        architecture="anything",
        weights="x.safetensors",
        inputs={"features": FEATURES, "time_steps": T, "layout": "CHW"},
        output={"kind": "regression", "names": ["a", "b"]},
    )
    d = wrap_module(mine, spec, tmp_path / "byo")
    b = load_bundle(d)
    cube = _cube()
    out = b.predict(cube, pad_edges=True)
    x = cube.sel(band=FEATURES).values
    want = predict_windows(
        lambda w: mine(w.reshape(w.shape[0], -1, *w.shape[-2:])),
        x,
        cube.attrs["transform"],
        params=b.window_params(),
    )
    np.testing.assert_allclose(out.values, want.values, atol=1e-6)
    with pytest.raises(ModelBundleError, match="trust_torchscript=False"):
        load_bundle(d, trust_torchscript=False)
    # an existing TorchScript file
    ts = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(mine), str(ts))
    d2 = wrap_module(ts, spec, tmp_path / "byo2")
    assert load_bundle(d2).spec.architecture == "torchscript"
    with pytest.raises(ModelBundleError, match="not a loadable TorchScript"):
        wrap_module(d / MODEL_JSON, spec, tmp_path / "byo3")


def test_registered_architecture_and_affine_normalization(tmp_path):
    register_architecture("test_unet_alias", "geoxai.models.unet:TemporalUNet")
    spec = _spec(
        architecture="test_unet_alias",
        normalization={"kind": "affine", "offset": [0.1] * 4, "scale": [2.0] * 4},
    )
    d = save_bundle(tmp_path / "n", _net(), spec)
    b = load_bundle(d)
    cube = _cube()
    out = b.predict(cube, batch_size=64, pad_edges=True)
    x = (cube.sel(band=FEATURES).values - np.float32(0.1)) / np.float32(2.0)
    net = _net()
    want = predict_windows(
        lambda w: torch.sigmoid(net(w)), x, cube.attrs["transform"], params=b.window_params()
    )
    np.testing.assert_allclose(out.values, want.values, atol=1e-5)
    bad = json.loads((d / MODEL_JSON).read_text())
    bad["normalization"]["scale"] = [1.0]
    (d / MODEL_JSON).write_text(json.dumps(bad))
    with pytest.raises(ModelBundleError, match="offset and scale with 4 values"):
        load_bundle(d)


def test_asos_is_resolved_lazily(tmp_path, bundle_dir):
    d = tmp_path / "asos"
    shutil.copytree(bundle_dir, d)
    doc = json.loads((d / MODEL_JSON).read_text())
    doc["architecture"] = "asos"
    (d / MODEL_JSON).write_text(json.dumps(doc))
    try:
        import geoxai.models.asos_net  # noqa: F401
    except ImportError:
        with pytest.raises(ModelBundleError, match="cannot be imported"):
            load_bundle(d)
    else:  # ASOSNet exists: TemporalUNet weights/kwargs do not fit it
        with pytest.raises(ModelBundleError):
            load_bundle(d)


def test_tile_cube_runs_only_inner_windows_and_keeps_the_core(bundle_dir):
    b = load_bundle(bundle_dir)
    cube = _cube()
    calls: list[int] = []
    auto = b.predict(cube, progress=lambda done, total: calls.append(total))
    full = b.predict(cube, pad_edges=True, progress=lambda done, total: calls.append(total))
    halo = cube.attrs["halo_px"]
    core = (slice(None), slice(halo, -halo), slice(halo, -halo))
    np.testing.assert_allclose(auto.values[core], full.values[core], atol=1e-6)
    assert np.isfinite(auto.values[core]).all()
    assert calls[0] < calls[-1], "a tile with a sufficient halo skips the edge windows"


def test_window_params_from_spec():
    p = _spec().window_params(batch_size=3)
    assert p == WindowParams(16, 8, 4, None, 3, True)
