"""One tile cube builder: a run's cube stage reuses a cube that ``geoxai cube`` committed with the
same query (same marker, same reuse rule), and rebuilds one of another query."""

from __future__ import annotations

from typer.testing import CliRunner

from geoxai.config import RunConfig
from geoxai.io import store
from geoxai.mapping.cube_stage import stage_cube
from geoxai.mapping.settings import date_range, run_layout
from pipelines.cli import app
from tests.io.test_cube import SYN_TILES, clean_world  # noqa: F401


def _config(archive, root) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "reuse",
            "year": 2023,
            "aoi": "bbox:3.0,50.0,3.01,50.01",
            "stac": {"url": str(archive.ndjson)},
            "store": {"root": str(root)},
            "models": {"prediction": "bundle"},
        }
    )


def test_run_reuses_the_cube_the_command_built(clean_world, tmp_path):  # noqa: F811
    _, archive = clean_world
    cfg = _config(archive, tmp_path / "store")
    tile = SYN_TILES[2].with_halo(cfg.processing.halo_px)
    url = run_layout(cfg).cube_url(tile.id)
    start, end = date_range(cfg)
    args = ["cube", "--stac", cfg.stac.url, "--tile", tile.id, "--start", start, "--end", end]
    args += ["--out", url, "--tile-size", "600", "--halo", str(tile.halo_px)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    built = store.read_commit(url)

    stage = stage_cube(tile, cfg)  # the run's cube stage: no search, no rebuild
    assert stage.status == "ok" and stage.reused, stage
    assert stage.url == url and stage.item_ids == tuple(built["extra"]["item_ids"])
    assert stage.item_ids == archive.item_ids
    assert store.read_commit(url) == built  # the marker (written_at included) is untouched

    # another query (a cloud limit) is another cube: the stage replaces it
    other = cfg.model_copy(update={"stac": cfg.stac.model_copy(update={"max_cloud": 50.0})})
    again = stage_cube(tile, other)
    assert again.status == "ok" and not again.reused
    assert store.read_commit(url)["extra"]["query"]["max_cloud"] == 50.0


def test_a_corrupt_cached_cube_is_detected_and_rebuilt(clean_world, tmp_path):  # noqa: F811
    """One flipped byte in a committed cube: the next cube stage says so and rebuilds it; the
    tile is then read from the rebuilt cube, equal to the first."""
    from pathlib import Path

    import numpy as np
    import pytest

    from geoxai.errors import CorruptDataError

    _, archive = clean_world
    cfg = _config(archive, tmp_path / "store")
    tile = SYN_TILES[1].with_halo(cfg.processing.halo_px)
    first = stage_cube(tile, cfg)
    assert first.status == "ok" and not first.reused and not first.repaired
    good = store.read_cube(first.url).values
    chunks = sorted(p for p in (Path(first.url) / "reflectance").rglob("c/*/*/*/*") if p.is_file())
    data = bytearray(chunks[0].read_bytes())
    data[len(data) // 3] ^= 0x01
    chunks[0].write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="cannot be decoded"):
        _ = store.read_cube(first.url).values  # what the tile worker would have met

    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = stage_cube(tile, cfg)
    assert again.status == "ok" and not again.reused
    assert "reflectance" in again.repaired and "rebuilt" in again.repaired
    assert store.verify(again.url) > 0
    np.testing.assert_array_equal(store.read_cube(again.url).values, good)
    third = stage_cube(tile, cfg)  # healthy now: reused as it is
    assert third.reused and not third.repaired
