"""``geoxai submit``: send a run to a Ray cluster through the Jobs API (``ray job submit``)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from geoxai.config import RunConfig, load_run_config
from geoxai.errors import ConfigError, DataAccessError

__all__ = ["submit", "job_spec"]

_NON_SECRET_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_S3_ENDPOINT",
    "AWS_HTTPS",
    "AWS_VIRTUAL_HOSTING",
)
# Credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) never travel: Ray writes
# a job's runtime env to its logs. Cluster nodes use their own role, Secret or environment.


def _is_loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host == "localhost" or host.startswith("127.")


def _absolute(cfg: RunConfig, base: Path) -> RunConfig:
    """Local paths of the config made absolute (the job runs in another directory)."""

    def fix(p: str | None) -> str | None:
        if not p or "://" in p or Path(p).is_absolute():
            return p
        return str((base / p).resolve()) if (base / p).exists() or "/" in p else p

    aoi = cfg.aoi
    if (base / aoi).is_file():
        aoi = str((base / aoi).resolve())
    return cfg.model_copy(
        update={
            "aoi": aoi,
            "store": cfg.store.model_copy(update={"root": fix(cfg.store.root)}),
            "models": cfg.models.model_copy(
                update={"prediction": fix(cfg.models.prediction), "asos": fix(cfg.models.asos)}
            ),
            "baseline": fix(cfg.baseline),
            "stac": cfg.stac.model_copy(update={"url": fix(cfg.stac.url) or cfg.stac.url}),
        }
    )


def job_spec(
    config_path: Path,
    address: str,
    *,
    year: int | None = None,
    baseline_year: int | None = None,
) -> tuple[dict, RunConfig]:
    """Entrypoint, runtime env and resolved config of the job (validated locally first).

    The resolved config (local paths made absolute) travels as ``run.json`` in the job's
    ``working_dir``; the entrypoint is ``geoxai run run.json --address auto``. Local paths are
    refused unless the cluster is on this machine (a loopback address). The runtime env holds
    only the non-secret storage settings (endpoint, region); never credentials.
    """
    cfg = _absolute(load_run_config(config_path, year=year), config_path.resolve().parent)
    local = [
        p for p in (cfg.store.root, cfg.models.prediction, cfg.models.asos) if p and "://" not in p
    ]
    if local and not _is_loopback(address):
        raise ConfigError(
            f"Config {str(config_path)!r} uses local paths {local}, but the cluster at "
            f"{address} is remote: put store.root and models.* on shared storage (s3://...)."
        )
    # On this machine's cluster the job runs with this interpreter (the venv's python, DESIGN.md);
    # on a remote cluster with the image's `python`.
    python = sys.executable if _is_loopback(address) else "python"
    args = [python, "-m", "pipelines.cli", "run", "run.json", "--address", "auto", "--no-progress"]
    if baseline_year is not None:
        args += ["--baseline-year", str(baseline_year)]
    env = {k: os.environ[k] for k in _NON_SECRET_ENV if k in os.environ}
    # no RAY_AUTH_*: the job's driver inherits the cluster's token auth from its node
    return {"entrypoint": shlex.join(args), "runtime_env": {"env_vars": env}}, cfg


def _submit_with_retry(client, spec: dict, address: str, wait_s: float = 120.0) -> str:
    """Submit; a freshly started head answers "No available agent" until its job agent is up."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=spec["entrypoint"], runtime_env=spec["runtime_env"])
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise DataAccessError(
                    f"The Ray cluster at {address} refused the job: {exc}. Check that the "
                    "head's dashboard is reachable and its job agent is running."
                ) from exc
            time.sleep(2)


def submit(
    config_path: Path,
    address: str,
    *,
    year: int | None = None,
    baseline_year: int | None = None,
    wait: bool = False,
    headers: dict[str, str] | None = None,
) -> str:
    """Submit the run to the cluster at ``address`` and return the job id.

    ``headers`` go with every Jobs API request (e.g. ``{"Authorization": "Bearer <token>"}``);
    without them the token comes from ``RAY_AUTH_TOKEN`` or Ray's token file."""
    from ray.job_submission import JobSubmissionClient

    spec, cfg = job_spec(
        config_path,
        address,
        year=year,
        baseline_year=baseline_year,
    )
    client = JobSubmissionClient(address, headers=headers)
    with tempfile.TemporaryDirectory(prefix="geoxai-job-") as tmp:
        (Path(tmp) / "run.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
        spec["runtime_env"]["working_dir"] = tmp
        job_id = _submit_with_retry(client, spec, address)
    if wait:
        import asyncio

        async def _tail() -> None:
            async for lines in client.tail_job_logs(job_id):
                print(lines, end="")

        asyncio.run(_tail())
    return job_id
