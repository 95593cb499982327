"""A local STAC API on loopback: what ``geoxai demo`` serves its synthetic archive through.

- :func:`local_stac_api`: ``rustac serve`` with an in-memory backend, started here as a
  subprocess and stopped on exit (also on error). Instant, loads a few hundred items in well
  under a second. POST search works (bbox, datetime, collections, paging); GET search with
  filters does not, and ``query``/``filter`` are ignored, so :func:`geoxai.io.stac.search` uses
  POST and filters cloud cover itself.

It stays in the runtime package because the demo (``pipelines.demo.run_demo``) needs it; the
tests and benchmarks use it too. The reference stack the tests also run against
(stac-fastapi-pgstac on PostgreSQL + PostGIS) is test infrastructure and lives in
``tests/fixtures/pgstac.py``; it reuses :func:`write_load_files` and the process helpers here.

Items are given as pystac Items, item dicts, or a path (anything :func:`geoxai.io.stac.read_items`
reads). ``collection`` decides the collection the items are served under: an id, a
``pystac.Collection`` or a collection dict puts *every* item into it; ``None`` keeps each item's
own ``collection`` and creates a minimal collection for each id.

Run ``python -m pipelines.services rustac ITEMS [--collection ID]`` to serve a file by hand until
Ctrl-C (``infra/stac_local.sh`` wraps this, and ``tests/fixtures/pgstac.py`` for pgstac).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError

__all__ = [
    "RUSTAC_HOST",
    "local_stac_api",
    "write_load_files",
    "free_port",
    "wait_http",
    "start_logged",
    "stop_process",
    "log_tail",
    "serve_forever",
    "executable",
]

RUSTAC_HOST = "127.0.0.5"
"""Loopback address of the rustac server."""


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- data files


def _item_dicts(items_or_path: Any) -> list[dict[str, Any]]:
    from geoxai.io.stac import read_items

    if isinstance(items_or_path, str | os.PathLike) or (
        isinstance(items_or_path, list | tuple)
        and items_or_path
        and all(isinstance(p, str | os.PathLike) for p in items_or_path)
    ):
        return [
            it.to_dict(include_self_link=False, transform_hrefs=False)
            for it in read_items(items_or_path)
        ]
    out = []
    for it in items_or_path:
        if isinstance(it, dict):
            out.append(json.loads(json.dumps(it)))
        elif hasattr(it, "to_dict"):
            out.append(it.to_dict(include_self_link=False, transform_hrefs=False))
        else:
            raise InvalidInputError(
                f"Cannot serve {type(it).__name__} as a STAC item; pass pystac Items, item "
                "dicts or a path to item files."
            )
    return out


def _minimal_collection(cid: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    boxes = [it["bbox"] for it in items if it.get("bbox")]
    bbox = (
        [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[-2] for b in boxes),
            max(b[-1] for b in boxes),
        ]
        if boxes
        else [-180.0, -90.0, 180.0, 90.0]
    )
    times = sorted(
        t
        for it in items
        for t in (it["properties"].get("datetime"), it["properties"].get("start_datetime"))
        if t
    )
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "description": f"{cid}: served locally by geoxai",
        "license": "proprietary",
        "links": [],
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[times[0] if times else None, times[-1] if times else None]]},
        },
    }


def write_load_files(
    items_or_path: Any, collection: Any, directory: str | os.PathLike[str]
) -> tuple[list[Path], Path, list[str]]:
    """Write collection JSON files and one items ``.ndjson`` for a server to load.

    Returns:
        (collection files, items file, collection ids).
    """
    directory = Path(directory)
    items = _item_dicts(items_or_path)
    if not items:
        raise InvalidInputError("No STAC items to serve; pass at least one item.")
    collections: dict[str, dict[str, Any]] = {}
    if collection is not None:
        if isinstance(collection, str):
            col = _minimal_collection(collection, items)
        elif isinstance(collection, dict):
            col = json.loads(json.dumps(collection))
        elif hasattr(collection, "to_dict"):
            col = collection.to_dict(include_self_link=False, transform_hrefs=False)
        else:
            raise InvalidInputError(
                f"collection must be an id, a collection dict or a pystac.Collection, got "
                f"{type(collection).__name__}."
            )
        collections[col["id"]] = col
        for it in items:
            it["collection"] = col["id"]
    else:
        missing = [it["id"] for it in items if not it.get("collection")]
        if missing:
            raise InvalidInputError(
                f"Items {missing[:5]} have no 'collection'; pass collection='<id>' to serve "
                "them under one collection."
            )
        for cid in sorted({it["collection"] for it in items}):
            collections[cid] = _minimal_collection(
                cid, [it for it in items if it["collection"] == cid]
            )
    for it in items:
        # server-side links are generated by the server; file-relative ones would dangle
        it["links"] = [
            link
            for link in it.get("links", [])
            if link.get("rel") not in ("self", "root", "parent", "collection")
        ]
    for col in collections.values():
        col["links"] = [
            link for link in col.get("links", []) if link.get("rel") in ("license", "about")
        ]
    col_files = []
    for col in collections.values():
        path = directory / f"collection-{len(col_files)}.json"
        path.write_text(json.dumps(col))
        col_files.append(path)
    items_file = directory / "items.ndjson"
    with items_file.open("w") as fh:
        for it in items:
            fh.write(json.dumps(it, separators=(",", ":")) + "\n")
    return col_files, items_file, list(collections)


# --------------------------------------------------------------------------- processes


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float, what: str) -> None:
    """Wait until ``url`` answers 200; :class:`DataAccessError` if ``proc`` exits or on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DataAccessError(
                f"{what} exited with code {proc.returncode} before answering at {url}:\n"
                f"{log_tail(proc)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise DataAccessError(f"{what} did not answer at {url} within {timeout:.0f} s ({last}).")


def log_tail(proc: subprocess.Popen[bytes]) -> str:
    """The last 3000 characters of the log of a process from :func:`start_logged`."""
    log = getattr(proc, "_geoxai_log", None)
    if log is not None and Path(log).exists():
        return Path(log).read_text(errors="replace")[-3000:]
    return ""


def start_logged(cmd: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr going to ``log``."""
    fh = log.open("wb")
    try:
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, **kwargs)
    finally:
        fh.close()
    proc._geoxai_log = str(log)  # type: ignore[attr-defined]
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, sig_timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``sig_timeout`` s; nothing when it has already exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=sig_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=sig_timeout)


def executable(
    name: str, venv: Path | None = None, hint: str = "Run `bash infra/setup.sh`."
) -> str:
    """Path of ``name``: in ``venv`` (default: beside this interpreter), else on PATH.

    Raises:
        ConfigError: not installed; ``hint`` says how to install it.
    """
    here = (venv / "bin" / name) if venv else Path(sys.executable).with_name(name)
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"`{name}` is not installed (looked in {here.parent} and PATH). " + hint)
    return found


@contextlib.contextmanager
def local_stac_api(
    items_or_path: Any,
    collection: Any = None,
    host: str = RUSTAC_HOST,
    port: int | None = None,
    *,
    timeout: float = 30.0,
) -> Iterator[str]:
    """Serve items with ``rustac serve`` (in memory) on a loopback address; yields the URL.

    Args:
        items_or_path: pystac Items, item dicts, or a path readable by
            :func:`geoxai.io.stac.read_items`.
        collection: collection id / dict / pystac.Collection that every item is served
            under, or None to keep the items' own collections.
        host: loopback address to bind.
        port: TCP port; None picks a free one.
        timeout: seconds to wait for the server to answer.
    """
    exe = executable("rustac")
    with tempfile.TemporaryDirectory(prefix="geoxai-rustac-") as tmp:
        col_files, items_file, cids = write_load_files(items_or_path, collection, tmp)
        for attempt in range(3):  # a free port can be taken between probe and bind
            bind_port = port or free_port(host)
            url = f"http://{host}:{bind_port}"
            cmd = [exe, "serve", "--addr", f"{host}:{bind_port}", *map(str, col_files)]
            cmd.append(str(items_file))
            proc = start_logged(cmd, Path(tmp) / "rustac.log", cwd=tmp)
            try:
                wait_http(f"{url}/collections/{cids[0]}", proc, timeout, "rustac serve")
            except DataAccessError:
                stop_process(proc)
                if port is None and attempt < 2 and "in use" in log_tail(proc).lower():
                    continue
                raise
            break
        try:
            yield url
        finally:
            stop_process(proc)


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.services",
        description="Serve STAC items on loopback until Ctrl-C (rustac, in memory).",
    )
    parser.add_argument("server", choices=["rustac"])
    parser.add_argument("items", nargs="+", help="item JSON / ndjson / FeatureCollection files")
    parser.add_argument("--collection", default=None, help="serve every item under this id")
    args = parser.parse_args(argv)

    serve_forever(local_stac_api(args.items, args.collection))


def serve_forever(server: AbstractContextManager[str]) -> None:
    """Enter ``server`` (a context manager yielding its URL), print the URL and serve until
    Ctrl-C or SIGTERM; the server's clean-up runs either way. The ``python -m`` entry points of
    the local STAC servers (this module's rustac, ``tests.fixtures.pgstac``) share it."""

    def _terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second kill must not cut the clean-up
        raise KeyboardInterrupt  # run the context managers' clean-up on `kill` too

    signal.signal(signal.SIGTERM, _terminate)
    with server as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":  # pragma: no cover
    _main()
