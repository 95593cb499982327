"""Local STAC APIs on loopback, for the demo and the tests.

Two real servers, both started here as subprocesses and stopped on exit (also on error):

- :func:`local_stac_api`: ``rustac serve`` with an in-memory backend. Instant, loads a few
  hundred items in well under a second. POST search works (bbox, datetime, collections, paging);
  GET search with filters does not, and ``query``/``filter`` are ignored, so
  :func:`geoxai.io.stac.search` uses POST and filters cloud cover itself.
- :func:`local_pgstac_api`: the reference stack, stac-fastapi-pgstac on PostgreSQL 15 + PostGIS
  3, data in a temporary directory that is deleted afterwards. Needs ``bash infra/setup.sh
  --test`` (apt packages and ``.venv-pgstac``). About 5-15 s to start.

Items are given as pystac Items, item dicts, or a path (anything :func:`geoxai.io.stac.read_items`
reads). ``collection`` decides the collection the items are served under: an id, a
``pystac.Collection`` or a collection dict puts *every* item into it; ``None`` keeps each item's
own ``collection`` and creates a minimal collection for each id.

Run ``python -m pipelines.services rustac|pgstac ITEMS [--collection ID]`` to serve a file by
hand until Ctrl-C (``infra/stac_local.sh`` wraps this).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
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
from pathlib import Path
from typing import Any

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError

__all__ = [
    "RUSTAC_HOST",
    "PGSTAC_HOST",
    "PG_BIN",
    "local_stac_api",
    "local_pgstac_api",
    "write_load_files",
    "free_port",
]

RUSTAC_HOST = "127.0.0.5"
"""Loopback address of the rustac server."""
PGSTAC_HOST = "127.0.0.6"
"""Loopback address of PostgreSQL and stac-fastapi-pgstac."""
PG_BIN = Path(os.environ.get("GEOXAI_PG_BIN", "/usr/lib/postgresql/15/bin"))
"""Directory of the PostgreSQL 15 server binaries (initdb, postgres, pg_isready, psql)."""
_REPO = Path(__file__).resolve().parent.parent
_SETUP_HINT = (
    "Run `bash infra/setup.sh --test` (installs PostgreSQL 15 + PostGIS 3 and .venv-pgstac)."
)


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


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DataAccessError(
                f"{what} exited with code {proc.returncode} before answering at {url}:\n"
                f"{_tail(proc)}"
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


def _tail(proc: subprocess.Popen[bytes]) -> str:
    log = getattr(proc, "_geoxai_log", None)
    if log is not None and Path(log).exists():
        return Path(log).read_text(errors="replace")[-3000:]
    return ""


def _start(cmd: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    try:
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, **kwargs)
    finally:
        fh.close()
    proc._geoxai_log = str(log)  # type: ignore[attr-defined]
    return proc


def _stop(proc: subprocess.Popen[bytes] | None, sig_timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=sig_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=sig_timeout)


def _exe(name: str, venv: Path | None = None) -> str:
    here = (venv / "bin" / name) if venv else Path(sys.executable).with_name(name)
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(
            f"`{name}` is not installed (looked in {here.parent} and PATH). "
            + ("Run `bash infra/setup.sh`." if venv is None else _SETUP_HINT)
        )
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
    exe = _exe("rustac")
    with tempfile.TemporaryDirectory(prefix="geoxai-rustac-") as tmp:
        col_files, items_file, cids = write_load_files(items_or_path, collection, tmp)
        for attempt in range(3):  # a free port can be taken between probe and bind
            bind_port = port or free_port(host)
            url = f"http://{host}:{bind_port}"
            cmd = [exe, "serve", "--addr", f"{host}:{bind_port}", *map(str, col_files)]
            cmd.append(str(items_file))
            proc = _start(cmd, Path(tmp) / "rustac.log", cwd=tmp)
            try:
                _wait_http(f"{url}/collections/{cids[0]}", proc, timeout, "rustac serve")
            except DataAccessError:
                _stop(proc)
                if port is None and attempt < 2 and "in use" in _tail(proc).lower():
                    continue
                raise
            break
        try:
            yield url
        finally:
            _stop(proc)


# --------------------------------------------------------------------------- pgstac


def _as_postgres_user() -> dict[str, Any]:
    """Popen arguments that run a PostgreSQL server binary as a non-root user.

    PostgreSQL refuses to run as root; as root we switch to the ``postgres`` user that the
    Debian package creates (Popen ``user=``/``group=``: the server *is* the child process, so
    signals reach it directly, unlike through ``runuser``/``su``).
    """
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ConfigError(
            "PostgreSQL refuses to run as root and there is no `postgres` user. " + _SETUP_HINT
        ) from exc
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run(cmd: Sequence[str], what: str, **kwargs: Any) -> None:
    res = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)
    if res.returncode != 0:
        raise DataAccessError(
            f"{what} failed (exit {res.returncode}): {(res.stderr or res.stdout)[-2000:]}"
        )


@contextlib.contextmanager
def local_pgstac_api(
    items_or_path: Any,
    collection: Any = None,
    host: str = PGSTAC_HOST,
    *,
    pgstac_venv: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Iterator[str]:
    """Serve items with stac-fastapi-pgstac on PostgreSQL 15 + PostGIS; yields the API URL.

    A fresh cluster is initialised in a temporary directory (run as user ``postgres`` when
    this process is root), migrated with ``pypgstac migrate``, loaded with ``pypgstac load``
    and served by uvicorn from ``.venv-pgstac``. Everything is stopped and deleted on exit.

    Args:
        items_or_path: as for :func:`local_stac_api`.
        collection: as for :func:`local_stac_api`.
        host: loopback address for PostgreSQL and the API.
        pgstac_venv: the venv with stac-fastapi-pgstac, pypgstac and uvicorn
            (default ``<repo>/.venv-pgstac``, or ``$GEOXAI_PGSTAC_VENV``).
        timeout: seconds to wait for each server.
    """
    venv = Path(pgstac_venv or os.environ.get("GEOXAI_PGSTAC_VENV", _REPO / ".venv-pgstac"))
    for binary in ("initdb", "postgres", "pg_isready", "psql"):
        if not (PG_BIN / binary).exists():
            raise ConfigError(f"PostgreSQL binary {PG_BIN / binary} is missing. {_SETUP_HINT}")
    pypgstac, uvicorn = _exe("pypgstac", venv), _exe("uvicorn", venv)
    as_pg = _as_postgres_user()
    tmp = Path(tempfile.mkdtemp(prefix="geoxai-pgstac-"))
    pg: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    try:
        os.chmod(tmp, 0o755)
        data = tmp / "pgdata"
        data.mkdir()
        if as_pg:
            os.chown(data, as_pg["user"], as_pg["group"])
        _run(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres"]
            + ["--auth=trust", "-E", "UTF8", "--no-instructions"],
            "initdb",
            cwd=tmp,
            **as_pg,
        )
        pg_port = free_port(host)
        pg = _start(
            [str(PG_BIN / "postgres"), "-D", str(data), "-h", host, "-p", str(pg_port)]
            + ["-k", "", "-c", "fsync=off", "-c", "synchronous_commit=off"]
            + ["-c", "full_page_writes=off", "-c", "max_connections=40"],
            tmp / "postgres.log",
            cwd=tmp,
            **as_pg,
        )
        deadline = time.monotonic() + timeout
        while True:
            if pg.poll() is not None:
                raise DataAccessError(f"PostgreSQL exited ({pg.returncode}):\n{_tail(pg)}")
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", host, "-p", str(pg_port), "-U", "postgres"],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise DataAccessError(f"PostgreSQL did not start in {timeout:.0f} s:\n{_tail(pg)}")
            time.sleep(0.1)
        dsn = f"postgresql://postgres@{host}:{pg_port}/postgres"
        _run(
            [str(PG_BIN / "psql"), dsn, "-v", "ON_ERROR_STOP=1", "-q"]
            + ["-c", "CREATE EXTENSION IF NOT EXISTS postgis"],
            f"CREATE EXTENSION postgis (is postgresql-15-postgis-3 installed? {_SETUP_HINT})",
        )
        _run([pypgstac, "migrate", "--dsn", dsn], "pypgstac migrate")
        col_files, items_file, _ = write_load_files(items_or_path, collection, tmp)
        for path in col_files:
            _run(
                [pypgstac, "load", "collections", str(path), "--dsn", dsn, "--method", "upsert"],
                "pypgstac load collections",
            )
        _run(
            [pypgstac, "load", "items", str(items_file), "--dsn", dsn, "--method", "upsert"],
            "pypgstac load items",
        )
        api_port = free_port(host)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_", "AWS_"))}
        env.update(
            PGUSER="postgres",
            PGPASSWORD="",
            PGHOST=host,
            PGPORT=str(pg_port),
            PGDATABASE="postgres",
        )
        api = _start(
            [uvicorn, "stac_fastapi.pgstac.app:create_app", "--factory"]
            + ["--host", host, "--port", str(api_port), "--log-level", "warning"],
            tmp / "api.log",
            env=env,
            cwd=tmp,  # stac-fastapi reads a `.env` from the working directory: keep it empty
        )
        url = f"http://{host}:{api_port}"
        _wait_http(url + "/", api, timeout, "stac-fastapi-pgstac")
        yield url
    finally:
        _stop(api)
        if pg is not None and pg.poll() is None:
            pg.send_signal(2)  # SIGINT: PostgreSQL "fast" shutdown
            try:
                pg.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pg.kill()
                pg.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.services",
        description="Serve STAC items on loopback until Ctrl-C (rustac in memory, or pgstac).",
    )
    parser.add_argument("server", choices=["rustac", "pgstac"])
    parser.add_argument("items", nargs="+", help="item JSON / ndjson / FeatureCollection files")
    parser.add_argument("--collection", default=None, help="serve every item under this id")
    args = parser.parse_args(argv)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # run the context managers' clean-up on `kill` too

    signal.signal(signal.SIGTERM, _terminate)
    serve = local_stac_api if args.server == "rustac" else local_pgstac_api
    with serve(args.items, args.collection) as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":  # pragma: no cover
    _main()
