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
   :func:`geoxai.stac.normalize_item`) are warped by stackstac/GDAL onto the tile's grid
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
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr

from geoxai.errors import (
    ConfigError,
    DataAccessError,
    InvalidInputError,
    NoDataError,
    look_up_option,
)
from geoxai.grid import TileSpec

__all__ = [
    "S1_BANDS",
    "CUBE_NAME",
    "ORBITS",
    "FLAG_NO_COVERAGE",
    "FLAG_GAP_FILLED",
    "FLAG_NONPOSITIVE",
    "FLAG_MIXED_ORBIT",
    "FLAG_MISSING_POL",
    "S1Params",
    "OrbitChoice",
    "orbit_direction",
    "item_polarizations",
    "backscatter_encoding",
    "superblock",
    "choose_orbit",
    "search_s1",
    "build_s1_cube",
    "to_db",
    "db_to_unit",
    "aggregate_s1",
    "s1_nodata",
    "s1_steps",
]

log = logging.getLogger(__name__)

S1_BANDS: tuple[str, ...] = ("VV", "VH")
"""Canonical names of the backscatter bands (the model features), in cube order."""
CUBE_NAME = "backscatter"
"""Name of the S1 DataArray (acquisitions: linear power; aggregated steps: dB)."""
ORBITS = ("auto", "ascending", "descending", "both")
"""Accepted values of :attr:`S1Params.orbit`."""

FLAG_NO_COVERAGE = 1
"""Pixel flag: no valid S1 acquisition at all (the layer is NaN there)."""
FLAG_GAP_FILLED = 2
"""Pixel flag: at least one step had no acquisition and was filled in time."""
FLAG_NONPOSITIVE = 4
"""Pixel flag: a linear value <= 0 was set to the dB floor."""
FLAG_MIXED_ORBIT = 8
"""Pixel flag (whole tile): neither direction alone had enough days; both were used."""
FLAG_MISSING_POL = 16
"""Pixel flag (whole tile): some items lacked a polarisation (kept with NaN there)."""

_POLICIES = ("drop", "nan", "raise")
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class S1Params:
    """How Sentinel-1 is searched, read and aggregated.

    Attributes:
        polarizations: canonical bands to read, from :data:`S1_BANDS` (upper case).
        orbit: ``"auto"`` (preferred direction with fallback), ``"ascending"``,
            ``"descending"`` (that one first, same fallback) or ``"both"`` (no choice).
        preferred_orbit: the direction ``"auto"`` tries first.
        min_acquisitions: distinct acquisition days a direction needs over the super-block.
        superblock_tiles: edge of the super-block, in tiles of the zone lattice (>= 1).
        on_missing_polarization: ``"drop"`` the item, ``"nan"`` keep it with NaN, ``"raise"``.
        db_floor: lowest backscatter kept, dB (the reference clamps at -22 dB).
        window_days: width of the aggregation window centred on each step, days; None = the
            step length.
        fill_gaps: fill empty steps linearly in time (else they stay NaN).
        resampling: GDAL resampling onto the tile grid (on linear power): bilinear, average,
            nearest or cubic.
        grd_calibration: amplitude calibration constant A of GRD DN (power = DN^2 / A^2);
            None refuses uncalibrated GRD amplitude items.
        collection: STAC collection searched by :func:`s1_steps` / :func:`search_s1`.
    """

    polarizations: tuple[str, ...] = S1_BANDS
    orbit: str = "auto"
    preferred_orbit: str = "ascending"
    min_acquisitions: int = 12
    superblock_tiles: int = 10
    on_missing_polarization: str = "drop"
    db_floor: float = -22.0
    window_days: float | None = None
    fill_gaps: bool = True
    resampling: str = "bilinear"
    grd_calibration: float | None = None
    collection: str = "sentinel-1-rtc"

    def __post_init__(self) -> None:
        pols = tuple(str(p).upper() for p in self.polarizations)
        for p in pols:
            look_up_option(p, ("VV", "VH", "HH", "HV"), what="Sentinel-1 polarisation")
        if not pols or len(set(pols)) != len(pols):
            raise ConfigError(f"S1Params.polarizations={self.polarizations} must be unique, >= 1.")
        object.__setattr__(self, "polarizations", pols)
        look_up_option(self.orbit, ORBITS, what="orbit direction")
        look_up_option(self.preferred_orbit, ORBITS[1:3], what="preferred orbit direction")
        look_up_option(self.on_missing_polarization, _POLICIES, what="missing-polarisation policy")
        look_up_option(
            self.resampling, ("bilinear", "average", "nearest", "cubic"), what="resampling"
        )
        if self.min_acquisitions < 1 or self.superblock_tiles < 1:
            raise ConfigError(
                f"S1Params.min_acquisitions={self.min_acquisitions} and superblock_tiles="
                f"{self.superblock_tiles} must be >= 1."
            )
        if not (math.isfinite(self.db_floor) and self.db_floor < 0):
            raise ConfigError(f"S1Params.db_floor={self.db_floor} must be a negative dB value.")
        if self.window_days is not None and not self.window_days > 0:
            raise ConfigError(f"S1Params.window_days={self.window_days} must be > 0 or None.")
        if self.grd_calibration is not None and not self.grd_calibration > 0:
            raise ConfigError(f"S1Params.grd_calibration={self.grd_calibration} must be > 0.")


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


# ---- item metadata -----------------------------------------------------------------------------


def orbit_direction(item: pystac.Item) -> str | None:
    """``"ascending"``/``"descending"`` from ``sat:orbit_state`` (or ``s1:orbit_state``)."""
    for key in ("sat:orbit_state", "s1:orbit_state", "orbitDirection"):
        value = item.properties.get(key)
        if value:
            v = str(value).strip().lower()
            if v in ("ascending", "descending"):
                return v
    return None


def _norm(item: pystac.Item | Mapping[str, Any]) -> pystac.Item:
    from geoxai.stac import normalize_item, sensor

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
    from geoxai.stac import S1_POLARIZATIONS

    norm = _norm(item)
    return tuple(p.upper() for p in S1_POLARIZATIONS if p in norm.assets)


def backscatter_encoding(item: pystac.Item, pol: str = "VV") -> str:
    """``"power"`` (linear sigma0/gamma0, e.g. RTC) or ``"amplitude"`` (GRD DN) of one asset.

    Rule: RTC collections/ids and float assets are power; integer GRD assets are amplitude.
    """
    norm = _norm(item)
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


# ---- orbit rule --------------------------------------------------------------------------------


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
    from geoxai.cube import item_datetime

    days: dict[str, set[dt.date]] = {"ascending": set(), "descending": set(), "unknown": set()}
    for it in items:
        norm = _norm(it)
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


def _keep_orbit(items: Sequence[pystac.Item], choice: OrbitChoice) -> list[pystac.Item]:
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
        source: STAC API URL or local item files (see :func:`geoxai.stac.search`).
        tile: the tile (its haloed footprint selects the items it reads).
        start: first day (inclusive), ISO date.
        end: last day (inclusive), ISO date.
        params: S1 parameters (collection, orbit rule, super-block size).
        search_kwargs: passed to :func:`geoxai.stac.search` (retries, headers ...).

    Returns:
        ``(items, choice)``: the normalized items of the chosen direction that intersect the
        tile's haloed footprint, sorted by time; the orbit decision.

    Raises:
        NoDataError: no S1 item over the super-block (callers turn it into :func:`s1_nodata`).
    """
    from shapely.geometry import box, shape

    from geoxai.stac import search

    block = superblock(tile, params.superblock_tiles)
    found = search(
        source,
        collections=params.collection,
        bbox=block.footprint().bounds,
        datetime=(str(pd.Timestamp(start).date()), str(pd.Timestamp(end).date())),
        **search_kwargs,
    )
    found = [_norm(it) for it in found]
    choice = choose_orbit(found, params, region=block.id)
    footprint = tile.footprint(halo=True)
    mine = []
    for it in _keep_orbit(found, choice):
        geom = shape(it.geometry) if it.geometry else box(*it.bbox) if it.bbox else None
        if geom is None or geom.intersects(footprint):
            mine.append(it)
    return mine, choice


# ---- the acquisition cube ----------------------------------------------------------------------


def _stack_pol(
    items: list[pystac.Item], tile: TileSpec, pol: str, params: S1Params
) -> xr.DataArray:
    from geoxai.cube import stack_assets

    return stack_assets(items, tile, [pol.lower()], params.resampling, 1024)


def _to_power(da: xr.DataArray, items: list[pystac.Item], pol: str, params: S1Params):
    from geoxai.stac import band_scaling

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
) -> xr.DataArray:
    """Lazy ``(time, band, y, x)`` float32 linear-power cube of S1 acquisitions on the tile grid.

    Args:
        items: Sentinel-1 STAC items (already filtered to one orbit direction, see
            :func:`search_s1`); normalized here, duplicate ids dropped.
        tile: the tile and its halo; pixel centres are exactly ``tile.coords()``.
        params: polarisations, missing-polarisation policy, resampling, GRD calibration.
        start: first day kept (inclusive); None = no bound.
        end: last day kept (inclusive); None = no bound.

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
    from geoxai.cube import item_datetime

    d0 = pd.Timestamp(start).date() if start is not None else None
    d1 = pd.Timestamp(end).date() if end is not None else None
    uniq: dict[str, pystac.Item] = {}
    for it in items:
        norm = _norm(it)
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
            st = _stack_pol(chosen, tile, pol, params).isel(band=0)
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
        "crs": tile.crs,
        "transform": [float(v) for v in list(tile.transform)[:6]],
        "tile_id": tile.id,
        "halo_px": tile.halo_px,
        "resolution_m": tile.resolution_m,
        "units": "linear",
        "item_ids": [it.id for it in chosen],
        "orbit_directions": directions,
        "flags": int(flags),
    }
    return cube


# ---- dB and aggregation ------------------------------------------------------------------------


def to_db(power: np.ndarray, floor: float = -22.0) -> tuple[np.ndarray, np.ndarray]:
    """Linear power -> dB, floored; NaN stays NaN.

    Args:
        power: linear backscatter, any shape.
        floor: lowest value, dB.

    Returns:
        ``(db, nonpositive)``: float32 ``max(10 log10(power), floor)`` (non-positive power ->
        ``floor``) and the bool mask of the non-positive values.
    """
    p = np.asarray(power, dtype=np.float32)
    nonpos = p <= 0  # NaN compares False
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.float32(10.0) * np.log10(np.where(nonpos, np.float32(1.0), p))
    db = np.where(nonpos, np.float32(floor), np.maximum(db, np.float32(floor)))
    return db.astype(np.float32), nonpos


def db_to_unit(db: np.ndarray, floor: float = -22.0) -> np.ndarray:
    """The reference's model scaling of dB to [0, 1]: ``(clip(db, floor, 0) - floor) / -floor``."""
    d = np.clip(np.asarray(db, dtype=np.float32), floor, 0.0)
    return ((d - np.float32(floor)) / np.float32(-floor)).astype(np.float32)


def _fill_in_time(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN steps of ``(S, N)`` linearly between filled ones (nearest at the ends)."""
    s, n = steps.shape
    ok = np.isfinite(steps)
    idx = np.arange(s)[:, None]
    prev = np.maximum.accumulate(np.where(ok, idx, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(ok, idx, s)[::-1], axis=0)[::-1]
    has_prev, has_next = prev >= 0, nxt < s
    cols = np.broadcast_to(np.arange(n)[None, :], (s, n))
    vp = steps[np.clip(prev, 0, s - 1), cols]
    vn = steps[np.clip(nxt, 0, s - 1), cols]
    frac = np.where(has_prev & has_next, (idx - prev) / np.maximum(nxt - prev, 1), 0.0)
    val = np.where(has_prev & has_next, vp + frac * (vn - vp), np.where(has_prev, vp, vn))
    filled = np.where(ok, steps, val).astype(np.float32)
    return filled, ~ok & (has_prev | has_next)


def aggregate_s1(
    cube: xr.DataArray,
    smoothing: Any,
    params: S1Params = S1Params(),
    *,
    rows_per_block: int = 64,
) -> xr.Dataset:
    """Acquisitions (linear power) -> per-step median dB on the fixed axis of the optical series.

    Args:
        cube: ``(time, band, y, x)`` output of :func:`build_s1_cube` (linear power).
        smoothing: :class:`geoxai.temporal.SmoothingParams`; its :func:`time_axis` is the axis.
        params: floor, window, gap filling.
        rows_per_block: image rows computed together (bounds memory).

    Returns:
        Dataset with ``backscatter`` ``(time, band, y, x)`` float32 dB (NaN where no coverage),
        ``s1_valid`` ``(y, x)`` bool, ``s1_n_obs`` ``(y, x)`` int16 (acquisitions with a finite
        value of every band inside the axis windows) and ``s1_flags`` ``(y, x)`` uint8 (bits
        ``FLAG_*``); y/x coords and the cube's attrs (``units="dB"``).
    """
    from geoxai.temporal import time_axis

    if tuple(cube.dims) != ("time", "band", "y", "x"):
        raise InvalidInputError(
            f"S1 cube dims are {tuple(cube.dims)}; expected ('time', 'band', 'y', 'x')."
        )
    units = str(cube.attrs.get("units", "linear"))
    if units != "linear":
        raise InvalidInputError(
            f"S1 cube of tile {cube.attrs.get('tile_id', '?')} is in {units!r}; aggregate_s1 "
            "takes linear power (the output of build_s1_cube)."
        )
    centres = time_axis(smoothing)
    half = (params.window_days or smoothing.step_days) / 2.0 * _DAY_NS
    t = np.asarray(cube["time"].values).astype("datetime64[ns]").astype(np.int64)
    c = centres.astype(np.int64)
    member = (t[None, :] >= c[:, None] - half) & (t[None, :] < c[:, None] + half)  # (S, T)
    used = np.nonzero(member.any(axis=0))[0]
    s, nb = centres.size, cube.sizes["band"]
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    out = np.full((s, nb, ny, nx), np.nan, np.float32)
    n_obs = np.zeros((ny, nx), np.int16)
    flags = np.full((ny, nx), int(cube.attrs.get("flags", 0)), np.uint8)
    for r0 in range(0, ny, rows_per_block):
        r1 = min(r0 + rows_per_block, ny)
        if used.size == 0:
            break
        block = np.asarray(cube.isel(time=used, y=slice(r0, r1)).values, np.float32)
        db, nonpos = to_db(block, params.db_floor)
        flags[r0:r1] |= np.where(nonpos.any(axis=(0, 1)), FLAG_NONPOSITIVE, 0).astype(np.uint8)
        n_obs[r0:r1] = np.isfinite(db).all(axis=1).sum(axis=0).astype(np.int16)
        m = member[:, used]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN
            for k in range(s):
                if m[k].any():
                    out[k, :, r0:r1] = np.nanmedian(db[m[k]], axis=0)
    if params.fill_gaps:
        flat = out.reshape(s, -1)
        filled, gap = _fill_in_time(flat)
        out = filled.reshape(out.shape)
        gap_px = gap.reshape(s, nb, ny, nx).any(axis=(0, 1))
        flags |= np.where(gap_px, FLAG_GAP_FILLED, 0).astype(np.uint8)
    valid = np.isfinite(out).all(axis=(0, 1))
    flags |= np.where(valid, 0, FLAG_NO_COVERAGE).astype(np.uint8)
    return _steps_dataset(
        out,
        valid,
        n_obs,
        flags,
        cube["y"].values,
        cube["x"].values,
        centres,
        list(cube["band"].values),
        dict(cube.attrs),
    )


def _steps_dataset(out, valid, n_obs, flags, y, x, centres, bands, attrs) -> xr.Dataset:
    attrs = {k: v for k, v in attrs.items() if k != "flags"}
    attrs["units"] = "dB"
    ds = xr.Dataset(
        {
            CUBE_NAME: (("time", "band", "y", "x"), out),
            "s1_valid": (("y", "x"), valid),
            "s1_n_obs": (("y", "x"), n_obs),
            "s1_flags": (("y", "x"), flags),
        },
        coords={"time": centres, "band": [str(b) for b in bands], "y": y, "x": x},
        attrs=attrs,
    )
    ds[CUBE_NAME].attrs["units"] = "dB"
    return ds


def s1_nodata(
    tile: TileSpec, smoothing: Any, params: S1Params = S1Params(), *, reason: str = ""
) -> xr.Dataset:
    """The flagged nodata S1 layer of a tile without coverage (all NaN, FLAG_NO_COVERAGE)."""
    from geoxai.temporal import time_axis

    centres = time_axis(smoothing)
    ny, nx = tile.shape
    y, x = tile.coords()
    nb = len(params.polarizations)
    attrs = {
        "crs": tile.crs,
        "transform": [float(v) for v in list(tile.transform)[:6]],
        "tile_id": tile.id,
        "halo_px": tile.halo_px,
        "resolution_m": tile.resolution_m,
        "item_ids": [],
        "s1_missing_reason": reason,
    }
    return _steps_dataset(
        np.full((centres.size, nb, ny, nx), np.nan, np.float32),
        np.zeros((ny, nx), bool),
        np.zeros((ny, nx), np.int16),
        np.full((ny, nx), FLAG_NO_COVERAGE, np.uint8),
        y,
        x,
        centres,
        list(params.polarizations),
        attrs,
    )


def s1_steps(
    source: str | os.PathLike[str] | Sequence[Any],
    tile: TileSpec,
    smoothing: Any,
    params: S1Params = S1Params(),
    **search_kwargs: Any,
) -> xr.Dataset:
    """Search (or take items), choose the orbit, build and aggregate: the tile's S1 layer.

    ``source`` is a STAC API URL / local item files (searched over the super-block by
    :func:`search_s1`) or the items of the super-block themselves. The window searched is the
    axis plus half an aggregation window on each side. No coverage -> :func:`s1_nodata`.

    Returns:
        the :func:`aggregate_s1` dataset, with ``attrs["orbit"]`` (the chosen direction) and
        ``attrs["orbit_days"]`` (days per direction over the super-block).
    """
    from geoxai.temporal import time_axis

    centres = time_axis(smoothing)
    pad = np.timedelta64(int((params.window_days or smoothing.step_days) * _DAY_NS), "ns")
    start = pd.Timestamp(centres[0] - pad).date()
    end = pd.Timestamp(centres[-1] + pad).date()
    from geoxai.cube import is_location

    try:
        if is_location(source):
            items, choice = search_s1(
                source, tile, start=start, end=end, params=params, **search_kwargs
            )
        else:
            norm = [_norm(it) for it in source]  # type: ignore[arg-type]
            choice = choose_orbit(norm, params)
            items = _keep_orbit(norm, choice)
        cube = build_s1_cube(items, tile, params, start=start, end=end)
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
