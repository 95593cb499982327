"""Where ``bench_scale.py`` writes its synthetic run roots: the local filesystem, or a local S3
server (``moto_server`` on 127.0.0.8, in memory) whose request log counts what each step asks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["S3Server", "Writer"]


class Writer:
    """Plain object writes under a fresh ``root`` (set-up, not a geoxai code path): local
    files, or batches of concurrent PUTs through s3fs (``pipe``) on S3."""

    def __init__(self, root: str) -> None:
        import fsspec

        self.s3 = root.startswith("s3://")
        self.fs = fsspec.filesystem("s3" if self.s3 else "file")
        self.batch: dict[str, bytes] = {}
        self.made: set[str] = set()
        if self.fs.exists(root):
            self.fs.rm(root, recursive=True)

    def read(self, url: str) -> bytes:
        return bytes(self.fs.cat_file(url))

    def write(self, url: str, data: bytes) -> None:
        if self.s3:
            self.batch[url] = data
            if len(self.batch) >= 2000:
                self.flush()
            return
        d = os.path.dirname(url)
        if d not in self.made:
            os.makedirs(d, exist_ok=True)
            self.made.add(d)
        with open(url, "wb") as f:
            f.write(data)

    def flush(self) -> None:
        if self.batch:
            self.fs.pipe(self.batch)
            self.batch = {}


class S3Server:
    """``moto_server`` on 127.0.0.8 (loopback, in memory) with a bucket, fake keys in this
    process's environment (inherited by the steps' children and local Ray workers), and its
    request log in the work folder to count requests per step."""

    HOST = "127.0.0.8"
    BUCKET = "geoxai-scale"

    def __init__(self, work: Path) -> None:
        import subprocess

        import boto3
        from bench_cube import s3_env

        from tests.fixtures.net import free_port, wait_http

        port = free_port(self.HOST)
        self.log_path = work / "moto.log"
        self._log = open(self.log_path, "wb")
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(exe), "-H", self.HOST, "-p", str(port)], stdout=self._log, stderr=self._log
        )
        url = f"http://{self.HOST}:{port}"
        wait_http(url + "/moto-api/", self.proc)
        s3_env(url)  # the same fake keys and GDAL endpoint options as bench_cube
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=self.BUCKET)
        self.base = f"s3://{self.BUCKET}"

    def mark(self) -> int:
        """The log's size now (requests after it belong to the next step)."""
        self._log.flush()
        return self.log_path.stat().st_size

    def requests_since(self, mark: int) -> dict[str, int]:
        """Requests logged since ``mark``: ``list`` (ListObjectsV2 pages), ``get``, ``head``,
        ``put``, ``delete``, ``other``."""
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            lines = f.read().decode("utf-8", "replace").splitlines()
        out = dict.fromkeys(("list", "get", "head", "put", "delete", "other"), 0)
        for line in lines:
            if '"GET ' in line:
                out["list" if "list-type=" in line or "prefix=" in line else "get"] += 1
            elif '"HEAD ' in line or '"PUT ' in line or '"DELETE ' in line:
                out[line.split('"', 2)[1].split()[0].lower()] += 1
            elif '" ' in line and "HTTP/1" in line:
                out["other"] += 1
        return out

    def stop(self) -> None:
        from tests.fixtures.net import stop

        stop(self.proc)
        self._log.close()
