"""A tile's terrain layer (DEM, slope) for a run: search, read, fill and derive (io + temporal
chained).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from geoxai.errors import NoDataError
from geoxai.geo.grid import TileSpec
from geoxai.io.cube import is_location
from geoxai.io.dem import build_dem, search_dem
from geoxai.temporal.terrain import DemParams, terrain_layers, terrain_nodata

__all__ = [
    "terrain",
]

log = logging.getLogger(__name__)


def terrain(
    source: str | os.PathLike[str] | Sequence[Any],
    tile: TileSpec,
    params: DemParams = DemParams(),
    *,
    signing: str = "none",
    **search_kwargs: Any,
) -> xr.Dataset:
    """``DEM``, ``slope`` and ``dem_flags`` of a tile (module docstring).

    Args:
        source: a STAC API URL / local item files (searched by :func:`search_dem`) or the DEM
            items themselves.
        tile: the tile with its halo; outputs are on ``tile.shape`` / ``tile.coords()``.
        params: DEM parameters.
        signing: ``"none"`` or ``"planetary-computer"``: hrefs signed as they are read.
        search_kwargs: passed to :func:`geoxai.io.stac.search`.

    Returns:
        Dataset of ``(y, x)`` layers; no DEM coverage -> :func:`terrain_nodata`, not an error.
    """
    try:
        if is_location(source):
            items: Sequence[Any] = search_dem(source, tile, params, **search_kwargs)
        else:
            items = list(source)
        elev = build_dem(items, tile, params, signing=signing)
    except NoDataError as exc:
        log.info("tile %s: no DEM (%s)", tile.id, exc)
        return terrain_nodata(tile, reason=str(exc))
    values = np.asarray(elev.values, dtype=np.float32)
    if not np.isfinite(values).any():
        return terrain_nodata(tile, reason="every DEM pixel over the tile is void")
    ds = terrain_layers(tile, values, params)
    ds.attrs["item_ids"] = list(elev.attrs["item_ids"])
    return ds
