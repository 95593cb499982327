"""SHA-256 of the chunk objects of a stored array: computed at commit, checked on reuse.

:mod:`geoxai.io.store` records them in every commit marker and :func:`geoxai.io.store.verify`
checks them; the functions here only read objects through an fsspec filesystem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from geoxai.errors import CorruptDataError
from geoxai.io.cube_rows import usable_cpus

__all__ = ["chunk_digests", "check_digests"]

_HASH_BATCH = 64
"""Chunk objects fetched per request while hashing (bounds memory: a batch at a time)."""


def _chunk_keys(fs: Any, path: str) -> list[str]:
    """The chunk objects stored under one array's prefix (full paths, sorted)."""
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(
        key
        for key, info in found.items()
        if not key.endswith("zarr.json") and info.get("type", "file") == "file"
    )


def _digests(fs: Any, paths: list[str]) -> Iterator[tuple[str, int, str | None]]:
    """``(path, bytes, SHA-256 hex)`` of each path (None: the object is missing), a batch at a
    time. A batch is fetched in one ``fs.cat`` (concurrent on S3) and hashed on threads
    (hashlib releases the GIL); on a local filesystem each thread reads and hashes its own
    objects (file reads release it too)."""
    local = "file" in fs.protocol
    pool = (
        ThreadPoolExecutor(_THREADS, thread_name_prefix="chunk-sha256")
        if len(paths) > 1 and _THREADS > 1
        else None
    )
    run = map if pool is None else pool.map
    try:
        for i in range(0, len(paths), _HASH_BATCH):
            batch = paths[i : i + _HASH_BATCH]
            if local or len(batch) == 1:
                for p, (size, hx) in zip(batch, run(partial(_read_hash, fs), batch), strict=True):
                    yield p, size, hx
                continue
            got = fs.cat(batch, on_error="return")
            raws = [r if isinstance(r, bytes) else None for r in map(got.get, batch)]
            hexes = run(_sha256, raws)
            for p, raw, hx in zip(batch, raws, hexes, strict=True):
                yield p, 0 if raw is None else len(raw), hx
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _read_hash(fs: Any, path: str) -> tuple[int, str | None]:
    """``(bytes, SHA-256 hex)`` of one object; None when it cannot be read (as ``fs.cat``'s
    ``on_error="return"`` reports it: a missing object)."""
    try:
        raw = fs.cat_file(path)
    except OSError:
        return 0, None
    return len(raw), _sha256(raw)


def _sha256(raw: bytes | None) -> str | None:
    return None if raw is None else hashlib.sha256(raw).hexdigest()


_THREADS = min(4, usable_cpus())
"""Threads reading and hashing chunk objects (the CPUs this process may use, at most 4)."""


def chunk_digests(fs: Any, path: str) -> tuple[dict[str, str], int]:
    """SHA-256 of every chunk object under one array's prefix (key relative to it) and the
    total bytes."""
    prefix = path.rstrip("/") + "/"
    out: dict[str, str] = {}
    nbytes = 0
    for p, size, hx in _digests(fs, _chunk_keys(fs, path)):
        if hx is None:
            continue
        out[p[len(prefix) :] if p.startswith(prefix) else p] = hx
        nbytes += size
    return out, nbytes


def check_digests(fs: Any, path: str, want: Mapping[str, str], where: str, name: str) -> int:
    """Check the chunk objects under ``path`` against ``want`` (key -> SHA-256 hex).

    Returns:
        The number of objects checked.

    Raises:
        CorruptDataError: an object is missing or its digest differs (names the store, the
            array, the chunk and the fix).
    """
    prefix = path.rstrip("/") + "/"
    paths = [prefix + k for k in sorted(want)]
    for p, _, hx in _digests(fs, paths):
        key = p[len(prefix) :]
        if hx is None or hx != want[key]:
            what = "is missing" if hx is None else "does not match its checksum"
            raise CorruptDataError(
                f"Store {where}: chunk {key!r} of array {name!r} {what} in the commit marker "
                "(the stored bytes changed after commit: bit rot, truncation or tampering). "
                "Delete the store and rerun the stage that writes it (a run's cube stage "
                "rebuilds a corrupt cube by itself)."
            )
    return len(paths)
