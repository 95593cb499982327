"""Shared test set-up: real-data location, GPU skips, Hypothesis profile, server plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Each server fixture lives in its own plugin module (see tests/fixtures/).
pytest_plugins = [
    f"tests.fixtures.{p.stem}"
    for p in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
    if p.stem not in {"__init__", "net"}
]

REPO = Path(__file__).resolve().parent.parent

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def realdata_root() -> Path:
    return Path(os.environ.get("GEOXAI_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The shared real-data folder; skipped when absent, except in CI where it must exist."""
    root = realdata_root()
    if not root.is_dir():
        msg = (
            f"real data folder {root} is absent; set GEOXAI_REALDATA to the shared/realdata "
            "folder to run this test"
        )
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must have it)")
        pytest.skip(msg)
    return root


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
