"""Where a store lives: a local path or an ``s3://`` URL with its fsspec options, and the one
wrapper that turns storage failures into typed errors (:class:`~geoxai.errors.StoreError`,
:class:`~geoxai.errors.DataAccessError`) with secrets redacted.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from geoxai.errors import GeoXAIError, InvalidInputError, StoreError
from geoxai.secrets import secret_values

__all__ = [
    "S3_MAX_CONCURRENCY",
    "StoreLocation",
    "URL",
    "resolve",
    "same_location",
    "storage_errors",
]


@dataclass(frozen=True)
class StoreLocation:
    """A resolved store URL.

    Attributes:
        url: the URL as given, normalised (no trailing slash; local paths made absolute).
        protocol: ``"file"`` or ``"s3"``.
        path: the path the filesystem uses (``bucket/prefix`` for S3, absolute path locally).
        storage_options: s3fs keyword arguments (may hold secrets: never print them).
    """

    url: str
    protocol: str
    path: str
    storage_options: Mapping[str, Any]

    @property
    def is_s3(self) -> bool:
        """True for ``s3://`` URLs."""
        return self.protocol == "s3"

    @property
    def endpoint(self) -> str:
        """The S3 endpoint in use (``"AWS default"`` when none is configured); no secrets."""
        if not self.is_s3:
            return "local filesystem"
        so = self.storage_options
        ep = so.get("endpoint_url") or (so.get("client_kwargs") or {}).get("endpoint_url")
        return str(ep) if ep else "AWS default endpoint"

    def describe(self) -> str:
        """A printable description: the URL, and for S3 the endpoint. Never contains secrets."""
        return f"{self.url} (endpoint {self.endpoint})" if self.is_s3 else self.url

    def child(self, name: str) -> StoreLocation:
        """The location of ``name`` inside this one."""
        return StoreLocation(
            url=f"{self.url}/{name}",
            protocol=self.protocol,
            path=posixpath.join(self.path, name) if self.is_s3 else str(Path(self.path) / name),
            storage_options=self.storage_options,
        )

    def filesystem(self) -> Any:
        """The fsspec filesystem for this location (s3fs for S3, local otherwise)."""

        if self.is_s3:
            return fsspec.filesystem("s3", **dict(self.storage_options))
        return fsspec.filesystem("file")

    def zarr_target(self) -> tuple[str, dict[str, Any] | None]:
        """``(store, storage_options)`` to hand to xarray's ``to_zarr`` / ``open_zarr``."""
        if self.is_s3:
            return self.url, dict(self.storage_options)
        return self.path, None


S3_MAX_CONCURRENCY = 1
"""s3fs ``max_concurrency`` unless the storage options give one. With more than 1, s3fs reads a
whole object (``cat_file``: zarr metadata and chunks, records, markers) by first asking its size
(a HEAD, unless a listing of its folder is cached) to decide on ranged parallel GETs; geoxai
drops cached listings before reads (objects change under it), so every whole-object read cost a
HEAD and a GET: a rerun's planning made one HEAD per zone array and per object read. Its objects
are small (a chunk is ~1.4 MB, a record a few kB), so one GET each is the cheaper read; give
``max_concurrency`` in ``store.storage_options`` for stores of large objects read whole."""


def _env_storage_options() -> dict[str, Any]:
    """s3fs options from the standard AWS variables (keys are left to botocore to read)."""
    so: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        so["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        so["client_kwargs"] = {"region_name": region}
    return so


def resolve(
    url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> StoreLocation:
    """Turn a URL or path into a :class:`StoreLocation`.

    Args:
        url: a local path (``/data/x.zarr``, ``file:///data/x.zarr``) or ``s3://bucket/prefix``.
        storage_options: s3fs keyword arguments; when None they come from the AWS_* variables.
            Bounded retries and timeouts are added unless given, so an unreachable endpoint
            fails in seconds rather than minutes; and ``max_concurrency`` 1 unless given
            (:data:`S3_MAX_CONCURRENCY`).

    Raises:
        InvalidInputError: an unsupported scheme or an ``s3://`` URL without a bucket.
    """
    text = os.fspath(url).strip()
    if not text:
        raise InvalidInputError("Store URL is empty; give a local path or s3://bucket/prefix.")
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
    else:
        scheme, rest = "file", text
    if scheme == "file":
        path = str(Path(rest).expanduser().resolve())
        return StoreLocation(url=path, protocol="file", path=path, storage_options={})
    if scheme in ("s3", "s3a"):
        rest = rest.strip("/")
        if not rest or rest.startswith("/"):
            raise InvalidInputError(f"Store URL {text!r} names no bucket; use s3://bucket/prefix.")
        so = dict(storage_options) if storage_options is not None else _env_storage_options()
        cfg = dict(so.get("config_kwargs") or {})
        cfg.setdefault("connect_timeout", 5)
        cfg.setdefault("read_timeout", 60)
        cfg.setdefault("retries", {"max_attempts": 3, "mode": "standard"})
        so["config_kwargs"] = cfg
        so.setdefault("max_concurrency", S3_MAX_CONCURRENCY)
        return StoreLocation(url=f"s3://{rest}", protocol="s3", path=rest, storage_options=so)
    raise InvalidInputError(
        f"Store URL {text!r} has scheme {scheme!r}; geoxai stores live on a local path or at "
        "s3://bucket/prefix."
    )


def same_location(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two store URLs or paths name the same place (``/x/y/``, ``file:///x/y`` and a
    relative path to it are one; ``s3://b/k/`` is ``s3://b/k``). Compares names, not contents."""
    return resolve(a, {}).url == resolve(b, {}).url


URL = str | os.PathLike[str] | StoreLocation
"""A store URL, a local path, or an already resolved :class:`StoreLocation`."""


def _as_location(url: URL, storage_options: Mapping[str, Any] | None) -> StoreLocation:
    return url if isinstance(url, StoreLocation) else resolve(url, storage_options)


def _redact(text: str, loc: StoreLocation) -> str:
    """Remove any secret value of ``loc.storage_options`` (at any depth) from ``text``."""
    env = (os.environ.get(var) for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    for value in [*secret_values(loc.storage_options), *(v for v in env if v)]:
        text = text.replace(value, "***")
    return text


def _classify(exc: BaseException, loc: StoreLocation, action: str) -> StoreError:
    """Translate a filesystem/botocore/aiohttp error into a :class:`StoreError` with a fix."""
    name = type(exc).__name__
    msg = _redact(str(exc), loc)
    chain: list[str] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 6:
        chain.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    text = _redact(" | ".join(chain), loc)
    where = loc.describe()
    if loc.is_s3:
        low = text.lower()
        if any(
            s in low
            for s in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied", "forbidden")
        ) or isinstance(exc, PermissionError):
            return StoreError(
                f"Could not {action} {where}: the S3 server rejected the credentials ({name}). "
                "Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the key/secret in "
                "storage_options) and the bucket policy."
            )
        if any(
            s in low
            for s in (
                "could not connect",
                "connect timeout",
                "cannot connect",
                "connection refused",
                "endpointconnectionerror",
                "clientconnectorerror",
                "name or service not known",
                "connecttimeout",
            )
        ):
            return StoreError(
                f"Could not {action} {where}: the S3 endpoint is unreachable ({name}: {msg}). "
                "Check AWS_ENDPOINT_URL (or storage_options['endpoint_url']) and that the "
                "server is running."
            )
        if "nosuchbucket" in low or "bucket does not exist" in low:
            bucket = loc.path.split("/", 1)[0]
            return StoreError(
                f"Could not {action} {where}: bucket {bucket!r} does not exist. Create it "
                "first or fix the bucket name in the URL."
            )
    return StoreError(f"Could not {action} {where}: {name}: {msg}")


@contextmanager
def storage_errors(
    loc: StoreLocation,
    action: str,
    *,
    passthrough: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """The one storage-error wrapper: turn storage-layer failures into a :class:`StoreError`.

    geoxai errors pass through unchanged, and so do the exception types in ``passthrough``
    (e.g. ``FileNotFoundError`` where the caller decides what "missing" means). Any other error
    whose chain holds an ``OSError`` or an exception of botocore/aiobotocore/aiohttp/s3fs becomes
    ``StoreError("Could not <action> <where>: ...")`` with the fix (credentials, endpoint,
    bucket) and secrets redacted; everything else (data errors) passes through.

    Args:
        loc: the place being read or written (named in the message).
        action: the verb phrase of the message (``"read"``, ``"write 'x' of tile T to"``).
        passthrough: exception types to re-raise as they are.
    """
    try:
        yield
    except GeoXAIError:
        raise
    except Exception as exc:
        if passthrough and isinstance(exc, passthrough):
            raise
        if _is_io_error(exc):
            raise _classify(exc, loc, action) from exc
        raise


def _is_io_error(exc: BaseException) -> bool:
    """True for errors that come from the storage layer rather than from the data."""
    e: BaseException | None = exc
    while e is not None:
        mod = type(e).__module__ or ""
        if isinstance(e, OSError) or mod.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs")):
            return True
        e = e.__cause__ or e.__context__
    return False
