"""Sentinel-1 backscatter from STAC onto a tile grid and the fixed time axis of the optical series.

Radar sees through clouds, so the VV/VH series fills the months that blind Sentinel-2. The
stage runs in four pure steps (:func:`s1_steps` chains them):

1. **search over a super-block** (:func:`search_s1`): items are searched over the tile's
   *super-block*, a ``superblock_tiles x superblock_tiles`` block of the zone lattice that
   contains the tile (default 10 x 10 tiles = 60 km). Every tile of the block sees the same
   item set, so every decision below is the same for all of them (seamless by construction).
2. **orbit direction** (:func:`choose_orbit`): ascending and descending passes look at the
   ground from opposite sides (different incidence, layover, shadow); mixing them adds noise
   that varies per date, so the reference uses one direction per region. The rule, on the
   super-block's items: count *distinct acquisition days* per direction; take the preferred
   direction (``S1Params.orbit``, default ``"auto"`` = ``S1Params.preferred_orbit``,
   ascending) if it has at least ``min_acquisitions`` days, else the other direction if it
   has, else every item ("both", flagged :data:`FLAG_MIXED_ORBIT`). Items without
   ``sat:orbit_state`` are only used in "both".
3. **cube** (:func:`build_s1_cube`): the polarisation assets (``vv``/``vh`` after
   :func:`geoxai.io.stac_items.normalize_item`) are warped by stackstac/GDAL onto the tile's grid
   (its UTM zone, 10 m, haloed bounds): S1 in another CRS (GRD in EPSG:4326, a neighbouring
   zone) or another resolution (20 m) lands on the same pixel centres as the optical cube.
   Values are **linear power** (sigma0/gamma0), float32, NaN = nodata:

   * RTC (Planetary Computer ``sentinel-1-rtc``, float32 linear gamma0) is used as is;
   * GRD amplitude DN (Earth Search ``sentinel-1-grd``, uint16, radar geometry) is turned into
     power by ``DN**2 / grd_calibration**2``. The calibration LUT lives in remote XML next to
     the image, so the constant must be given (:class:`S1Params`); without it the stage refuses
     the item with a :class:`ConfigError` instead of producing uncalibrated numbers.
   * an item without a required polarisation (e.g. HH-only, or VH missing): ``"drop"`` the
     item (default; the decision depends on the item only), ``"nan"`` (keep it, that band
     NaN, flagged :data:`FLAG_MISSING_POL`) or ``"raise"``.

4. **dB and aggregation** (:func:`to_db`, :func:`aggregate_s1`): ``dB = 10 log10(power)``,
   floored at ``db_floor`` (-22 dB, the reference's clamp); non-positive power (after noise
   removal) is set to the floor and flagged :data:`FLAG_NONPOSITIVE`. Each step of the fixed
   axis (:func:`geoxai.temporal.time_axis`, 24 x 15 days) takes the **median in dB** of the
   acquisitions whose time falls in ``[centre - window/2, centre + window/2)`` (window =
   ``window_days``, default the step length; a 90-day window gives the reference's quarterly
   medians). The median is robust to speckle and is the same in dB and in power (monotone).
   Steps without an acquisition are filled linearly in time from the nearest filled steps
   (nearest at the ends), flagged :data:`FLAG_GAP_FILLED`; pixels without any acquisition are
   NaN and flagged :data:`FLAG_NO_COVERAGE` -- a tile without S1 coverage gets such a layer
   (:func:`s1_nodata`), never a failure.

The aggregated layer is ``(24, 2, y, x)`` dB; :func:`db_to_unit` gives the reference's model
scaling ``(clip(dB, -22, 0) + 22) / 22`` in [0, 1]. :func:`geoxai.temporal.fuse` appends it to
the optical features by name (``VV``, ``VH``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from shapely.geometry import box, shape

from geoxai.errors import (
    ConfigError,
    DataAccessError,
    InvalidInputError,
    NoDataError,
)
from geoxai.geo.grid import TileSpec
from geoxai.io.cube import item_datetime, stack_assets
from geoxai.io.stac import search
from geoxai.io.stac_items import S1_POLARIZATIONS, band_scaling, normalize_item, sensor
from geoxai.temporal.s1 import CUBE_NAME, FLAG_MISSING_POL, FLAG_MIXED_ORBIT, S1Params

__all__ = [
    "OrbitChoice",
    "orbit_direction",
    "item_polarizations",
    "backscatter_encoding",
    "superblock",
    "choose_orbit",
    "search_s1",
    "build_s1_cube",
]

log = logging.getLogger(__name__)
"""Canonical names of the backscatter bands (the model features), in cube order."""


@dataclass(frozen=True)
class OrbitChoice:
    """The orbit decision of one super-block.

    Attributes:
        direction: ``"ascending"``, ``"descending"`` or ``"both"``.
        days: distinct acquisition days per direction (``"unknown"`` for items without one).
        fallback: True when the first choice had too few days.
        superblock: id of the super-block the decision was taken on (or ``"items"``).
    """

    direction: str
    days: Mapping[str, int]
    fallback: bool
    superblock: str


def orbit_direction(item: pystac.Item) -> str | None:
    """``"ascending"``/``"descending"`` from ``sat:orbit_state`` (or ``s1:orbit_state``)."""
    for key in ("sat:orbit_state", "s1:orbit_state", "orbitDirection"):
        value = item.properties.get(key)
        if value:
            v = str(value).strip().lower()
            if v in ("ascending", "descending"):
                return v
    return None


def s1_item(item: pystac.Item | Mapping[str, Any]) -> pystac.Item:

    norm = normalize_item(item if isinstance(item, pystac.Item) else dict(item))
    if sensor(norm) != "sentinel-1":
        raise InvalidInputError(
            f"STAC item {norm.id!r} is not a Sentinel-1 item (no sar:* properties, constellation "
            f"{norm.properties.get('constellation')!r}); search a Sentinel-1 collection such as "
            "'sentinel-1-rtc' or 'sentinel-1-grd'."
        )
    return norm


def item_polarizations(item: pystac.Item) -> tuple[str, ...]:
    """Polarisations with a data asset (``("VV", "VH")``), upper case, after normalization."""

    norm = s1_item(item)
    return tuple(p.upper() for p in S1_POLARIZATIONS if p in norm.assets)


def backscatter_encoding(item: pystac.Item, pol: str = "VV") -> str:
    """``"power"`` (linear sigma0/gamma0, e.g. RTC) or ``"amplitude"`` (GRD DN) of one asset.

    Rule: RTC collections/ids and float assets are power; integer GRD assets are amplitude.
    """
    norm = s1_item(item)
    asset = norm.assets.get(pol.lower())
    if asset is None:
        raise DataAccessError(f"Sentinel-1 item {norm.id!r} has no {pol} asset.")
    bands = asset.extra_fields.get("raster:bands") or [{}]
    dtype = str((bands[0] or {}).get("data_type", "")).lower()
    coll = str(norm.collection_id or "").lower()
    if "rtc" in coll or norm.id.lower().endswith("_rtc") or dtype.startswith("float"):
        return "power"
    if dtype.startswith(("uint", "int")) or "grd" in coll:
        return "amplitude"
    return "power"


def superblock(tile: TileSpec, n: int) -> TileSpec:
    """The ``n x n``-tile block of the zone lattice that holds ``tile`` (as a big TileSpec)."""
    if n < 1:
        raise ConfigError(f"superblock size must be >= 1 tiles, got {n}.")
    return TileSpec(
        tile.epsg,
        tile.col // n,
        tile.row // n,
        tile_size_m=tile.tile_size_m * n,
        resolution_m=tile.resolution_m,
    )


def choose_orbit(
    items: Sequence[pystac.Item | Mapping[str, Any]],
    params: S1Params = S1Params(),
    *,
    region: str = "items",
) -> OrbitChoice:
    """Apply the orbit rule (module docstring) to the items of one super-block."""

    days: dict[str, set[dt.date]] = {"ascending": set(), "descending": set(), "unknown": set()}
    for it in items:
        norm = s1_item(it)
        days[orbit_direction(norm) or "unknown"].add(item_datetime(norm).date())
    counts = {k: len(v) for k, v in days.items()}
    if params.orbit == "both":
        return OrbitChoice("both", counts, False, region)
    first = params.preferred_orbit if params.orbit == "auto" else params.orbit
    other = "descending" if first == "ascending" else "ascending"
    if counts[first] >= params.min_acquisitions:
        return OrbitChoice(first, counts, False, region)
    if counts[other] >= params.min_acquisitions:
        return OrbitChoice(other, counts, True, region)
    return OrbitChoice("both", counts, True, region)


def keep_orbit(items: Sequence[pystac.Item], choice: OrbitChoice) -> list[pystac.Item]:
    if choice.direction == "both":
        return list(items)
    return [it for it in items if orbit_direction(it) == choice.direction]


def search_s1(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    tile: TileSpec,
    *,
    start: str | dt.date,
    end: str | dt.date,
    params: S1Params = S1Params(),
    **search_kwargs: Any,
) -> tuple[list[pystac.Item], OrbitChoice]:
    """Search S1 over the tile's super-block, choose the orbit, keep the tile's items.

    Args:
        source: STAC API URL or local item files (see :func:`geoxai.io.stac.search`).
        tile: the tile (its haloed footprint selects the items it reads).
        start: first day (inclusive), ISO date.
        end: last day (inclusive), ISO date.
        params: S1 parameters (collection, orbit rule, super-block size).
        search_kwargs: passed to :func:`geoxai.io.stac.search` (retries, headers ...).

    Returns:
        ``(items, choice)``: the normalized items of the chosen direction that intersect the
        tile's haloed footprint, sorted by time; the orbit decision.

    Raises:
        NoDataError: no S1 item over the super-block (callers turn it into :func:`s1_nodata`).
    """

    block = superblock(tile, params.superblock_tiles)
    found = search(
        source,
        collections=params.collection,
        bbox=block.lonlat_bbox(),
        datetime=(str(pd.Timestamp(start).date()), str(pd.Timestamp(end).date())),
        **search_kwargs,
    )
    found = [s1_item(it) for it in found]
    choice = choose_orbit(found, params, region=block.id)
    footprint = tile.footprint(halo=True)
    mine = []
    for it in keep_orbit(found, choice):
        geom = shape(it.geometry) if it.geometry else box(*it.bbox) if it.bbox else None
        if geom is None or geom.intersects(footprint):
            mine.append(it)
    return mine, choice


def _stack_pol(
    items: list[pystac.Item], tile: TileSpec, pol: str, params: S1Params, signing: str
) -> xr.DataArray:

    return stack_assets(items, tile, [pol.lower()], params.resampling, 1024, signing=signing)


def _to_power(da: xr.DataArray, items: list[pystac.Item], pol: str, params: S1Params):

    scale = np.ones(len(items), np.float32)
    offset = np.zeros(len(items), np.float32)
    amp = np.zeros(len(items), bool)
    for i, it in enumerate(items):
        if pol not in item_polarizations(it):
            continue  # read as NaN
        scale[i], offset[i] = band_scaling(it, pol.lower())
        if backscatter_encoding(it, pol) == "amplitude":
            if params.grd_calibration is None:
                raise ConfigError(
                    f"Sentinel-1 item {it.id!r} ({it.collection_id}) holds GRD amplitude DN, not "
                    "calibrated backscatter. Use a calibrated collection (Planetary Computer "
                    "'sentinel-1-rtc'), or set S1Params.grd_calibration to the sigma0 LUT "
                    "constant A of the product (power = DN^2 / A^2)."
                )
            amp[i] = True
    vals = da * xr.DataArray(scale, dims="time") + xr.DataArray(offset, dims="time")
    if amp.any():
        k = np.float32(1.0 / (params.grd_calibration or 1.0) ** 2)
        vals = xr.where(xr.DataArray(amp, dims="time"), vals * vals * k, vals)
    return vals.astype(np.float32)


def build_s1_cube(
    items: Sequence[pystac.Item | Mapping[str, Any]],
    tile: TileSpec,
    params: S1Params = S1Params(),
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    signing: str = "none",
) -> xr.DataArray:
    """Lazy ``(time, band, y, x)`` float32 linear-power cube of S1 acquisitions on the tile grid.

    Args:
        items: Sentinel-1 STAC items (already filtered to one orbit direction, see
            :func:`search_s1`); normalized here, duplicate ids dropped.
        tile: the tile and its halo; pixel centres are exactly ``tile.coords()``.
        params: polarisations, missing-polarisation policy, resampling, GRD calibration.
        start: first day kept (inclusive); None = no bound.
        end: last day kept (inclusive); None = no bound.
        signing: ``"none"`` or ``"planetary-computer"``: hrefs signed when each asset is
            opened, by the process that reads it (:func:`geoxai.io.cube.stack_assets`).

    Returns:
        DataArray ``backscatter``, band = ``params.polarizations``, time = acquisition times
        (datetime64[ns], sorted), coord ``id`` along time, NaN = nodata; attrs as the raw
        optical cube (crs, transform, tile_id, halo_px, resolution_m) + ``units="linear"``,
        ``item_ids``, ``orbit_directions`` and ``flags`` (tile-wide flag bits).

    Raises:
        NoDataError: no usable item (none in the dates, or all dropped for a missing band).
        DataAccessError: an item lacks a polarisation and the policy is ``"raise"``.
        ConfigError: GRD amplitude items without ``grd_calibration``.
    """

    d0 = pd.Timestamp(start).date() if start is not None else None
    d1 = pd.Timestamp(end).date() if end is not None else None
    uniq: dict[str, pystac.Item] = {}
    for it in items:
        norm = s1_item(it)
        uniq.setdefault(norm.id, norm)
    chosen = []
    flags = 0
    for it in sorted(uniq.values(), key=lambda i: (item_datetime(i), i.id)):
        day = item_datetime(it).date()
        if (d0 and day < d0) or (d1 and day > d1):
            continue
        have = item_polarizations(it)
        missing = [p for p in params.polarizations if p not in have]
        if missing:
            msg = f"Sentinel-1 item {it.id!r} has polarisations {list(have)} but lacks {missing}"
            if params.on_missing_polarization == "raise":
                raise DataAccessError(
                    msg + ". Set S1Params.on_missing_polarization='drop' (skip such items) or "
                    "'nan', or request only the polarisations the collection has."
                )
            if params.on_missing_polarization == "drop":
                log.warning("dropping %s (on_missing_polarization='drop')", msg)
                continue
            flags |= FLAG_MISSING_POL
            if not any(p in have for p in params.polarizations):
                continue
        chosen.append(it)
    if not chosen:
        raise NoDataError(
            f"Tile {tile.id}: no Sentinel-1 item with {list(params.polarizations)} in "
            f"{d0 or '..'}/{d1 or '..'} (got {len(uniq)} items). The tile gets a flagged "
            "nodata S1 layer; widen the dates or check the collection and polarisations."
        )
    times = pd.DatetimeIndex([pd.Timestamp(item_datetime(it)) for it in chosen])
    times = times.tz_convert("UTC").tz_localize(None).astype("datetime64[ns]")
    y, x = tile.coords()
    layers = []
    for pol in params.polarizations:
        if not any(pol in item_polarizations(it) for it in chosen):
            raise NoDataError(
                f"Tile {tile.id}: none of the {len(chosen)} Sentinel-1 items has {pol}; request "
                "the polarisations the collection has (S1Params.polarizations)."
            )
        # stackstac fills an asset that an item lacks with NaN (policy "nan") and leaves out
        # items whose footprint misses the tile: align its result on the item ids
        try:
            st = _stack_pol(chosen, tile, pol, params, signing).isel(band=0)
        except ValueError as exc:  # stackstac: no item overlaps the bounds
            raise NoDataError(f"Tile {tile.id}: no Sentinel-1 item overlaps it ({exc}).") from exc
        ids = [str(v) for v in np.atleast_1d(st["id"].values)]
        byid = {it.id: it for it in chosen}
        da = _to_power(st, [byid[i] for i in ids], pol, params)
        da = xr.DataArray(da.data, dims=("time", "y", "x"), coords={"time": ids})
        layers.append(da.reindex(time=[it.id for it in chosen]).drop_vars("time"))
    data = xr.concat(layers, dim="band").transpose("time", "band", "y", "x")
    cube = xr.DataArray(
        data.data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": times.values,
            "band": list(params.polarizations),
            "y": y,
            "x": x,
            "id": ("time", np.array([it.id for it in chosen], dtype=object)),
        },
        name=CUBE_NAME,
    )
    directions = sorted({orbit_direction(it) or "unknown" for it in chosen})
    if len(directions) > 1:
        flags |= FLAG_MIXED_ORBIT
    cube.attrs = {
        **tile.grid_attrs(),
        "units": "linear",
        "item_ids": [it.id for it in chosen],
        "orbit_directions": directions,
        "flags": int(flags),
    }
    return cube
