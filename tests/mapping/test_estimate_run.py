"""``geoxai plan``'s bad inputs: an AOI without tiles, a calibration tile without scenes, a run
root that cannot be listed, no prices."""

from __future__ import annotations

import pytest

from geoxai.config import load_run_config
from geoxai.errors import AOIError
from geoxai.geo.grid import TileSpec
from geoxai.mapping.estimate_run import calibrate, estimate_run


def test_an_aoi_without_tiles_is_a_typed_error_before_anything_else(tmp_path):
    cfg = load_run_config(
        {
            "name": "polar",
            "aoi": "0,84.5,1,85",
            "year": 2024,
            "stac": {"url": "http://127.0.0.1:9/"},
            "store": {"root": str(tmp_path / "store")},
            "models": {"prediction": str(tmp_path / "no-bundle")},
        }
    )
    with pytest.raises(AOIError, match="outside UTM"):
        estimate_run(cfg)
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
@pytest.mark.stac
def test_a_calibration_tile_without_scenes_is_replaced_and_said(run_world, tmp_path):
    from tests.fixtures.world import HALO, TILE_M

    world_tile = run_world.world.tiles[0]
    far = TileSpec(32631, world_tile.col - 8, world_tile.row, HALO, TILE_M)  # 16 km west
    boxes = [t.lonlat_bbox() for t in (far, world_tile)]
    aoi = (
        min(b[0] for b in boxes) + 1e-4,
        min(b[1] for b in boxes) + 1e-4,
        max(b[2] for b in boxes) - 1e-4,
        max(b[3] for b in boxes) - 1e-4,
    )
    cfg = run_world.config(tmp_path / "store", aoi=",".join(f"{v:.6f}" for v in aoi), tiles=None)
    notes: list[str] = []
    samples, warmup = calibrate(
        cfg, [far.with_halo(HALO), world_tile.with_halo(HALO)], 1, notes=notes
    )
    assert [s.tile_id for s in samples] == [world_tile.id]
    assert any(far.id in n and "no usable scenes" in n and "picked another" in n for n in notes)
    assert samples[0].scenes > 0 and samples[0].cube_bytes > 0 and samples[0].output_bytes > 0
    assert set(warmup) >= {"cube_s", "smooth_s"}
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
@pytest.mark.stac
def test_a_root_that_cannot_be_listed_and_no_prices_are_notes_not_crashes(run_world, tmp_path):
    cfg = run_world.config(
        "s3://geoxai-plan-test/runs",
        store={
            "root": "s3://geoxai-plan-test/runs",
            "storage_options": {
                "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
                "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
                "anon": True,
            },
        },
    )
    est = estimate_run(cfg, sample=2)
    notes = " ".join(est.notes)
    assert est.done is None and est.todo == 4
    assert "cannot be listed" in notes and "every tile is counted as to do" in notes
    assert "no stage rates" in notes and "hours without a bill" in notes
    assert est.bill == {} and est.figures["scenes"].value > 0
