"""`geoxai run --cloud-mask spectral`: a run over inputs read without SCL, from the command line.

The ``run_world`` archive (synthetic, 2 km tiles, served by a local rustac STAC API) is mapped
with the spectral mask: cubes carry no SCL but the items' sun angles; the halo the mask needs
(124 px, + 1 for the 3x3 pooling of the per-pixel lambda choice) is asked for by the halo check
and given in the config.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    tmp = f"/tmp/gxs-{os.getpid()}"
    os.environ["GEOXAI_RAY_TMPDIR"] = tmp
    from pipelines.run import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()
    subprocess.run(["pkill", "-9", "-f", tmp], capture_output=True)


def test_run_with_the_spectral_cloud_mask(run_world, ray_local, tmp_path):
    from geoxai.io import store
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore
    from geoxai.mapping.records import read_record
    from pipelines.cli import app

    tile = run_world.world.tiles[0]
    cfg = run_world.config(tmp_path / "store", tiles=[tile.id])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    small = CliRunner().invoke(app, ["run", str(path), "--cloud-mask", "spectral", "--no-progress"])
    assert "halo_px: 125" in str(small.exception), small.output  # the mask's halo is asked for

    doc = cfg.model_dump(mode="json")
    doc["processing"]["halo_px"] = 125
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(
        app, ["run", str(path), "--cloud-mask", "spectral", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    layout = RunLayout(cfg.run_root())
    cube = store.read_cube(layout.cube_url(tile.id))
    assert "SCL" not in list(cube.band.values)
    assert np.isfinite(cube["view:sun_azimuth"].values).all()
    pred = ZoneStore.open(layout, tile.epsg).read_tile(tile.with_halo(125), "prediction")
    assert np.isfinite(pred).mean() > 0.95
    rec = read_record(layout, tile.id)
    assert rec["status"] == "done"
