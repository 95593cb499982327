"""``geoxai smooth`` end to end: committed raw cube store -> committed features store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from geoxai.io.store import read_dataset, write_dataset
from pipelines.cli import app
from tests.fixtures.cubes import synthetic_cube


def test_smooth_command_writes_a_nan_free_model_ready_cube(store_root, tmp_path):
    raw, _ = synthetic_cube(11, ny=12, nx=10)
    raw = raw.copy()
    raw.values[:, :10, 0, 0] = np.nan  # one pixel without data -> flagged, not NaN
    raw.attrs["halo_px"] = 8
    src, dst = f"{store_root}/raw", f"{store_root}/features"
    write_dataset(raw, src)
    norm = {
        n: [0.0, 0.5]
        for n in ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    }
    norm.update({"NDVI": [-1, 1], "EVI": [-1, 1], "BI": [-1, 1], "MSAVI2": [-1, 1]})
    norm["GRNDVI"] = [-1, 1]
    runner = CliRunner()
    (tmp_path / "norm.json").write_text(json.dumps(norm))
    result = runner.invoke(
        app,
        ["smooth", "--cube", src, "--out", dst, "--year", "2021", "--buffer-m", "0"]
        + ["--normalization", str(tmp_path / "norm.json")],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["shape"] == [24, 15, 12, 10]
    ds = read_dataset(dst)
    f = ds["features"].values
    assert np.isfinite(f).all() and f.min() >= -1 and f.max() <= 1
    assert not bool(ds["valid"][0, 0]) and int(ds["valid"].sum()) == 119
    assert ds.attrs["tile_id"] == raw.attrs["tile_id"]
    # a rerun without --overwrite refuses to replace the committed output
    again = runner.invoke(app, ["smooth", "--cube", src, "--out", dst, "--year", "2021"])
    assert again.exit_code != 0
    # --out naming the input cube is refused before any work, even with --overwrite
    own = runner.invoke(
        app, ["smooth", "--cube", src, "--out", src, "--year", "2021", "--overwrite"]
    )
    assert own.exit_code != 0 and "--cube input" in str(own.exception)
    assert read_dataset(src, chunks=None).attrs["tile_id"] == raw.attrs["tile_id"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--year", "2021", "--lambda", "0"], "lambda"),
        ([], "--year"),
        (["--year", "2021", "--clouds", "fmask"], "method"),
    ],
)
def test_smooth_command_rejects_bad_options(tmp_path, args, match):
    raw, _ = synthetic_cube(12, ny=3, nx=3)
    write_dataset(raw, tmp_path / "raw")
    res = CliRunner().invoke(
        app, ["smooth", "--cube", str(tmp_path / "raw"), "--out", str(tmp_path / "o"), *args]
    )
    assert res.exit_code != 0
    assert match in str(res.exception)


def test_smooth_help():
    res = CliRunner().invoke(app, ["smooth", "--help"])
    assert res.exit_code == 0 and "--cube" in res.output and "--lambda" in res.output
