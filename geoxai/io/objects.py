"""Whole objects at a URL (local path or ``s3://``), written so readers never see half of one.

One PUT on S3 (an object appears whole or not at all), a temporary file and ``os.replace``
locally. The JSON documents of geoxai (records, configs, commit markers, reports' sidecars)
and finished local files (COGs, reports, indexes) go through here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geoxai.atomic import atomic_write, atomic_write_bytes
from geoxai.errors import InvalidInputError, StoreError
from geoxai.io.json_safe import _DROP, json_safe
from geoxai.io.location import URL, StoreLocation, _as_location, storage_errors

__all__ = ["put_atomic", "read_json", "upload_file", "write_json"]


def put_atomic(loc: StoreLocation, payload: bytes, *, fs: Any = None) -> None:
    """Write one object whole: one PUT on S3, :func:`geoxai.atomic.atomic_write_bytes` locally.

    Raises:
        StoreError: the destination cannot be written.
    """
    with storage_errors(loc, "write"):
        if loc.is_s3:
            fs = fs or loc.filesystem()
            fs.pipe_file(loc.path, payload)  # one PUT: the object appears whole or not at all
            fs.invalidate_cache()
        else:
            atomic_write_bytes(loc.path, payload, parents=True)


def upload_file(src: str | os.PathLike[str], loc: StoreLocation) -> None:
    """Move a finished local file to ``loc`` whole: one PUT on S3, an atomic copy locally.

    Raises:
        StoreError: the destination cannot be written.
    """
    src = Path(src)
    with storage_errors(loc, "write"):
        if loc.is_s3:
            fs = loc.filesystem()
            fs.put_file(str(src), loc.path)
            fs.invalidate_cache()
        else:
            atomic_write(loc.path, lambda tmp: shutil.copyfile(src, tmp), parents=True)


def _put_json(loc: StoreLocation, obj: Any, *, fs: Any = None) -> None:
    payload = json.dumps(json_safe(obj), indent=1, sort_keys=True).encode()
    put_atomic(loc, payload, fs=fs)


def write_json(obj: Any, url: URL, *, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write a JSON document atomically: readers see the old one, the new one, or nothing.

    Local files go through a temporary file and ``os.replace``; S3 objects are one PUT.
    Values are made JSON-safe (:func:`json_safe`); ones with no JSON form are dropped.
    """
    if json_safe(obj) is _DROP:
        raise InvalidInputError(f"write_json got a {type(obj).__name__} with no JSON form.")
    _put_json(_as_location(url, storage_options), obj)


def read_json(
    url: URL,
    *,
    storage_options: Mapping[str, Any] | None = None,
    default: Any = _DROP,
) -> Any:
    """Read a JSON document written by :func:`write_json`.

    Args:
        url: its URL.
        storage_options: s3fs options; default from the environment.
        default: returned when the document does not exist; without it that raises.

    Raises:
        StoreError: the document does not exist (and no default), cannot be reached, or is not
            valid JSON.
    """
    loc = _as_location(url, storage_options)
    with storage_errors(loc, "read"):
        fs = loc.filesystem()
        try:
            raw = fs.cat_file(loc.path)
        except FileNotFoundError:
            if default is not _DROP:
                return default
            raise StoreError(f"JSON record {loc.describe()} does not exist.") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"JSON record {loc.describe()} is not valid JSON ({exc}); delete it and rerun the "
            "stage that writes it."
        ) from exc
