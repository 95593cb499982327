"""The built-in temporal U-Net: shapes, translation equivariance, seamless blended tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.grid import TileSpec
from geoxai.inference.predict import predict_windows
from geoxai.inference.windows import WindowParams, required_halo
from geoxai.models.unet import TemporalUNet


def _net(**kw):
    torch.manual_seed(0)
    net = TemporalUNet(**{"in_features": 5, "time_steps": 6, "embed": 4, "base": 4, **kw})
    # non-trivial batch-norm statistics, as after training
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("hw", [(16, 16), (13, 22), (1, 1)])
def test_shapes_and_odd_sizes(hw):
    net = _net(out_channels=3)
    with torch.inference_mode():
        y = net(torch.randn(2, 6, 5, *hw))
    assert y.shape == (2, 3, *hw) and torch.isfinite(y).all()


def test_translation_equivariant_away_from_borders():
    net = _net(depth=2)
    x = torch.randn(1, 6, 5, 96, 96)
    with torch.inference_mode():
        a = net(x)[..., 40:56, 40:56]
        b = net(torch.roll(x, shifts=(4, 8), dims=(-2, -1)))[..., 44:60, 48:64]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_per_pixel_time_series_matter():
    net = _net()
    x = torch.randn(1, 6, 5, 8, 8)
    y = x.clone()
    y[:, 3] += 1.0  # one time step changes
    with torch.inference_mode():
        assert not torch.allclose(net(x), net(y))


def test_bad_arguments_and_inputs():
    with pytest.raises(ConfigError, match="temporal_kernel"):
        TemporalUNet(5, 6, temporal_kernel=2)
    with pytest.raises(ConfigError, match="in_features"):
        TemporalUNet(0, 6)
    with pytest.raises(InvalidInputError, match="T=6, C=5"):
        _net()(torch.randn(1, 6, 4, 8, 8))


def test_adjacent_tiles_agree_with_the_real_network():
    """Two neighbouring tiles (scaled down: 60 px cores) predicted separately agree.

    Agreement holds wherever both tiles hold every window over a pixel: at least
    ``window + context - 1`` px from both arrays' edges. That region contains each tile's core
    (the halo is ``required_halo``) and, with a wider halo, a band of the shared overlap.
    """
    net = _net()
    p = WindowParams(window=16, stride=8, context=4, batch_size=8)
    core = 60
    need = required_halo(p.window, p.stride, p.context, core_px=core)
    margin = p.window + p.context - 1
    halo = need + margin  # so that the two trusted regions overlap
    west = TileSpec(32631, 96, 938, halo, tile_size_m=core * 10)
    east = west.neighbour(1, 0)
    rng = np.random.default_rng(0)
    n = core + 2 * halo
    world = rng.standard_normal((6, 5, n, core + n)).astype(np.float32)  # west array + one core
    pw = predict_windows(net, world[..., :n], west.transform, params=p).values[0]
    pe = predict_windows(net, world[..., core:], east.transform, params=p).values[0]
    assert pw.std() > 0.1, "the network must respond to its input for this test to mean much"
    # world columns held by both: [core, n); trusted in both: [core + margin, n - margin)
    rows = slice(margin, n - margin)
    a = pw[rows, core + margin : n - margin]
    b = pe[rows, margin : n - core - margin]
    assert a.shape[1] >= margin
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # the seam: west's core and east's core side by side equal one prediction over both
    both = predict_windows(net, world[..., : n + core], west.transform, params=p).values[0]
    np.testing.assert_allclose(
        pw[halo:-halo, halo:-halo], both[halo:-halo, halo : halo + core], atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        pe[halo:-halo, halo:-halo],
        both[halo:-halo, halo + core : halo + 2 * core],
        atol=1e-5,
        rtol=0,
    )
    # tiles with a halo below required_halo do differ at the seam (the check is not vacuous)
    small = need - 6
    x_s = world[
        :, :, halo - small : halo + core + small, core + halo - small : 2 * core + halo + small
    ]
    ps = predict_windows(net, x_s, east.with_halo(small).transform, params=p).values[0]
    assert not np.allclose(ps[small:-small, small:-small], pe[halo:-halo, halo:-halo], atol=1e-5)


def test_tile_transform_lattice_is_zone_global():
    t = TileSpec(32631, 96, 938, 40)
    p = WindowParams(window=64, stride=32, context=8)
    from geoxai.inference.windows import lattice_origin, window_origins

    zr, zc = lattice_origin(t.transform)
    org = window_origins(t.shape, t.transform, p)
    assert ((org + np.array([zr, zc])) % 32 == 0).all()
    assert zc == 96 * 600 - 40 and zr == -(939 * 600 + 40)
    assert isinstance(t.transform, Affine)
