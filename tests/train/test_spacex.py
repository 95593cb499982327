"""SpacEX: networks, replay buffer, the gradient path of the activation term, bundles, CLI, and
the score shifts after training (slow; set-up in tests/fixtures/spacex_world.py).

Measured on the synthetic forest-caused scenes (32 held-out scenes, seed 0; the slow test
prints them): the classifier scores the inputs 0.50 on average (half have forest). With
activation weight 5 the maximizer's outputs score +0.50 higher (-> 1.00; up on 17 of the 17
scenes with room to rise) and the minimizer's -0.50 lower (-> 0.00; down on 16 of 16), so the
maximizer beats the minimizer on 32 of 32 scenes. The same run with weight 0 loses that: the
maximizer beats the minimizer on 5 of 32 (mean gap -0.09 against +1.00), and both generators'
outputs score near 0 (-0.50 / -0.41): after 6 epochs their reconstructions (mean |change|
0.035 reflectance) are not yet faithful enough for a classifier that reads blur as "no forest".
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from geoxai.errors import ConfigError, InvalidInputError, ModelBundleError
from geoxai.models.asos_net import ASOSNet
from geoxai.models.spacex_nets import (
    ImageBuffer,
    PatchDiscriminator,
    ResnetGenerator,
    SpacexGenerators,
    from_gan,
    to_gan,
)
from geoxai.train.spacex import (
    SpacexParams,
    SpacexTask,
    activation_loss,
    generator_losses,
    save_spacex_bundle,
)
from geoxai.train.trainer import FitParams, fit
from geoxai.xai.asos import bundle_spec
from geoxai.xai.spacex import attribution, load_spacex_bundle, score_shift, spacex_attribution


@pytest.fixture(autouse=True)
def _one_thread():
    from tests.fixtures.spacex_world import one_thread

    with one_thread():
        yield


TINY = SpacexParams(gen_base=4, gen_res_blocks=1, disc_base=4, disc_layers=1)


def _classifier(seed: int = 0) -> ASOSNet:
    torch.manual_seed(seed)
    return ASOSNet(10, 3, width=4, head_width=4).eval()


def _images(n: int = 8, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 0.4, (n, 10, size, size)).astype(np.float32)


# ---- networks -----------------------------------------------------------------------------------


def test_generator_keeps_shape_and_range_for_any_size():
    g = ResnetGenerator(10, base=4, n_res=2)
    x = torch.rand(2, 10, 30, 22) * 2 - 1
    with torch.no_grad():
        y = g(x)
    assert y.shape == x.shape
    assert float(y.abs().max()) <= 1.0
    d = PatchDiscriminator(10, base=4, n_layers=2)
    assert d(y).shape[:2] == (2, 1)
    with pytest.raises(InvalidInputError, match="too small"):
        d(torch.zeros(1, 10, 8, 8))


def test_scaling_round_trip_and_attribution_shape():
    x = torch.rand(3, 10, 12, 12)
    assert torch.allclose(from_gan(to_gan(x)), x, atol=1e-6)
    assert torch.allclose(from_gan(to_gan(x * 0.2 + 0.1, 0.1, 0.3), 0.1, 0.3), x * 0.2 + 0.1)
    gens = SpacexGenerators(10, base=4, n_res=1)
    with torch.no_grad():
        a = gens(x)
        manual = (gens.maximize(x) - gens.minimize(x)).abs().mean(dim=1, keepdim=True)
    assert a.shape == (3, 1, 12, 12) and float(a.min()) >= 0
    assert torch.allclose(a, manual)
    with pytest.raises(ConfigError):
        SpacexGenerators(10, lo=1.0, hi=1.0)


def test_replay_buffer_fills_then_swaps_and_resumes_identically():
    buf = ImageBuffer(size=4, seed=3)
    first = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1)
    assert torch.equal(buf.query(first), first)  # filling: returned as is
    state = buf.state_dict()
    new = torch.arange(10, 74, dtype=torch.float32).view(64, 1, 1, 1)
    out = buf.query(new)
    swapped = out.view(-1) != new.view(-1)
    assert 16 < int(swapped.sum()) < 48  # about half come from the history
    for i in np.flatnonzero(swapped.numpy()):  # each from the first images or an earlier new one
        assert float(out[i]) in {0.0, 1.0, 2.0, 3.0} or 10 <= float(out[i]) < 10 + i
    again = ImageBuffer(size=4, seed=99)
    again.load_state_dict(state)
    assert torch.equal(again.query(new), out)  # same images and same draws after restore
    assert torch.equal(ImageBuffer(0).query(new), new)
    with pytest.raises(ConfigError, match="size"):
        ImageBuffer(size=5).load_state_dict(state)


# ---- the gradient path --------------------------------------------------------------------------


def test_activation_gradient_reaches_generators_and_not_the_classifier():
    clf = _classifier()
    for p in clf.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    task = SpacexTask(clf, _images(), SpacexParams(**{**TINY.__dict__, "adversarial": 0.0,
                      "cycle": 0.0, "identity": 0.0, "activation": 1.0}))  # fmt: skip
    torch.manual_seed(0)
    nets = task.build_model()
    x = torch.from_numpy(_images(4))
    total, parts, _ = generator_losses(nets, clf, x, task.params)
    total.backward()
    for name in ("g_max", "g_min"):
        grads = [p.grad for p in nets[name].parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert all(p.grad is None for p in clf.parameters())
    # the public code's defect: the classifier scored the REAL image -> nothing to optimize
    defect = activation_loss(clf(x), clf(x))
    assert not defect.requires_grad
    # a full manual-optimization step moves the generators, never the classifier
    opts = task.configure_optimizers(nets, FitParams(lr=1e-2))
    g0 = [p.clone() for p in nets["g_max"].parameters()]
    _, metrics = task.training_step(nets, x, opts)
    assert any(not torch.equal(a, b) for a, b in zip(g0, nets["g_max"].parameters(), strict=True))
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    assert {"loss_g", "loss_d", "activation", "logit_max", "logit_min"} <= set(metrics)


def test_activation_forms():
    hi, lo = torch.tensor([[3.0]]), torch.tensor([[-2.0]])
    assert float(activation_loss(hi, lo, "logit")) == pytest.approx(-5.0)
    bce = float(activation_loss(hi, lo, "bce"))
    assert bce == pytest.approx(2 * math.log1p(math.exp(-3.0)) / 2 + math.log1p(math.exp(-2.0)))
    with pytest.raises(ConfigError, match="activation_form"):
        SpacexParams(activation_form="linear")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="identity"):
        SpacexParams(identity=-1.0)


def test_fit_resume_is_bit_identical_including_the_replay_buffer(tmp_path):
    clf = _classifier()
    x = _images(6)
    fp = FitParams(epochs=2, lr=1e-3, batch_size=2, seed=4, lr_schedule="linear_decay",
                   progress=False)  # fmt: skip
    full_task = SpacexTask(clf, x, TINY, batch_size=2)
    full = fit(full_task, fp, tmp_path / "a")

    class Crash(SpacexTask):
        def train_batches(self, epoch, generator, rank, world_size):
            if epoch == 1:
                raise KeyboardInterrupt  # killed at the start of the second epoch
            yield from super().train_batches(epoch, generator, rank, world_size)

    with pytest.raises(KeyboardInterrupt):
        fit(Crash(clf, x, TINY, batch_size=2), fp, tmp_path / "b")
    task = SpacexTask(clf, x, TINY, batch_size=2)
    resumed = fit(task, fp, tmp_path / "b", resume=True)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(a, b), k
    for name in ("d_max", "d_min"):  # restored from the checkpoint, then filled further
        got, want = task.buffers[name].images, full_task.buffers[name].images
        assert len(got) == 12 and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[-1]["lr"] < resumed.history[0]["lr"]  # linear decay


def test_task_rejects_bad_inputs():
    clf = _classifier()
    with pytest.raises(InvalidInputError, match="NaN"):
        SpacexTask(clf, np.full((2, 10, 16, 16), np.nan, np.float32), TINY)
    with pytest.raises(InvalidInputError, match="disc_layers"):
        SpacexTask(clf, _images(2, size=8), SpacexParams(gen_base=4, disc_layers=2))
    with pytest.raises(InvalidInputError, match="expected"):
        SpacexTask(clf, np.zeros((10, 16, 16), np.float32), TINY)
    with pytest.raises(InvalidInputError, match="takes 10"):
        SpacexTask(clf, _images(2)[:, :4], TINY)


# ---- config, bundles, attribution, CLI ----------------------------------------------------------


def test_config_defaults_and_typos():
    from geoxai.train.workflows import load_workflow_config

    cfg = load_workflow_config(
        "spacex", {"classifier": "c", "data": "d.npz", "out_dir": "o", "training": {"epochs": 3}}
    )
    t = cfg.training
    assert (t.epochs, t.lr, t.lr_schedule) == (3, 2e-4, "linear_decay")
    p = cfg.params()
    assert (p.adversarial, p.cycle, p.identity, p.activation) == (1.0, 5.0, 13.0, 5.0)
    assert (p.beta1, p.beta2, p.replay_buffer) == (0.5, 0.999, 50)
    with pytest.raises(ConfigError, match="identity"):
        load_workflow_config(
            "spacex", {"classifier": "c", "data": "d", "out_dir": "o", "identiy": 1.0}
        )
    with pytest.raises(ConfigError, match="device"):
        load_workflow_config(
            "spacex", {"classifier": "c", "data": "d", "out_dir": "o", "device": "gpu"}
        )
    with pytest.raises(ConfigError, match="epochs"):
        load_workflow_config(
            "spacex", {"classifier": "c", "data": "d", "out_dir": "o", "training": {"epoch": 1}}
        )


@pytest.fixture()
def tiny_bundle(tmp_path):
    from geoxai.xai.asos import save_asos_bundle

    clf = _classifier()
    asos = save_asos_bundle(tmp_path / "asos", clf, bundle_spec(clf, window=16, stride=8))
    torch.manual_seed(1)
    gens = SpacexGenerators(10, base=4, n_res=1)
    from geoxai.xai.spacex import load_classifier

    cb, _ = load_classifier(asos)
    meta = {"classifier_weights_sha256": cb.spec.weights_sha256}
    path = save_spacex_bundle(tmp_path / "spacex", gens, cb.spec, meta=meta)
    return path, gens, asos


def test_bundle_round_trip_and_attribution(tiny_bundle):
    path, gens, asos = tiny_bundle
    b, meta = load_spacex_bundle(path)
    assert meta["format"] == "geoxai.spacex/1"
    img = _images(1, size=20)[0]
    img[:, 3, 4] = np.nan
    a = spacex_attribution(b, img)
    assert a.shape == (20, 20) and a.dtype == np.float32
    assert np.isnan(a[3, 4]) and np.isfinite(np.delete(a.ravel(), 3 * 20 + 4)).all()
    clean = np.nan_to_num(img)
    assert np.allclose(spacex_attribution(path, clean), attribution(gens, clean), atol=1e-6)
    # DN input is scaled to reflectance first
    assert np.allclose(spacex_attribution(b, clean * 1e4, units="dn"), attribution(gens, clean),
                       atol=1e-5)  # fmt: skip
    big = _images(1, size=56)[0]
    win = spacex_attribution(b, big, window=b.window_params())  # blended 48 px windows
    assert win.shape == (56, 56) and np.isfinite(win).all()
    with pytest.raises(InvalidInputError, match="bands"):
        spacex_attribution(b, clean[:4])
    with pytest.raises(ModelBundleError, match="not SpacEX"):
        load_spacex_bundle(asos)


def test_bundle_blends_over_a_cube_like_any_tile_model(tiny_bundle):
    """A run tile can add the SpacEX map as a layer: LoadedBundle.predict on a one-date cube
    equals spacex_attribution with the bundle's windows on the same grid."""
    import xarray as xr

    from geoxai.geo.bands import S2_BANDS

    path, _, _ = tiny_bundle
    b, _ = load_spacex_bundle(path)
    img = _images(1, size=56, seed=5)[0]
    tr = (10.0, 0.0, 500000.0, 0.0, -10.0, 5600000.0)
    cube = xr.DataArray(
        img[None], dims=("time", "band", "y", "x"), coords={"band": list(S2_BANDS)},
        attrs={"transform": tr},
    )  # fmt: skip
    ds = b.predict_dataset(cube)
    assert list(ds["output"].values) == ["spacex_attribution"]
    want = spacex_attribution(b, img, window=b.window_params(), transform=tr)
    assert np.allclose(ds["prediction"].values[0], want, atol=1e-6)


def test_geoxai_train_spacex_cli(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from geoxai.xai.asos import save_asos_bundle
    from pipelines.cli import app

    clf = _classifier()
    asos = save_asos_bundle(tmp_path / "asos", clf, bundle_spec(clf, window=16, stride=8))
    np.savez(tmp_path / "d.npz", images=_images(6))
    cfg = {
        "classifier": str(asos), "data": str(tmp_path / "d.npz"), "gen_base": 4,
        "gen_res_blocks": 1, "disc_base": 4, "disc_layers": 1, "val_fraction": 0.34,
        "training": {"epochs": 2, "batch_size": 2, "progress": False},
        "out_dir": str(tmp_path / "run"),
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["train", "spacex", str(tmp_path / "c.yaml")])
    assert r.exit_code == 0, r.output
    b, meta = load_spacex_bundle(tmp_path / "run" / "bundle")
    assert (meta["n_train"], meta["n_val"], meta["epochs"]) == (4, 2, 2)
    assert set(meta["val_score_shift"]) >= {"shift_max", "shift_min"}
    hist = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert hist[1]["lr"] < hist[0]["lr"] == pytest.approx(2e-4)  # SpacEX default, linear decay
    assert {"val_shift_max", "val_shift_min", "loss_g", "loss_d"} <= set(hist[0])
    # bad data fails before training, naming the fix
    np.savez(tmp_path / "bad.npz", images=_images(2)[:, :4])
    bad = {**cfg, "data": str(tmp_path / "bad.npz"), "out_dir": str(tmp_path / "bad")}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad))
    r = CliRunner().invoke(app, ["train", "spacex", str(tmp_path / "b.yaml")])
    assert r.exit_code != 0 and "takes 10" in str(r.exception)


def test_explain_spacex_cli_writes_cog_and_png(tiny_bundle, tmp_path):
    import rasterio
    from rasterio.transform import from_origin
    from typer.testing import CliRunner

    from geoxai.io.cog import validate_cog
    from pipelines.cli import app

    path, gens, _ = tiny_bundle
    img = _images(1, size=24)[0]
    tif = tmp_path / "scene.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=24, height=24, count=10,
                       dtype="float32", crs="EPSG:32631",
                       transform=from_origin(500000, 5600000, 10, 10)) as dst:  # fmt: skip
        dst.write(img)
    out = tmp_path / "out" / "attr.tif"
    r = CliRunner().invoke(
        app, ["explain", "spacex", "--bundle", str(path), "--image", str(tif), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert validate_cog(out)["warnings"] == []
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32631 and src.descriptions == ("spacex_attribution",)
        assert np.allclose(src.read(1), attribution(gens, img), atol=1e-6)
    assert out.with_suffix(".png").stat().st_size > 1000


# ---- after training (slow) ----------------------------------------------------------------------


def _sign_test_p(k: int, n: int) -> float:
    """One-sided P(X >= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


@pytest.mark.slow
def test_activation_term_moves_scores_and_zero_weight_removes_it(spacex_classifier, spacex_runs):
    from geoxai.xai.spacex import load_classifier

    _, clf = load_classifier(spacex_classifier.asos_bundle)
    xv = spacex_classifier.val_images
    s = {w: score_shift(load_spacex_bundle(p)[0].net, clf, xv) for w, p in spacex_runs.items()}
    for w, v in s.items():
        print(f"activation weight {w}:", {k: round(x, 3) for k, x in v.summary().items()})
    on, off = s[5.0], s[0.0]
    n = len(xv)
    # weight 5: maximizer up, minimizer down, relative to the inputs, consistently
    room_up = on.score_real < 0.95
    room_down = on.score_real > 0.05
    assert on.shift_max.mean() > 0.2 and on.shift_min.mean() < -0.2
    assert _sign_test_p(int((on.shift_max[room_up] > 0).sum()), int(room_up.sum())) < 1e-3
    assert _sign_test_p(int((on.shift_min[room_down] < 0).sum()), int(room_down.sum())) < 1e-3
    gap_on = on.score_max - on.score_min
    gap_off = off.score_max - off.score_min
    for name, gap in (("5", gap_on), ("0", gap_off)):
        print(f"weight {name}: score(G_max x) > score(G_min x) on {int((gap > 0).sum())}/{n}, "
              f"mean gap {gap.mean():+.3f}")  # fmt: skip
    assert _sign_test_p(int((gap_on > 0).sum()), n) < 1e-6
    # the same run with weight 0 loses the effect: the paired difference is significant ...
    assert _sign_test_p(int((gap_on - gap_off > 0).sum()), n) < 1e-6
    # ... and without the term the maximizer is not systematically above the minimizer
    assert _sign_test_p(int((gap_off > 0).sum()), n) > 1e-2
    assert abs(gap_off.mean()) < 0.25 * gap_on.mean()


@pytest.mark.slow
def test_train_spacex_writes_a_complete_bundle(spacex_runs):
    import yaml

    out = spacex_runs[5.0]
    assert {"model.json", "weights.safetensors", "spacex.json", "train_config.yaml"} <= {
        p.name for p in out.iterdir()
    }
    cfg = yaml.safe_load((out / "train_config.yaml").read_text())
    assert cfg["activation"] == 5.0 and cfg["training"]["lr_schedule"] == "linear_decay"
    assert (out.parent / "metrics.json").is_file()
    assert (out.parent / "checkpoints" / "last.pt").is_file()
    _, meta = load_spacex_bundle(out)
    assert meta["n_train"] == 128 and meta["params"]["identity"] == 13.0


def test_classifier_is_frozen_in_the_task():
    clf = _classifier()
    SpacexTask(clf, _images(2), TINY)
    assert not clf.training and all(not p.requires_grad for p in clf.parameters())
    assert isinstance(clf, nn.Module)
