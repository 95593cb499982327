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

__all__ = ["PIXEL_VERSION", "code_version", "config_hash", "canonical_json"]

#: Version of the algorithms that turn inputs into pixels. Bump it in the commit whose code
#: changes the pixels one config makes (a new default, a fixed bug in a stage), and say why
#: here. It enters :meth:`geoxai.config.RunConfig.output_hash`, so a rerun over a run made by
#: older code recomputes its tiles instead of mixing two algorithms in one map.
#:
#: - 1: until 2026-12 (one lambda per tile, series ends extrapolated).
#: - 2: per-pixel ``(order, lambda)`` by pooled leave-one-out CV; series held at their ends.
#: - 3: the choice among order-1 candidates from near-interpolation (lambda 0.001) to 1, and
#:   pixels with fewer than 5 clear nodes take near-interpolation (issue 15: the default now
#:   beats linear interpolation on the real composites).
#: - 4: the smoothing stage near its kernel (issue 14): node means accumulated in float64 and
#:   stored as float32, sampled by a kernel; features differ from 3 by float noise (max 1.2e-7
#:   measured), choices, validity and quality layers identical on the tests' cubes.
#: - 5: observations enter the smoother at their exact times (two linear-interpolation weights
#:   on the nodes around them instead of the nearest node), the leave-one-out criterion leaves
#:   out observations, grid nodes at whole ``grid_days`` from the axis start, series held
#:   beyond the first/last observation's time (issue 15: the default beats linear
#:   interpolation on every real series); and the TemporalUNet's temporal encoder runs
#:   channels-last on the CPU (issue 14): predictions of CPU runs on the torch runtime
#:   (``resources.runtime: torch``) differ by float noise (max 3.0e-7 measured,
#:   benchmarks/bench_predict.py); the default CPU runtime (onnxruntime: the exported graph is
#:   byte-identical) and GPU runs make the same pixels.
PIXEL_VERSION = 5


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
