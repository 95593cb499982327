"""What a run config means for the stages: the run's layout, its preprocessing parameters and the
date range it reads (pure functions of a :class:`~geoxai.config.RunConfig`).
"""

from __future__ import annotations

import datetime as dt

from geoxai.config import RunConfig
from geoxai.errors import ConfigError
from geoxai.geo.bands import CUBE_BANDS, S2_BANDS
from geoxai.io.layout import RunLayout
from geoxai.temporal.clouds import CloudMaskParams
from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams

__all__ = ["run_layout", "preprocess_params", "date_range", "cube_bands"]


def run_layout(config: RunConfig) -> RunLayout:
    """The :class:`RunLayout` of the run's root (every path the run writes)."""
    return RunLayout(config.run_root(), config.store.storage_options or None)


def preprocess_params(config: RunConfig) -> PreprocessParams:
    """The :class:`geoxai.temporal.PreprocessParams` of a run (year from the config)."""
    overrides = dict(config.processing.smoothing)
    try:
        smoothing = SmoothingParams(year=config.year, **overrides)
    except TypeError as exc:
        raise ConfigError(
            f"processing.smoothing has an unknown key ({exc}); see SmoothingParams in the "
            "README's config reference."
        ) from None
    return PreprocessParams(
        clouds=CloudMaskParams(method=config.processing.cloud_mask), smoothing=smoothing
    )


def cube_bands(config: RunConfig) -> tuple[str, ...]:
    """Bands of a run's raw cubes: with SCL unless ``processing.cloud_mask`` does without."""
    return CUBE_BANDS if config.processing.cloud_mask == "scl" else S2_BANDS


def date_range(config: RunConfig) -> tuple[str, str]:
    """ISO start and end dates the run reads: the year plus ``stac.margin_days`` on each side."""
    m = dt.timedelta(days=config.stac.margin_days)
    start = dt.date(config.year, 1, 1) - m
    end = dt.date(config.year, 12, 31) + m
    return start.isoformat(), end.isoformat()
