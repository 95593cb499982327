"""ASOS fit on a local Ray (loopback): N shards merged in a tree == the single-process fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoxai.models.asos_net import ASOSNet
from geoxai.xai.asos import ASOSParams, load_asos_bundle, save_asos_bundle
from pipelines.asos_fit import (
    FitData,
    fit_local,
    fit_sharded,
    init_local_ray,
    shard_indices,
    write_fitted_bundle,
)

pytestmark = pytest.mark.ray

PARAMS = ASOSParams(edge=0.2, min_pixels=8, head_batch=16)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    init_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def fit_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("asosfit")
    torch.manual_seed(0)
    bundle = save_asos_bundle(d / "bundle", ASOSNet(10, 3, width=4, head_width=4))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 3000, size=(10, 10, 24, 24)).astype(np.float32)
    images[3, :, 2:5, 2:5] = np.nan  # nodata pixels are left out, not an error
    np.savez(d / "data.npz", images=images, labels=(np.arange(10) % 2).astype(np.float32))
    return bundle, FitData(str(d / "data.npz"), units="dn"), d


def test_shard_indices_cover_once():
    for n, k in [(10, 3), (3, 8), (1, 1)]:
        parts = shard_indices(n, k)
        assert np.array_equal(np.concatenate(parts), np.arange(n))
        assert len(parts) == min(n, k)


def test_sharded_ray_fit_equals_single_fit(local_ray, fit_setup):
    bundle, data, d = fit_setup
    ref = fit_local(bundle, data, PARAMS)
    assert ref.table.count.sum() > 0
    for n_shards in (1, 3, 10):
        got = fit_sharded(bundle, data, PARAMS, n_shards=n_shards)
        assert got.n_shards == n_shards and got.n_images == 10
        # tolerance 0: int64 fixed-point sums make every sharding bit-identical
        assert got.table.equals(ref.table)
    out = write_fitted_bundle(bundle, got.table, d / "fitted")
    _, table = load_asos_bundle(out)
    assert table is not None and table.equals(ref.table)
    assert table.meta["params"]["min_pixels"] == 8


def test_ray_nodes_are_pinned_to_loopback(local_ray):
    # Ray's gRPC servers still bind the wildcard address (see `ss -tlnp`); what is pinned is
    # the address every node advertises and that workers and the driver connect to.
    for node in local_ray.nodes():
        assert node["NodeManagerAddress"].startswith("127."), node["NodeManagerAddress"]
