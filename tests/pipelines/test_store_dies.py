"""The S3 server dies mid-run: the driver ends with its summary, a one-line error (rc 1, no
traceback) and the report written to a local file; a rerun after the server is back completes
(issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures.net import free_port, stop, wait_http

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.4"


def _moto(port: int, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("moto_server")
    out = log.open("ab")
    proc = subprocess.Popen([str(exe), "-H", HOST, "-p", str(port)], stdout=out, stderr=out)
    wait_http(f"http://{HOST}:{port}/moto-api/", proc)
    return proc


def _client(url: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )


def _done_records(client, bucket: str) -> int:
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(1 for pg in pages for o in pg.get("Contents", []) if "/records/" in o["Key"])
    except Exception:  # noqa: BLE001 - the server may be going down
        return 0


def test_store_killed_mid_run_gives_summary_then_rerun_completes(run_world, tmp_path):
    port = free_port(HOST)
    url = f"http://{HOST}:{port}"
    bucket = "gx-dies"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))},
        "AWS_ACCESS_KEY_ID": "gx-dies-key",
        "AWS_SECRET_ACCESS_KEY": "gx-dies-secret",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        "AWS_S3_ENDPOINT": f"{HOST}:{port}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "PYTHONPATH": str(REPO),
        "GEOXAI_RAY_TMPDIR": f"/tmp/gxd-{os.getpid()}",
    }
    cfg = run_world.config(f"s3://{bucket}/runs")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(cfg_file), "--no-progress"]
    log = tmp_path / "moto.log"
    moto = _moto(port, log)
    try:
        _client(url).create_bucket(Bucket=bucket)
        console = tmp_path / "first.txt"
        with console.open("w") as out:
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
            )
            deadline = time.monotonic() + 600
            while _done_records(_client(url), bucket) < 1:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"no tile finished before the kill: {console.read_text()[-3000:]}")
                time.sleep(0.5)
            moto.kill()  # the store dies mid-run
            moto.wait()
            rc = proc.wait(timeout=600)
        text = console.read_text()
        assert rc == 1, text[-3000:]
        assert "Traceback" not in text, text[-5000:]
        assert f"run s3://{bucket}/runs" in text and "not processed" in text
        assert "error:" in text
        # the report is written locally instead, from the driver's outcomes, and named
        (local,) = tmp_path.glob("geoxai-report-*.html")
        assert "report (local copy, the store did not take it)" in text
        assert local.name in text.replace("\n", "")
        page = local.read_text()
        assert "not readable at the end of the run" in page and "Traceback" not in page
        # the server is back (empty: moto keeps nothing), the rerun completes
        moto = _moto(port, log)
        _client(url).create_bucket(Bucket=bucket)
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
        assert _done_records(_client(url), bucket) == 4
    finally:
        stop(moto)
        subprocess.run(["pkill", "-9", "-f", env["GEOXAI_RAY_TMPDIR"]], capture_output=True)
