"""A tile's Sentinel-1 layer for a run: search, read and aggregate (io + temporal chained)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geoxai.errors import (
    NoDataError,
)
from geoxai.geo.grid import TileSpec
from geoxai.io.cube import is_location
from geoxai.io.s1 import build_s1_cube, choose_orbit, keep_orbit, log, s1_item, search_s1
from geoxai.temporal.s1 import DAY_NS, FLAG_MIXED_ORBIT, S1Params, aggregate_s1, s1_nodata
from geoxai.temporal.smoothing import time_axis

__all__ = [
    "s1_steps",
]


def s1_steps(
    source: str | os.PathLike[str] | Sequence[Any],
    tile: TileSpec,
    smoothing: Any,
    params: S1Params = S1Params(),
    *,
    signing: str = "none",
    **search_kwargs: Any,
) -> xr.Dataset:
    """Search (or take items), choose the orbit, build and aggregate: the tile's S1 layer.

    ``source`` is a STAC API URL / local item files (searched over the super-block by
    :func:`search_s1`) or the items of the super-block themselves. The window searched is the
    axis plus half an aggregation window on each side. No coverage -> :func:`s1_nodata`.
    ``signing`` (``"none"``/``"planetary-computer"``) signs asset hrefs as they are read.

    Returns:
        the :func:`aggregate_s1` dataset, with ``attrs["orbit"]`` (the chosen direction) and
        ``attrs["orbit_days"]`` (days per direction over the super-block).
    """

    centres = time_axis(smoothing)
    pad = np.timedelta64(int((params.window_days or smoothing.step_days) * DAY_NS), "ns")
    start = pd.Timestamp(centres[0] - pad).date()
    end = pd.Timestamp(centres[-1] + pad).date()

    try:
        if is_location(source):
            items, choice = search_s1(
                source, tile, start=start, end=end, params=params, **search_kwargs
            )
        else:
            norm = [s1_item(it) for it in source]  # type: ignore[arg-type]
            choice = choose_orbit(norm, params)
            items = keep_orbit(norm, choice)
        cube = build_s1_cube(items, tile, params, start=start, end=end, signing=signing)
    except NoDataError as exc:
        log.info("tile %s: no Sentinel-1 coverage (%s)", tile.id, exc)
        return s1_nodata(tile, smoothing, params, reason=str(exc))
    ds = aggregate_s1(cube, smoothing, params)
    if choice.direction == "both" and choice.fallback:
        ds["s1_flags"] |= np.uint8(FLAG_MIXED_ORBIT)
    ds.attrs["orbit"] = choice.direction
    ds.attrs["orbit_days"] = dict(choice.days)
    ds.attrs["orbit_fallback"] = bool(choice.fallback)
    return ds
