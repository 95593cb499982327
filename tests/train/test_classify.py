"""Scene classification: ResNet-18 key names and adapters, band selection, bad input, and (real
EuroSAT subset) training from scratch and from torchvision-format weights, evaluation, bundle and
sliding class maps."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from safetensors.torch import save_file
from typer.testing import CliRunner

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError
from geoxai.io.eurosat import EUROSAT_FILE_BANDS
from geoxai.mapping.scene import classify_scene
from geoxai.models.backbones import (
    RGB_BANDS,
    ResNet18Classifier,
    SimpleCNN,
    load_pretrained_resnet18,
    resnet18_state_keys,
)
from geoxai.models.bundle import load_bundle
from geoxai.train.classify import (
    ClassifyConfig,
    evaluate_classifier,
    read_patches,
    resolve_bands,
    train_classifier,
)

BANDS13 = list(EUROSAT_FILE_BANDS)


def _torchvision_keys() -> list[str]:
    """torchvision resnet18's state_dict keys, spelled out from its layout (not from our code)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight"] + [f"{p}.bn1.{s}" for s in bn]
            keys += [f"{p}.conv2.weight"] + [f"{p}.bn2.{s}" for s in bn]
            if layer > 1 and block == 0:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{s}" for s in bn]
    return keys + ["fc.weight", "fc.bias"]


def _write_tif(path, arr, transform=None, crs="EPSG:32631"):
    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = arr.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=c, dtype=arr.dtype, crs=crs,
        transform=transform or Affine(10, 0, 500000, 0, -10, 5000000),
    ) as dst:  # fmt: skip
        dst.write(arr)


def _fake_folder(root, classes=("A", "B"), per_class=5, bands=13, size=16, seed=0):
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        for i in range(per_class):
            a = rng.integers(0, 3000, (bands, size, size)).astype(np.uint16) + 1000 * k
            _write_tif(root / c / f"{c}_{i}.tif", a)
    return root


def _fresh_torchvision_file(path) -> dict[str, torch.Tensor]:
    """A freshly initialised resnet18 (3 bands, 1000 classes) saved in torchvision's format."""
    torch.manual_seed(1)
    sd = ResNet18Classifier(3, 1000).state_dict()
    with torch.no_grad():  # BN statistics distinguishable from a fresh model's (yet near 0, 1:
        for k, v in sd.items():  # far-off statistics in eval mode would zero every activation)
            if k.endswith(("running_mean", "running_var")):
                v.add_(0.01 * torch.rand_like(v))
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return sd


# ---- networks -----------------------------------------------------------------------------------


def test_resnet18_has_torchvision_state_dict_keys():
    assert resnet18_state_keys() == _torchvision_keys()
    assert len(_torchvision_keys()) == 122
    net = ResNet18Classifier(13, 10, "mix1x1", bands=BANDS13)
    assert list(net.state_dict()) == ["band_mix.weight", "band_mix.bias", *_torchvision_keys()]
    assert net(torch.zeros(2, 13, 64, 64)).shape == (2, 10)
    wide = ResNet18Classifier(13, 10, "widen", bands=BANDS13)
    assert wide.conv1.weight.shape == (64, 13, 7, 7) and wide.band_mix is None
    assert SimpleCNN(13, 10, width=8)(torch.zeros(3, 13, 64, 64)).shape == (3, 10)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_adapted_to_13_bands(tmp_path, suffix):
    sd = _fresh_torchvision_file(tmp_path / f"resnet18{suffix}")
    rgb = [BANDS13.index(b) for b in RGB_BANDS]  # B04 -> R, B03 -> G, B02 -> B

    wide = ResNet18Classifier(13, 10, "widen", bands=BANDS13)
    kept = load_pretrained_resnet18(wide, tmp_path / f"resnet18{suffix}")
    assert kept == ["fc.weight", "fc.bias"]  # 1000 ImageNet classes do not fit 10
    w = wide.conv1.weight.detach()
    for ch, band in enumerate(rgb):
        assert torch.equal(w[:, band], sd["conv1.weight"][:, ch])
    mean = sd["conv1.weight"].mean(dim=1)
    others = [i for i in range(13) if i not in rgb]
    assert torch.allclose(w[:, others], mean[:, None].expand(-1, len(others), -1, -1))
    key = "layer3.1.bn2.running_var"
    assert torch.equal(wide.state_dict()[key], sd[key])

    mix = ResNet18Classifier(13, 10, "mix1x1", bands=BANDS13)
    kept = load_pretrained_resnet18(mix, tmp_path / f"resnet18{suffix}")
    assert set(kept) == {"fc.weight", "fc.bias", "band_mix.weight", "band_mix.bias"}
    assert torch.equal(mix.conv1.weight, sd["conv1.weight"])
    sel = mix.band_mix.weight.detach()[:, :, 0, 0]
    assert torch.equal(sel.argmax(1), torch.tensor(rgb)) and float(sel.sum()) == 3.0
    x = torch.randn(1, 13, 8, 8)  # the 1x1 mix starts as "take B04, B03, B02 as R, G, B"
    assert torch.allclose(mix.band_mix(x), x[:, rgb])


def test_pretrained_file_that_is_not_resnet18(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "other.pth")
    with pytest.raises(InvalidInputError, match="not a torchvision resnet18"):
        load_pretrained_resnet18(ResNet18Classifier(3, 10), tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(DataAccessError, match="cannot read weights file"):
        load_pretrained_resnet18(ResNet18Classifier(3, 10), tmp_path / "junk.pth")


# ---- bands, data, config ---------------------------------------------------------------------


def test_band_selection():
    assert resolve_bands("all13", EUROSAT_FILE_BANDS) == BANDS13
    assert resolve_bands("rgb", EUROSAT_FILE_BANDS) == ["B04", "B03", "B02"]
    assert resolve_bands("rgb", RGB_BANDS) == ["B04", "B03", "B02"]
    assert resolve_bands(["B08", "B04"], EUROSAT_FILE_BANDS) == ["B08", "B04"]
    with pytest.raises(ConfigError, match="Unknown band name 'B8'.*Did you mean"):
        resolve_bands(["B04", "B8"], EUROSAT_FILE_BANDS)
    with pytest.raises(ConfigError, match="Did you mean 'rgb'"):
        resolve_bands("rbg", EUROSAT_FILE_BANDS)
    with pytest.raises(ConfigError, match="which the patches lack"):
        resolve_bands("all13", RGB_BANDS)
    with pytest.raises(ConfigError, match="more than once"):
        resolve_bands(["B04", "B04"], EUROSAT_FILE_BANDS)


def test_read_patches_stratified_split_and_bad_folders(tmp_path):
    root = _fake_folder(tmp_path / "ok", per_class=5)
    d = read_patches(root, ["B04", "B8A"], seed=3)
    assert d.images.shape == (10, 2, 16, 16) and d.images.dtype == np.uint16
    assert d.classes == ("A", "B") and d.bands == ("B04", "B8A")
    for c in range(2):  # per class: 1 test, 1 validate, 3 train
        s = d.splits[d.labels == c]
        assert sorted(s) == ["test", "train", "train", "train", "validate"]
    with rasterio.open(d.files[0]) as src:  # B8A is the files' last band
        np.testing.assert_array_equal(d.images[0, 1], src.read(13))

    empty = _fake_folder(tmp_path / "empty")
    (empty / "C").mkdir()
    with pytest.raises(InvalidInputError, match="class folder .*C holds no patch"):
        read_patches(empty)
    four = tmp_path / "four"
    _fake_folder(four, bands=4)
    with pytest.raises(InvalidInputError, match="has 4 bands; EuroSAT-format patches have 13"):
        read_patches(four)
    mixed = _fake_folder(tmp_path / "mixed")
    _write_tif(mixed / "A" / "odd.tif", np.zeros((3, 16, 16), np.uint16))
    with pytest.raises(InvalidInputError, match="all patches need the same bands"):
        read_patches(mixed)
    with pytest.raises(DataAccessError, match="does not exist"):
        read_patches(tmp_path / "nope")
    split = tmp_path / "split.csv"
    split.write_text("file,class,split\nA/A_0.tif,A,train\nB/B_0.tif,B,tset\n")
    with pytest.raises(InvalidInputError, match="Did you mean 'test'"):
        read_patches(root, splits=split)
    split.write_text("file,class,split\nA/A_0.tif,A,train\nB/B_9.tif,B,val\n")
    with pytest.raises(InvalidInputError, match="lists B/B_9.tif, which is not a file"):
        read_patches(root, splits=split)
    split.write_text("file,class,split\nA/A_0.tif,A,train\nB/B_0.tif,B,train\n")
    with pytest.raises(InvalidInputError, match="no validate patches"):
        read_patches(root, splits=split)
    with pytest.raises(ConfigError, match="which the patches lack"):
        read_patches(_fake_folder(tmp_path / "rgb", bands=3), "all13")


def test_config_errors(tmp_path):
    from geoxai.train.workflows import load_workflow_config

    with pytest.raises(ConfigError, match="Did you mean 'bands'"):
        load_workflow_config("classify", {"data": "x", "out_dir": "y", "band": "rgb"})
    root = _fake_folder(tmp_path / "d")
    missing = tmp_path / "weights" / "resnet18-f37072fd.pth"
    cfg = ClassifyConfig(data=str(root), out_dir=str(tmp_path / "o"), model="resnet18",
                         pretrained=str(missing))  # fmt: skip
    with pytest.raises(DataAccessError, match=r"resnet18-f37072fd.pth does not exist.*null"):
        train_classifier(cfg)
    assert not (tmp_path / "o").exists()  # failed before any work
    cfg = ClassifyConfig(data=str(root), out_dir=str(tmp_path / "o"), pretrained=str(missing))
    with pytest.raises(ConfigError, match="for model 'resnet18'"):
        train_classifier(cfg)
    cfg = ClassifyConfig(data=str(root), out_dir=str(tmp_path / "o"), freeze_backbone=2)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        train_classifier(cfg)


def test_pretrained_from_the_torch_hub_cache(tmp_path, monkeypatch):
    from geoxai.models.backbones import find_cached_resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = _fake_folder(tmp_path / "d", size=32)
    cfg = ClassifyConfig(data=str(root), out_dir=str(tmp_path / "o"), model="resnet18",
                         pretrained="torchvision-cache")  # fmt: skip
    with pytest.raises(DataAccessError, match=r"hub.checkpoints holds no resnet18-\*.pth"):
        train_classifier(cfg)
    assert find_cached_resnet18() is None
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    _fresh_torchvision_file(cached)
    assert find_cached_resnet18() == cached


def test_evaluation_by_hand():
    ev = evaluate_classifier(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 0, 2]), "abc")
    assert ev["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert ev["per_class_accuracy"] == {"a": 0.5, "b": 2 / 3, "c": 1.0}
    assert ev["overall_accuracy"] == pytest.approx(4 / 6) and ev["n"] == 6


# ---- real EuroSAT subset ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def eurosat(realdata):
    return realdata / "eurosat_ms_subset"


@pytest.fixture(scope="module")
def trained13(eurosat, tmp_path_factory):
    """13 bands, simple_cnn from scratch, upstream split (the number the README reports)."""
    out = tmp_path_factory.mktemp("cls13")
    cfg = ClassifyConfig(
        data=str(eurosat), out_dir=str(out), bands="all13", model="simple_cnn", width=16,
        training={"epochs": 15, "lr": 3e-3, "patience": 6, "progress": False},
    )  # fmt: skip
    return train_classifier(cfg), out


@pytest.mark.realdata
@pytest.mark.slow
def test_13_band_from_scratch_on_eurosat(trained13):
    bundle, out = trained13
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["split"] == "test" and ev["n"] == 20  # upstream split: 2 test patches per class
    cm = np.asarray(ev["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 20 and (cm.sum(1) == 2).all()
    assert ev["overall_accuracy"] == pytest.approx(np.trace(cm) / 20)
    print(f"EuroSAT subset, 13 bands from scratch: test accuracy {ev['overall_accuracy']:.2f}")
    assert ev["overall_accuracy"] > 0.1  # above chance (10 classes); tiny data, see README
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "metrics.png").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert 1 <= len(json.loads((out / "metrics.json").read_text())) <= 15
    spec = json.loads((bundle / "model.json").read_text())
    assert spec["inputs"]["features"] == BANDS13 and spec["window"]["window"] == 64
    assert len(spec["output"]["names"]) == 10 and spec["normalization"]["kind"] == "affine"
    info = json.loads((bundle / "classify.json").read_text())
    assert info["evaluation"]["overall_accuracy"] == ev["overall_accuracy"]
    assert "bands: all13" in (bundle / "train_config.yaml").read_text()


@pytest.mark.realdata
@pytest.mark.slow
def test_normalization_from_training_patches_only(trained13, eurosat):
    bundle, _ = trained13
    d = read_patches(eurosat, "all13")
    train = d.images[d.index("train")].astype(np.float64)
    spec = json.loads((bundle / "model.json").read_text())["normalization"]
    np.testing.assert_allclose(spec["offset"], train.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(spec["scale"], train.std(axis=(0, 2, 3)), rtol=1e-9)
    everything = d.images.astype(np.float64).mean(axis=(0, 2, 3))
    assert not np.allclose(spec["offset"], everything, rtol=1e-6)


@pytest.mark.realdata
@pytest.mark.slow
def test_sliding_class_map_of_a_patch_mosaic(trained13, eurosat, tmp_path):
    from pipelines.cli import app

    bundle, _ = trained13
    d = read_patches(eurosat, "all13")
    b = load_bundle(bundle)
    spec = b.spec.normalization
    x = (d.images.astype(np.float32) - np.asarray(spec.offset, np.float32)[:, None, None]) / (
        np.asarray(spec.scale, np.float32)[:, None, None]
    )
    with torch.no_grad():
        own = b.model(torch.from_numpy(x)[:, None]).argmax(1).numpy()
    # four training patches of different classes that the classifier gets right on their own
    picks, seen = [], set()
    for i in d.index("train"):
        if own[i] == d.labels[i] and d.labels[i] not in seen:
            picks.append(i)
            seen.add(d.labels[i])
        if len(picks) == 4:
            break
    assert len(picks) == 4
    mosaic = np.zeros((13, 128, 128), np.uint16)
    for j, i in enumerate(picks):
        r, c = divmod(j, 2)
        mosaic[:, 64 * r : 64 * r + 64, 64 * c : 64 * c + 64] = d.images[i]
    scene = tmp_path / "scene.tif"
    _write_tif(scene, mosaic)
    out = tmp_path / "classes.tif"
    args = ["classify", "--bundle", str(bundle), "--scene", str(scene), "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--stride", "16", "--probabilities"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as src:
        assert src.count == 11 and src.descriptions[0] == "class" and src.dtypes[0] == "uint8"
        assert src.crs.to_string() == "EPSG:32631" and src.transform.c == 500000
        assert src.overviews(1)  # a COG
        cls, probs = src.read(1), src.read()[1:].astype(int)
        classes = dict(kv.split("=") for kv in src.tags()["classes"].split(";"))
    assert classes["0"] == "AnnualCrop"
    for j, i in enumerate(picks):
        rr, cc = divmod(j, 2)
        assert cls[64 * rr + 32, 64 * cc + 32] == d.labels[i], (j, d.classes[d.labels[i]])
    assert (cls != 255).all()  # windows flush with the edges cover every pixel
    assert np.abs(probs.sum(0) - 100).max() <= 6  # percent, rounded per class
    assert (probs.argmax(0) == cls).mean() > 0.99

    bad = tmp_path / "four.tif"
    _write_tif(bad, mosaic[:4])
    with pytest.raises(InvalidInputError, match="has 4 bands; the classifier was trained"):
        classify_scene(bundle, bad, tmp_path / "x.tif")


@pytest.mark.realdata
@pytest.mark.slow
def test_rgb_runs_through_the_workflow_registry(eurosat, tmp_path):
    from geoxai.train.workflows import load_workflow_config, run_workflow

    path = tmp_path / "classify.yaml"
    path.write_text(
        f"data: {eurosat}\nbands: rgb\nwidth: 8\nout_dir: {tmp_path}\n"
        "training: {epochs: 2, progress: false}\n"
    )
    bundle = run_workflow("classify", load_workflow_config("classify", path))
    assert bundle == tmp_path / "bundle"
    spec = json.loads((bundle / "model.json").read_text())
    assert spec["inputs"]["features"] == ["B04", "B03", "B02"]
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    assert ev["n"] == 20 and 0 <= ev["overall_accuracy"] <= 1


def _small_split(eurosat, path, classes=("Forest", "Industrial", "SeaLake")):
    """A split file over 3 classes: 2 train, 1 validate, 1 test patch each (fast transfer tests)."""
    rows = list(csv.DictReader((eurosat / "splits.csv").open()))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class", "split"])
        for c in classes:
            for split, n in (("train", 2), ("validate", 1), ("test", 1)):
                for r in [r for r in rows if r["class"] == c and r["split"] == split][:n]:
                    w.writerow([r["file"], c, split])
    return path


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["mix1x1", "widen"])
def test_transfer_learning_from_torchvision_file(eurosat, tmp_path, adapter):
    weights = tmp_path / "resnet18.pth"
    sd = _fresh_torchvision_file(weights)
    cfg = ClassifyConfig(
        data=str(eurosat), splits=str(_small_split(eurosat, tmp_path / "split.csv")),
        out_dir=str(tmp_path / "out"), model="resnet18", pretrained=str(weights),
        band_adapter=adapter, freeze_backbone=1 if adapter == "mix1x1" else 0,
        training={"epochs": 1, "batch_size": 6, "progress": False},
    )  # fmt: skip
    bundle = train_classifier(cfg)
    net = load_bundle(bundle).net
    assert isinstance(net, ResNet18Classifier) and net.config["band_adapter"] == adapter
    got = net.state_dict()
    assert got["fc.weight"].shape == (3, 512)
    key = "layer2.0.conv1.weight"
    if adapter == "mix1x1":  # backbone frozen for the one epoch: weights and BN stats as loaded
        assert torch.equal(got[key], sd[key])
        assert torch.equal(got["layer1.0.bn1.running_mean"], sd["layer1.0.bn1.running_mean"])
        assert torch.equal(got["conv1.weight"], sd["conv1.weight"])
        init = ResNet18Classifier(13, 3, "mix1x1", bands=BANDS13).band_mix.weight
        assert not torch.equal(got["band_mix.weight"], init)  # the adapter did train
    else:  # trained end to end, starting from the loaded weights
        assert not torch.equal(got[key], sd[key])
        assert (got[key] - sd[key]).abs().max() < 0.05
        assert got["conv1.weight"].shape == (64, 13, 7, 7)
    ev = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert ev["n"] == 3 and ev["classes"] == ["Forest", "Industrial", "SeaLake"]


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_weights(tmp_path):
    """Augmentation and batch order come from the trainer's per-epoch generator: a run stopped
    after epoch 1 and resumed ends with the weights of an uninterrupted run."""
    root = _fake_folder(tmp_path / "d", classes=("A", "B", "C"), per_class=5)

    def cfg(out, epochs):
        return ClassifyConfig(
            data=str(root), out_dir=str(out), width=4,
            training={"epochs": epochs, "batch_size": 4, "progress": False},
        )  # fmt: skip

    train_classifier(cfg(tmp_path / "whole", 2))
    train_classifier(cfg(tmp_path / "parts", 1))
    train_classifier(cfg(tmp_path / "parts", 2), resume=True)
    a, b = (
        torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=False)["model"]
        for d in ("whole", "parts")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ev = json.loads((tmp_path / "parts" / "evaluation.json").read_text())
    assert ev["epochs_run"] == 2 and ev["n"] == 3  # one test patch per class
