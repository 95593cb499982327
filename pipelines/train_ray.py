"""``geoxai train NAME CONFIG --workers N``: the same workflow, data-parallel on Ray Train.

The driver validates the config (before anything starts), connects to Ray (a local instance
pinned to loopback through :func:`pipelines.run.init_ray`, or ``--ray-address``) and runs a
:class:`ray.train.torch.TorchTrainer` with ``N`` CPU workers. Each worker calls
:func:`geoxai.train.workflows.run_workflow` on the same config; Ray Train has initialized
``torch.distributed`` (gloo), so :func:`geoxai.train.trainer.fit` shards the batches over the ranks,
averages gradients and metrics, and only rank 0 writes checkpoints, metrics and the bundle.
Every rank reads the same input files and ``out_dir`` (resume), so on a multi-node cluster
they must be on storage every node sees. Ray Train's own run records, and a copy of the
bundle as its checkpoint, go to ``out_dir/ray_train``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geoxai.errors import ConfigError, GeoXAIError

__all__ = ["run_distributed"]


def _worker_loop(cfg: dict[str, Any]) -> None:
    """One Ray Train worker: the driver's working directory, then the workflow."""
    import ray.train

    from geoxai.train.workflows import load_workflow_config, run_workflow

    os.chdir(cfg["cwd"])  # relative paths in the config mean what they meant to the user
    config = load_workflow_config(cfg["name"], cfg["config"])
    bundle = Path(run_workflow(cfg["name"], config, resume=cfg["resume"])).resolve()
    rank0 = ray.train.get_context().get_world_rank() == 0
    # rank 0 wrote the bundle; a copy goes to Ray's storage (the driver's only view of it when
    # out_dir is node-local on a cluster), and its metrics carry the bundle path
    checkpoint = ray.train.Checkpoint.from_directory(str(bundle)) if rank0 else None
    ray.train.report({"bundle": str(bundle)}, checkpoint=checkpoint)


def _unwrap(exc: BaseException) -> BaseException | None:
    """The first geoxai error a worker raised, if any (so the user sees its message)."""
    for failure in (getattr(exc, "worker_failures", None) or {}).values():
        seen = failure
        for _ in range(5):
            if isinstance(seen, GeoXAIError):
                return seen
            nxt = getattr(seen, "cause", None) or seen.__cause__
            if nxt is None:
                break
            seen = nxt
    return None


def run_distributed(
    name: str,
    config_path: str | Path,
    *,
    workers: int,
    resume: bool = True,
    address: str | None = None,
) -> Path:
    """Train workflow ``name`` from ``config_path`` on ``workers`` Ray Train CPU workers.

    Returns:
        The bundle directory (written by rank 0).

    Raises:
        ConfigError: bad workflow name/config (before Ray starts) or ``workers < 2``.
        GeoXAIError: the first typed error a worker raised.
    """
    if workers < 2:
        raise ConfigError(f"--workers {workers}: Ray Train needs >= 2 workers; use 1 for one CPU.")
    from geoxai.train.workflows import load_workflow_config

    config = load_workflow_config(name, config_path)  # validate before any start-up
    out_dir = getattr(config, "out_dir", None)
    if out_dir is None:
        raise ConfigError(f"workflow {name!r} config has no out_dir; cannot place Ray records.")
    import ray
    from ray.train import RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    from pipelines.run import init_ray

    started = not ray.is_initialized()
    init_ray(address, num_cpus=None if address else max(workers, os.cpu_count() or 1))
    storage = Path(out_dir).resolve() / "ray_train"
    storage.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "name": name,
            "config": config.model_dump(mode="json"),
            "resume": resume,
            "cwd": os.getcwd(),
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
        run_config=RunConfig(name=f"geoxai-train-{name}", storage_path=str(storage)),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        cause = _unwrap(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        if started:
            ray.shutdown()
    return Path(result.metrics["bundle"])
