"""ASOS core: network shapes, occlusion invariants, exact mergeable tables, bundles, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from geoxai.errors import ConfigError, InvalidInputError, ModelBundleError
from geoxai.inference.windows import WindowParams
from geoxai.models.asos_net import ASOSNet, occlude, to_network_input
from geoxai.train.asos import train_asos
from geoxai.train.trainer import FitParams
from geoxai.xai.asos import (
    QUANTUM,
    ASOSParams,
    ASOSTable,
    TableSizeWarning,
    asos_map,
    cube_index,
    fit_partial,
    load_asos_bundle,
    lookup,
    merge_tables,
    n_cubes_per_axis,
    save_asos_bundle,
)

PARAMS = ASOSParams(edge=0.2, min_pixels=8, head_batch=16)


@pytest.fixture(scope="module")
def net() -> ASOSNet:
    torch.manual_seed(0)
    return ASOSNet(10, 3, width=4, head_width=4).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 0.4, size=(6, 10, 24, 24)).astype(np.float32)


class _ConstantHead(ASOSNet):
    """A network whose head ignores its input: sensitivity must be exactly 0."""

    def head(self, a: torch.Tensor) -> torch.Tensor:
        return torch.full((a.shape[0], 1), 0.7, dtype=a.dtype)


@torch.no_grad()
def test_shapes_any_size(net):
    for h, w in [(24, 24), (37, 50), (64, 64), (5, 7)]:
        x = torch.rand(2, 10, h, w)
        a = net.activations(x)
        assert a.shape == (2, 3, h, w)
        assert float(a.abs().max()) <= 1.0
        assert net(x).shape == (2, 1)
        assert net.head(a).shape == (2, 1)


def test_cube_index_bounds_and_layout():
    n = n_cubes_per_axis(0.2)
    assert n == 10
    a = torch.tensor([[-1.0, 1.0, -0.05, 0.05], [1.0, -1.0, 0.0, 0.39], [0.0, 0.0, 0.0, 0.0]])
    idx = cube_index(a.view(3, 1, 4), 0.2)[0]
    # channel 0 most significant; +1 falls in the last cube, -1 in the first
    assert idx.tolist() == [0 * 100 + 9 * 10 + 5, 9 * 100 + 0 + 5, 4 * 100 + 5 * 10 + 5, 565]
    assert n_cubes_per_axis(0.3) == 7
    with pytest.raises(ConfigError):
        n_cubes_per_axis(0.0)


def test_ignoring_head_gives_zero_sensitivity(images):
    torch.manual_seed(1)
    const = _ConstantHead(10, 3, width=4, head_width=4).eval()
    table = fit_partial(const, images, PARAMS)
    assert table.count.sum() > 0
    assert not table.sum_q.any() and not table.sumsq_q.any()
    sens, _ = asos_map(const, table, images[0])
    seen = np.isfinite(sens)
    assert seen.any()
    assert np.all(sens[seen] == 0.0)


def test_occluding_nothing_changes_nothing(net, images):
    a = net.activations(torch.from_numpy(images[:1]))[0]
    none = torch.zeros((3, *a.shape[1:]), dtype=torch.bool)
    same = occlude(a, none, fill=0.0)
    assert torch.equal(same, a.expand_as(same))
    assert torch.equal(net.head(same), net.head(a[None]).expand(3, 1))
    # occluding everything with the fill gives the fill everywhere
    full = occlude(a, ~none[:1], fill=0.25)
    assert torch.all(full == 0.25)


def test_fit_records_every_cube_once_per_image(net, images):
    table = fit_partial(net, images, PARAMS)
    assert table.n_images == len(images)
    per_image = []
    for img in images:
        a = net.activations(torch.from_numpy(img[None]))[0]
        idx = cube_index(a, PARAMS.edge).flatten()
        cubes, counts = torch.unique(idx, return_counts=True)
        per_image.append(cubes[counts >= PARAMS.min_pixels].numpy())
    expect = np.zeros(table.n_cubes, np.int64)
    for c in per_image:
        expect[c] += 1
    np.testing.assert_array_equal(table.count, expect)
    assert (table.pixel_count >= PARAMS.min_pixels * table.count).all()
    # sum of squares >= square of sum / count (Cauchy-Schwarz), up to the fixed-point rounding
    ok = table.count > 0
    lhs = table.sumsq[ok] * table.count[ok]
    assert np.all(lhs + 1e-6 >= table.sum[ok] ** 2)


def test_head_batch_does_not_change_the_table(net, images):
    t1 = fit_partial(net, images, PARAMS)
    t2 = fit_partial(net, images, ASOSParams(edge=0.2, min_pixels=8, head_batch=2))
    assert t1.equals(t2)


@given(st.lists(st.integers(0, 5), min_size=6, max_size=6), st.permutations(range(6)))
def test_sharded_fit_equals_single_fit_exactly(shard_of, order):
    # tolerance 0: sums are int64 fixed point, so any sharding and merge order is bit-exact
    torch.manual_seed(0)
    net = ASOSNet(10, 3, width=4, head_width=4).eval()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.4, size=(6, 10, 24, 24)).astype(np.float32)
    single = fit_partial(net, images, PARAMS)
    shards = [np.flatnonzero(np.asarray(shard_of) == s) for s in sorted(set(shard_of))]
    parts = [fit_partial(net, images[idx], PARAMS) for idx in shards]
    parts = [parts[i] for i in sorted(range(len(parts)), key=lambda i: order[i % 6])]
    assert merge_tables(parts).equals(single)


def test_merge_is_associative_commutative_and_checks_settings(net, images):
    a, b, c = (fit_partial(net, images[i : i + 2], PARAMS) for i in (0, 2, 4))
    assert a.merge(b).merge(c).equals(a.merge(b.merge(c)))
    assert a.merge(b).equals(b.merge(a))
    other = fit_partial(net, images[:2], ASOSParams(edge=0.25, min_pixels=8))
    with pytest.raises(ConfigError, match="same bundle"):
        a.merge(other)
    with pytest.raises(InvalidInputError):
        merge_tables([])


def test_table_statistics_and_serialisation(net, images, tmp_path):
    t = fit_partial(net, images, PARAMS, meta={"data": "random"})
    ok = t.count > 0
    np.testing.assert_allclose(t.mean()[ok], t.sum[ok] / t.count[ok])
    assert np.isnan(t.mean()[~ok]).all()
    assert np.isnan(t.mean(min_evidence=10**6)).all()
    u = ASOSTable.load(t.save(tmp_path / "t.npz"))
    assert u.equals(t) and u.meta == {"data": "random"}
    with pytest.raises(InvalidInputError, match="not an ASOS table"):
        ASOSTable.from_bytes(b"nonsense")
    with pytest.raises(InvalidInputError, match="asos fit"):
        ASOSTable.load(tmp_path / "missing.npz")
    # the quantisation error of a record is at most QUANTUM / 2
    assert QUANTUM == 2.0**-32


def test_lookup_masks_thin_cubes_and_nan(net, images):
    t = fit_partial(net, images, PARAMS)
    a = net.activations(torch.from_numpy(images[:1]))[0].detach().numpy()
    s = lookup(t, a)
    idx = cube_index(torch.from_numpy(a), t.edge).numpy()
    np.testing.assert_array_equal(np.isnan(s), t.count[idx] == 0)
    a[:, 0, 0] = np.nan
    assert np.isnan(lookup(t, a)[0, 0])
    with pytest.raises(InvalidInputError, match="k=3"):
        lookup(t, a[:2])


def test_map_matches_lookup_and_handles_nan_and_units(net, images):
    t = fit_partial(net, images, PARAMS)
    s, a = asos_map(net, t, images[0])
    assert s.shape == (24, 24) and a.shape == (3, 24, 24)
    np.testing.assert_array_equal(s, lookup(t, a))
    dn = images[0] * 1e4
    s_dn, _ = asos_map(net, t, dn, units="dn")
    np.testing.assert_allclose(s_dn, s, equal_nan=True, atol=1e-6)
    img = images[0].copy()
    img[3, 5, 6] = np.nan
    s_nan, a_nan = asos_map(net, t, img)
    assert np.isnan(s_nan[5, 6]) and np.isnan(a_nan[:, 5, 6]).all()
    assert np.isfinite(s_nan).sum() >= np.isfinite(s).sum() - 30


def test_blended_map_on_a_big_scene(net, images):
    t = fit_partial(net, images, PARAMS)
    rng = np.random.default_rng(1)
    scene = rng.uniform(0, 0.4, size=(10, 80, 96)).astype(np.float32)
    s, a = asos_map(net, t, scene, window=WindowParams(window=32, stride=16, context=4))
    assert s.shape == (80, 96) and np.isfinite(a).all()
    assert float(np.abs(a).max()) <= 1.0
    np.testing.assert_array_equal(s, lookup(t, a))


def test_bad_inputs(net, images):
    t = fit_partial(net, images, PARAMS)
    with pytest.raises(InvalidInputError, match="13 bands"):
        asos_map(net, t, np.zeros((13, 16, 16), np.float32))
    with pytest.raises(InvalidInputError, match="13 bands"):
        fit_partial(net, np.zeros((2, 13, 16, 16), np.float32), PARAMS)
    bad = images.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        fit_partial(net, bad, PARAMS)
    with pytest.raises(InvalidInputError, match="NaN"):
        to_network_input(bad)
    with pytest.raises(InvalidInputError, match="Did you mean 'dn'"):
        to_network_input(images, units="dns")
    with pytest.raises(InvalidInputError, match="NaN"):
        train_asos(net, bad, np.zeros(6), FitParams(epochs=1))
    with pytest.raises(InvalidInputError, match="0 or 1"):
        train_asos(net, images, np.full(6, 2.0), FitParams(epochs=1))


def test_many_channels_with_small_edge_warns_on_table_size():
    with pytest.warns(TableSizeWarning, match="cubes"):
        ASOSTable.empty(6, ASOSParams(edge=0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ASOSTable.empty(3, ASOSParams(edge=0.2))
        ASOSTable.empty(6, ASOSParams(edge=1.0))
    with pytest.raises(ConfigError, match="larger edge"):
        ASOSTable.empty(12, ASOSParams(edge=0.1))


def test_training_reduces_the_loss():
    from geoxai.xai.baselines import cause_scenes

    x, y, _ = cause_scenes(32, 24, seed=3)
    torch.manual_seed(0)
    net = ASOSNet(10, 3, width=4, head_width=4)
    hist = train_asos(net, x, y, FitParams(epochs=6, batch_size=8, lr=3e-3))
    assert len(hist) == 6 and not net.training
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_bundle_round_trip_and_fit_first_error(net, images, tmp_path):
    d = save_asos_bundle(tmp_path / "b", net)
    with pytest.raises(ModelBundleError, match="fit first"):
        load_asos_bundle(d)
    b, none = load_asos_bundle(d, need_table=False)
    assert none is None and b.spec.architecture == "asos"
    t = fit_partial(b.net, images, PARAMS)
    d2 = save_asos_bundle(tmp_path / "fitted", b.net, b.spec, table=t)
    b2, t2 = load_asos_bundle(d2)
    assert t2 is not None and t2.equals(t)
    spec = json.loads((d2 / "model.json").read_text())
    assert spec["extra_files"] == {"asos_table": "asos_table.npz"}
    x = torch.from_numpy(images)
    assert torch.equal(b2.net.activations(x), net.activations(x))
