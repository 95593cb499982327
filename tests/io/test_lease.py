"""One driver per run root: the lease in the store (geoxai.io.lease), local and S3."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geoxai.io.layout import RunLayout
from geoxai.io.lease import LEASE_NAME, RunLease, RunLockedError
from geoxai.io.store import read_json

REPO = Path(__file__).resolve().parents[2]


def test_second_driver_is_refused_then_admitted_after_release(store_root):
    layout = RunLayout(f"{store_root}/run/2024")
    first = RunLease(layout, ttl_s=30).acquire()
    try:
        with pytest.raises(RunLockedError) as err:
            RunLease(layout, ttl_s=30).acquire()
        msg = str(err.value)
        assert layout.root in msg and f"pid {os.getpid()}" in msg and LEASE_NAME in msg
        assert isinstance(err.value, RuntimeError)
    finally:
        first.release()
    assert read_json(layout.loc(LEASE_NAME), default=None) is None
    with RunLease(layout, ttl_s=30):
        pass


def test_a_renewed_lease_outlives_its_ttl(store_root):
    layout = RunLayout(f"{store_root}/run/2024")
    with RunLease(layout, ttl_s=1.0):
        time.sleep(2.5)  # > 2 ttl: only renewals keep it
        with pytest.raises(RunLockedError):
            RunLease(layout, ttl_s=1.0).acquire()


_KILLED = """
import os, socket, sys
if sys.argv[3] != "-":  # a driver on another node (this host cannot see its process)
    socket.gethostname = lambda: sys.argv[3]
from geoxai.io.layout import RunLayout
from geoxai.io.lease import RunLease
RunLease(RunLayout(sys.argv[1]), ttl_s=float(sys.argv[2])).acquire()
os.kill(os.getpid(), 9)
"""


def _killed_driver(root: str, ttl: float, host: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, root, str(ttl), host],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr


def test_a_killed_drivers_lease_expires(store_root):
    """A driver on another node was killed: its lease blocks the root until it expires."""
    layout = RunLayout(f"{store_root}/run/2024")
    ttl = 3.0
    _killed_driver(layout.root, ttl, "node-b")
    held = read_json(layout.loc(LEASE_NAME))
    assert held["host"] == "node-b"
    assert held["pid"] != os.getpid()
    if held["expires_at"] - time.time() > 0.5:
        with pytest.raises(RunLockedError, match="expires in"):
            RunLease(layout, ttl_s=ttl).acquire()
    time.sleep(max(0.0, held["expires_at"] - time.time()) + 0.2)
    with RunLease(layout, ttl_s=ttl) as lease:  # taken over, no manual clean-up
        assert read_json(layout.loc(LEASE_NAME))["owner"] == lease.owner


def test_a_killed_driver_on_this_host_is_taken_over_at_once(store_root):
    layout = RunLayout(f"{store_root}/run/2024")
    _killed_driver(layout.root, 300.0, "-")
    held = read_json(layout.loc(LEASE_NAME))
    assert held["expires_at"] - time.time() > 200
    with RunLease(layout, ttl_s=30) as lease:
        assert read_json(layout.loc(LEASE_NAME))["owner"] == lease.owner


def test_run_refuses_a_live_root_before_planning_or_starting_ray(tmp_path):
    import ray

    from geoxai.config import load_run_config
    from pipelines.run import run

    cfg = load_run_config(
        {
            "name": "t",
            "aoi": "4.0,50.0,4.1,50.1",
            "year": 2024,
            "stac": {"url": "http://127.0.0.5:9/"},
            "store": {"root": str(tmp_path / "store")},
            "models": {"prediction": str(tmp_path / "no-bundle")},
        }
    )
    planned = []

    class Stages:
        @staticmethod
        def plan_run(config, force=False):
            planned.append(config)
            raise AssertionError("planned despite the lease")

    with RunLease(RunLayout(cfg.run_root()), ttl_s=30):
        t0 = time.monotonic()
        with pytest.raises(RunLockedError, match="in use by another driver"):
            run(cfg, progress=False, stages=Stages)
        assert time.monotonic() - t0 < 5
    assert not planned and not ray.is_initialized()
