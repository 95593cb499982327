"""The stored DN cube read straight from the COGs: no float cube, no stackstac reader, no warp.

:func:`geoxai.io.tile_cube.build_tile_cube` stores a cube as uint16 DN + uint8 SCL
(:mod:`geoxai.io.cube_codec`). The float path gets there from
:func:`geoxai.io.cube.build_cube`'s float32 reflectance (stackstac reads every asset as float32,
scales it, mosaics days with ``xr.where``) and encodes it back to DN. :func:`direct_dataset`
makes the *same* dataset without the round trip: per date, one task reads each asset's window
as the file's integers with rasterio (:mod:`geoxai.io.cube_reads`), mosaics days on the integers
(first non-zero DN wins, in item order, as the first non-NaN value does on the float path) and
maps each DN through the encoder's own table (what ``rint((float32(DN) * scale + offset -
offset) / scale)`` gives, see :func:`dn_table`), SCL nodata to 255. The coordinates, attributes
and Zarr encodings are :func:`~geoxai.io.cube_codec.encode_cube`'s on the lazy float cube (whose
stackstac graph is built but never computed), so the committed store is byte for byte the float
path's: the same chunk objects (the same SHA-256 in the commit marker), the same ``zarr.json``.

It applies when the float path would read every asset without a warp and store DN
(:func:`plan`); otherwise the reason is returned and the caller takes the float path:

* signing (Planetary Computer) or an href with a query string (a pre-signed URL): the float
  path's reader signs, and retries refused reads, itself;
* an item in another UTM zone than the tile (GDAL warps it), reflectance resampling other than
  bilinear/nearest;
* a day mosaicked from items scaled differently (stored as float32);
* found when an asset is opened (:class:`Fallback`, raised inside the write, which the caller
  undoes): a raster not on the tile's lattice (``_pixel_shift``: other CRS, rotation, a
  resolution the direct reads do not reproduce), nodata other than 0 or none, a data type other
  than uint16 (reflectance) / uint8, uint16 (SCL), a mask other than the nodata value, SCL
  class 255 or above, or a DN whose float32 reflectance does not encode back (the float path
  stores float32 then).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pystac
import xarray as xr

from geoxai.geo.bands import SCL
from geoxai.geo.grid import TileSpec
from geoxai.io.cube import _normalized, solar_day
from geoxai.io.cube_codec import (
    CUBE_NAME,
    DN_ENCODING,
    DN_OFFSET,
    DN_SCALE,
    ROWS,
    SCL_NODATA,
)
from geoxai.io.cube_reads import Fallback, read_dn

__all__ = ["DirectPlan", "Fallback", "plan", "direct_dataset", "dn_table"]


@dataclass(frozen=True)
class DirectPlan:
    """What :func:`direct_dataset` reads: per stored time step, its items' asset hrefs.

    Attributes:
        steps: per time step, per item of that day (item order), ``band -> href`` for every
            band of the cube (reflectance bands and SCL).
        refl: reflectance bands, in stored order.
        scl: whether the cube has SCL.
        resampling: ``"bilinear"`` or ``"nearest"`` for reflectance bands (SCL: nearest).
    """

    steps: tuple[tuple[Mapping[str, str], ...], ...]
    refl: tuple[str, ...]
    scl: bool
    resampling: str


def plan(
    items: Sequence[pystac.Item | Mapping[str, Any]],
    cube: xr.DataArray,
    tile: TileSpec,
    *,
    resampling: str,
    signing: str,
) -> DirectPlan | str:
    """The direct reads that make the stored form of ``cube`` (:func:`geoxai.io.cube.build_cube`'s
    lazy cube of ``items`` on ``tile``), or why the float path must make it (module docstring).
    Only metadata is looked at here."""
    if signing != "none":
        return f"asset signing {signing!r} (the float path's reader signs hrefs)"
    if resampling not in ("bilinear", "nearest"):
        return f"resampling {resampling!r} (only bilinear and nearest are read directly)"
    names = [str(b) for b in cube["band"].values]
    refl = tuple(b for b in names if b != SCL)
    for c in (DN_SCALE, DN_OFFSET):
        v = cube[c].values[:, [names.index(b) for b in refl]] if refl else np.zeros((1, 0))
        if not np.isfinite(v).all():
            return "a day mosaicked from items scaled differently (stored as float32)"
    by_id = {it.id: it for it in _normalized(items)}
    chosen = [by_id[str(i)] for i in cube.attrs["item_ids"]]
    steps: list[list[Mapping[str, str]]] = []
    last: dt.date | None = None
    for it in chosen:
        epsg = it.properties.get("proj:epsg")
        if epsg is not None and int(epsg) != tile.epsg:
            return f"item {it.id} is in EPSG:{epsg}, the tile in EPSG:{tile.epsg} (warped)"
        hrefs = {}
        for b in names:
            asset = it.assets[b]
            a_epsg = asset.extra_fields.get("proj:epsg")
            if a_epsg is not None and int(a_epsg) != tile.epsg:
                return f"asset {b} of item {it.id} is in EPSG:{a_epsg} (warped)"
            if "?" in asset.href:
                return f"asset {b} of item {it.id} has a signed (query-string) href"
            hrefs[b] = asset.href
        day = solar_day(it)
        if day != last:
            steps.append([])
            last = day
        steps[-1].append(hrefs)
    if len(steps) != cube.sizes["time"]:  # the float path grouped days otherwise: a bug here
        return f"{len(steps)} days planned, the cube has {cube.sizes['time']}"
    return DirectPlan(
        steps=tuple(tuple(s) for s in steps),
        refl=refl,
        scl=SCL in names,
        resampling=resampling,
    )


def dn_table(scale: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """``(stored, bad)`` for every uint16 DN: the DN the float path stores for a pixel of ``DN``
    under float32 ``scale``/``offset`` (it encodes ``float32(DN) * scale + offset`` back with
    :func:`geoxai.io.cube_rows.dn_encoder`'s rule) and whether that value fails the encoder's
    check (then the float path stores the cube as float32). DN 0 is nodata: 0, never bad."""
    s, o = np.float32(scale), np.float32(offset)
    dn = np.arange(65536, dtype=np.uint32)
    v = dn.astype(np.float32) * s + o  # float32 arithmetic, as build_cube
    d = np.rint((v.astype(np.float64) - np.float64(o)) / np.float64(s))
    out_of_range = (d < 0) | (d > 65535)
    u = np.where(out_of_range, 0, d).astype(np.uint16)
    bad = out_of_range | ((u != 0) & (u.astype(np.float32) * s + o != v))
    u[0], bad[0] = 0, False
    return u, bad


def direct_dataset(
    direct: DirectPlan,
    encoded: xr.Dataset,
    tile: TileSpec,
) -> xr.Dataset:
    """``encoded`` (:func:`~geoxai.io.cube_codec.encode_cube`'s DN dataset of the lazy float
    cube) with its ``reflectance`` and ``SCL`` data replaced by the direct reads of ``direct``:
    one dask task per time step reads every asset of its items; chunks as ``encoded``'s.

    The reads raise :class:`Fallback` (the caller writes the float path instead) and the float
    path's typed read errors (:class:`~geoxai.errors.CorruptDataError`,
    :class:`~geoxai.errors.DataAccessError`) naming the href."""
    import dask.array as dsa  # lazy: dask only when a cube is built
    from dask import delayed  # lazy: as above

    if encoded.attrs.get("cube_encoding") != DN_ENCODING:
        raise Fallback("the cube is stored as float32")
    ny, nx = tile.shape
    nb = len(direct.refl)
    sc = np.asarray(encoded[DN_SCALE].values, np.float32) if nb else np.zeros((0, 0))
    of = np.asarray(encoded[DN_OFFSET].values, np.float32) if nb else np.zeros((0, 0))
    tables: dict[tuple[float, float], tuple[np.ndarray, np.ndarray] | None] = {}
    for s, o in zip(sc.ravel().tolist(), of.ravel().tolist(), strict=True):
        key = (float(s), float(o))
        if key not in tables:
            stored, bad = dn_table(key[0], key[1])
            identity = not bad.any() and bool((stored == np.arange(65536)).all())
            tables[key] = None if identity else (stored, bad)
    step_tables = [
        [tables[(float(sc[t, b]), float(of[t, b]))] for b in range(nb)]
        for t in range(len(direct.steps))
    ]
    nband = nb + int(direct.scl)
    blocks = [
        dsa.from_delayed(
            delayed(_read_step, pure=True)(
                direct, t, tile.transform, tile.epsg, tile.shape, step_tables[t]
            ),
            shape=(1, nband, ny, nx),
            dtype=np.uint16,
        )
        for t in range(len(direct.steps))
    ]
    both = dsa.concatenate(blocks, axis=0)
    out = encoded.copy()
    if nb:
        refl = both[:, :nb].rechunk((1, nb, ROWS, nx))
        out[CUBE_NAME] = encoded[CUBE_NAME].copy(data=refl)
    if direct.scl:
        scl = both[:, nb].map_blocks(_scl_classes, dtype=np.uint8).rechunk((1, ROWS, nx))
        out[SCL] = encoded[SCL].copy(data=scl)
    return out


def _read_step(
    direct: DirectPlan,
    t: int,
    transform: Any,
    epsg: int,
    shape: tuple[int, int],
    tables: list[tuple[np.ndarray, np.ndarray] | None],
) -> np.ndarray:
    """``(1, bands (+ SCL), y, x)`` uint16 of time step ``t``: each band mosaicked over the
    step's items (first non-zero DN wins), reflectance through its DN table, SCL as read (0
    where no item has a value; :func:`_scl_classes` makes it 255)."""
    bands = [*direct.refl, *([SCL] if direct.scl else [])]
    out = np.zeros((1, len(bands), *shape), np.uint16)
    for k, b in enumerate(bands):
        is_scl = b == SCL
        method = "nearest" if is_scl else direct.resampling
        dst = out[0, k]
        for n, hrefs in enumerate(direct.steps[t]):
            got = read_dn(hrefs[b], transform, epsg, shape, method, scl=is_scl)
            if n == 0:
                dst[...] = got
            else:
                np.copyto(dst, got, where=dst == 0)
        if is_scl:
            if (dst >= SCL_NODATA).any():
                raise Fallback(f"SCL of {direct.steps[t][0][b]} holds values >= {SCL_NODATA}")
            continue
        table = tables[k]
        if table is not None:
            stored, bad = table
            if bad[dst].any():
                raise Fallback(f"DN of band {b} that do not encode back (stored as float32)")
            np.take(stored, dst, out=dst)
    return out


def _scl_classes(s: np.ndarray) -> np.ndarray:
    """SCL as stored: the classes as uint8, 255 where no item has one (nodata 0 on read)."""
    out = s.astype(np.uint8)
    out[s == 0] = SCL_NODATA
    return out
