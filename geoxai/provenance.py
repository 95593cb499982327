"""What made an output: code version, config hash, environment. Recorded beside every output."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from geoxai import __version__

__all__ = ["code_version", "config_hash", "canonical_json"]


@cache
def code_version() -> str:
    """``"geoxai <version>+g<sha>[.dirty]"`` when run from a git checkout, else the version."""

    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"geoxai {__version__}+g{sha}" if sha else f"geoxai {__version__}"


def _default(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    return str(obj)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) of dataclasses, pydantic models, dicts."""
    return json.dumps(obj, default=_default, sort_keys=True, separators=(",", ":"))


def config_hash(obj: Any) -> str:
    """SHA-256 (hex, first 16 chars) of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]
