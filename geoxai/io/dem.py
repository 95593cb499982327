"""DEM reading: search the DEM collection for a tile and mosaic/reproject it onto the tile grid."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pystac
import xarray as xr

from geoxai.errors import InvalidInputError, NoDataError
from geoxai.geo.grid import TileSpec
from geoxai.io.cube import stack_assets
from geoxai.io.stac import search
from geoxai.temporal.terrain import DEM_BAND, DemParams

__all__ = [
    "search_dem",
    "build_dem",
]


def search_dem(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    tile: TileSpec,
    params: DemParams = DemParams(),
    **search_kwargs: Any,
) -> list[pystac.Item]:
    """DEM items over the tile's extended footprint (NoDataError when none)."""

    ext = tile.with_halo(tile.halo_px + params.extra_px)
    return search(
        source, collections=params.collection, bbox=ext.lonlat_bbox(halo=True), **search_kwargs
    )


def _nodata_of(item: pystac.Item, asset: str) -> float | None:
    a = item.assets[asset]
    bands = a.extra_fields.get("raster:bands") or [{}]
    value = (bands[0] or {}).get("nodata", a.extra_fields.get("nodata"))
    return None if value is None else float(value)


def build_dem(
    items: Sequence[pystac.Item | Mapping[str, Any]],
    tile: TileSpec,
    params: DemParams = DemParams(),
    *,
    signing: str = "none",
) -> xr.DataArray:
    """Elevation (metres, NaN voids) on the tile grid extended by ``params.extra_px`` pixels.

    Args:
        items: DEM STAC items (pystac or dicts) with the elevation asset ``params.asset``.
        tile: the tile and its halo.
        params: asset, resampling, void values.
        signing: ``"none"`` or ``"planetary-computer"``: hrefs signed when each asset is
            opened, by the process that reads it (:func:`geoxai.io.cube.stack_assets`).

    Returns:
        DataArray ``DEM`` ``(y, x)`` float32 on ``tile.with_halo(tile.halo_px +
        params.extra_px)``'s grid (dask-backed), attrs ``item_ids``.

    Raises:
        NoDataError: no items.
        InvalidInputError: an item without the elevation asset (names it and the asset).
    """
    if not items:
        raise NoDataError(f"Tile {tile.id}: no DEM item; the tile gets a flagged nodata slope.")
    norm = []
    for it in items:
        item = it if isinstance(it, pystac.Item) else pystac.Item.from_dict(dict(it))
        if params.asset not in item.assets:
            raise InvalidInputError(
                f"DEM item {item.id!r} has no asset {params.asset!r} (it has "
                f"{sorted(item.assets)}); set DemParams.asset to the elevation asset's key."
            )
        if item.properties.get("proj:epsg") is None and item.properties.get("proj:code"):
            code = str(item.properties["proj:code"]).upper().removeprefix("EPSG:")
            if code.isdigit():
                item.properties["proj:epsg"] = int(code)
        norm.append(item)
    norm.sort(key=lambda i: i.id)
    ext = tile.with_halo(tile.halo_px + params.extra_px)
    try:
        stack = stack_assets(
            norm, ext, [params.asset], params.resampling, 2048, signing=signing
        ).isel(band=0)
    except ValueError as exc:  # stackstac: no item overlaps the bounds
        raise NoDataError(f"Tile {tile.id}: no DEM item overlaps it ({exc}).") from exc
    voids = set(params.void_values)
    for it in norm:
        nd = _nodata_of(it, params.asset)
        if nd is not None and math.isfinite(nd):
            voids.add(nd)
    bad = xr.zeros_like(stack, dtype=bool)
    for v in sorted(voids):
        bad = bad | (stack == np.float32(v))
    stack = stack.where(~bad)
    first = stack.isel(time=0)
    for k in range(1, stack.sizes["time"]):
        first = first.fillna(stack.isel(time=k))
    y, x = ext.coords()
    return xr.DataArray(
        first.data,
        dims=("y", "x"),
        coords={"y": y, "x": x},
        name=DEM_BAND,
        attrs={"units": "m", "item_ids": [it.id for it in norm]},
    )
