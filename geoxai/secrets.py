"""Secrets never leave the process environment: find them by name, scrub them, refuse them.

A *secret name* is any key or variable name that names a credential: it contains ``secret``,
``token``, ``passw``, ``pwd``, ``credential``, ``private``, ``auth`` or ``key``
(``key``, ``aws_access_key_id``, ``api_key``, ``SSEKMSKeyId``), case-insensitively. Names such as
``endpoint_url``, ``region_name`` or ``use_ssl`` are not secret names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from geoxai.errors import ConfigError

__all__ = [
    "REDACTED",
    "is_secret_name",
    "secret_paths",
    "secret_values",
    "scrub",
    "check_no_secrets",
    "non_secret_env",
]

REDACTED = "***"

_SECRET = re.compile(r"secret|token|passw|pwd|credential|private|auth|key")


def is_secret_name(name: str) -> bool:
    """True when ``name`` (a dict key or an environment variable name) names a credential."""
    n = str(name).lower()
    return bool(_SECRET.search(n))


def secret_paths(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every secret-named key in ``obj`` (dicts and lists, at any depth)."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if is_secret_name(str(k)):
                found.append(path)
            else:
                found.extend(secret_paths(v, path))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found.extend(secret_paths(v, f"{prefix}[{i}]"))
    return found


def secret_values(obj: Any) -> list[str]:
    """Every non-empty string held under a secret-named key of ``obj``, at any depth."""
    out: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if is_secret_name(str(k)):
                out += [v] if isinstance(v, str) and v else secret_values(v)
            else:
                out += secret_values(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out += secret_values(v)
    return out


def scrub(obj: Any) -> Any:
    """A copy of ``obj`` with the value of every secret-named key, at any depth, replaced by
    ``"***"`` (dicts and lists are copied; other values are returned as they are)."""
    if isinstance(obj, Mapping):
        return {k: REDACTED if is_secret_name(str(k)) else scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(scrub(v) for v in obj)
    return obj


def check_no_secrets(obj: Any, where: str) -> None:
    """Raise :class:`SecretInConfigError` naming every secret-named key found in ``obj``.

    Args:
        obj: a config section (nested dicts/lists).
        where: its name in the config, e.g. ``"store.storage_options"``.
    """
    paths = secret_paths(obj)
    if paths:
        raise SecretInConfigError(where, paths)


def non_secret_env(env: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """The variables of ``env`` whose names start with one of ``prefixes`` and name no secret."""
    return {k: v for k, v in env.items() if k.startswith(prefixes) and not is_secret_name(k)}


class SecretInConfigError(ConfigError):
    """A config section holds a credential (at any depth); credentials come only from the
    environment (or instance roles), so they never reach a saved config or a log."""

    def __init__(self, where: str, paths: list[str]) -> None:
        self.where = where
        self.paths = paths
        keys = ", ".join(f"{where}.{p}" for p in paths)
        super().__init__(
            f"{where} must not hold credentials, found {keys}: remove them and set "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, an instance role) in "
            "the environment instead, so they never reach a saved config or a log."
        )
