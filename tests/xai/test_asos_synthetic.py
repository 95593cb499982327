"""ASOS on scenes whose label is caused by a known land cover: the map must find that cover.

Set-up (seconds on CPU): 128 training scenes of 32x32 px (:func:`geoxai.xai.cause_scenes`):
label 1 = 15-35 % forest, label 0 = 0-6 % forest, the rest a patchwork of five other covers.
A small ASOSNet (k=3, width 8) is trained with activation occlusion, the table fitted on the
training scenes (edge 0.2, min 10 px), and the maps of 8 held-out label-1 scenes are scored
by the IoU of their top-q pixels (q = forest fraction) with the forest mask. Chance is
q / (2 - q) ~ 0.18. Measured here (seed 0, trained through the shared trainer): ASOS 0.35,
OSM (8 px patch, stride 4) 0.41, Grad-CAM 0.40; before the trainer refactor (another batch
order) the same seed gave 0.44 / 0.43 / 0.59, and over training seeds 0-4 ASOS ranged
0.21-0.62. So on these scenes ASOS is on a par with OSM at ~1/100 of its cost per image, and
does *not* beat Grad-CAM as the paper reports for its scenes; one seed's figure varies by
+-0.2, so the check asks for 1.5x chance, not a ranking. Training takes ~15 s on an idle
2-core machine (more when it is shared).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoxai.models.asos_net import ASOSNet
from geoxai.train.asos import train_asos
from geoxai.train.trainer import FitParams
from geoxai.xai.asos import ASOSParams, asos_map, fit_partial
from geoxai.xai.baselines import cause_scenes, gradcam_map, occlusion_map, top_iou

pytestmark = pytest.mark.slow

NEG = (0.0, 0.06)


@pytest.fixture(scope="module")
def fitted():
    x, y, _ = cause_scenes(128, 32, seed=1, negative_fraction=NEG)
    torch.manual_seed(0)
    net = ASOSNet(10, 3, width=8, head_width=8)
    hist = train_asos(net, x, y, FitParams(epochs=30, batch_size=16, lr=1e-3, seed=0))
    table = fit_partial(net, x, ASOSParams(edge=0.2, min_pixels=10))
    return net, table, hist


def test_asos_map_overlaps_the_causing_class(fitted):
    net, table, hist = fitted
    assert hist[-1]["accuracy"] >= 0.9
    xt, yt, mt = cause_scenes(16, 32, seed=2, negative_fraction=NEG)
    scores = {"asos": [], "osm": [], "gradcam": []}
    inside, outside = [], []
    for i in np.flatnonzero(yt == 1):
        sens, _ = asos_map(net, table, xt[i])
        scores["asos"].append(top_iou(sens, mt[i]))
        scores["osm"].append(top_iou(occlusion_map(net, xt[i]), mt[i]))
        scores["gradcam"].append(top_iou(gradcam_map(net, xt[i]), mt[i]))
        inside.append(np.nanmean(sens[mt[i]]))
        outside.append(np.nanmean(sens[~mt[i]]))
    iou = {k: float(np.mean(v)) for k, v in scores.items()}
    q = float(mt[yt == 1].mean())
    chance = q / (2 - q)
    print(f"top-q IoU with the forest mask (chance {chance:.2f}):", iou)
    assert iou["asos"] >= 1.5 * chance
    # forest pushes the 'forest present' score up more than the other covers do
    assert np.mean(inside) > np.mean(outside)
