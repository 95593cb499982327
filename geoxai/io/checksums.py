"""SHA-256 of the chunk objects of a stored array: computed at commit, checked on reuse.

:mod:`geoxai.io.store` records them in every commit marker and :func:`geoxai.io.store.verify`
checks them; the functions here only read objects through an fsspec filesystem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from geoxai.errors import CorruptDataError

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


def _digests(fs: Any, paths: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """``(path, bytes)`` of each path, a batch at a time (None: the object is missing)."""
    for i in range(0, len(paths), _HASH_BATCH):
        batch = paths[i : i + _HASH_BATCH]
        got = fs.cat(batch, on_error="return") if len(batch) > 1 else None
        for p in batch:
            if got is None:
                try:
                    raw: Any = fs.cat_file(p)
                except FileNotFoundError:
                    raw = None
            else:
                raw = got.get(p)
                raw = raw if isinstance(raw, bytes) else None
            yield p, raw


def chunk_digests(fs: Any, path: str) -> tuple[dict[str, str], int]:
    """SHA-256 of every chunk object under one array's prefix (key relative to it) and the
    total bytes."""
    prefix = path.rstrip("/") + "/"
    out: dict[str, str] = {}
    nbytes = 0
    for p, raw in _digests(fs, _chunk_keys(fs, path)):
        if raw is None:
            continue
        out[p[len(prefix) :] if p.startswith(prefix) else p] = hashlib.sha256(raw).hexdigest()
        nbytes += len(raw)
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
    for p, raw in _digests(fs, paths):
        key = p[len(prefix) :]
        if raw is None or hashlib.sha256(raw).hexdigest() != want[key]:
            what = "is missing" if raw is None else "does not match its checksum"
            raise CorruptDataError(
                f"Store {where}: chunk {key!r} of array {name!r} {what} in the commit marker "
                "(the stored bytes changed after commit: bit rot, truncation or tampering). "
                "Delete the store and rerun the stage that writes it (a run's cube stage "
                "rebuilds a corrupt cube by itself)."
            )
    return len(paths)
