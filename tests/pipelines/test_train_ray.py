"""``geoxai train ... --workers 2``: Ray Train workers on a local loopback Ray train end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _npz(path, n=32, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float32)
    x = rng.uniform(0.02, 0.1, (n, 10, 16, 16)).astype(np.float32)
    x[:, 6] += 0.3 * y[:, None, None]
    np.savez(path, images=x, labels=y)
    return path


def test_two_ray_train_workers_train_the_asos_workflow(tmp_path, monkeypatch):
    from geoxai.xai.asos import load_asos_bundle
    from pipelines.cli import app

    monkeypatch.chdir(tmp_path)  # relative paths in the config: workers use the same cwd
    _npz(tmp_path / "train.npz")
    cfg = {
        "data": "train.npz", "k": 2, "width": 4, "head_width": 4,
        "table": {"min_pixels": 20}, "bundle": {"window": 16, "stride": 8, "context": 0},
        "training": {"epochs": 2, "lr": 5e-3, "batch_size": 4, "progress": False},
        "out_dir": "out",
    }  # fmt: skip
    (tmp_path / "asos.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", "asos", "asos.yaml", "--workers", "2"])
    assert res.exit_code == 0, (res.output, res.exception)
    bundle = tmp_path / "out" / "bundle"
    assert str(bundle) in res.output
    b, table = load_asos_bundle(bundle)
    assert table is not None and b.net.k == 2
    ckpt = torch.load(tmp_path / "out/checkpoints/last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 2
    hist = json.loads((tmp_path / "out/metrics.json").read_text())
    assert [r["epoch"] for r in hist] == [1, 2]
    assert (tmp_path / "out/ray_train").is_dir()
