"""``geoxai plan`` on the run world: estimates from a one-tile calibration, then the real run on
the same config lands within the stated ranges; plan writes nothing under the run root."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.stac]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _plan(cfg_path: Path, out: Path, *args: str):
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(
        app, ["plan", str(cfg_path), "--json", str(out), *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


def _write_config(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    return path


def _measured(cfg) -> dict[str, float]:
    """What the run's records and store say it took (the figures' own definitions)."""
    from geoxai.io.layout import RunLayout
    from geoxai.io.sizes import stored_size
    from geoxai.mapping.records import read_records

    layout = RunLayout(cfg.run_root())
    recs = [r for r in read_records(layout) if r["status"] == "done"]
    cpw = cfg.resources.cpus_per_worker
    cpu = sum(
        r["timings"].get("cube_s", 0.0)
        + cpw * sum(v for k, v in r["timings"].items() if k != "cube_s")
        for r in recs
    )
    storage = sum(
        stored_size(u)[1] for u in (layout.url("cubes"), layout.records_url(), layout.url("cogs"))
    ) + sum(m["chunk_bytes"] for r in recs for m in r["layers"].values())
    return {
        "tiles": len(recs),
        "scenes": sum(len(r["input_items"]) for r in recs),
        "cpu_seconds": cpu,
        "storage_bytes": storage,
    }


@pytest.mark.ray
def test_plan_with_one_tile_calibration_brackets_the_real_run(run_world, tmp_path):
    import ray

    from pipelines.run import init_ray, run

    store = tmp_path / "store"
    cfg = run_world.config(store, resources={"num_workers": 1, "cpus_per_worker": 1.0})
    cfg_path = _write_config(cfg, tmp_path / "run.yaml")
    root = Path(cfg.run_root())

    text, est = _plan(
        cfg_path,
        tmp_path / "plan.json",
        "--sample",
        "4",
        "--calibrate",
        "1",
        "--cluster-cpus",
        "2",
        "--price-cpu-hour",
        "0.05",
    )
    print(text)
    assert not store.exists(), "plan wrote under the store root"
    assert est["tiles"] == 4 and est["tiles_per_zone"] == {"32631": 4}
    assert est["done"] == 0 and est["todo"] == 4 and len(est["calibrated"]) == 1
    for key in ("scenes", "read_bytes", "cpu_hours", "storage_bytes", "requests", "wall_seconds"):
        f = est["figures"][key]
        assert f["value"] > 0 and f["low"] <= f["value"] <= f["high"], (key, f)
        assert f["how"], key
    assert "bill" in text and est["bill"]["cpu"]["value"] > 0
    assert "GPU-hours" in text and "CPU-hours" in text

    tmp = f"/tmp/gxp-{os.getpid()}"
    os.environ["GEOXAI_RAY_TMPDIR"] = tmp
    init_ray(None, num_cpus=2)
    try:
        summary = run(cfg, progress=False)
    finally:
        ray.shutdown()
        subprocess.run(["pkill", "-9", "-f", tmp], capture_output=True)
    assert summary.count("done") == 4, summary.outcomes
    got = _measured(cfg)
    figs = est["figures"]
    print({k: (figs[k]["low"], figs[k]["value"], figs[k]["high"]) for k in figs}, got)
    # every tile searched: the scene count is exact
    assert figs["scenes"]["value"] == got["scenes"]
    for key in ("cpu_seconds", "storage_bytes"):
        f = figs[key]
        assert f["low"] <= got[key] <= f["high"], (key, got[key], f)

    # a second plan on the finished root: rates from its records, nothing written, all done
    before = _snapshot(root)
    text2, est2 = _plan(cfg_path, tmp_path / "plan2.json", "--sample", "2")
    assert _snapshot(root) == before
    assert est2["done"] == 4 and est2["todo"] == 0
    assert "nothing to do" in " ".join(est2["notes"])

    # one record gone: that tile is to do, priced at the rates of the three recorded tiles
    (root / "records" / f"{cfg.tiles[0]}.json").unlink()
    before = _snapshot(root)
    text3, est3 = _plan(cfg_path, tmp_path / "plan3.json", "--sample", "2", "--cluster-cpus", "2")
    assert _snapshot(root) == before
    assert est3["done"] == 3 and est3["todo"] == 1
    rates_from = est3["rates_from"]
    assert rates_from.startswith("records of the earlier run") and "(3 tiles)" in rates_from
    one_tile = got["cpu_seconds"] / 4
    f = est3["figures"]["cpu_seconds"]
    assert f["low"] <= one_tile * 1.5 and f["high"] >= one_tile / 1.5, (f, one_tile)
