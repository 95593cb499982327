"""STAC items -> the raw tile cube: a lazy ``(time, band, y, x)`` float32 reflectance array.

:func:`build_cube` stacks Sentinel-2 L2A items with stackstac on the tile's own grid (its UTM
zone, its haloed bounds, 10 m pixels, no snapping), so pixel centres are exactly
``TileSpec.coords()``. The result follows the raw-cube contract (DESIGN.md):

* name ``"reflectance"``, dims ``("time", "band", "y", "x")``, float32, dask-backed;
* ``band`` = canonical names (default :data:`geoxai.geo.bands.CUBE_BANDS`, SCL last) whatever the
  catalog's asset keys; reflectance = DN * scale + offset with the per-item, per-band scaling of
  :func:`geoxai.io.stac_items.band_scaling` (the -0.1 offset of baseline >= 04.00 included); SCL
  holds the class values 0..11 as floats; NaN = nodata (the COG's nodata value, or outside the
  scene's footprint);
* coords ``time`` (datetime64[ns], sorted), ``y``/``x`` (pixel centres, metres, y decreasing),
  ``id`` along time (the STAC item id; ids joined by ``","`` for a mosaicked day);
* attrs ``crs`` (``"EPSG:326zz"``), ``transform`` (6 floats of the haloed grid), ``tile_id``,
  ``halo_px``, ``resolution_m`` and ``item_ids`` (every item used); coords ``dn_scale`` /
  ``dn_offset`` ``(time, band)`` float32, the scaling applied (NaN for SCL, and for a mosaicked
  day whose items are scaled differently): what :mod:`geoxai.io.cube_codec` stores DN with.

Rules a neighbouring tile takes the same way (seamless by construction):

* **Resampling**: 20 m bands are resampled to 10 m with ``resampling`` (bilinear by default,
  or nearest); SCL always with nearest (classes must not be averaged). GDAL warps in the
  file's integer type, so interpolated values are whole DN (at most 0.5 DN = 5e-5 off).
  10 m bands sit exactly on the tile grid (Sentinel-2 grids and the tile lattice are multiples
  of 10 m), so they are read without interpolation either way.
* **Other CRS**: items of a neighbouring UTM zone are warped onto the tile's grid by GDAL
  (stackstac, ``epsg=tile.epsg``), with the same resampling rules.
* **One day, several items** (two granules, or two zones, of one overpass): they are mosaicked
  into one time step per *solar day* (UTC time + item centre longitude / 15 h, as odc-stac's
  ``groupby="solar_day"``). Per pixel and band the first valid value wins, items ordered by
  ``(datetime, id)``. The time label of every step is the solar day at 00:00, a function of the
  day only, so two tiles label the same overpass identically.
* **Errors**: zero items -> :class:`NoDataError`; an item without an asset for a requested band
  -> :class:`DataAccessError` naming the item and the band (before any pixel is read); a file
  that cannot be opened or decoded -> :class:`CorruptDataError` (or :class:`DataAccessError`
  for a missing file / HTTP error) naming the href, raised when the cube is computed or written.
  stackstac's ``errors_as_nodata`` is empty: no read error ever becomes silent NaN. Reads outside
  an asset's footprint raise nothing and give NaN.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from shapely.geometry import shape
from stackstac.rio_reader import AutoParallelRioReader

from geoxai.errors import (
    CorruptDataError,
    DataAccessError,
    GeoXAIError,
    InvalidInputError,
    NoDataError,
    look_up_option,
)
from geoxai.geo.bands import CUBE_BANDS, SCL, SUN_AZIMUTH, SUN_ELEVATION, check_bands
from geoxai.geo.grid import TileSpec
from geoxai.geo.resample import bilinear_2x, source_rows
from geoxai.io.cube_codec import CUBE_NAME, DN_OFFSET, DN_SCALE
from geoxai.io.signing import SIGNER, redact
from geoxai.io.stac_items import band_scaling, item_sun_angles, normalize_item
from geoxai.io.stac_items import check_bands as require_bands

if TYPE_CHECKING:
    from typing_extensions import TypeIs

__all__ = [
    "CUBE_NAME",
    "RESAMPLING",
    "build_cube",
    "stack_assets",
    "is_location",
    "solar_day",
    "item_datetime",
]

RESAMPLING = ("bilinear", "nearest", "cubic", "average")
"""Resampling methods accepted for reflectance bands (SCL is always nearest)."""


def item_datetime(item: pystac.Item) -> dt.datetime:
    """The item's acquisition time (UTC, aware): ``datetime`` or else ``start_datetime``."""
    when = item.datetime
    if when is None:
        start = item.properties.get("start_datetime")
        when = pd.Timestamp(start).to_pydatetime() if start else None
    if when is None:
        raise InvalidInputError(
            f"STAC item {item.id!r} has neither 'datetime' nor 'start_datetime'; cannot place "
            "it on the time axis. Fix the catalog or drop the item."
        )
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _centre_lon(item: pystac.Item) -> float:
    if item.bbox:
        b = item.bbox
        x0, x1 = (b[0], b[3]) if len(b) == 6 else (b[0], b[2])
        return float((x0 + x1) / 2) if x0 <= x1 else float(((x0 + x1 + 360) / 2 + 180) % 360 - 180)
    if item.geometry:
        return float(shape(item.geometry).centroid.x)
    return 0.0


def solar_day(item: pystac.Item) -> dt.date:
    """Local mean solar date of the acquisition: UTC time + centre longitude / 15 hours."""
    when = item_datetime(item).astimezone(dt.UTC)
    return (when + dt.timedelta(hours=_centre_lon(item) / 15.0)).date()


def _as_day(value: Any, what: str) -> dt.date | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} {value!r} is not a date; use ISO form like '2023-01-31'."
        ) from exc
    return ts.date()


def _normalized(items: Sequence[pystac.Item | Mapping[str, Any]]) -> list[pystac.Item]:

    out: dict[str, pystac.Item] = {}
    for it in items:
        norm = normalize_item(it if isinstance(it, pystac.Item) else dict(it))
        out.setdefault(norm.id, norm)  # a duplicate id is the same item twice
    return list(out.values())


_MISSING = re.compile(r"no such file|does not exist|not found|http response code: 4\d\d", re.I)


def _read_error(url: str, exc: BaseException) -> DataAccessError:
    """A typed error naming the asset href; CorruptDataError unless the file is missing."""
    chain: list[str] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 4:
        chain.append(str(e))
        e = e.__cause__
    detail = redact(" <- ".join(dict.fromkeys(chain)))[:600]
    if _MISSING.search(detail) and "not recognized" not in detail.lower():
        return DataAccessError(
            f"Cannot read asset {url}: the file is missing or unreachable ({detail}). Check the "
            "href in the STAC item, the storage credentials (AWS_* / GDAL options) and network."
        )
    return CorruptDataError(
        f"Cannot decode asset {url}: the file is corrupt or not a readable GeoTIFF ({detail}). "
        "Re-download or regenerate it, or drop its STAC item from the query."
    )


class _CheckedReader(AutoParallelRioReader):  # type: ignore[misc]
    """stackstac's reader with read errors turned into typed errors that name the href, and a
    direct read where no warp is needed.

    An asset on the tile's own pixel grid (same CRS and pixel size, origin a whole number of
    pixels away: a 10 m band in the tile's UTM zone) is read as the window itself with rasterio
    (the part inside the raster; NaN outside and at the file's nodata value), not through
    stackstac's GDAL WarpedVRT, whose identity warp gives the same values at ~10x the cost; so
    is a coarser asset read with nearest resampling on a grid the tile's refines (SCL at 20 m:
    each 20 m pixel repeated 2 x 2), and an unsigned-integer asset read bilinearly on a grid the
    tile's refines 2 x 2 (the 20 m bands): its 20 m window (one pixel of margin) is upsampled by
    :func:`geoxai.geo.resample.bilinear_2x`, GDAL's bilinear warp computed directly. Assets
    without a nodata value, on another grid, or resampled otherwise take the warped path."""

    _aligned: tuple[int, int, int] | None | bool = False  # False: not looked at yet

    def read(self, window: Any, **kwargs: Any) -> np.ndarray:
        try:
            if not kwargs:
                got = self._read_direct(window)
                if got is not None:
                    return got
            return super().read(window, **kwargs)
        except GeoXAIError:
            raise
        except Exception as exc:
            raise _read_error(self.url, exc) from exc

    def _read_direct(self, window: Any) -> np.ndarray | None:
        """The window read without a warp, or None when the asset needs one."""
        import rasterio  # lazy: rasterio (GDAL) only when pixels are read
        from rasterio.enums import Resampling  # lazy: as above
        from rasterio.windows import Window  # lazy: as above

        if self._aligned is None:
            return None
        with self.gdal_env.open, rasterio.open(self.url) as ds:
            nearest = self.resampling == Resampling.nearest
            bilinear = self.resampling == Resampling.bilinear
            shift = (
                _pixel_shift(ds, self.spec, nearest, bilinear)
                if self._aligned is False
                else self._aligned
            )
            self._aligned = shift
            if not isinstance(shift, tuple):
                return None
            dr, dc, k = shift
            if k == 2 and bilinear:
                return self._read_bilinear(ds, window, dr, dc)
            # fine (tile-grid) rows/cols of the window, from the dataset's origin; source pixels
            # of the window are those holding the fine pixels' centres: fine // k
            r0, c0 = int(window.row_off) + dr, int(window.col_off) + dc
            h, w = int(window.height), int(window.width)
            s0, t0 = r0 // k, c0 // k
            s1, t1 = (r0 + h - 1) // k + 1, (c0 + w - 1) // k + 1
            src = np.full((s1 - s0, t1 - t0), self.fill_value, dtype=self.dtype)
            a0, b0 = max(s0, 0), max(t0, 0)
            a1, b1 = min(s1, ds.height), min(t1, ds.width)
            if a1 > a0 and b1 > b0:
                with self.gdal_env.read:
                    part = ds.read(
                        1,
                        window=Window(b0, a0, b1 - b0, a1 - a0),
                        out_dtype=self.dtype,
                        masked=True,
                    )
                src[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0] = np.ma.filled(part, self.fill_value)
            if k == 1:
                return src
            fine = src.repeat(k, axis=0).repeat(k, axis=1)
            return fine[r0 - s0 * k : r0 - s0 * k + h, c0 - t0 * k : c0 - t0 * k + w]

    def _read_bilinear(self, ds: Any, window: Any, dr: int, dc: int) -> np.ndarray:
        """The window of a raster whose pixels are 2 x 2 of the output's, resampled bilinearly
        as GDAL's warp does (:func:`geoxai.geo.resample.bilinear_2x`) from the source window
        around it; pixels outside the raster are invalid there."""
        from rasterio.windows import Window  # lazy: rasterio (GDAL) only when pixels are read

        f0, g0 = int(window.row_off) + dr, int(window.col_off) + dc
        h, w = int(window.height), int(window.width)
        s0, s1 = source_rows(f0, h)
        t0, t1 = source_rows(g0, w)
        src = np.zeros((s1 - s0, t1 - t0), ds.dtypes[0])
        valid = np.zeros(src.shape, bool)
        a0, b0 = max(s0, 0), max(t0, 0)
        a1, b1 = min(s1, ds.height), min(t1, ds.width)
        if a1 > a0 and b1 > b0:
            with self.gdal_env.read:
                part = ds.read(1, window=Window(b0, a0, b1 - b0, a1 - a0))
            src[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0] = part
            valid[a0 - s0 : a1 - s0, b0 - t0 : b1 - t0] = part != ds.nodata
        out = np.empty((h, w), self.dtype)
        return bilinear_2x(src, valid, (s0, t0), (f0, g0), (ds.height, ds.width), out, np.nan)


def _pixel_shift(
    ds: Any, spec: Any, nearest: bool, bilinear: bool = False
) -> tuple[int, int, int] | None:
    """``(rows, cols, k)`` when dataset ``ds`` lies on the output grid ``spec`` (stackstac's
    RasterSpec) without a warp: same CRS, no rotation, pixels ``k`` times the output's (``k``
    = 1, or any whole number with ``nearest`` resampling: each output pixel then takes the one
    source pixel holding its centre, as GDAL's nearest does; or 2 with ``bilinear`` resampling
    of an unsigned-integer raster, see :func:`geoxai.geo.resample.bilinear_2x`), the origins
    ``rows``/``cols`` output pixels apart, and a nodata value (what marks invalid pixels on the
    warped path). None otherwise."""
    t, g = ds.transform, spec.transform
    if ds.nodata is None or ds.crs is None or ds.crs.to_epsg() != spec.epsg:
        return None
    if t.b != 0 or t.d != 0 or g.b != 0 or g.d != 0 or g.a <= 0 or g.e >= 0:
        return None
    k = t.a / g.a
    if abs(k - round(k)) > 1e-9 or round(k) < 1 or t.e / g.e != k:
        return None
    unsigned = np.dtype(ds.dtypes[0]) in (np.uint8, np.uint16)
    if round(k) > 1 and not (nearest or (bilinear and round(k) == 2 and unsigned)):
        return None
    dc, dr = (g.c - t.c) / g.a, (g.f - t.f) / g.e
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return None
    return round(dr), round(dc), round(k)


_REFUSED = re.compile(r"http response code: 403|\b403\b.*forbidden|authenticationfailed", re.I)


class _SignedReader(_CheckedReader):
    """A reader that signs its href for Planetary Computer when it opens the asset (in the
    process that reads, with :data:`geoxai.io.signing.SIGNER`'s cached container token) and, when
    a read is refused (HTTP 403: token expired or revoked), drops that token and retries once
    with a fresh one. ``self.url`` stays the unsigned href; messages never hold a token."""

    _token: str | None = None

    def _open(self) -> Any:
        href: str = str(self.url)  # type: ignore[has-type]  # set by stackstac
        signed, self._token = SIGNER.sign(href)
        self.url = signed
        try:
            return super()._open()
        finally:
            self.url = href

    def read(self, window: Any, **kwargs: Any) -> np.ndarray:
        try:
            return AutoParallelRioReader.read(self, window, **kwargs)
        except GeoXAIError:
            raise
        except Exception as exc:
            if not _REFUSED.search(_chain(exc)):
                raise _read_error(self.url, exc) from None
        SIGNER.invalidate(self.url, used=self._token)
        with self._dataset_lock:
            self._dataset = None  # reopened (signed anew) by the next access
        try:
            return AutoParallelRioReader.read(self, window, **kwargs)
        except GeoXAIError:
            raise
        except Exception as exc:
            raise _read_error(self.url, exc) from None


def _chain(exc: BaseException) -> str:
    parts: list[str] = []
    e: BaseException | None = exc
    while e is not None and len(parts) < 4:
        parts.append(str(e))
        e = e.__cause__ or e.__context__
    return " ".join(parts)


def stack_assets(
    items: Sequence[pystac.Item | Mapping[str, Any]],
    tile: TileSpec,
    assets: Sequence[str],
    resampling: str,
    chunk_px: int = 1024,
    *,
    signing: str = "none",
) -> xr.DataArray:
    """Lazy stackstac read of ``assets`` of ``items`` onto the tile's exact grid.

    The one place geoxai calls stackstac (optical cube, Sentinel-1, DEM): the tile's UTM zone,
    ``tile.bounds`` (its haloed bounds) at ``tile.resolution_m``, no snapping, pixel-centre
    coords, GDAL ``resampling`` (a :class:`rasterio.enums.Resampling` name), float32 with NaN
    fill, no rescaling (callers apply scale/offset per item), and read errors raised as typed
    errors naming the href (:class:`_CheckedReader`; never silent NaN).

    Args:
        items: STAC items (pystac or dicts; hrefs used as they are).
        tile: the grid (any halo).
        assets: asset keys, in band order.
        resampling: ``"bilinear"``, ``"nearest"``, ``"cubic"``, ``"average"``.
        chunk_px: spatial dask chunk edge, pixels (one item and one asset per chunk).
        signing: ``"none"`` or ``"planetary-computer"``: hrefs are signed when each asset is
            opened, by the process that reads it (:mod:`geoxai.io.signing`); the array's hrefs
            stay unsigned.

    Returns:
        DataArray ``(time, band, y, x)`` float32, one time step per item (stackstac drops items
        whose footprint misses the bounds), coord ``id`` along time.

    Raises:
        ValueError: no item overlaps the bounds (stackstac's message).
    """
    import stackstac  # lazy: stackstac (dask graph builder) only when a cube is built
    from rasterio.enums import Resampling  # lazy: rasterio (GDAL) only on this path

    plain = [
        it.to_dict(include_self_link=False, transform_hrefs=False)
        if isinstance(it, pystac.Item)
        else dict(it)
        for it in items
    ]
    with warnings.catch_warnings():  # stackstac 0.5.1 multiplies Affines with `*`
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        return stackstac.stack(
            plain,
            assets=list(assets),
            epsg=tile.epsg,
            resolution=tile.resolution_m,
            bounds=tile.bounds,
            snap_bounds=False,
            resampling=Resampling[resampling],
            chunksize=(1, 1, chunk_px, chunk_px),
            dtype=np.dtype("float32"),
            fill_value=np.float32(np.nan),  # numpy float32: numpy 2 refuses a Python float
            rescale=False,
            sortby_date=False,
            xy_coords="center",
            properties=False,
            band_coords=False,
            errors_as_nodata=(),
            reader=_SignedReader if signing == "planetary-computer" else _CheckedReader,
        )


def is_location(
    source: Any,
) -> TypeIs[str | os.PathLike[str] | Sequence[str | os.PathLike[str]]]:
    """True when ``source`` is where to search (a STAC API URL, item file path or a list of
    such), False when it is the STAC items themselves (pystac Items or dicts)."""
    if isinstance(source, str | os.PathLike):
        return True
    return (
        isinstance(source, Sequence)
        and len(source) > 0
        and isinstance(source[0], str | os.PathLike)
    )


def build_cube(
    items: Sequence[pystac.Item | Mapping[str, Any]],
    tile: TileSpec,
    *,
    bands: Sequence[str] = CUBE_BANDS,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    resampling: str = "bilinear",
    chunk_px: int = 1024,
    signing: str = "none",
) -> xr.DataArray:
    """Build the lazy raw cube of one tile from STAC items (see the module docstring).

    Args:
        items: STAC items (pystac or dicts; normalized here, duplicates by id dropped).
        tile: the tile and its halo; the cube covers ``tile.bounds`` at ``tile.resolution_m``.
        bands: canonical names or aliases; reflectance bands in the given order, SCL allowed.
        start: first solar day kept (inclusive), ISO date; None = no lower bound.
        end: last solar day kept (inclusive), ISO date; None = no upper bound.
        resampling: for reflectance bands on another grid (20 m, other zone): one of
            :data:`RESAMPLING`. SCL always uses nearest.
        chunk_px: spatial dask chunk edge, pixels (one date and one band per chunk).
        signing: ``"none"`` or ``"planetary-computer"`` (see :func:`stack_assets`).

    Returns:
        DataArray ``reflectance`` of shape ``(n_days, len(bands), *tile.shape)``, float32,
        dask-backed; nothing is read until it is computed or written.

    Raises:
        NoDataError: no item in ``[start, end]``.
        DataAccessError: an item has no asset for a requested band (names item and band).
        InvalidInputError / ConfigError: bad bands, dates or resampling.
    """
    names = check_bands(list(bands))
    resampling = look_up_option(resampling, RESAMPLING, what="resampling")
    if chunk_px < 16:
        raise InvalidInputError(f"chunk_px={chunk_px} is too small; use >= 16 (e.g. 1024).")
    d0, d1 = _as_day(start, "start"), _as_day(end, "end")
    if d0 and d1 and d0 > d1:
        raise InvalidInputError(f"start {d0} is after end {d1}; swap them.")

    norm = _normalized(items)
    keyed = []
    for it in norm:
        day = solar_day(it)
        if (d0 is None or day >= d0) and (d1 is None or day <= d1):
            keyed.append(((day, item_datetime(it), it.id), it))
    if not keyed:
        span = f"{d0 or '..'}/{d1 or '..'}"
        raise NoDataError(
            f"Tile {tile.id}: no STAC item in {span} (got {len(norm)} items in all). Widen the "
            "date range, raise the cloud limit, or check the collection and the tile's area."
        )
    keyed.sort(key=lambda kv: kv[0])
    chosen = [it for _, it in keyed]

    _require_bands(chosen, names, tile)
    refl = [b for b in names if b != SCL]
    keyed, chosen = _overlapping(keyed, tile, refl, names, resampling, chunk_px)

    parts = []
    scale = offset = np.zeros((len(chosen), 0), np.float32)
    if refl:
        da = stack_assets(chosen, tile, refl, resampling, chunk_px, signing=signing)
        scale = np.array([[band_scaling(it, b)[0] for b in refl] for it in chosen], np.float32)
        offset = np.array([[band_scaling(it, b)[1] for b in refl] for it in chosen], np.float32)
        da = da * xr.DataArray(scale, dims=("time", "band")) + xr.DataArray(
            offset, dims=("time", "band")
        )
        parts.append(da.astype(np.float32))
    if SCL in names:
        parts.append(stack_assets(chosen, tile, [SCL], "nearest", chunk_px, signing=signing))
    cube = xr.concat(parts, dim="band", coords="minimal", compat="override", join="override")
    cube = cube.transpose("time", "band", "y", "x")
    cube = cube.isel(band=[list(refl + ([SCL] if SCL in names else [])).index(b) for b in names])

    _check_grid(cube, tile)
    y, x = tile.coords()
    days = [k[0] for k, _ in keyed]
    suns = [item_sun_angles(it.properties) for it in chosen]
    cube = xr.DataArray(
        cube.data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.DatetimeIndex(pd.to_datetime(days)).astype("datetime64[ns]").values,
            "band": list(names),
            "y": y,
            "x": x,
            "id": ("time", np.array([it.id for it in chosen], dtype=object)),
            SUN_AZIMUTH: ("time", np.array([sun[0] for sun in suns], dtype=np.float64)),
            SUN_ELEVATION: ("time", np.array([sun[1] for sun in suns], dtype=np.float64)),
            DN_SCALE: (("time", "band"), _per_band(scale, refl, names)),
            DN_OFFSET: (("time", "band"), _per_band(offset, refl, names)),
        },
        name=CUBE_NAME,
    )
    cube = _mosaic_days(cube, days)
    cube.attrs = {
        **tile.grid_attrs(),
        "item_ids": [it.id for it in chosen],
        "resampling": resampling,
    }
    return cube


def _per_band(values: np.ndarray, refl: list[str], names: Sequence[str]) -> np.ndarray:
    """``(time, len(names))`` float32: the reflectance bands' column of ``values``, NaN for SCL."""
    out = np.full((values.shape[0], len(names)), np.nan, np.float32)
    for i, b in enumerate(names):
        if b in refl:
            out[:, i] = values[:, refl.index(b)]
    return out


def _require_bands(items: list[pystac.Item], names: Sequence[str], tile: TileSpec) -> None:
    """Every item has every band; a missing SCL gets the switches for inputs without SCL."""
    if SCL in names:
        lacking = [it.id for it in items if SCL not in it.assets]
        if lacking:
            raise DataAccessError(
                f"Tile {tile.id}: {len(lacking)} of {len(items)} STAC items have no SCL "
                f"(scene classification) asset, e.g. {lacking[:3]}. For inputs without SCL "
                "use the spectral cloud mask: `geoxai cube --no-scl`, `geoxai run --cloud-mask "
                "spectral` (or `processing.cloud_mask: spectral` in the run config), or in "
                "Python build_cube(..., bands=geoxai.geo.bands.S2_BANDS)."
            )
    require_bands(items, list(names), on_missing="raise")


def _overlapping(
    keyed: list[Any],
    tile: TileSpec,
    refl: list[str],
    names: Sequence[str],
    resampling: str,
    chunk_px: int,
) -> tuple[list[Any], list[pystac.Item]]:
    """Drop items whose raster misses the tile (stackstac leaves them out of its stack).

    An item's footprint may overlap the tile while its raster (``proj:transform``/``shape``)
    lies elsewhere (bad metadata); such an item has no pixel here, as it has none for any tile
    the raster misses, so it is left out with a warning naming it. When no item is left:
    :class:`NoDataError` naming them.
    """
    chosen = [it for _, it in keyed]
    ids = [it.id for it in chosen]
    kept = set(ids)
    for assets, method in ((refl[:1], resampling), ([SCL] if SCL in names else [], "nearest")):
        if assets:  # lazy: only the items' metadata is read here
            da = stack_assets(chosen, tile, assets, method, chunk_px)
            kept &= {str(v) for v in np.atleast_1d(da["id"].values)}
    missed = [i for i in ids if i not in kept]
    if not missed:
        return keyed, chosen
    if len(missed) == len(ids):
        raise NoDataError(
            f"Tile {tile.id}: none of the {len(ids)} STAC items has raster data over the tile "
            f"{tile.bounds} (EPSG:{tile.epsg}), though their footprints overlap it: {missed[:5]}"
            f"{' ...' if len(missed) > 5 else ''}. Their assets' proj:transform/proj:shape "
            "place the rasters elsewhere; fix the items' geometry or projection metadata."
        )
    warnings.warn(
        f"Tile {tile.id}: STAC items {missed[:5]}{' ...' if len(missed) > 5 else ''} have a "
        "footprint over the tile but no raster there (proj:transform/proj:shape); left out.",
        stacklevel=3,
    )
    keyed = [kv for kv in keyed if kv[1].id in kept]
    return keyed, [it for _, it in keyed]


def _check_grid(cube: xr.DataArray, tile: TileSpec) -> None:
    """The stackstac grid must be the tile grid; anything else is a bug, said loudly."""
    y, x = tile.coords()
    ok = cube.sizes["y"] == len(y) and cube.sizes["x"] == len(x)
    if ok:
        tol = 1e-6 * tile.resolution_m
        ok = bool(
            np.abs(cube["y"].values - y).max() < tol and np.abs(cube["x"].values - x).max() < tol
        )
    if not ok:
        raise InvalidInputError(
            f"Tile {tile.id}: stackstac planned a grid of {cube.sizes['y']}x{cube.sizes['x']} px "
            f"that is not the tile grid {tile.shape} at {tile.bounds}; this is a geoxai bug "
            "(stackstac version?). Report it with the tile id."
        )


def _mosaic_days(cube: xr.DataArray, days: list[dt.date]) -> xr.DataArray:
    """One time step per day: first valid value per pixel and band, in item order."""
    if len(set(days)) == len(days):
        return cube
    steps = []
    i = 0
    while i < len(days):
        j = i
        while j + 1 < len(days) and days[j + 1] == days[i]:
            j += 1
        step = cube.isel(time=slice(i, i + 1))
        for k in range(i + 1, j + 1):
            nxt = cube.isel(time=slice(k, k + 1)).data
            step = step.copy(data=xr.where(np.isnan(step.data), nxt, step.data))
        ids = ",".join(str(v) for v in cube["id"].values[i : j + 1])
        step = step.assign_coords(id=("time", np.array([ids], dtype=object)))
        for c in (DN_SCALE, DN_OFFSET):  # items of one day scaled differently: no one scaling
            v = cube[c].values[i : j + 1]
            if not (v == v[:1]).all(axis=0)[np.isfinite(v[0])].all():
                step = step.assign_coords({c: (("time", "band"), np.full_like(v[:1], np.nan))})
        steps.append(step)
        i = j + 1
    return xr.concat(steps, dim="time")
