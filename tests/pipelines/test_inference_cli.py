"""``geoxai predict`` end to end: committed cube store -> bundle -> committed prediction store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from geoxai.errors import InvalidInputError, ModelBundleError, StoreError
from geoxai.geo.grid import TileSpec
from geoxai.inference.windows import required_halo
from geoxai.io.store import read_dataset, write_dataset
from geoxai.models.bundle import load_bundle, save_bundle
from geoxai.models.bundle_spec import BundleSpec
from geoxai.models.unet import TemporalUNet
from pipelines.cli import app

FEATURES = ["B04", "B08", "NDVI"]
T = 3


def _bundle(tmp_path):
    torch.manual_seed(0)
    net = TemporalUNet(len(FEATURES), T, embed=4, base=4)
    spec = BundleSpec.model_validate(
        {
            "name": "cli test",
            "architecture": "temporal_unet",
            "weights": "w.safetensors",
            "inputs": {"features": FEATURES, "time_steps": T},
            "window": {"window": 16, "stride": 8, "context": 4},
            "output": {"kind": "probability", "names": ["tree_cover"], "transform": "sigmoid"},
        }
    )
    return save_bundle(tmp_path / "bundle", net, spec)


def _cube_dataset(halo: int) -> xr.Dataset:
    tile = TileSpec(32631, 96, 938, halo, tile_size_m=400)  # 40 px cores
    y, x = tile.coords()
    h = tile.shape[0]
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((T, len(FEATURES), h, h)).astype(np.float32)
    quality = np.ones((h, h), np.float32)
    quality[:6, :] = 0  # a strip without observations
    attrs = {
        "crs": tile.crs,
        "transform": list(tile.transform)[:6],
        "tile_id": tile.id,
        "halo_px": halo,
        "resolution_m": 10,
    }
    return xr.Dataset(
        {
            "features": (("time", "band", "y", "x"), feats),
            "quality": (("y", "x"), quality),
        },
        coords={
            "time": np.array(["2024-01-08", "2024-01-23", "2024-02-07"], dtype="datetime64[ns]"),
            "band": FEATURES,
            "y": y,
            "x": x,
        },
        attrs=attrs,
    )


def test_predict_command_writes_committed_prediction(tmp_path, store_root):
    bundle = _bundle(tmp_path)
    halo = required_halo(16, 8, 4, core_px=40)
    ds = _cube_dataset(halo)
    write_dataset(ds, f"{store_root}/cube")
    out = f"{store_root}/pred"
    args = ["predict", "--bundle", str(bundle), "--cube", f"{store_root}/cube", "--out", out]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["outputs"] == ["tree_cover"] and summary["tile_id"] == "32631_E0096_N0938"

    got = read_dataset(out).load()
    assert got["prediction"].dims == ("output", "y", "x")
    assert got.attrs["tile_id"] == "32631_E0096_N0938" and got.attrs["bundle_name"] == "cli test"
    np.testing.assert_array_equal(got["y"].values, ds["y"].values)
    pred = got["prediction"].values[0]
    assert np.isnan(pred[:6]).all() and (got["weight"].values[:6] == 0).all()
    core = pred[halo:-halo, halo:-halo]
    assert np.isfinite(core).all() and ((core >= 0) & (core <= 1)).all()
    # same numbers as the library call with the CLI's default runtime (onnxruntime on CPU)
    direct = load_bundle(bundle, runtime="auto").predict(
        ds["features"].assign_attrs(ds.attrs), ds.quality.values > 0
    )
    np.testing.assert_array_equal(pred, direct.values[0])

    # a committed output is not replaced silently
    res2 = CliRunner().invoke(app, args)
    assert isinstance(res2.exception, StoreError)
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    # --out naming the input cube is refused, even with --overwrite: the cube stays
    same = [*args[:-1], f"{store_root}/cube/", "--overwrite"]
    res3 = CliRunner().invoke(app, same)
    assert isinstance(res3.exception, InvalidInputError) and "--cube input" in str(res3.exception)
    assert read_dataset(f"{store_root}/cube")["features"].shape == ds["features"].shape


def test_predict_command_refuses_mismatched_cube_before_work(tmp_path):
    bundle = _bundle(tmp_path)
    ds = _cube_dataset(halo=10)  # too small a halo for seamless tiles
    write_dataset(ds, tmp_path / "cube")
    args = ["predict", "--bundle", str(bundle), "--cube", str(tmp_path / "cube")]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "pred")])
    assert isinstance(res.exception, ModelBundleError)
    assert "halo of 10 px" in str(res.exception)
    assert not (tmp_path / "pred").exists()
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "p2"), "--autocast", "bf61"])
    assert "Did you mean 'bf16'" in str(res.exception)


def test_predict_help():
    res = CliRunner().invoke(app, ["predict", "--help"])
    assert res.exit_code == 0 and "--bundle" in res.stdout


@pytest.mark.gpu
def test_predict_command_on_cuda(tmp_path):
    bundle = _bundle(tmp_path)
    ds = _cube_dataset(required_halo(16, 8, 4, core_px=40))
    write_dataset(ds, tmp_path / "cube")
    args = ["predict", "--bundle", str(bundle), "--cube", str(tmp_path / "cube")]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "p"), "--device", "cuda"])
    assert res.exit_code == 0, res.output
    cpu = load_bundle(bundle).predict(ds["features"].assign_attrs(ds.attrs), ds.quality.values > 0)
    got = read_dataset(tmp_path / "p")["prediction"].values[0]
    np.testing.assert_allclose(got, cpu.values[0], atol=1e-4)
