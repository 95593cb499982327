"""Typed errors that say what went wrong, with what, and how to fix it.

Every error raised on bad input is a :class:`GeoXAIError`; each subclass also inherits the
standard category (``ValueError``, ``OSError``, ``LookupError`` ...) so callers that catch the
builtin keep working (the rasterio convention).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TypeVar

__all__ = [
    "GeoXAIError",
    "ConfigError",
    "InvalidInputError",
    "UnknownTileError",
    "AOIError",
    "NoDataError",
    "DataAccessError",
    "CorruptDataError",
    "StacError",
    "StoreError",
    "IncompleteOutputError",
    "ModelBundleError",
    "GraphImportError",
    "look_up_option",
]


class GeoXAIError(Exception):
    """Root of every error geoxai raises on purpose."""


class ConfigError(GeoXAIError, ValueError):
    """A configuration value is invalid (bad name, out of range, inconsistent)."""


class InvalidInputError(GeoXAIError, ValueError):
    """An input array, file or argument does not have the expected form."""


class UnknownTileError(InvalidInputError):
    """A tile id that does not parse or does not exist on the grid."""


class AOIError(InvalidInputError):
    """An area of interest that is empty, unreadable or outside every UTM zone."""


class NoDataError(GeoXAIError, LookupError):
    """A query or a tile has no usable data (zero STAC items, all pixels nodata).

    Runs treat this as an *empty* result for the tile, not as a crash.
    """


class DataAccessError(GeoXAIError, OSError):
    """Data could not be read (missing asset, unreachable server, permission)."""


class CorruptDataError(DataAccessError):
    """Data was reached but is not what it claims to be (corrupt COG, truncated file)."""


class StacError(DataAccessError):
    """A STAC API is unreachable or answered with an error after all retries."""


class StoreError(DataAccessError):
    """An object store (local path or ``s3://``) cannot be read or written."""


class IncompleteOutputError(StoreError):
    """An output exists but was never committed (a write that failed or is in flight)."""


class ModelBundleError(GeoXAIError, ValueError):
    """A model bundle is missing, corrupt, untrusted or does not fit its input."""


class GraphImportError(ModelBundleError):
    """A frozen TensorFlow graph cannot be imported: truncated or not a GraphDef, an op or
    attribute outside the supported set, or inputs that do not match the declared bands."""


_E = TypeVar("_E", bound=GeoXAIError)


def look_up_option(
    value: str,
    choices: Iterable[str],
    *,
    what: str,
    error: type[_E] = ConfigError,  # type: ignore[assignment]
) -> str:
    """Return ``value`` if it is one of ``choices``, else raise with a did-you-mean hint.

    Args:
        value: the name the user gave.
        choices: the accepted names.
        what: what the name is for, e.g. ``"band"`` or ``"AOI format"``.
        error: the error class to raise.
    """
    options = list(choices)
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), options, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise error(f"Unknown {what} {value!r}.{hint} Valid choices: {', '.join(options)}.")
