"""The CPU inference shortcuts change no output: the in-place input preparation and the
channels-last temporal encoder of the TemporalUNet (benchmarks/bench_predict.py times them)."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from geoxai.models.bundle import load_bundle
from geoxai.models.unet import TemporalUNet
from geoxai.train.temporal import save_temporal_bundle

FEATS = ["a", "b", "c"]


def _encode_time_strided(net: TemporalUNet, x: torch.Tensor) -> torch.Tensor:
    """The temporal encoder on the strided transposed view (no channels-last copy)."""
    b, t, c, h, w = x.shape
    z = net.temporal(net.embed(x.transpose(1, 2).reshape(b, c, t, h * w)))
    a = torch.softmax(net.score(z), dim=2)
    return torch.cat([(z * a).sum(dim=2), z.mean(dim=2)], dim=1).reshape(b, -1, h, w)


def test_channels_last_temporal_encoder_matches_the_strided_one():
    torch.manual_seed(0)
    net = TemporalUNet(len(FEATS), 8, embed=6, base=4, depth=2).eval()
    x = torch.randn(3, 8, len(FEATS), 20, 12)
    with torch.inference_mode():
        got = net.encode_time(x)
        want = _encode_time_strided(net, x)
    # measured bit-identical (oneDNN sums the same terms in the same order); the tolerance
    # only allows for a oneDNN build that picks another kernel for the other layout
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


def test_prepare_in_place_equals_out_of_place_and_keeps_the_cube(tmp_path):
    torch.manual_seed(0)
    net = TemporalUNet(len(FEATS), 4, embed=4, base=4, depth=1)
    off, sc = [0.1, -0.2, 0.0], [0.5, 2.0, 0.25]
    path = save_temporal_bundle(
        tmp_path / "b", net, FEATS, (off, sc), window=8, stride=4, context=2
    )
    b = load_bundle(path, runtime="torch")
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, (4, 3, 16, 16)).astype(np.float32)
    data[0, 1, 2, 3] = np.nan
    for order in (FEATS, ["c", "a", "b"]):  # features in model order, and shuffled
        cube = xr.DataArray(
            data.copy(),
            dims=("time", "band", "y", "x"),
            coords={"band": order},
            attrs={"transform": [10.0, 0.0, 0.0, 0.0, -10.0, 0.0]},
        )
        before = cube.values.copy()
        got = b.prepare(cube)
        x = cube.sel(band=FEATS).values
        want = np.clip(
            (x - np.float32(off)[None, :, None, None]) / np.float32(sc)[None, :, None, None],
            -3.0,
            3.0,
        )
        np.testing.assert_array_equal(got, want)  # the same float32 operations: bit for bit
        np.testing.assert_array_equal(cube.values, before)  # the caller's cube is untouched
        assert not np.shares_memory(got, cube.values)
