"""Local Ray is closed: every socket on loopback, token auth, private temp dir, no secret in
any file or console line of a run (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

_HOLDER = """
import os, sys, time
from pipelines.run import init_ray
init_ray(None, num_cpus=1)
import ray
ctx = ray.get_runtime_context()
print("GCS", ctx.gcs_address, flush=True)
print("TMP", ray._private.worker._global_node.get_temp_dir_path(), flush=True)
time.sleep(600)
"""

_ATTACH = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
@ray.remote
def env():
    import os
    return os.environ.get("GX_MARK", "none")
print("ATTACHED", ray.get(env.remote(), timeout=60), flush=True)
"""


def is_loopback(ip: str) -> bool:
    return ip.startswith(("127.", "::ffff:127.")) or ip == "::1"


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listening(pids: set[int]) -> dict[tuple[str, int], str]:
    """``{(ip, port): process name}`` of every listening TCP socket of ``pids``."""
    out = {}
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            try:
                name = psutil.Process(c.pid).name()
            except psutil.NoSuchProcess:
                name = "?"
            out[(c.laddr.ip, c.laddr.port)] = name
    return out


def grep_tree(root: Path, needles: list[str]) -> list[str]:
    """Files under ``root`` holding any of ``needles`` (bytes, any encoding of ASCII)."""
    hits = []
    raw = [n.encode() for n in needles]
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {n[:6]!r}..." for n in raw if n in data]
    return hits


def cluster_token(pid: int) -> str | None:
    """The Ray token in the environment of the processes ``pid`` spawned (GCS, raylet ...):
    /proc shows a process's environment as it started, so the driver's own shows none."""
    for p in tree(pid)[1:]:
        try:
            tok = p.environ().get("RAY_AUTH_TOKEN")
        except psutil.Error:
            continue
        if tok:
            return tok
    return None


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@pytest.fixture
def short_tmp():
    """A short folder under /tmp (Ray's unix socket paths must stay under 107 bytes)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="gxt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_ray_holder(short_tmp):
    """A process holding a local Ray started by ``init_ray`` (what every local run does)."""
    base = short_tmp
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER],
        env=_env(GEOXAI_RAY_TMPDIR=str(base), GX_MARK="holder"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    info: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while len(info) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(("GCS ", "TMP ")):
            key, value = line.split(maxsplit=1)
            info[key] = value.strip()
    try:
        if len(info) < 2:
            pytest.fail(f"the local Ray did not start: {''.join(lines)[-3000:]}")
        yield proc, info["GCS"], Path(info["TMP"])
    finally:
        for p in reversed(tree(proc.pid)):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)


@pytest.mark.ray
@pytest.mark.slow
def test_local_ray_listens_on_loopback_only_and_refuses_attach_without_token(local_ray_holder):
    proc, gcs, temp_dir = local_ray_holder
    host, port = gcs.rsplit(":", 1)
    assert host == "127.0.0.1"
    socks = listening({p.pid for p in tree(proc.pid)})
    assert (host, int(port)) in {(ip.removeprefix("::ffff:"), pt) for ip, pt in socks}
    open_doors = {k: v for k, v in socks.items() if not is_loopback(k[0])}
    assert not open_doors, f"Ray sockets on non-loopback addresses: {open_doors}"
    assert len(socks) >= 5  # GCS, raylet, workers, agents: the list really holds Ray's sockets
    private = temp_dir.parent  # Ray chmods its own temp dir 0777; the parent keeps others out
    assert private.stat().st_mode & 0o777 == 0o700, oct(private.stat().st_mode)
    token = cluster_token(proc.pid)
    assert token and len(token) == 64

    def attach(**env: str) -> subprocess.CompletedProcess:
        # local-only mode, as the cluster's own processes: else the client rewrites 127.0.0.1
        # to the machine's interface address, where nothing listens (a refusal by address,
        # not by token)
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        try:
            return subprocess.run(
                [sys.executable, "-c", _ATTACH, gcs],
                env=_env(**env),
                capture_output=True,
                text=True,
                timeout=120,
                cwd=REPO,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, -9, str(exc.stdout), str(exc.stderr))

    for env in (
        {"RAY_AUTH_MODE": "disabled"},  # no token
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2},  # a wrong one
    ):
        refused = attach(**env)
        assert refused.returncode != 0 and "ATTACHED" not in refused.stdout, (env, refused)
    # the control: the right token gets in, so the refusals above are about the token
    ok = attach(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    assert "ATTACHED holder" in ok.stdout, ok.stderr[-2000:]
    assert not grep_tree(temp_dir, [token])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.stac
@pytest.mark.s3
def test_no_secret_in_any_file_or_console_line_of_a_run(run_world, s3_bucket, short_tmp, tmp_path):
    """Unique fake AWS keys, a run on the local S3 server: the keys and the Ray token appear in
    no file of the Ray temp dir or the run root and in no console line; meanwhile every Ray
    socket of the run is on loopback."""
    import boto3

    key = f"AKIAGX{uuid.uuid4().hex[:14].upper()}"
    secret = f"gxsecret{uuid.uuid4().hex}"
    cfg = run_world.config(f"s3://{s3_bucket}/runs")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    base = short_tmp
    env = _env(GEOXAI_RAY_TMPDIR=str(base), AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run", str(cfg_file), "--no-progress"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        seen: dict[tuple[str, int], str] = {}
        tokens: set[str] = set()

        def watch() -> None:
            while proc.poll() is None:
                pids = {p.pid for p in tree(proc.pid)}
                seen.update(listening(pids))
                tok = cluster_token(proc.pid)
                if tok:
                    tokens.add(tok)
                time.sleep(0.3)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            rc = proc.wait(timeout=600)
        finally:
            for p in reversed(tree(proc.pid)):
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        watcher.join(timeout=10)
    text = console.read_text()
    assert rc == 0, text[-3000:]
    assert len(seen) >= 5 and tokens, (seen, tokens)
    assert not {k: v for k, v in seen.items() if not is_loopback(k[0])}, seen
    needles = [key, secret, *tokens]
    assert not [n for n in needles if n in text]
    (ray_tmp,) = list(base.iterdir())
    assert ray_tmp.stat().st_mode & 0o777 == 0o700 and (ray_tmp / "ray").is_dir()
    assert not grep_tree(ray_tmp, needles)
    # every object the run wrote to the bucket
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )
    n_objects, leaks = 0, []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read()
            n_objects += 1
            leaks += [obj["Key"] for n in needles if n.encode() in body]
    assert n_objects > 20 and not leaks, (n_objects, leaks)
