"""The tile stage streams its raw cube from the store (``map_and_write`` never loads it whole):
the same layers as from the cube in memory, and a chunk that goes bad is a failed record that
names it, even when the bad chunk is only met mid-stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.stac]


@pytest.fixture(scope="module")
def streamed(run_world, tmp_path_factory):
    from geoxai import mapping

    cfg = run_world.config(
        tmp_path_factory.mktemp("streamed") / "store", tiles=[run_world.world.tiles[0].id]
    )
    plan = mapping.plan_run(cfg)
    tile = plan.todo[0]
    models = mapping.load_models(cfg)
    cube = mapping.stage_cube(tile, cfg)
    assert cube.status == "ok", cube.reason
    return cfg, tile, models, cube


def test_the_streamed_tile_equals_the_tile_from_the_loaded_cube(streamed):
    from geoxai import mapping
    from geoxai.io import store
    from geoxai.mapping.stages import SMOOTH_ROWS

    cfg, tile, models, cube = streamed
    lazy = store.read_cube(cube.url)
    assert not lazy.variable._in_memory and lazy.sizes["y"] > 2 * SMOOTH_ROWS  # several blocks
    got, _, info = mapping.map_tile(lazy, tile, models, cfg)
    want, _, info_want = mapping.map_tile(store.read_cube(cube.url).load(), tile, models, cfg)
    assert set(got) == set(want)
    for name in want:  # bit for bit: streaming changes where the bytes come from, not the sums
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert info == info_want
    out = mapping.map_and_write(tile, cube, models, cfg)
    assert out.status == "done"


def test_a_chunk_gone_bad_mid_stream_is_a_failed_record_naming_it(streamed):
    from geoxai import mapping

    cfg, tile, models, cube = streamed
    # a chunk of the second stored row block: read only after the first blocks were smoothed
    chunks = sorted(p for p in (Path(cube.url) / "reflectance" / "c").rglob("*") if p.is_file())
    second = [p for p in chunks if p.parent.name == "1"]
    assert second, chunks
    data = bytearray(second[0].read_bytes())
    data[len(data) // 2] ^= 0x10
    second[0].write_bytes(bytes(data))
    out = mapping.map_and_write(tile, cube, models, cfg)
    assert out.status == "failed"
    assert "array 'reflectance' cannot be decoded at" in out.reason
    assert "row block 1)" in out.reason  # the stored chunk of rows ROWS:2*ROWS
    assert "Delete the store" in out.reason
