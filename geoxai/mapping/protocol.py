"""The stages a run driver calls, as a typed interface, and the object of geoxai's own stages.

``pipelines.run`` chains exactly these six functions and nothing else, so a driver can be
handed any object with them (benchmarks pass no-op stages to time the scheduling alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from geoxai.config import RunConfig
from geoxai.geo.grid import TileSpec
from geoxai.mapping.cube_stage import stage_cube
from geoxai.mapping.outcomes import CubeStage, TileOutcome
from geoxai.mapping.plan import RunPlan, plan_run
from geoxai.mapping.stages import (
    TileModels,
    finish_run,
    load_models,
    map_and_write,
    record_empty_or_failed,
)

__all__ = ["RunStages", "MappingStages", "STAGES"]


class RunStages(Protocol):
    """What the driver calls, in order: plan, per tile a cube then a map (on an actor holding
    the models) or a record of the empty/failed cube, and the run's finish."""

    def plan_run(self, config: RunConfig, *, force: bool = False) -> RunPlan:
        """Tiles of the run, split into to-do and done (:func:`geoxai.mapping.plan_run`)."""
        ...

    def stage_cube(self, tile: TileSpec, config: RunConfig) -> CubeStage:
        """Build or reuse the tile's committed cube (:func:`geoxai.mapping.stage_cube`)."""
        ...

    def load_models(self, config: RunConfig) -> TileModels:
        """The models a tile actor holds (:func:`geoxai.mapping.load_models`)."""
        ...

    def map_and_write(
        self, tile: TileSpec, cube: CubeStage, models: TileModels, config: RunConfig
    ) -> TileOutcome:
        """Map one tile and write its outputs once (:func:`geoxai.mapping.map_and_write`)."""
        ...

    def record_empty_or_failed(
        self, tile: TileSpec, cube: CubeStage, config: RunConfig
    ) -> TileOutcome:
        """Record a tile whose cube stage found nothing or failed."""
        ...

    def finish_run(
        self,
        config: RunConfig,
        plan: RunPlan,
        outcomes: Mapping[str, TileOutcome],
        *,
        wall_s: float,
    ) -> str | None:
        """Mosaics, catalog and report; the report URL (:func:`geoxai.mapping.finish_run`)."""
        ...


class MappingStages:
    """geoxai's own stages (:mod:`geoxai.mapping`), as one picklable object implementing
    :class:`RunStages`."""

    plan_run = staticmethod(plan_run)
    stage_cube = staticmethod(stage_cube)
    load_models = staticmethod(load_models)
    map_and_write = staticmethod(map_and_write)
    record_empty_or_failed = staticmethod(record_empty_or_failed)
    finish_run = staticmethod(finish_run)


STAGES: RunStages = MappingStages()
"""The stages a run uses unless told otherwise."""
