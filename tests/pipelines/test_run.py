"""The main job on Ray, end to end on loopback: seams, exactly-once, resume, failures, node loss.

All runs use the ``run_world`` fixture (a 2x2-tile synthetic world of 2024 served by a local
rustac STAC API, tiny bundles) and a closed local Ray on 127.0.0.1 (or a two-node cluster on
127.0.0.2/127.0.0.3).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (loopback, own temp dir) for the in-process runs of this module."""
    import ray

    tmp = f"/tmp/gxl-{os.getpid()}"
    os.environ["GEOXAI_RAY_TMPDIR"] = tmp
    from pipelines.run import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()
    subprocess.run(["pkill", "-9", "-f", tmp], capture_output=True)


def _zone_arrays(cfg, layer: str) -> dict[str, np.ndarray]:
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore

    layout = RunLayout(cfg.run_root())
    out = {}
    for t in cfg_tiles(cfg):
        out[t.id] = ZoneStore.open(layout, t.epsg).read_tile(t, layer)
    return out


def cfg_tiles(cfg):
    from geoxai.geo.grid import tile_from_id

    size = cfg.processing.tile_size_m
    return [tile_from_id(t, cfg.processing.halo_px, tile_size_m=size) for t in cfg.tiles]


@pytest.fixture(scope="module")
def reference_run(run_world, ray_local, tmp_path_factory):
    """An uninterrupted 2x2 run: the reference the other runs must reproduce."""
    from pipelines.run import run

    cfg = run_world.config(tmp_path_factory.mktemp("ref") / "store")
    summary = run(cfg, progress=False)
    return cfg, summary


def test_2x2_run_outputs_are_complete_and_documented(reference_run):
    from geoxai.io.cog import validate_cog
    from geoxai.io.layout import RunLayout
    from geoxai.mapping.records import read_records

    cfg, summary = reference_run
    assert summary.count("done") == 4, summary.outcomes
    records = list(read_records(RunLayout(cfg.run_root())))
    assert {r["status"] for r in records} == {"done"}
    for r in records:
        assert r["config_hash"] == cfg.output_hash()
        assert len(r["input_items"]) > 10 and r["code_version"].startswith("geoxai")
        assert {"smooth_s", "predict_s", "asos_s", "spacex_s"} <= set(r["timings"])
    root = Path(cfg.run_root())
    assert (root / "report.html").is_file() and (root / "config.json").is_file()
    cogs = sorted((root / "cogs" / "prediction").glob("*.tif"))
    assert len(cogs) == 4
    validate_cog(cogs[0])
    overviews = sorted((root / "mosaics").glob("zone=*/prediction.overview.tif"))
    assert overviews and len(overviews) == len(list((root / "mosaics").glob("zone=*")))
    validate_cog(overviews[0])  # the zone's overview COG, named by the zone's VRT
    assert "prediction.overview.tif" in (overviews[0].parent / "prediction.vrt").read_text()
    assert list((root / "catalog").rglob("*.json"))
    pred = _zone_arrays(cfg, "prediction")
    for arr in pred.values():
        assert arr.shape == (200, 200) and np.isfinite(arr).mean() > 0.95
        assert np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1
    asos = _zone_arrays(cfg, "asos_sensitivity")
    assert any(np.isfinite(a).any() for a in asos.values())
    spacex = _zone_arrays(cfg, "spacex_attribution")
    for arr in spacex.values():
        assert np.isfinite(arr).mean() > 0.95 and np.nanmin(arr) >= 0
    assert sorted((root / "cogs" / "spacex_attribution").glob("*.tif"))


def test_run_equals_each_tile_processed_alone(reference_run):
    """The Ray run writes exactly what the library computes for each tile on its own."""
    from geoxai import mapping
    from geoxai.io import store

    cfg, _ = reference_run
    models = mapping.load_models(cfg)
    pred = _zone_arrays(cfg, "prediction")
    asos = _zone_arrays(cfg, "asos_sensitivity")
    spacex = _zone_arrays(cfg, "spacex_attribution")
    for tile in cfg_tiles(cfg)[:2]:
        cube = mapping.stage_cube(tile, cfg)  # reuses the committed cube of the run
        assert cube.reused
        layers, _, _ = mapping.map_tile(store.read_cube(cube.url).load(), tile, models, cfg)
        np.testing.assert_array_equal(layers["prediction"], pred[tile.id])
        np.testing.assert_array_equal(layers["asos_sensitivity"], asos[tile.id])
        np.testing.assert_array_equal(layers["spacex_attribution"], spacex[tile.id])


def test_adjacent_tiles_are_seamless(reference_run):
    """Tile A, predicted on its own with a halo wide enough to hold its east neighbour B's whole
    core, gives B's core as the run wrote it (to 1e-5): predictions do not depend on which tile
    computed them, so the mosaic has no seam."""
    from geoxai import mapping
    from geoxai.io.cube import build_cube
    from geoxai.io.stac import search
    from geoxai.temporal.smoothing import preprocess

    cfg, _ = reference_run
    tiles = {(t.col, t.row): t for t in cfg_tiles(cfg)}
    (c0, r0) = min(tiles)
    a, b = tiles[(c0, r0)], tiles[(c0 + 1, r0)]
    big = a.with_halo(a.halo_px + a.core_px)
    start, end = mapping.date_range(cfg)
    items = search(
        cfg.stac.url,
        collections=cfg.stac.collection,
        bbox=big.footprint(halo=True).bounds,
        datetime=(start, end),
    )
    raw = build_cube(items, big, start=start, end=end).load()
    ds = preprocess(raw, mapping.preprocess_params(cfg))
    models = mapping.load_models(cfg)
    full = models.prediction.predict_dataset(mapping.features_with_grid(ds), ds["valid"].values)
    h, n = big.halo_px, big.core_px
    b_from_a = full["prediction"].values[0][h : h + n, h + n : h + 2 * n]
    b_own = _zone_arrays(cfg, "prediction")[b.id]
    assert np.array_equal(np.isnan(b_from_a), np.isnan(b_own))
    ok = np.isfinite(b_own)
    assert ok.mean() > 0.95
    assert np.abs(b_from_a[ok] - b_own[ok]).max() <= 1e-5
    # the SpacEX layer too: generators blended on the zone lattice of the same composite
    from geoxai.xai.spacex import spacex_attribution

    comp = mapping.annual_composite(
        mapping.features_with_grid(ds), tuple(models.spacex.spec.inputs.features)
    )
    comp[:, ~ds["valid"].values.astype(bool)] = np.nan
    attr = spacex_attribution(
        models.spacex,
        comp,
        window=models.spacex.window_params(pad_edges=False),
        transform=raw.attrs["transform"],
    )
    s_from_a = attr[h : h + n, h + n : h + 2 * n]
    s_own = _zone_arrays(cfg, "spacex_attribution")[b.id]
    ok = np.isfinite(s_own) & np.isfinite(s_from_a)
    assert ok.mean() > 0.95
    assert np.abs(s_from_a[ok] - s_own[ok]).max() <= 1e-5


def test_rerun_skips_done_tiles_and_redoes_broken_ones(run_world, reference_run, tmp_path):
    import rasterio

    from geoxai.io.layout import RunLayout
    from geoxai.io.location import resolve
    from geoxai.io.zonestore import ZoneStore
    from geoxai.mapping.records import read_record
    from pipelines.run import run

    cfg = run_world.config(tmp_path / "store", tiles=[t.id for t in run_world.world.tiles[:2]])
    first = run(cfg, progress=False, finish=False)
    assert first.processed == 2 and first.count("done") == 2
    again = run(cfg, progress=False, finish=False)
    assert again.processed == 0 and again.skipped == 2
    # lose one record and corrupt one chunk: exactly those two tiles are redone
    t0, t1 = cfg_tiles(cfg)
    layout = RunLayout(cfg.run_root())
    Path(resolve(layout.record_url(t0.id)).path).unlink()
    zone = ZoneStore.open(layout, t1.epsg)
    chunk = (
        Path(cfg.run_root()) / f"zone={t1.epsg}" / "outputs.zarr" / zone.chunk_key("prediction", t1)
    )
    chunk.write_bytes(b"garbage")
    redo = run(cfg, progress=False, finish=False)
    assert redo.processed == 2 and redo.count("done") == 2
    # a truncated tile COG (issue 21): planning finds it, the tile is redone, and its outputs
    # are those of the uninterrupted reference run
    cog = Path(cfg.run_root()) / "cogs" / "prediction" / f"{t1.id}.tif"
    cog.write_bytes(cog.read_bytes()[:1000])
    healed = run(cfg, progress=False)
    assert healed.processed == 1 and healed.outcomes[t1.id].status == "done"
    assert healed.report and not healed.report_is_local
    assert "redone in this run" in Path(healed.report).read_text()
    ref_cfg, _ = reference_run
    ref_root = Path(ref_cfg.run_root())
    for layer in ("prediction", "asos_sensitivity", "quality"):
        np.testing.assert_array_equal(
            _zone_arrays(cfg, layer)[t1.id], _zone_arrays(ref_cfg, layer)[t1.id]
        )
        with rasterio.open(ref_root / "cogs" / layer / f"{t1.id}.tif") as want:
            with rasterio.open(Path(cfg.run_root()) / "cogs" / layer / f"{t1.id}.tif") as got:
                np.testing.assert_array_equal(got.read(), want.read())
    rec = read_record(layout, t1.id)
    ref_rec = read_record(RunLayout(ref_cfg.run_root()), t1.id)
    assert rec["cogs"]["prediction"]["sha256"] == ref_rec["cogs"]["prediction"]["sha256"]
    forced = run(cfg, progress=False, finish=False, force=True)
    assert forced.processed == 2


def test_killed_driver_resumes_only_unfinished_tiles(run_world, reference_run, tmp_path):
    """SIGKILL the whole `geoxai run` process group mid-run, rerun: only the rest is done."""
    from geoxai.io.layout import RunLayout
    from geoxai.mapping.records import read_records
    from pipelines.run import run

    cfg = run_world.config(tmp_path / "store")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    ray_tmp = f"/tmp/gxk-{os.getpid()}"
    env = {**os.environ, "GEOXAI_RAY_TMPDIR": ray_tmp}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(cfg_file), "--no-progress"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    layout = RunLayout(cfg.run_root())
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            done = [r for r in read_records(layout) if r.get("status") == "done"]
            if done:
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc={proc.returncode}) before it could be killed")
            time.sleep(0.5)
        else:
            pytest.fail("no tile finished within 600 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run(["pkill", "-9", "-f", ray_tmp], capture_output=True)
    n_done = len([r for r in read_records(layout) if r.get("status") == "done"])
    assert 1 <= n_done < 4
    resumed = run(cfg, progress=False)
    assert resumed.skipped == n_done
    assert resumed.processed == 4 - n_done
    ref_cfg, _ = reference_run
    ref, got = _zone_arrays(ref_cfg, "prediction"), _zone_arrays(cfg, "prediction")
    for tile_id in ref:
        np.testing.assert_array_equal(got[tile_id], ref[tile_id])


def test_corrupt_asset_and_zero_scene_tiles_are_recorded(run_world, ray_local, tmp_path):
    """A tile whose scenes have a truncated COG fails with the reason, an empty tile is 'empty',
    and the good tile is done."""
    from geoxai.geo.aoi import cover_aoi
    from geoxai.io.stac import read_items
    from geoxai.synthetic.world import make_world
    from pipelines.run import run
    from pipelines.services import local_stac_api

    good = run_world.world.tiles[0]
    bad_tile = good.neighbour(6, 0)  # 6 tiles east: its own world, disjoint footprint
    bad_world, bad_archive = make_world(
        tmp_path / "bad",
        tiles=[bad_tile],
        year=2024,
        seed=5,
        revisit_days=20,
        margin_px=64,
        corrupt=((3, "B04"),),
    )
    empty = good.neighbour(3, 0)  # between the two worlds: no scene covers it
    items = list(read_items(run_world.root / "world" / "items.ndjson")) + list(
        read_items(bad_archive.ndjson)
    )
    bounds = np.array([t.footprint().bounds for t in (good, bad_tile, empty)])
    lon0, lat0 = bounds[:, :2].min(axis=0) + 1e-4
    lon1, lat1 = bounds[:, 2:].max(axis=0) - 1e-4
    aoi = f"{lon0},{lat0},{lon1},{lat1}"
    ids = {t.id for t in cover_aoi(aoi, tile_size_m=good.tile_size_m)}
    assert {good.id, bad_tile.id, empty.id} <= ids
    with local_stac_api(items) as url:
        cfg = run_world.config(
            tmp_path / "store",
            aoi=aoi,
            stac={"url": url},
            tiles=[good.id, bad_tile.id, empty.id],
        )
        summary = run(cfg, progress=False)
    out = summary.outcomes
    assert out[good.id].status == "done"
    assert out[bad_tile.id].status == "failed"
    assert "B04" in out[bad_tile.id].reason or ".tif" in out[bad_tile.id].reason
    assert out[empty.id].status == "empty"
    assert "NoDataError" in out[empty.id].reason
    report = Path(summary.report).read_text()
    assert bad_tile.id in report and empty.id in report


def test_worker_node_dies_mid_run(run_world, reference_run, ray_two_nodes, tmp_path):
    """Submit to a two-node loopback cluster, SIGKILL the worker node mid-run: every tile done
    and equal to the uninterrupted run."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from geoxai.io.layout import RunLayout
    from geoxai.mapping.records import read_records
    from pipelines.submit import submit

    cfg = run_world.config(tmp_path / "store", resources={"num_workers": 2})
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    job = submit(cfg_file, ray_two_nodes.dashboard_url, headers=ray_two_nodes.headers())
    client = JobSubmissionClient(ray_two_nodes.dashboard_url, headers=ray_two_nodes.headers())
    layout = RunLayout(cfg.run_root())
    killed = 0
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        if not killed and any(r.get("status") == "done" for r in read_records(layout)):
            killed = ray_two_nodes.kill_worker()
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert killed, "the worker node was never killed (the run finished too fast?)"
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    records = list(read_records(layout))
    assert sorted(r["status"] for r in records) == ["done"] * 4
    ref_cfg, _ = reference_run
    ref, got = _zone_arrays(ref_cfg, "prediction"), _zone_arrays(cfg, "prediction")
    for tile_id in ref:
        np.testing.assert_array_equal(got[tile_id], ref[tile_id])


def test_an_actor_that_never_starts_stops_the_run_with_its_cause(ray_local):
    """Tile actors whose models cannot load are replaced at most max_retries times in a row;
    then the run stops with the cause instead of replacing them forever."""
    from geoxai.config import load_run_config
    from geoxai.errors import GeoXAIError
    from pipelines.run import run

    class BrokenModels:  # defined here so Ray pickles it by value
        @staticmethod
        def plan_run(config, force=False):
            from geoxai.geo.grid import TileSpec
            from geoxai.mapping.plan import RunPlan

            tiles = (TileSpec(32631, 90, 930), TileSpec(32631, 91, 930))
            return RunPlan("noop://", "0", tiles, list(tiles), [])

        @staticmethod
        def stage_cube(tile, config):
            from geoxai.mapping.outcomes import CubeStage

            return CubeStage(tile.id, "ok", "noop://", ())

        @staticmethod
        def load_models(config):
            from geoxai.errors import ModelBundleError

            raise ModelBundleError("bundle noop: weights do not load on cpu")

    cfg = load_run_config(
        {
            "name": "broken",
            "aoi": "4,50,4.1,50.1",
            "year": 2024,
            "stac": {"url": "noop"},
            "store": {"root": "noop"},
            "models": {"prediction": "noop"},
            "resources": {"num_workers": 1, "cpus_per_worker": 0.5, "max_retries": 1},
        }
    )
    with pytest.raises(GeoXAIError, match="died 2 times in a row") as err:
        run(cfg, progress=False, finish=False, stages=BrokenModels)
    assert "weights do not load" in str(err.value)


def test_verify_finds_a_flipped_byte_and_a_missing_cog_and_reruns_exactly_those_tiles(
    run_world,
    reference_run,
    tmp_path,
):
    """`geoxai verify` (issue 17): a flipped byte in a zone chunk (invisible to planning, which
    compares sizes) and a missing COG are found by reading every output against its checksum;
    the two tiles' records are deleted and exactly those tiles are run again (a copy of the
    reference run, so no extra first run)."""
    import shutil

    from typer.testing import CliRunner

    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore
    from geoxai.mapping.records import plan_tiles, read_record
    from pipelines.cli import app
    from pipelines.verify import verify_run

    ref_cfg, _ = reference_run
    shutil.copytree(Path(ref_cfg.store.root), tmp_path / "store")  # a finished 2x2 run
    cfg = run_world.config(tmp_path / "store")
    layout = RunLayout(cfg.run_root())
    tiles = cfg_tiles(cfg)
    a, b = tiles[0], tiles[3]
    zone = ZoneStore.open(layout, a.epsg)
    chunk = Path(zone.loc.child(zone.chunk_key("prediction", a)).path)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    (Path(cfg.run_root()) / "cogs" / "quality" / f"{b.id}.tif").unlink()
    # planning trusts a's record (same size), sees b's missing COG
    assert plan_tiles(layout, tiles, cfg.output_hash()) == ([b], [t for t in tiles if t != b])

    s = verify_run(cfg, repair=True, batch_tiles=2)
    assert s.records == 4 and s.result.checked == 4
    assert set(s.result.problems) == {a.id, b.id}
    assert "checksum" in s.result.problems[a.id] and "prediction" in s.result.problems[a.id]
    assert "missing" in s.result.problems[b.id] and "quality" in s.result.problems[b.id]
    assert s.deleted == sorted([a.id, b.id])
    assert s.rerun is not None and set(s.rerun.outcomes) == {a.id, b.id}
    assert all(o.status == "done" for o in s.rerun.outcomes.values()) and s.redone_extra == 0
    assert s.rerun.skipped == 2
    ref = _zone_arrays(ref_cfg, "prediction")
    np.testing.assert_array_equal(_zone_arrays(cfg, "prediction")[a.id], ref[a.id])
    assert (
        read_record(layout, b.id)["cogs"]["quality"]["sha256"]
        == (read_record(RunLayout(ref_cfg.run_root()), b.id)["cogs"]["quality"]["sha256"])
    )
    # the command on the repaired run: everything checks out, exit 0
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = CliRunner().invoke(app, ["verify", str(cfg_file)])
    assert out.exit_code == 0, out.output
    assert "verified 4 done tiles of 4 records" in out.output and "0 bad" in out.output


def test_verify_of_a_root_without_records_says_what_to_check(run_world, tmp_path):
    from geoxai.errors import InvalidInputError
    from pipelines.verify import verify_run

    with pytest.raises(InvalidInputError, match="No tile records under .*store.root"):
        verify_run(run_world.config(tmp_path / "empty"))


def test_cube_tasks_and_actors_get_the_config_without_its_tile_list(ray_local):
    """A run restricted to listed tiles plans with its list, but the cube tasks and tile actors
    get the config without it: 100,000 listed tile ids shipped with every task made the
    driver's per-tile cost grow with the list (35 ms/tile at 10,000 tiles against 4.8 at 1,000)."""
    from geoxai.config import load_run_config
    from pipelines.run import run

    class ListChecking:  # defined here so Ray pickles it by value
        @staticmethod
        def plan_run(config, force=False):
            from geoxai.geo.grid import TileSpec
            from geoxai.mapping.plan import RunPlan

            tiles = tuple(TileSpec(32631, 90 + i, 930) for i in range(3))
            if config.tiles != [t.id for t in tiles]:
                raise AssertionError(f"planning lost the tile list: {config.tiles}")
            return RunPlan("noop://", "0", tiles, list(tiles), [])

        @staticmethod
        def stage_cube(tile, config):
            from geoxai.mapping.outcomes import CubeStage

            if config.tiles is not None:
                return CubeStage(tile.id, "failed", reason=f"cube task got {config.tiles}")
            return CubeStage(tile.id, "ok", "noop://", ())

        @staticmethod
        def load_models(config):
            return config.tiles

        @staticmethod
        def map_and_write(tile, cube, models, config):
            from geoxai.mapping.outcomes import TileOutcome

            if models is not None or config.tiles is not None:
                return TileOutcome(tile.id, "failed", f"actor got {models} / {config.tiles}")
            return TileOutcome(tile.id, "done")

        @staticmethod
        def record_empty_or_failed(tile, cube, config):
            from geoxai.mapping.outcomes import TileOutcome

            return TileOutcome(tile.id, cube.status, cube.reason)

    from geoxai.geo.grid import TileSpec

    ids = [TileSpec(32631, 90 + i, 930).id for i in range(3)]
    cfg = load_run_config(
        {
            "name": "listed",
            "aoi": "4,50,4.1,50.1",
            "year": 2024,
            "tiles": ids,
            "stac": {"url": "noop"},
            "store": {"root": "noop"},
            "models": {"prediction": "noop"},
            "resources": {"num_workers": 1, "cpus_per_worker": 0.5},
        }
    )
    summary = run(cfg, progress=False, finish=False, stages=ListChecking)
    reasons = {t: o.reason for t, o in summary.outcomes.items() if o.status != "done"}
    assert summary.count("done") == 3, reasons
