"""``geoxai verify``: every done tile's outputs read against their checksums, in parallel on Ray;
the records of the tiles that fail are deleted, and with ``repair`` those tiles are run again.

The checks are :func:`geoxai.mapping.verify.verify_tiles` on batches of tile ids (one Ray task
per batch, at most ``cube_tasks_in_flight`` batches at once); the driver lists the records
prefix once, holds only tile ids, and deletes the failing tiles' records itself, under the run
root's lease (no run may write while verify deletes). The repair is a resume of the run
(:func:`pipelines.run.run`): planning finds exactly the tiles whose records were deleted (plus
any tile that was not done before verify; the summary says how many).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import ray

from geoxai.config import RunConfig
from geoxai.errors import InvalidInputError
from geoxai.io.layout import RunLayout
from geoxai.io.lease import DEFAULT_TTL_S, RunLease
from geoxai.io.listing import list_sizes
from geoxai.mapping.protocol import STAGES, RunStages
from geoxai.mapping.records import delete_record
from geoxai.mapping.verify import VerifyResult, verify_tiles
from pipelines.run import RunSummary, init_ray, run

__all__ = ["VerifySummary", "verify_run"]

log = logging.getLogger("geoxai.verify")

BATCH_TILES = 64
"""Tiles checked per Ray task."""


@dataclass
class VerifySummary:
    """What ``geoxai verify`` found and did.

    Attributes:
        run_root: the run verified. records: records listed. result: the checks' totals and
            problems (tile id -> why). deleted: tiles whose records were deleted.
        rerun: the repair run's summary (None without ``repair`` or when nothing was bad).
        wall_s: seconds verifying (without the repair run).
    """

    run_root: str
    records: int
    result: VerifyResult
    deleted: list[str] = field(default_factory=list)
    rerun: RunSummary | None = None
    wall_s: float = 0.0

    @property
    def redone_extra(self) -> int:
        """Tiles the repair run processed beyond the ones verify found bad."""
        if self.rerun is None:
            return 0
        return len(set(self.rerun.outcomes) - set(self.deleted))


@ray.remote(num_cpus=1, max_retries=3)
def _verify_task(root: str, storage_options: dict | None, tile_ids: list[str]) -> VerifyResult:
    return verify_tiles(RunLayout(root, storage_options), tile_ids)


def verify_run(
    config: RunConfig,
    *,
    repair: bool = False,
    batch_tiles: int = BATCH_TILES,
    stages: RunStages = STAGES,
    lease_ttl_s: float = DEFAULT_TTL_S,
) -> VerifySummary:
    """Verify every ``done`` tile of ``config``'s run root; delete the records of bad tiles.

    Args:
        config: the run config (its run root and store).
        repair: re-run the bad tiles afterwards (:func:`pipelines.run.run` with ``stages``).
        batch_tiles: tiles per Ray task.

    Raises:
        InvalidInputError: ``batch_tiles`` < 1, or the run root holds no records at all.
        StoreError: the store cannot be reached or listed.
        RunLockedError: a driver holds the run root.
    """
    if batch_tiles < 1:
        raise InvalidInputError(f"batch_tiles must be >= 1, got {batch_tiles}.")
    so = config.store.storage_options or None
    layout = RunLayout(config.run_root(), so)
    t0 = time.monotonic()
    with RunLease(layout, lease_ttl_s):
        keys = list_sizes(layout.at(layout.records_url()))
        ids = sorted(k[: -len(".json")] for k in keys if k.endswith(".json") and "/" not in k)
        if not ids:
            raise InvalidInputError(
                f"No tile records under {layout.records_url()}: nothing to verify. Check the "
                "config's store.root, name and year (`geoxai run` writes the records)."
            )
        init_ray(config.resources.address)
        total = VerifyResult()
        batches = [ids[i : i + batch_tiles] for i in range(0, len(ids), batch_tiles)]
        in_flight: list[ray.ObjectRef] = []
        limit = max(1, config.resources.cube_tasks_in_flight)
        while batches or in_flight:
            while batches and len(in_flight) < limit:
                in_flight.append(_verify_task.remote(layout.root, so, batches.pop(0)))
            ready, in_flight = ray.wait(in_flight, num_returns=1)
            total.merge(ray.get(ready[0]))
        deleted = [t for t in sorted(total.problems) if delete_record(layout, t)]
        for tile_id in deleted:
            log.warning("tile %s: %s; its record is deleted", tile_id, total.problems[tile_id])
    summary = VerifySummary(layout.root, len(ids), total, deleted, None, time.monotonic() - t0)
    if repair and deleted:
        summary.rerun = run(config, progress=False, stages=stages, lease_ttl_s=lease_ttl_s)
    return summary
