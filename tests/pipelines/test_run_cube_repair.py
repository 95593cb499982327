"""A corrupt cached cube in a run: detected by its chunk checksums, rebuilt, the tile redone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.test_run import _zone_arrays, cfg_tiles, ray_local  # noqa: F401

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]


def test_a_flipped_byte_in_a_cached_cube_is_rebuilt_and_the_tile_redone(
    run_world,
    ray_local,  # noqa: F811
    tmp_path,
):
    from geoxai.errors import CorruptDataError
    from geoxai.io import store
    from geoxai.io.layout import RunLayout
    from geoxai.io.location import resolve
    from pipelines.run import run

    cfg = run_world.config(tmp_path / "store", tiles=[run_world.world.tiles[0].id])
    first = run(cfg, progress=False, finish=False)
    assert first.count("done") == 1
    tile = cfg_tiles(cfg)[0]
    before = _zone_arrays(cfg, "prediction")[tile.id]
    layout = RunLayout(cfg.run_root())
    url = layout.cube_url(tile.id)
    chunk = sorted(p for p in (Path(url) / "reflectance").rglob("c/*/*/*/*") if p.is_file())[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x04
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError):
        store.verify(url)
    Path(resolve(layout.record_url(tile.id)).path).unlink()  # the tile is to be redone

    redo = run(cfg, progress=False, finish=False)
    assert redo.processed == 1 and redo.count("done") == 1
    assert store.verify(url) > 0  # rebuilt: every chunk matches its checksum again
    np.testing.assert_array_equal(_zone_arrays(cfg, "prediction")[tile.id], before)
