"""Captum baselines, top-q IoU and the comparison figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoxai.errors import InvalidInputError
from geoxai.models.asos_net import ASOSNet
from geoxai.xai.baselines import (
    cause_scenes,
    comparison_figure,
    deeplift_map,
    gradcam_map,
    occlusion_map,
    top_iou,
    top_mask,
)


class _Linear(torch.nn.Module):
    """logit = sum of band 0 over a fixed square: OSM must light up exactly there."""

    in_bands = 10

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, 10, 24, 24))
        with torch.no_grad():
            self.w[0, 0, 8:16, 8:16] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3))[:, None] - 16.0


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ASOSNet(10, 3, width=4, head_width=4).eval()


def test_baselines_have_image_shape(net):
    x = np.random.default_rng(0).uniform(0, 0.3, (10, 24, 24)).astype(np.float32)
    for fn in (occlusion_map, gradcam_map, deeplift_map):
        m = fn(net, x)
        assert m.shape == (24, 24) and m.dtype == np.float32 and np.isfinite(m).all()
    assert (gradcam_map(net, x) >= 0).all()  # ReLU'd Grad-CAM


def test_occlusion_finds_the_only_region_that_matters():
    x = np.full((10, 24, 24), 0.5, np.float32)
    osm = occlusion_map(_Linear(), x, patch=4, stride=4)
    assert (osm[8:16, 8:16] > 0).all()
    inside = np.zeros((24, 24), bool)
    inside[8:16, 8:16] = True
    assert np.all(osm[~inside] == 0)
    assert top_iou(osm, inside) == 1.0
    # DeepLIFT of a linear model is x * w (summed over bands): exact on the square
    dl = deeplift_map(ScoreFree := _Linear(), x)  # noqa: F841 - named for readability
    assert (dl[inside] > 0).all() and np.allclose(dl[~inside], 0)


def test_an_ignored_input_gives_zero_osm():
    class Const(torch.nn.Module):
        in_bands = 10

        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.b.expand(x.shape[0], 1)

    osm = occlusion_map(Const(), np.ones((10, 16, 16), np.float32))
    assert np.all(osm == 0)


def test_top_mask_and_iou():
    v = np.arange(16, dtype=float).reshape(4, 4)
    v[0, 0] = np.nan
    m = top_mask(v, 0.25)
    assert m.sum() == 4 and m[3].all()
    mask = np.zeros((4, 4), bool)
    mask[3] = True
    assert top_iou(v, mask) == 1.0
    assert top_iou(-v, mask) == 0.0
    with pytest.raises(InvalidInputError):
        top_iou(v, np.zeros((4, 4), bool))
    with pytest.raises(InvalidInputError):
        top_mask(v, 0.0)


def test_cause_scenes_label_follows_the_class():
    x, y, m = cause_scenes(20, 32, seed=0, negative_fraction=(0.0, 0.05))
    frac = m.mean(axis=(1, 2))
    assert x.shape == (20, 10, 32, 32) and set(y) == {0.0, 1.0}
    assert frac[y == 1].min() > frac[y == 0].max()
    with pytest.raises(InvalidInputError, match="Did you mean 'forest'"):
        cause_scenes(2, cause="forrest")


def test_bad_input_and_figure(net, tmp_path):
    with pytest.raises(InvalidInputError, match="bands"):
        occlusion_map(net, np.zeros((13, 16, 16), np.float32))
    x = np.zeros((10, 16, 16), np.float32)
    x[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        gradcam_map(net, x)
    img = np.random.default_rng(0).uniform(0, 0.3, (10, 16, 16)).astype(np.float32)
    a = np.tanh(np.random.default_rng(1).normal(size=(3, 16, 16))).astype(np.float32)
    s = np.where(a[0] > 0, a[1], np.nan).astype(np.float32)
    p = comparison_figure(tmp_path / "f.png", img, a, s, s, np.abs(s), mask=a[0] > 0.5)
    assert p.read_bytes()[:4] == b"\x89PNG"
