"""Workflow registry/config loading, and the mapping-model workflows (temporal, ASOS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field

from geoxai import workflows
from geoxai.errors import ConfigError
from geoxai.trainer import BaseTask, fit
from geoxai.workflows import (
    FitParamsModel,
    example_config,
    load_workflow_config,
    run_workflow,
    save_config,
)

# ---- a small real workflow, registered for the registry tests -----------------------------------


class TinyPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="A file.")
    scale: float = Field(1.0, description="Scale.")


class TinyConfig(BaseModel):
    """A tiny regression workflow."""

    model_config = ConfigDict(extra="forbid")
    parts: list[TinyPart] = Field(default_factory=list, description="Inputs.")
    width: int = Field(4, ge=1, description="Hidden units.")
    training: FitParamsModel = Field(default_factory=FitParamsModel, description="Training.")
    out_dir: str = Field(description="Output directory.")


class _TinyTask(BaseTask):
    def __init__(self, width: int, batch: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        self.width, self.batch = width, batch

    def build_model(self):
        return torch.nn.Sequential(
            torch.nn.Linear(3, self.width), torch.nn.Tanh(), torch.nn.Linear(self.width, 1)
        )

    def train_batches(self, epoch, generator, rank, world_size):
        order = torch.randperm(32, generator=generator)
        for i in range(rank * self.batch, 32, self.batch * world_size):
            idx = order[i : i + self.batch]
            yield self.x[idx], self.y[idx]

    def training_step(self, model, batch, optimizers):
        return F.mse_loss(model(batch[0])[:, 0], batch[1]), {}

    def validate(self, model):
        return {"val_loss": float(F.mse_loss(model(self.x)[:, 0], self.y))}


def train_tiny(config: TinyConfig, *, resume: bool = True) -> Path:
    out = Path(config.out_dir)
    res = fit(_TinyTask(config.width, config.training.batch_size), config.training.to_params(),
              out, resume=resume)  # fmt: skip
    torch.save(res.model.state_dict(), out / "model.pt")
    save_config(config, out)
    return out


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(workflows.WORKFLOWS, "tiny", f"{__name__}:TinyConfig:train_tiny")
    return "tiny"


def test_load_and_run_workflow(tiny, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "width": 8,
                "out_dir": str(tmp_path / "out"),
                "training": {"epochs": 3, "lr": 0.05, "batch_size": 8, "progress": False},
            }
        )
    )
    cfg = load_workflow_config(tiny, cfg_path)
    assert cfg.training.to_params().epochs == 3
    out = run_workflow(tiny, cfg)
    assert (out / "model.pt").exists() and (out / "metrics.json").exists()
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert load_workflow_config(tiny, saved) == cfg  # the saved config reloads to the same


def test_config_errors_name_the_problem(tiny, tmp_path):
    base = {"out_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"widht.*Did you mean 'width'"):
        load_workflow_config(tiny, {**base, "widht": 3})
    with pytest.raises(ConfigError, match=r"training\.epoch:.*Did you mean 'epochs'"):
        load_workflow_config(tiny, {**base, "training": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"parts\.0\.pathh.*Did you mean 'path'"):
        load_workflow_config(tiny, {**base, "parts": [{"pathh": "x"}]})
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_workflow_config(tiny, {**base, "training": {"lr_schedule": "cosin"}})
    with pytest.raises(ConfigError, match="out_dir"):
        load_workflow_config(tiny, {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_workflow_config(tiny, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_workflow_config(tiny, bad)
    with pytest.raises(ConfigError, match=r"Did you mean 'temporal'"):
        load_workflow_config("temporl", bad)
    with pytest.raises(ConfigError, match="takes a TinyConfig"):
        run_workflow(tiny, FitParamsModel())


def test_unimportable_workflow_is_named(monkeypatch):
    monkeypatch.setitem(workflows.WORKFLOWS, "future", "geoxai.not_written_yet:C:f")
    with pytest.raises(ConfigError, match=r"'future' is not available.*geoxai\.not_written_yet"):
        load_workflow_config("future", {})


def test_example_config_lists_fields(tiny):
    text = example_config(tiny)
    doc = yaml.safe_load(text)
    assert doc["width"] == 4 and doc["training"]["epochs"] == 10
    assert doc["parts"] == [{"path": None, "scale": 1.0}]
    assert "REQUIRED" in text and "# Hidden units." in text
