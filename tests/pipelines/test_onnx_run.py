"""`geoxai run` with an ONNX bundle: equal to the torch run within 1e-4, and seamless.

Uses the ``run_world`` fixture (2x2 synthetic tiles of 2 km on a local rustac STAC API, a tiny
TemporalUNet bundle) and a local Ray pinned to loopback, as tests/test_run.py does.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    tmp = f"/tmp/gxo-{os.getpid()}"
    os.environ["GEOXAI_RAY_TMPDIR"] = tmp
    from pipelines.run import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()


def _tiles(cfg):
    from geoxai.geo.grid import tile_from_id

    size = cfg.processing.tile_size_m
    return [tile_from_id(t, cfg.processing.halo_px, tile_size_m=size) for t in cfg.tiles]


def _predictions(cfg) -> dict[str, np.ndarray]:
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore

    layout = RunLayout(cfg.run_root())
    return {t.id: ZoneStore.open(layout, t.epsg).read_tile(t, "prediction") for t in _tiles(cfg)}


def test_run_with_onnx_bundle_equals_torch_run_and_is_seamless(run_world, ray_local, tmp_path):
    from geoxai import mapping
    from geoxai.io.cube import build_cube
    from geoxai.io.layout import RunLayout
    from geoxai.io.stac import search
    from geoxai.mapping.records import read_records
    from geoxai.models.onnx_export import export_onnx
    from geoxai.temporal.smoothing import preprocess
    from pipelines.run import run

    onnx_file = tmp_path / "treecover.onnx"
    export_onnx(run_world.models["prediction"], onnx_file)
    only = {"asos": None, "spacex": None}
    pair = [t.id for t in run_world.world.tiles[:2]]  # west-east neighbours
    cfg_t = run_world.config(
        tmp_path / "torch",
        models={"prediction": run_world.models["prediction"], **only},
        resources={"runtime": "torch"},
        tiles=pair,
    )
    cfg_o = run_world.config(
        tmp_path / "onnx", models={"prediction": str(onnx_file), **only}, tiles=pair
    )
    for cfg, runtime in ((cfg_t, "torch"), (cfg_o, "onnxruntime")):
        summary = run(cfg, progress=False, finish=False)
        assert summary.count("done") == 2, summary.outcomes
        recs = read_records(RunLayout(cfg.run_root()))
        assert {r["info"]["prediction_runtime"] for r in recs} == {runtime}
    ref, got = _predictions(cfg_t), _predictions(cfg_o)
    for tid, want in ref.items():
        assert np.array_equal(np.isnan(want), np.isnan(got[tid])), tid
        assert np.isfinite(want).mean() > 0.95
        assert np.nanmax(np.abs(got[tid] - want)) <= 1e-4, tid

    # seamless: tile A predicted alone with a halo holding its east neighbour B's core gives
    # B's core as the ONNX run wrote it
    tiles = {(t.col, t.row): t for t in _tiles(cfg_o)}
    c0, r0 = min(tiles)
    a, b = tiles[(c0, r0)], tiles[(c0 + 1, r0)]
    big = a.with_halo(a.halo_px + a.core_px)
    start, end = mapping.date_range(cfg_o)
    items = search(
        cfg_o.stac.url,
        collections=cfg_o.stac.collection,
        bbox=big.footprint(halo=True).bounds,
        datetime=(start, end),
    )
    ds = preprocess(
        build_cube(items, big, start=start, end=end).load(), mapping.preprocess_params(cfg_o)
    )
    models = mapping.load_models(cfg_o)
    assert models.prediction.runtime == "onnxruntime"
    full = models.prediction.predict_dataset(mapping.features_with_grid(ds), ds["valid"].values)
    h, n = big.halo_px, big.core_px
    b_from_a = full["prediction"].values[0][h : h + n, h + n : h + 2 * n]
    b_own = got[b.id]
    assert np.array_equal(np.isnan(b_from_a), np.isnan(b_own))
    ok = np.isfinite(b_own)
    assert np.abs(b_from_a[ok] - b_own[ok]).max() <= 1e-5
