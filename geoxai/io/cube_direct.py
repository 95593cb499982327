"""The stored DN cube read straight from the COGs: no float cube, no stackstac reader, no warp.

:func:`geoxai.io.tile_cube.build_tile_cube` stores a cube as uint16 DN + uint8 SCL
(:mod:`geoxai.io.cube_codec`). The float path gets there from
:func:`geoxai.io.cube.build_cube`'s float32 reflectance (stackstac reads every asset as float32,
scales it, mosaics days with ``xr.where``), encodes it back to DN and has Zarr write it chunk by
chunk. :class:`ChunkWriter` makes the *same* chunk objects without the round trip: per date, one
task (dates in parallel threads) reads each asset's window as the file's integers with rasterio
(:mod:`geoxai.io.cube_reads`), mosaics days on the integers (first non-zero DN wins, in item
order, as the first non-NaN value does on the float path), maps each DN through the encoder's
own table (what encoding ``float32(DN) * scale + offset`` gives, :func:`dn_table`; the identity
for Sentinel-2's scalings, then skipped), SCL nodata to 255, and encodes and writes the date's
chunks with the codecs the arrays' ``zarr.json`` name. The metadata (arrays, coordinates,
attributes, encodings) is what ``to_zarr`` writes for :func:`~geoxai.io.cube_codec.encode_cube`'s
dataset of the lazy float cube (whose stackstac graph is built but never computed), so the
committed store is byte for byte the float path's: the same chunk objects (the same SHA-256 in
the commit marker), the same ``zarr.json``.

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
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    DN_OFFSET,
    DN_SCALE,
    ROWS,
    SCL_NODATA,
)
from geoxai.io.cube_reads import Fallback, read_dn
from geoxai.io.cube_rows import chunk_codecs, delta_shuffle, usable_cpus, zigzag_delta

__all__ = ["ChunkWriter", "DirectPlan", "Fallback", "plan", "dn_table"]


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


Tables = list[tuple[np.ndarray, np.ndarray] | None]


def _step_tables(direct: DirectPlan, cube: xr.DataArray) -> list[Tables]:
    """Per time step and reflectance band, :func:`dn_table` of its scaling (None: identity):
    the ``dn_scale``/``dn_offset`` of the lazy float cube, which ``encode_cube`` stores."""
    nb = len(direct.refl)
    if not nb:
        return [[] for _ in direct.steps]
    refl = list(direct.refl)
    sc = np.asarray(cube[DN_SCALE].sel(band=refl).values, np.float32)
    of = np.asarray(cube[DN_OFFSET].sel(band=refl).values, np.float32)
    tables: dict[tuple[float, float], tuple[np.ndarray, np.ndarray] | None] = {}
    for s, o in zip(sc.ravel().tolist(), of.ravel().tolist(), strict=True):
        key = (float(s), float(o))
        if key not in tables:
            stored, bad = dn_table(key[0], key[1])
            identity = not bad.any() and bool((stored == np.arange(65536)).all())
            tables[key] = None if identity else (stored, bad)
    return [
        [tables[(float(sc[t, b]), float(of[t, b]))] for b in range(nb)]
        for t in range(len(direct.steps))
    ]


class ChunkWriter:
    """:func:`geoxai.io.store.write_dataset`'s ``write_chunks`` for the cube of a
    :class:`DirectPlan`: reads each time step (:func:`_read_step`; steps in parallel threads:
    rasterio, the bilinear kernel and zstd release the GIL) and writes its chunk objects of
    ``reflectance`` and ``SCL`` as Zarr does for the arrays ``to_zarr`` just created (their
    ``zarr.json``: the zigzag-delta filter, little-endian bytes, byte shuffle, zstd; an edge
    chunk padded with the fill value; a chunk of fill values only not written), without
    Zarr's per-chunk machinery. ``progress(done, total)`` after each step.

    The first reads start when it is made, so they run while the caller encodes the float
    cube's metadata and ``to_zarr`` writes it; at most ``2 x threads`` steps are read ahead of
    the writes. :meth:`close` (always call it) stops the threads.

    Raises (when called): :class:`Fallback` (an asset or an array's codecs the direct build
    does not reproduce), and the typed read errors of :func:`~geoxai.io.cube_reads.read_dn`.
    """

    def __init__(
        self,
        direct: DirectPlan,
        cube: xr.DataArray,
        tile: TileSpec,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.direct, self.tile, self.progress = direct, tile, progress
        self.tables = _step_tables(direct, cube)
        self.n = len(direct.steps)
        self.workers = max(1, min(self.n, usable_cpus()))
        self.ahead = 2 * self.workers
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cube-direct")
        self._count = 0
        self.reads = {t: self._submit_read(t) for t in range(min(self.n, self.ahead))}

    def _submit_read(self, t: int) -> Any:
        d, tile = self.direct, self.tile
        return self.pool.submit(
            _read_step, d, t, tile.transform, tile.epsg, tile.shape, self.tables[t]
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, fs: Any, root: str) -> None:
        d = self.direct
        nb = len(d.refl)
        names = ([CUBE_NAME] if nb else []) + ([SCL] if d.scl else [])
        root = root.rstrip("/")
        encoders = {
            n: _encoder(json.loads(fs.cat_file(f"{root}/{n}/zarr.json")), n, dtype)
            for n, dtype in ((CUBE_NAME, "uint16"), (SCL, "uint8"))
            if n in names
        }

        def put(t: int, block: np.ndarray) -> None:
            objs: dict[str, bytes] = {}
            if nb:
                enc, fill = encoders[CUBE_NAME]
                _chunks(objs, f"{root}/{CUBE_NAME}/c/{t}/0/{{r}}/0", block[0, :nb], enc, fill)
            if d.scl:
                enc, fill = encoders[SCL]
                scl = _scl_classes(block[0, nb])
                _chunks(objs, f"{root}/{SCL}/c/{t}/{{r}}/0", scl[None], enc, fill)
            if objs and "file" in fs.protocol:  # local: the folders first (S3 has none)
                for folder in {k.rsplit("/", 1)[0] for k in objs}:
                    fs.makedirs(folder, exist_ok=True)
            if objs:
                fs.pipe(objs)

        writes = []
        for t in range(self.n):
            block = self.reads.pop(t).result()
            if t + self.ahead < self.n:
                self.reads[t + self.ahead] = self._submit_read(t + self.ahead)
            writes.append(self.pool.submit(put, t, block))
            del block
            while writes and (writes[0].done() or len(writes) > self.ahead):
                writes.pop(0).result()
                self._done()
        for f in writes:
            f.result()
            self._done()

    def _done(self) -> None:
        self._count += 1
        if self.progress is not None:
            self.progress(self._count, self.n)


def _encoder(
    meta: dict[str, Any], name: str, dtype: str
) -> tuple[Callable[[np.ndarray], bytes | None], int]:
    """``(encode, fill value)`` of the chunks of array ``name`` of Zarr metadata ``meta``:
    data type ``dtype``, codecs [zigzag delta], bytes (little-endian), [shuffle], zstd;
    :class:`Fallback` otherwise. ``encode(chunk)`` is None for a chunk of the fill value only
    (Zarr's ``write_empty_chunks=False`` leaves it out)."""
    import numcodecs  # lazy: the codecs only when a cube is written

    known = chunk_codecs(meta, np.dtype(dtype).itemsize)
    if known is None or meta.get("data_type") != dtype or meta.get("storage_transformers"):
        raise Fallback(
            f"array {name!r} has codecs {meta.get('codecs')} that the direct writer does not know"
        )
    delta, elementsize, level, checksum = known
    shuffle = None if elementsize is None else numcodecs.Shuffle(elementsize=elementsize)
    zstd = numcodecs.Zstd(level=level, checksum=checksum)
    fill = int(meta["fill_value"])
    if delta and elementsize == 2 and dtype == "uint16":
        fused = delta_shuffle()  # the three codecs before zstd in one pass (the cube's DN)

        def encode_fused(chunk: np.ndarray) -> bytes | None:
            raw = np.empty(2 * chunk.size, np.uint8)
            return bytes(zstd.encode(raw)) if fused(chunk, fill, raw) else None

        return encode_fused, fill

    def encode(chunk: np.ndarray) -> bytes | None:
        if (chunk == fill).all():
            return None
        a = zigzag_delta(np.ascontiguousarray(chunk)) if delta else chunk
        raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False)
        if shuffle is not None:
            raw = shuffle.encode(raw)
        return bytes(zstd.encode(raw))

    return encode, fill


def _chunks(
    objs: dict[str, bytes],
    pattern: str,
    block: np.ndarray,
    encode: Callable[[np.ndarray], bytes | None],
    fill: int,
) -> None:
    """Chunk objects of one time step ``block`` ``(bands, y, x)`` (``pattern``'s ``{r}``: the
    row block) into ``objs``: :data:`ROWS` rows each, the last padded with ``fill``, a chunk of
    ``fill`` only left out (Zarr's ``write_empty_chunks=False``)."""
    ny = block.shape[1]
    for i, r in enumerate(range(0, ny, ROWS)):
        part = block[:, r : r + ROWS]
        if part.shape[1] < ROWS:
            pad = np.full((block.shape[0], ROWS, block.shape[2]), fill, block.dtype)
            pad[:, : part.shape[1]] = part
            part = pad
        obj = encode(part)
        if obj is not None:
            objs[pattern.format(r=i)] = obj


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
