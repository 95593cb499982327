"""The shared trainer: resume == uninterrupted, early stopping, schedules, metrics files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geoxai.errors import ConfigError, InvalidInputError, StoreError
from geoxai.train.distributed import shard
from geoxai.train.trainer import BaseTask, FitParams, fit, lr_factor


class TinySeg(BaseTask):
    """A 2-layer conv net with BatchNorm and dropout learning ``x[0] > 0`` on 16x16 patches."""

    def __init__(self, n: int = 24, batch: int = 6) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 2, 16, 16, generator=g)
        self.y = (self.x[:, 0] > 0).float()
        self.vx = torch.randn(8, 2, 16, 16, generator=g)
        self.vy = (self.vx[:, 0] > 0).float()
        self.batch = batch
        self.calls = 0

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(2, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),
            torch.nn.Conv2d(8, 1, 1),
        )

    def train_batches(self, epoch, generator, rank, world_size):
        order = torch.randperm(len(self.x), generator=generator)
        batches = [order[i : i + self.batch] for i in range(0, len(order), self.batch)]
        for idx in shard(batches, rank, world_size):
            flip = torch.rand((), generator=generator).item() < 0.5
            xb, yb = self.x[idx], self.y[idx]
            yield (xb.flip(-1), yb.flip(-1)) if flip else (xb, yb)

    def training_step(self, model, batch, optimizers):
        self.calls += 1
        x, y = batch
        logit = model(x)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logit, y)
        return loss, {"acc": float(((logit > 0).float() == y).float().mean())}

    def validate(self, model):
        logit = model(self.vx)[:, 0]
        return {
            "val_loss": float(F.binary_cross_entropy_with_logits(logit, self.vy)),
            "val_acc": float(((logit > 0).float() == self.vy).float().mean()),
        }

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_resume_gives_identical_weights(tmp_path):
    p = FitParams(epochs=5, lr=1e-2, batch_size=6, seed=3, progress=False)
    full = fit(TinySeg(), p, tmp_path / "full")
    part = fit(TinySeg(), FitParams(**{**p.__dict__, "epochs": 2}), tmp_path / "split")
    assert len(part.history) == 2
    task = TinySeg()
    resumed = fit(task, p, tmp_path / "split")
    assert task.calls == 2 * 4 + 3 * 4  # task state restored from the checkpoint, 4 steps/epoch
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    # best weights of both runs, and the last checkpoints, are bit-identical
    assert _same(full.model, resumed.model)
    la = torch.load(tmp_path / "full/checkpoints/last.pt", weights_only=False)["model"]
    lb = torch.load(tmp_path / "split/checkpoints/last.pt", weights_only=False)["model"]
    assert all(torch.equal(la[k], lb[k]) for k in la)
    for a, b in zip(full.history, resumed.history, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    # a different seed really changes the result (the comparison above can fail)
    other = fit(TinySeg(), FitParams(**{**p.__dict__, "seed": 4}), tmp_path / "other")
    assert not _same(full.model, other.model)


def test_finished_run_is_not_retrained_and_no_resume_starts_over(tmp_path):
    p = FitParams(epochs=2, lr=1e-2, batch_size=6, progress=False)
    fit(TinySeg(), p, tmp_path)
    task = TinySeg()
    again = fit(task, p, tmp_path)
    assert task.calls == 8 and len(again.history) == 2  # restored calls, no new steps
    fresh = TinySeg()
    fit(fresh, p, tmp_path, resume=False)
    assert fresh.calls == 8


def test_metrics_files_and_best_checkpoint(tmp_path):
    res = fit(TinySeg(), FitParams(epochs=3, lr=1e-2, progress=False), tmp_path)
    hist = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert {"loss", "acc", "val_loss", "val_acc", "lr", "seconds"} <= set(hist[0])
    png = (tmp_path / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    best = torch.load(tmp_path / "checkpoints/best.pt", weights_only=False)
    vals = [r["val_loss"] for r in hist]
    assert best["epoch"] == int(np.argmin(vals)) + 1 == res.best_epoch
    assert all(torch.equal(best["model"][k], v) for k, v in res.model.state_dict().items())
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_early_stopping(tmp_path):
    # lr 0 never improves val_loss after epoch 1: stops after `patience` more epochs
    class Frozen(TinySeg):
        def configure_optimizers(self, model, params):
            return {"main": torch.optim.SGD(model.parameters(), lr=params.lr)}

        def validate(self, model):
            return {"val_loss": 1.0}

    res = fit(Frozen(), FitParams(epochs=20, patience=3, lr=1e-3, progress=False), tmp_path)
    assert res.stopped_early and len(res.history) == 4 and res.best_epoch == 1
    assert res.history[-1]["stopped_early"] is True
    # resuming a run that stopped early does not train on
    task = Frozen()
    again = fit(task, FitParams(epochs=20, patience=3, lr=1e-3, progress=False), tmp_path)
    assert again.stopped_early and len(again.history) == 4 and task.calls == 16


def test_monitor_missing_and_max_mode(tmp_path):
    with pytest.raises(ConfigError, match="val_iou"):
        fit(TinySeg(), FitParams(epochs=2, patience=1, monitor="val_iou", progress=False), tmp_path)
    res = fit(
        TinySeg(),
        FitParams(epochs=3, monitor="val_acc", mode="max", lr=1e-2, progress=False),
        tmp_path / "max",
    )
    accs = [r["val_acc"] for r in res.history]
    assert res.best_epoch == int(np.argmax(accs)) + 1


def test_lr_schedules():
    assert [lr_factor("constant", e, 4) for e in range(4)] == [1.0] * 4
    cos = [lr_factor("cosine", e, 4) for e in range(4)]
    assert cos[0] == 1.0 and all(a > b for a, b in zip(cos, cos[1:], strict=False))
    lin = [lr_factor("linear_decay", e, 6) for e in range(6)]
    assert lin[:3] == [1.0, 1.0, 1.0] and lin[3] < 1.0 and lin[-1] > 0
    assert all(a > b for a, b in zip(lin[3:], lin[4:], strict=False))


def test_lr_schedule_applied(tmp_path):
    p = FitParams(epochs=4, lr=0.1, lr_schedule="cosine", progress=False)
    res = fit(TinySeg(), p, tmp_path)
    assert [r["lr"] for r in res.history] == pytest.approx(
        [0.1 * lr_factor("cosine", e, 4) for e in range(4)]
    )


def test_bad_params_and_inputs(tmp_path):
    with pytest.raises(ConfigError, match="cosine"):
        FitParams(lr_schedule="cosin")
    with pytest.raises(ConfigError, match="epochs"):
        FitParams(epochs=0)
    with pytest.raises(ConfigError, match="patience"):
        FitParams(patience=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        fit(TinySeg(), FitParams(epochs=1, progress=False), blocker / "out")

    class Empty(TinySeg):
        def train_batches(self, epoch, generator, rank, world_size):
            return []

    with pytest.raises(InvalidInputError, match="no training batch"):
        fit(Empty(), FitParams(epochs=1, progress=False), tmp_path / "e")

    class Diverge(TinySeg):
        def training_step(self, model, batch, optimizers):
            return model(batch[0]).sum() * float("nan"), {}

    with pytest.raises(InvalidInputError, match="learning rate"):
        fit(Diverge(), FitParams(epochs=1, progress=False), tmp_path / "d")


def test_manual_optimization_with_module_dict(tmp_path):
    class TwoNets(TinySeg):
        manual_optimization = True

        def build_model(self):
            return torch.nn.ModuleDict({k: torch.nn.Conv2d(2, 1, 1) for k in ("a", "b")})

        def configure_optimizers(self, model, params):
            return {k: torch.optim.SGD(model[k].parameters(), lr=params.lr) for k in ("a", "b")}

        def training_step(self, model, batch, optimizers):
            x, y = batch
            out = {}
            for k in ("a", "b"):
                loss = F.binary_cross_entropy_with_logits(model[k](x)[:, 0], y)
                optimizers[k].zero_grad()
                loss.backward()
                optimizers[k].step()
                out[f"loss_{k}"] = float(loss.detach())
            return None, out

        def validate(self, model):
            return {}

    res = fit(TwoNets(), FitParams(epochs=3, lr=0.5, progress=False), tmp_path)
    assert res.best_epoch is None and res.history[-1]["loss_a"] < res.history[0]["loss_a"]
    assert (tmp_path / "checkpoints/last.pt").exists()


# ---- data parallel: 2 gloo ranks == one process on the whole batch ------------------------------


class HalfBatches(BaseTask):
    """Linear regression; each step's global batch of 8 is split between the ranks."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(32, 3, generator=g)
        self.y = self.x @ torch.tensor([0.5, -1.0, 2.0]) + 0.1 * torch.randn(32, generator=g)

    def build_model(self):
        return torch.nn.Linear(3, 1)

    def train_batches(self, epoch, generator, rank, world_size):
        order = torch.randperm(32, generator=generator)
        for i in range(0, 32, 8):
            idx = order[i : i + 8][rank::world_size]
            yield self.x[idx], self.y[idx]

    def training_step(self, model, batch, optimizers):
        return F.mse_loss(model(batch[0])[:, 0], batch[1]), {}

    def validate(self, model):
        return {"val_loss": float(F.mse_loss(model(self.x)[:, 0], self.y))}


def _rank_main(rank: int, store: str, out: str, results: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        res = fit(HalfBatches(), FitParams(epochs=3, lr=0.05, progress=False), out)
        torch.save({"model": res.model.state_dict(), "history": res.history}, f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_whole_batch(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    single = fit(HalfBatches(), FitParams(epochs=3, lr=0.05, progress=False), tmp_path / "one")
    args = (str(tmp_path / "store"), str(tmp_path / "ddp"), str(tmp_path / "res"))
    mp.spawn(_rank_main, args=args, nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"res.{r}", weights_only=False) for r in (0, 1))
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])  # in sync
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0["model"][k], v, rtol=1e-5, atol=1e-6)
    assert [h["loss"] for h in r0["history"]] == pytest.approx(
        [h["loss"] for h in single.history], rel=1e-5
    )
    ckpt = torch.load(tmp_path / "ddp/checkpoints/last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and (tmp_path / "ddp/metrics.json").exists()
