"""The stored cube's DN predictor and its row-block reader.

* :class:`ZigzagDelta` (Zarr codec ``geoxai.zigzag_delta``): horizontal differencing along x
  (TIFF predictor 2, as the source COGs use) with zigzag-coded differences, so small negative
  steps are small unsigned numbers and byte shuffle puts their (mostly zero) high bytes together.
  Lossless on uint16 (arithmetic mod 2**16). Measured in ``benchmarks/bench_cube.py``'s codec
  table: -12 % bytes on the synthetic tile-quarter, -10 % on the real WorldCereal patch
  (118 dates, 20 m bands bilinear on 10 m), at no measurable encode cost.
* :class:`DecodedRows`: the float32 cube of a uint16 DN store as an array-like that a dask
  array wraps, one task per row block; a read fetches the stored chunk objects of the rows asked
  (every date) in one ``fs.cat`` (concurrent on S3) and decodes each (zstd, un-shuffle,
  un-delta, ``float32(DN) * scale + offset``) into one preallocated float32 block: no Zarr chunk
  machinery, no per-date dask blocks, no concatenation. Stores whose codecs are not the ones
  :func:`chunk_decoder` knows are read through Zarr instead (same values).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numcodecs
import numpy as np
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing
from zarr.abc.codec import ArrayArrayCodec
from zarr.registry import register_codec

from geoxai.errors import CorruptDataError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import NDBuffer

__all__ = [
    "ZIGZAG_DELTA",
    "ZigzagDelta",
    "zigzag_delta",
    "undo_zigzag_delta",
    "chunk_codecs",
    "chunk_decoder",
    "usable_cpus",
    "DecodedRows",
    "lazy_array",
    "lazy_rows",
    "dn_encoder",
    "delta_shuffle",
]

ZIGZAG_DELTA = "geoxai.zigzag_delta"
"""Zarr codec name of :class:`ZigzagDelta` (in the arrays' ``zarr.json``)."""

_FIX = "Delete the store and rerun the cube stage (`geoxai run` rebuilds it)."


def zigzag_delta(a: np.ndarray) -> np.ndarray:
    """``a`` uint16 ``(..., x)`` -> zigzag-coded differences along x (first column kept)."""
    d = np.empty_like(a)
    d[..., 0] = a[..., 0]
    np.subtract(a[..., 1:], a[..., :-1], out=d[..., 1:])  # mod 2**16
    s = d.view(np.int16)
    return ((s << 1) ^ (s >> 15)).view(np.uint16)


def undo_zigzag_delta(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`zigzag_delta` (uint16 ``(..., x)``), into ``out`` when given."""
    d = z >> 1
    d ^= (z & 1) * np.uint16(0xFFFF)
    return np.cumsum(d, axis=-1, dtype=np.uint16, out=out)


@dataclass(frozen=True)
class ZigzagDelta(ArrayArrayCodec):  # type: ignore[misc]
    """Zarr v3 array-to-array codec of :func:`zigzag_delta` (uint16 only)."""

    is_fixed_size = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZigzagDelta:
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return {"name": ZIGZAG_DELTA}

    def validate(self, *, dtype: Any, **_: Any) -> None:
        if np.dtype(dtype.to_native_dtype()) != np.uint16:
            raise ValueError(f"{ZIGZAG_DELTA} takes uint16 arrays, got {dtype}.")

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        return chunk_spec

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        a = np.asarray(chunk_array.as_ndarray_like()).astype(np.uint16, copy=False)
        out = await asyncio.to_thread(undo_zigzag_delta, a)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(out)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        a = np.asarray(chunk_array.as_ndarray_like()).astype(np.uint16, copy=False)
        out = await asyncio.to_thread(zigzag_delta, a)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(out)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        return input_byte_length


register_codec(ZIGZAG_DELTA, ZigzagDelta)

Decoder = Callable[[bytes, np.ndarray], None]


def chunk_codecs(meta: dict[str, Any], itemsize: int) -> tuple[bool, int | None, int, bool] | None:
    """``(delta, shuffle element size or None, zstd level, zstd checksum)`` of the chunk objects
    of an array of Zarr metadata ``meta`` (its ``zarr.json``; ``itemsize``: its data type's, the
    shuffle's element size when the metadata give none). None when the codecs are not [zigzag
    delta], bytes (little-endian), [shuffle], zstd, or the chunk keys are not the default
    ``c/...`` ones: the one reading of that chain for :func:`chunk_decoder` and the direct
    build's writer (:mod:`geoxai.io.cube_direct`)."""
    enc = meta.get("chunk_key_encoding") or {}
    if enc.get("name") != "default" or (enc.get("configuration") or {}).get("separator") != "/":
        return None
    codecs = list(meta.get("codecs", []))
    delta = bool(codecs) and codecs[0].get("name") == ZIGZAG_DELTA
    codecs = codecs[1:] if delta else codecs
    names = [c.get("name") for c in codecs]
    if not names or names[0] != "bytes" or names[-1] != "zstd" or len(names) > 3:
        return None
    if (codecs[0].get("configuration") or {}).get("endian", "little") != "little":
        return None
    shuffle = None
    if names[1:-1] == ["numcodecs.shuffle"]:
        shuffle = int((codecs[1].get("configuration") or {}).get("elementsize", itemsize))
    elif names[1:-1]:
        return None
    zstd = codecs[-1].get("configuration") or {}
    return delta, shuffle, int(zstd.get("level", 0)), bool(zstd.get("checksum"))


def chunk_decoder(meta: dict[str, Any], dtype: np.dtype) -> tuple[Decoder, bool] | None:
    """``(decode, delta)`` for the chunk objects of an array of Zarr metadata ``meta`` (its
    ``zarr.json``): ``decode(raw, out)`` writes the chunk into ``out`` (C-contiguous, the
    chunk's shape and dtype) up to the predictor, and ``delta`` says whether ``out`` then holds
    :func:`zigzag_delta` differences (undone by the caller, fused with the scaling). None when
    :func:`chunk_codecs` does not know the codecs (then Zarr reads it).

    ``decode`` raises :class:`ValueError` for a chunk that does not decode (zstd's checksum)
    or decodes to the wrong size."""
    known = chunk_codecs(meta, dtype.itemsize)
    if known is None:
        return None
    delta, elementsize, _, _ = known
    shuffle = None if elementsize is None else numcodecs.Shuffle(elementsize=elementsize)
    return _ChunkDecoder(shuffle), delta


class _ChunkDecoder:
    """zstd, then un-shuffle (if any), into ``out``; a plain object, so the cube pickles."""

    def __init__(self, shuffle: Any) -> None:
        self.zstd, self.shuffle = numcodecs.Zstd(), shuffle

    def __call__(self, raw: bytes, out: np.ndarray) -> None:
        plain = self.zstd.decode(raw)  # checks zstd's content checksum when the frame has one
        if len(plain) != out.nbytes:
            raise ValueError(f"decoded {len(plain)} bytes, the chunk holds {out.nbytes}")
        if self.shuffle is not None:
            self.shuffle.decode(plain, out=out)
        else:
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(plain, np.uint8)


class DecodedRows:
    """The float32 ``(time, band, y, x)`` cube of a uint16 DN store, read by whole row blocks.

    ``__getitem__`` takes a tuple of slices (what ``dask.array.from_array(..., fancy=False)``
    passes), reads the stored chunks of the rows and dates asked (reflectance and SCL objects in
    one ``fs.cat``), decodes them into one float32 block and returns the part asked. Nodata
    (DN 0, SCL 255, or a chunk never written: all fill value) is NaN.

    Args:
        fs: the fsspec filesystem of the store.
        root: the store's path on ``fs``.
        where: the store, as messages name it.
        names: decoded band order (reflectance bands and SCL).
        refl: ``(array name, chunk_decoder(...), bands, fill value)`` of the DN array, or None.
        scl: ``(array name, chunk_decoder(...), fill value)`` of the SCL array (uint8 classes),
            or None.
        scale: ``(time, len(bands))`` float32 scale of the DN.
        offset: ``(time, len(bands))`` float32 offset.
        shape: ``(time, y, x)`` of the stored arrays; ``rows``: rows per stored chunk.
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        where: str,
        names: Sequence[str],
        refl: tuple[str, tuple[Decoder, bool], Sequence[str], int] | None,
        scl: tuple[str, tuple[Decoder, bool], int] | None,
        scale: np.ndarray,
        offset: np.ndarray,
        shape: tuple[int, int, int],
        rows: int,
    ) -> None:
        self.fs, self.root, self.where = fs, root.rstrip("/"), where
        self.refl, self.scl, self.rows = refl, scl, rows
        self.sc, self.of = scale, offset
        self.refl_pos = np.array([list(names).index(b) for b in refl[2]] if refl else [], np.intp)
        self.scl_pos = list(names).index("SCL") if scl else -1
        self.shape = (shape[0], len(names), shape[1], shape[2])
        self.dtype = np.dtype(np.float32)
        self.ndim = 4
        self.workers = usable_cpus()
        # decoded chunks (still predictor-coded) whose rows were read only in part: the next
        # read of the row block (the smoothing stage streams 64 rows of 128-row chunks) takes
        # them from here instead of fetching and decompressing them again
        self._partial: dict[tuple[str, int, int], tuple[np.ndarray, bool]] = {}
        self._free: list[np.ndarray] = []  # chunk buffers of _partial that were read out
        self._spare: list[np.ndarray] = []  # blocks handed out, see _block
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_partial"], state["_free"], state["_spare"], state["_lock"] = {}, [], [], None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        drop = tuple(i for i, k in enumerate(key) if isinstance(k, int | np.integer))
        key = tuple(slice(int(k), int(k) + 1) if i in drop else k for i, k in enumerate(key))
        if not all(isinstance(k, slice) for k in key):
            raise TypeError("DecodedRows takes integers and slices only (basic indexing).")
        t0, t1, _ = key[0].indices(self.shape[0])
        y0, y1, _ = key[2].indices(self.shape[2])
        y1 = max(y0, y1)
        c0, c1 = y0 // self.rows, max(y0 // self.rows, -(-y1 // self.rows))
        # only the rows asked are kept (a 64-row read of 128-row chunks holds 64 rows of float32)
        out = self._block((max(t1 - t0, 0), self.shape[1], y1 - y0, self.shape[3]))
        if out.size:
            groups = _split(range(c0, c1), self.workers)
            rows = (y0, y1)
            if len(groups) == 1:
                self._read(range(t0, t1), groups[0], rows, out)
            else:  # zstd and numpy release the GIL: row blocks decode in parallel
                with ThreadPoolExecutor(len(groups)) as pool:
                    for f in [pool.submit(self._read, range(t0, t1), g, rows, out) for g in groups]:
                        f.result()
        got = out[:, key[1], :, key[3]]
        return got.squeeze(axis=drop) if drop else got

    def _block(self, shape: tuple[int, int, int, int]) -> np.ndarray:
        """A float32 block for a read: one of the last two handed out when nothing outside
        this reader holds it any more (no array, view or buffer of it is alive: a streaming
        caller has moved on), else a new one. Reusing it spares the page faults of fresh
        memory (a 64-row block of a tile-year is ~100-470 MB, allocated by mmap) on every
        read; every value of it is overwritten by the read. Two: while the smoothing stage
        (:class:`geoxai.temporal.weights.RowBlocks`) reads block k it holds block k - 1 (read
        ahead) and has let go of k - 2; a third kept here would be memory nobody uses (a
        228-date 6 km tile: +0.47 GB of peak RSS)."""
        with self._lock:
            for buf in self._spare:
                # references: the list, ``buf`` and getrefcount's argument; any more is a user
                if buf.shape == shape and sys.getrefcount(buf) <= 3:
                    return buf
            buf = np.empty(shape, np.float32)
            self._spare = [buf, *self._spare[:1]]
            return buf

    def lazy(self) -> Any:
        """This array as xarray's lazily indexed data (what xarray's own backends hand out):
        ``DataArray.isel(...).values`` reads only the row blocks asked, ``.load()`` all of them
        (in parallel), and no dask graph or copy of the result stands in between."""
        return lazy_array(self)

    def _read(self, times: range, chunks: range, rows: tuple[int, int], out: np.ndarray) -> None:
        """Decode rows ``rows[0]:rows[1]`` of the stored chunks ``chunks`` of every date in
        ``times`` into ``out`` ``(len(times), band, rows[1] - rows[0], x)``."""
        paths: list[tuple[str, int, int, str]] = []
        for t in times:
            for c in chunks:
                if self.refl:
                    paths.append((self.refl[0], t, c, f"{self.root}/{self.refl[0]}/c/{t}/0/{c}/0"))
                if self.scl:
                    paths.append((self.scl[0], t, c, f"{self.root}/{self.scl[0]}/c/{t}/{c}/0"))
        with self._lock:
            kept = {p[:3]: self._partial.pop(p[:3]) for p in paths if p[:3] in self._partial}
        fetch = [p[3] for p in paths if p[:3] not in kept]
        got: dict[str, Any] = self.fs.cat(fetch, on_error="return") if fetch else {}
        nb = len(self.refl[2]) if self.refl else 0
        scratch: dict[bool, np.ndarray] = {
            True: np.empty((nb, self.rows, self.shape[3]), np.uint16),
            False: np.empty((self.rows, self.shape[3]), np.uint8),
        }
        for name, t, c, path in paths:
            raw: Any = got.get(path)
            first = c * self.rows  # the chunk's first row
            a = max(rows[0], first) - first  # rows a:b of the chunk are asked
            end = min(self.rows, self.shape[2] - first)  # rows the chunk holds
            b = min(rows[1], first + end) - first
            o = out[t - times.start, :, first + a - rows[0] : first + b - rows[0]]
            is_refl = self.refl is not None and name == self.refl[0]
            keep = b < end and rows[0] <= first + a  # a read goes on from here
            if (name, t, c) in kept:  # decoded by an earlier read of other rows of this chunk
                dec, stored = kept[(name, t, c)]
                self._convert(is_refl, dec, raw_ok=stored, a=a, b=b, t=t, o=o)
                if keep:
                    self._keep(name, t, c, dec, stored)
                else:
                    with self._lock:
                        self._free.append(dec)  # its rows are all read: the next keep takes it
                continue
            if keep:
                shape = (nb, self.rows, self.shape[3]) if is_refl else (self.rows, self.shape[3])
                dec = self._spare_chunk(shape, np.uint16 if is_refl else np.uint8)
            else:
                dec = scratch[is_refl]
            if isinstance(raw, FileNotFoundError):
                raw = None  # never written: every value is the fill value (nodata)
            elif isinstance(raw, BaseException):
                raise CorruptDataError(
                    f"Store {self.where}: chunk {name}/c/{t}/.../{c} cannot be read "
                    f"({type(raw).__name__}: {' '.join(str(raw).split())[:300]}). {_FIX}"
                ) from raw
            # a chunk is stored whole (the last row block padded): decode it whole, keep n rows
            if is_refl and self.refl:
                self._decode(name, t, c, raw, self.refl[1][0], dec, self.refl[3])
            elif self.scl:
                self._decode(name, t, c, raw, self.scl[1][0], dec, self.scl[2])
            self._convert(is_refl, dec, raw_ok=raw is not None, a=a, b=b, t=t, o=o)
            if keep:
                self._keep(name, t, c, dec, raw is not None)

    def _spare_chunk(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A decoded-chunk buffer: one whose rows were all read (memory already touched), or
        a new one."""
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.shape == shape and buf.dtype == dtype:
                    return self._free.pop(i)
        return np.empty(shape, dtype)

    def _keep(self, name: str, t: int, c: int, dec: np.ndarray, stored: bool) -> None:
        """Keep decoded chunk ``(name, t, c)`` for the next read (one row block at a time);
        ``stored``: it was read from the store (False: never written, all fill values)."""
        with self._lock:
            if any(k[2] != c for k in self._partial):
                self._partial.clear()  # another row block: the reader moved on
                self._free.clear()
            self._partial[(name, t, c)] = (dec, stored)

    def _convert(
        self, is_refl: bool, dec: np.ndarray, *, raw_ok: bool, a: int, b: int, t: int, o: Any
    ) -> None:
        """Rows ``a:b`` of a decoded chunk into the float32 block ``o``: the DN through the
        predictor and the scaling (fill values are plain), SCL classes as floats."""
        if is_refl and self.refl:
            delta = self.refl[1][1] and raw_ok
            _dn_kernel()(dec, a, b, delta, self.sc[t], self.of[t], self.refl_pos, o)
        else:
            _classes(dec[a:b], o[self.scl_pos])

    def _decode(
        self, name: str, t: int, c: int, raw: Any, dec: Any, dst: np.ndarray, fill: int
    ) -> None:
        if raw is None:
            dst[...] = fill
            return
        try:
            dec(raw, dst)
        except Exception as exc:  # noqa: BLE001 - any codec failure is this one error
            raise CorruptDataError(
                f"Store {self.where}: array {name!r} cannot be decoded at chunk (time {t}, "
                f"row block {c}) ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}): "
                f"the stored chunk is corrupt or truncated. {_FIX}"
            ) from exc


def lazy_rows(
    fs: Any,
    root: str,
    where: str,
    arrays: dict[str, Any],
    names: list[str],
    refl: list[str],
    sc: np.ndarray,
    of: np.ndarray,
) -> Any:
    """The decoded cube of a DN store as :meth:`DecodedRows.lazy` data, or None when its
    arrays are not laid out as :mod:`geoxai.io.cube_codec` writes them (then Zarr reads them).

    Args:
        fs: the store's fsspec filesystem; ``root``: its path there; ``where``: its name in
            messages.
        arrays: the store's Zarr arrays by name (``reflectance``, ``SCL``; None if absent).
        names: decoded band order; ``refl``: its reflectance bands (stored order).
        sc: ``(time, len(refl))`` float32 scale; ``of``: offset.
    """
    want = ([CUBE] if refl else []) + (["SCL"] if "SCL" in names else [])
    found: dict[str, tuple[Any, tuple[Decoder, bool]]] = {}
    for name in want:
        arr = arrays.get(name)
        if not isinstance(arr, zarr.Array):
            return None  # the Zarr path names what is wrong
        dec = chunk_decoder(arr.metadata.to_dict(), np.dtype(arr.dtype))
        full = (1, *((len(refl),) if name == CUBE else ()), arr.chunks[-2], arr.shape[-1])
        if dec is None or tuple(arr.chunks) != full or (dec[1] and name != CUBE):
            return None
        found[name] = (arr, dec)
    first = found[want[0]][0]
    rows = int(first.chunks[-2])
    if any(a.chunks[-2] != rows or a.shape[-2:] != first.shape[-2:] for a, _ in found.values()):
        return None
    shape = (int(first.shape[0]), int(first.shape[-2]), int(first.shape[-1]))
    fill = {k: int(np.asarray(a.fill_value)) for k, (a, _) in found.items()}
    reader = DecodedRows(
        fs,
        root,
        where,
        names,
        (CUBE, found[CUBE][1], refl, fill[CUBE]) if refl else None,
        ("SCL", found["SCL"][1], fill["SCL"]) if "SCL" in found else None,
        sc,
        of,
        shape,
        rows,
    )
    return reader.lazy()


CUBE = "reflectance"
"""The DN array's name (:data:`geoxai.io.cube_codec.CUBE_NAME`, which imports this module)."""


def lazy_array(rows: Any) -> Any:
    """An array-like read by row blocks (``shape``, ``dtype``, and ``__getitem__`` of a tuple of
    integers and increasing slices: :class:`DecodedRows`, or a stage computed per row block
    such as :class:`geoxai.temporal.superres.SuperresolvedRows`) as xarray's lazily indexed
    data: ``xr.DataArray(lazy_array(rows), dims=...)`` reads only the rows a caller slices, when
    ``.values`` is asked, with no dask graph in between."""
    return indexing.LazilyIndexedArray(_Backend(rows))


class _Backend(BackendArray):  # type: ignore[misc]
    def __init__(self, rows: Any) -> None:
        self.rows, self.shape, self.dtype = rows, rows.shape, rows.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self.rows.__getitem__
        )


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it), at least 1."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(cpus) if cpus else os.cpu_count() or 1)


def _split(chunks: range, n: int) -> list[range]:
    """``chunks`` in at most ``n`` contiguous runs of near-equal length."""
    n = max(1, min(n, len(chunks)))
    edges = [chunks.start + (len(chunks) * i) // n for i in range(n + 1)]
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _dn_rows(z, r0, r1, delta, sc, of, pos, out):  # type: ignore[no-untyped-def]
    """``out[pos[b], r - r0] = float32(DN) * sc[b] + of[b]`` (two float32 roundings, as the
    build; NaN at DN 0) for rows ``r0:r1`` of ``z`` ``(B, rows, X)`` uint16, the DN themselves or
    (``delta``) their :func:`zigzag_delta` differences (along x), undone on the way: one pass."""
    nan = np.float32(np.nan)
    for b in range(z.shape[0]):
        s = sc[b]
        o = of[b]
        p = pos[b]
        for r in range(r0, r1):
            acc = 0
            for x in range(z.shape[2]):
                v = np.int64(z[b, r, x])
                if delta:
                    acc = (acc + ((v >> 1) ^ (-(v & 1) & 0xFFFF))) & 0xFFFF
                    v = acc
                out[p, r - r0, x] = nan if v == 0 else np.float32(v) * s + o


def _dn_encode(r, sc, of, out):  # type: ignore[no-untyped-def]
    """``out = rint((float64(r) - of) / sc)`` as uint16 (0 at NaN) for ``r`` ``(t, b, y, x)``
    float32 and ``sc``/``of`` ``(t, b)`` float32, checked to decode back to ``r`` bit for bit
    (``float32(DN) * sc + of``, two float32 roundings; DN 0 is nodata and not checked).
    Returns ``(outside the uint16 range, not a whole DN, first such value)``: one pass, no
    temporaries (the encoder's inverse of :func:`_dn_rows`)."""
    n_range = 0
    n_bad = 0
    first = np.float32(0.0)
    for t in range(r.shape[0]):
        for b in range(r.shape[1]):
            s = sc[t, b]
            o = of[t, b]
            s64 = np.float64(s)
            o64 = np.float64(o)
            for y in range(r.shape[2]):
                for x in range(r.shape[3]):
                    v = r[t, b, y, x]
                    if np.isnan(v):
                        out[t, b, y, x] = 0
                        continue
                    d = np.rint((np.float64(v) - o64) / s64)
                    if d < 0.0 or d > 65535.0:
                        if n_range + n_bad == 0:
                            first = v
                        n_range += 1
                        out[t, b, y, x] = 0
                        continue
                    u = np.uint16(d)
                    out[t, b, y, x] = u
                    if u != 0 and np.float32(u) * s + o != v:
                        if n_range + n_bad == 0:
                            first = v
                        n_bad += 1
    return n_range, n_bad, first


def _delta_shuffle(a, fill, out):  # type: ignore[no-untyped-def]
    """``out`` (uint8, ``2 * a.size``) = byte shuffle (element size 2) of the little-endian
    bytes of :func:`zigzag_delta` of ``a`` ``(B, rows, X)`` uint16 (any strides): low bytes
    first, then high bytes, in C order. Returns whether ``a`` holds a value other than
    ``fill``. One pass: what the codecs ``zigzag_delta``, ``bytes``, ``shuffle`` make."""
    nb, nr, nx = a.shape
    n = nb * nr * nx
    other = False
    k = 0
    for b in range(nb):
        for r in range(nr):
            row = a[b, r]
            lo = out[k : k + nx]
            hi = out[n + k : n + k + nx]
            for x in range(nx):
                v = np.int32(row[x])
                p = np.int32(row[x - 1]) if x > 0 else np.int32(0)
                d = (v - p) & 0xFFFF
                z = ((d << 1) & 0xFFFF) ^ (-(d >> 15) & 0xFFFF)
                lo[x] = np.uint8(z & 0xFF)
                hi[x] = np.uint8(z >> 8)
            if not other:
                for x in range(nx):
                    if row[x] != fill:
                        other = True
                        break
            k += nx
    return other


_KERNEL: dict[str, Any] = {}


def _dn_kernel() -> Any:
    """:func:`_dn_rows` compiled by numba (cached on disk, GIL released), on first use."""
    return _compiled("rows", _dn_rows)


def dn_encoder() -> Any:
    """:func:`_dn_encode` compiled by numba (cached on disk, GIL released), on first use."""
    return _compiled("encode", _dn_encode)


def delta_shuffle() -> Any:
    """:func:`_delta_shuffle` compiled by numba (cached on disk, GIL released), on first use."""
    return _compiled("delta_shuffle", _delta_shuffle)


def _compiled(key: str, fn: Any) -> Any:
    if key not in _KERNEL:
        from numba import njit  # lazy: numba's JIT only when a DN cube is read or written

        _KERNEL[key] = njit(cache=True, nogil=True)(fn)
    return _KERNEL[key]


def _classes(s: np.ndarray, o: np.ndarray) -> None:
    o[...] = s
    np.putmask(o, s == 255, np.float32(np.nan))
