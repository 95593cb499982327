"""How a raw tile cube is stored: Sentinel-2 DN as uint16, SCL as uint8, row-block chunks.

:func:`encode_cube` turns the float32 reflectance cube of :func:`geoxai.io.cube.build_cube` into
the dataset :func:`geoxai.io.store.write_dataset` commits; :func:`decode_cube` turns the stored
dataset back into that cube, lazily, bit for bit:

* ``reflectance`` ``(time, band, y, x)`` **uint16 DN** of the reflectance bands; ``0`` = nodata
  (Sentinel-2 L2A reserves DN 0 for no data; NaN of the float cube). Its scaling is per
  acquisition and band (the -0.1 offset of baseline >= 04.00 starts in 2022), so it is stored as
  two coordinates ``dn_scale``/``dn_offset`` ``(time, band)`` float32 rather than scalar CF
  ``scale_factor``/``add_offset`` attributes; the array's attrs name them
  (``scale: "dn_scale"``, ``offset: "dn_offset"``, ``nodata: 0``, ``units: "DN"``; not the CF
  names, which xarray would try to apply as scalars).
  Decoded reflectance = ``float32(DN) * dn_scale + dn_offset`` in float32, the very operations
  :func:`~geoxai.io.cube.build_cube` applies, so the decoded cube equals the float32 cube exactly.
  GDAL warps 20 m bands in the file's integer type, so every value is a whole DN; the encoder
  checks this per chunk (:class:`NotWholeDNError` otherwise, and the cube is stored as float32).
* ``SCL`` ``(time, y, x)`` **uint8** classes, ``255`` = nodata.
* group attrs ``cube_encoding`` (:data:`DN_ENCODING`, or :data:`FLOAT_ENCODING` for a cube kept
  as float32) and ``cube_bands`` (band order of the decoded cube).
* Chunks ``(1, bands, ROWS, x)``: one acquisition, every band, :data:`ROWS` rows. A reader that
  slices rows reads only the chunks of those rows; the build holds one acquisition at a time.
* Codec (measured in ``benchmarks/bench_cube.py``; table in the README): the DN go through
  :class:`~geoxai.io.cube_rows.ZigzagDelta` (differences along x, zigzag-coded: the COGs' own
  horizontal predictor; -10 to -12 % bytes), then byte shuffle + zstd level 3 with zstd's
  content checksum, so bit rot is a decode error, not silent noise. Stores written before the
  predictor (shuffle + zstd only) read the same.
* Reading: :class:`~geoxai.io.cube_rows.DecodedRows` decodes whole row blocks (every date)
  straight into float32 (no Zarr chunk machinery on that path).

A store without ``cube_encoding`` is a float32 cube written before this module (still read).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import xarray as xr

from geoxai.errors import CorruptDataError, InvalidInputError
from geoxai.geo.bands import SCL
from geoxai.io.cube_rows import ZigzagDelta, dn_encoder

__all__ = [
    "CUBE_NAME",
    "DN_ENCODING",
    "FLOAT_ENCODING",
    "ROWS",
    "DN_SCALE",
    "DN_OFFSET",
    "NotWholeDNError",
    "CheckedChunks",
    "encode_cube",
    "decode_cube",
    "cube_codecs",
    "LAYER_ENCODING",
    "encode_layer",
    "decode_layer",
    "quiet_codecs",
]

DN_ENCODING = "geoxai-cube-dn/1"
"""``cube_encoding`` of a cube stored as uint16 DN + uint8 SCL."""

FLOAT_ENCODING = "geoxai-cube-float32/1"
"""``cube_encoding`` of a cube stored as float32 reflectance (values that are not whole DN)."""

ENCODINGS = (DN_ENCODING, FLOAT_ENCODING)

ROWS = 128
"""Rows per stored chunk."""

DN_SCALE = "dn_scale"
DN_OFFSET = "dn_offset"
DN_NODATA = 0
SCL_NODATA = 255
ZSTD_LEVEL = 3

CUBE_NAME = "reflectance"
"""Name of the raw cube DataArray (and of its array in the store)."""

_NAME = CUBE_NAME


class NotWholeDNError(InvalidInputError):
    """A reflectance value of the cube is not ``DN * scale + offset`` for a whole DN 1..65535."""


@contextmanager
def quiet_codecs() -> Iterator[None]:
    """Silence numcodecs' notice that its zarr-3 codecs (Shuffle) are outside the Zarr spec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NUMCODECS_NOTICE)
        yield


_NUMCODECS_NOTICE = ".*Numcodecs codecs are not in the Zarr version 3 specification.*"
# Chunks are decoded on dask's worker threads, outside any catch_warnings block: the notice
# (one per codec instance, about the byte-shuffle codec geoxai itself chose) is filtered here.
warnings.filterwarnings("ignore", message=_NUMCODECS_NOTICE)


def cube_codecs(itemsize: int) -> list[Any]:
    """The compressors of a stored cube array: byte shuffle + zstd (level 3, checksum); the
    uint16 DN also have the :class:`~geoxai.io.cube_rows.ZigzagDelta` filter (``encode_cube``)."""
    from zarr.codecs import ZstdCodec  # lazy: zarr's codecs only when a store is written
    from zarr.codecs.numcodecs import Shuffle  # lazy: as above

    with quiet_codecs():
        shuffle = [Shuffle(elementsize=itemsize)] if itemsize > 1 else []
        return [*shuffle, ZstdCodec(level=ZSTD_LEVEL, checksum=True)]


LAYER_ENCODING = "geoxai-layer/1"
"""``layer_encoding`` (group attribute) of a layer stored beside a cube (S1 steps, terrain)."""

LAYER_UNITS = ("dB", "m", "degrees")
"""Units of the physical arrays of a layer (S1 backscatter, DEM, slope): stored as float32."""


def encode_layer(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The dataset to commit for a layer beside a cube (S1 steps, terrain), and its encoding.

    Every data variable keeps its dtype: the physical arrays (:data:`LAYER_UNITS`: S1
    backscatter per-step median dB, DEM metres, slope degrees) are float32 because their
    sources are floats (RTC linear power, GLO-30 metres, warped bilinearly) and the medians and
    gap fills are not on any integer lattice, so no integer form is lossless (measured in
    ``benchmarks/bench_layers.py``: int16 at 0.01 dB saves bytes but moves values by up to
    0.005 dB); flags (uint8), counts (int16) and masks (bool) are integers already. Chunks are
    row blocks as the cube's: ``(1, band, ROWS, x)`` for ``(time, band, y, x)`` arrays,
    ``(ROWS, x)`` for ``(y, x)``; codec :func:`cube_codecs` (byte shuffle + zstd 3 with its
    checksum). The group attribute ``layer_encoding`` = :data:`LAYER_ENCODING`.
    """
    out = ds.copy()
    out.attrs = {**ds.attrs, "layer_encoding": LAYER_ENCODING}
    enc: dict[str, dict[str, Any]] = {}
    for k, v in ds.data_vars.items():
        e: dict[str, Any] = {"compressors": cube_codecs(v.dtype.itemsize)}
        if v.dims[-2:] == ("y", "x"):
            lead = tuple(
                1 if d == "time" else n for d, n in zip(v.dims[:-2], v.shape[:-2], strict=True)
            )
            e["chunks"] = (*lead, min(ROWS, v.shape[-2]), v.shape[-1])
        enc[str(k)] = e
    return out, enc


def decode_layer(ds: xr.Dataset, where: str) -> xr.Dataset:
    """Check a stored layer (as opened; nothing is read) against :func:`encode_layer`'s layout.

    A layer written before ``layer_encoding`` existed reads as it is (its arrays are the same).

    Raises:
        CorruptDataError: an unknown ``layer_encoding``, or a physical array
            (:data:`LAYER_UNITS`) stored as integers without ``scale_factor``/``add_offset``
            (its values cannot be turned into dB/m/degrees); the message names the store, the
            array and the fix.
    """
    fix = "delete the store and rerun the cube stage (`geoxai run` rebuilds it)"
    enc = ds.attrs.get("layer_encoding")
    if enc is not None and enc != LAYER_ENCODING:
        raise CorruptDataError(
            f"Store {where}: arrays {sorted(map(str, ds.data_vars))} have layer_encoding "
            f"{enc!r}, which this version of geoxai does not know (it reads "
            f"{[LAYER_ENCODING]}); {fix}, or read it with the geoxai version that wrote it."
        )
    for k, v in ds.data_vars.items():
        if v.attrs.get("units") in LAYER_UNITS and v.dtype.kind not in "f":
            raise CorruptDataError(
                f"Store {where}: array {str(k)!r} ({v.attrs['units']}) is stored as {v.dtype} "
                "without scale_factor/add_offset attributes; its values cannot be turned into "
                f"{v.attrs['units']}. {fix[0].upper()}{fix[1:]}."
            )
    return ds


def _scaling(cube: xr.DataArray, refl: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, offset)`` ``(time, band)`` float32 of the reflectance bands, or None."""
    if DN_SCALE not in cube.coords or DN_OFFSET not in cube.coords:
        return None
    sc = np.asarray(cube[DN_SCALE].sel(band=refl).values, np.float32)
    of = np.asarray(cube[DN_OFFSET].sel(band=refl).values, np.float32)
    if not (np.isfinite(sc).all() and np.isfinite(of).all() and (sc != 0).all()):
        return None  # e.g. a mosaicked day whose items are scaled differently
    return sc, of


def encode_cube(
    cube: xr.DataArray, *, dn: bool = True
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The dataset to commit for the raw cube ``cube`` (see the module docstring).

    Args:
        cube: :func:`geoxai.io.cube.build_cube`'s lazy ``(time, band, y, x)`` float32
            reflectance, with its ``dn_scale``/``dn_offset`` ``(time, band)`` coordinates.
        dn: store uint16 DN when the scaling is known; False stores float32 reflectance.

    Returns:
        ``(dataset, encoding)``: the lazy Dataset (nothing is read until it is written) and
        the Zarr encoding of its arrays (chunks, compressors) for
        :func:`geoxai.io.store.write_dataset`'s ``encoding``.

    Raises:
        NotWholeDNError: while it is written, from a chunk holding a value that is not a whole
            DN (the caller then stores the cube with ``dn=False``).
    """
    import dask.array as dsa  # lazy: dask only when a cube is encoded

    names = [str(b) for b in cube["band"].values]
    refl = [b for b in names if b != SCL]
    scaling = _scaling(cube, refl) if dn else None
    nx = cube.sizes["x"]
    coords = {
        k: v
        for k, v in cube.coords.items()
        if k not in ("band", DN_SCALE, DN_OFFSET) and "band" not in v.dims
    }
    attrs = dict(cube.attrs)
    if scaling is None:
        ds = xr.Dataset(
            {_NAME: cube.drop_vars([DN_SCALE, DN_OFFSET], errors="ignore")}, attrs=attrs
        )
        ds[_NAME].encoding = {
            "chunks": (1, len(names), ROWS, nx),
            "compressors": cube_codecs(4),
        }
        ds.attrs.update(cube_encoding=FLOAT_ENCODING, cube_bands=names)
        return _rechunk(ds)
    sc, of = scaling
    data: dict[str, Any] = {}
    if refl:
        part = cube.sel(band=refl).data
        sc4 = dsa.from_array(sc[:, :, None, None], chunks=(part.chunks[0], part.chunks[1], 1, 1))
        of4 = dsa.from_array(of[:, :, None, None], chunks=(part.chunks[0], part.chunks[1], 1, 1))
        dn_arr = dsa.map_blocks(_to_dn, part, sc4, of4, dtype=np.uint16)
        data[_NAME] = xr.Variable(
            ("time", "band", "y", "x"),
            dn_arr,
            attrs={"scale": DN_SCALE, "offset": DN_OFFSET, "nodata": DN_NODATA, "units": "DN"},
            encoding={
                "chunks": (1, len(refl), ROWS, nx),
                "filters": [ZigzagDelta()],
                "compressors": cube_codecs(2),
            },
        )
    if SCL in names:
        scl = dsa.map_blocks(_to_class, cube.sel(band=SCL).data, dtype=np.uint8)
        data[SCL] = xr.Variable(
            ("time", "y", "x"),
            scl,
            attrs={"nodata": SCL_NODATA},
            encoding={"chunks": (1, ROWS, nx), "compressors": cube_codecs(1)},
        )
    ds = xr.Dataset(data, coords={**coords, "band": refl}, attrs=attrs)
    ds = ds.assign_coords({DN_SCALE: (("time", "band"), sc), DN_OFFSET: (("time", "band"), of)})
    ds.attrs.update(cube_encoding=DN_ENCODING, cube_bands=names)
    return _rechunk(ds)


def _rechunk(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """Dask chunks = the stored chunks (Zarr chunks follow them); the encoding apart."""
    encoding = {}
    for name in list(ds.data_vars):
        enc = dict(ds[name].encoding)
        ds[name] = ds[name].chunk(dict(zip(ds[name].dims, enc["chunks"], strict=True)))
        ds[name].encoding = {}
        encoding[str(name)] = enc
    return ds, encoding


def _to_dn(r: np.ndarray, sc: np.ndarray, of: np.ndarray) -> np.ndarray:
    """One chunk ``(t, b, y, x)`` of float32 reflectance -> uint16 DN, checked to decode back
    bit for bit (:func:`~geoxai.io.cube_rows.dn_encoder`: one numba pass)."""
    out = np.empty(r.shape, np.uint16)
    n_range, n_bad, first = dn_encoder()(
        np.ascontiguousarray(r, np.float32),
        np.ascontiguousarray(sc.reshape(sc.shape[:2]), np.float32),
        np.ascontiguousarray(of.reshape(of.shape[:2]), np.float32),
        out,
    )
    if n_range:
        raise NotWholeDNError(
            "The cube holds reflectance outside the uint16 DN range of its scaling; it is "
            "stored as float32 instead."
        )
    if n_bad:
        raise NotWholeDNError(
            f"{int(n_bad)} values of the cube are not whole DN of their scaling (e.g. "
            f"{float(first)!r}); it is stored as float32 instead."
        )
    return out


def _to_class(s: np.ndarray) -> np.ndarray:
    nan = np.isnan(s)
    v = np.where(nan, SCL_NODATA, s)
    if ((v != np.rint(v)) | (v < 0) | (v > 254))[~nan].any():
        raise NotWholeDNError("The cube's SCL holds values that are not classes 0..254.")
    return v.astype(np.uint8)


def _from_dn(dn: np.ndarray, sc: np.ndarray, of: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:] = float32(dn) * sc + of`` (two float32 roundings, as the build), NaN at nodata.

    One date at a time, so the operands stay in cache."""
    for t in range(dn.shape[0]):
        o, d = out[t], dn[t]
        o[...] = d
        o *= sc[t]
        o += of[t]
        np.putmask(o, d == DN_NODATA, np.float32(np.nan))
    return out


def _from_class(s: np.ndarray, out: np.ndarray) -> np.ndarray:
    out[...] = s
    np.putmask(out, s == SCL_NODATA, np.float32(np.nan))
    return out


def _from_both(dn: np.ndarray, scl: np.ndarray, sc: np.ndarray, of: np.ndarray) -> np.ndarray:
    """One decoded block ``(t, B + 1, rows, x)``: reflectance bands, then SCL, no concat."""
    nb = dn.shape[1]
    out = np.empty((dn.shape[0], nb + 1, *dn.shape[2:]), np.float32)
    _from_dn(dn, sc, of, out[:, :nb])
    _from_class(scl[:, 0], out[:, nb])
    return out


def _dn_block(dn: np.ndarray, sc: np.ndarray, of: np.ndarray) -> np.ndarray:
    return _from_dn(dn, sc, of, np.empty(dn.shape, np.float32))


def _class_block(s: np.ndarray) -> np.ndarray:
    return _from_class(s[:, None], np.empty((s.shape[0], 1, *s.shape[1:]), np.float32))


def _decoded(parts: list[Any], dsa: Any) -> Any:
    """The float32 dask array of the stored parts: ``(dn, scale, offset)`` and/or SCL."""
    refl = parts[0] if parts and isinstance(parts[0], tuple) else None
    scl = parts[-1] if parts and not isinstance(parts[-1], tuple) else None
    if refl is not None and scl is not None:
        dn, sc4, of4 = refl
        if dn.numblocks[1] == 1 and (scl.chunks[0], *scl.chunks[1:]) == (
            dn.chunks[0],
            *dn.chunks[2:],
        ):
            return dsa.map_blocks(
                _from_both,
                dn,
                scl[:, None],
                sc4,
                of4,
                dtype=np.float32,
                chunks=(dn.chunks[0], (dn.shape[1] + 1,), *dn.chunks[2:]),
            )
    out = []
    if refl is not None:
        out.append(
            dsa.map_blocks(
                _dn_block,
                *refl,
                dtype=np.float32,
            )
        )
    if scl is not None:
        out.append(
            dsa.map_blocks(
                _class_block,
                scl,
                dtype=np.float32,
                chunks=(scl.chunks[0], (1,), *scl.chunks[1:]),
                new_axis=1,
            )
        )
    return out[0] if len(out) == 1 else dsa.concatenate(out, axis=1)


def decode_cube(
    ds: xr.Dataset,
    where: str,
    checked: Callable[[str], Any],
    rows: Callable[[list[str], list[str], np.ndarray, np.ndarray], Any] | None = None,
) -> xr.DataArray:
    """The float32 reflectance cube of a stored cube dataset, lazily (see the module docstring).

    Args:
        ds: the stored dataset as opened (coordinates and attrs; its data is not read).
        where: the store, as messages name it.
        checked: ``checked(name)`` -> the dask array of stored variable ``name`` whose chunk
            reads raise typed errors (:func:`geoxai.io.store.read_cube` provides it).
        rows: ``rows(names, refl, scale, offset)`` -> the decoded float32 dask array of a DN
            cube (bands ``names``; ``scale``/``offset`` ``(time, len(refl))``) read by whole
            row blocks (:class:`~geoxai.io.cube_rows.DecodedRows`), or None when the store's
            codecs need Zarr (then ``checked`` is used).

    Returns:
        ``reflectance`` ``(time, band, y, x)`` float32, dask-backed with the stored row-block
        chunks, NaN = nodata; coords and attrs as :func:`~geoxai.io.cube.build_cube` made them.

    Raises:
        CorruptDataError: the encoding is unknown, or its scaling coordinates are missing or
            malformed (each naming the array and the fix).
    """
    import dask.array as dsa  # lazy: dask only when a cube is decoded

    enc = ds.attrs.get("cube_encoding")
    fix = "delete the store and rerun the cube stage (`geoxai run` rebuilds it)"
    if enc is None or enc == FLOAT_ENCODING:
        da = xr.DataArray(checked(_NAME), dims=ds[_NAME].dims, coords=ds[_NAME].coords, name=_NAME)
        return _finish(da, ds)
    if enc != DN_ENCODING:
        raise CorruptDataError(
            f"Store {where}: array {_NAME!r} has cube_encoding {enc!r}, which this version of "
            f"geoxai does not know (it reads {list(ENCODINGS)}); {fix}, or read it with the "
            "geoxai version that wrote it."
        )
    names = [str(b) for b in ds.attrs.get("cube_bands") or []]
    refl = [b for b in names if b != SCL]
    if not names:
        raise CorruptDataError(
            f"Store {where}: array {_NAME!r} of a {enc} cube has no band list (group attribute "
            f"cube_bands); the decoded band order is unknown. {fix[0].upper()}{fix[1:]}."
        )
    if refl and _NAME not in ds.data_vars or SCL in names and SCL not in ds.data_vars:
        raise CorruptDataError(
            f"Store {where}: a cube of bands {names} lacks its array "
            f"{_NAME if _NAME not in ds.data_vars else SCL!r}; {fix}."
        )
    sc = of = np.zeros((ds.sizes.get("time", 0), 0), np.float32)
    if refl:
        var = ds[_NAME]
        for key, coord in (("scale", DN_SCALE), ("offset", DN_OFFSET)):
            if var.attrs.get(key) != coord or coord not in ds.coords:
                raise CorruptDataError(
                    f"Store {where}: uint16 array {_NAME!r} has no {key} (expected attribute "
                    f"{key}={coord!r} naming a (time, band) coordinate); its DN cannot be turned "
                    f"into reflectance. {fix[0].upper()}{fix[1:]}."
                )
        stored = [str(b) for b in ds["band"].values] if "band" in ds.coords else []
        if stored != refl:
            raise CorruptDataError(
                f"Store {where}: array {_NAME!r} holds bands {stored}, its cube_bands say "
                f"{refl} (+ SCL); {fix}."
            )
        sc = np.asarray(ds[DN_SCALE].values, np.float32)
        of = np.asarray(ds[DN_OFFSET].values, np.float32)
        want = (var.sizes["time"], var.sizes["band"])
        if sc.shape != want or of.shape != want or not np.isfinite(sc).all():
            raise CorruptDataError(
                f"Store {where}: the scaling of array {_NAME!r} has shape {sc.shape} (or "
                f"non-finite values), expected finite {want}; {fix}."
            )
    data = rows(names, refl, sc, of) if rows is not None else None
    if data is None:
        parts: list[Any] = []
        if refl:
            dn = checked(_NAME)
            chunks = (dn.chunks[0], dn.chunks[1], 1, 1)
            sc4 = dsa.from_array(sc[:, :, None, None], chunks=chunks)
            of4 = dsa.from_array(of[:, :, None, None], chunks=chunks)
            parts.append((dn, sc4, of4))
        if SCL in names:
            parts.append(checked(SCL))
        data = _decoded(parts, dsa)
        order = [*refl, *([SCL] if SCL in names else [])]
        if order != names:
            data = data[:, [order.index(b) for b in names]]
    coords = {
        k: v
        for k, v in ds.coords.items()
        if k not in ("band", DN_SCALE, DN_OFFSET) and "band" not in v.dims
    }
    da = xr.DataArray(data, dims=("time", "band", "y", "x"), coords=coords, name=_NAME)
    return _finish(da.assign_coords(band=names), ds)


def _finish(da: xr.DataArray, ds: xr.Dataset) -> xr.DataArray:
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("cube_encoding", "cube_bands")}
    da.attrs = attrs
    return da


class CheckedChunks:
    """A Zarr array whose reads raise :class:`CorruptDataError` naming the store, the array
    and the chunk instead of the codec's bare error (e.g. zstd's checksum), and check that
    what is decoded has the shape asked for."""

    def __init__(self, arr: Any, where: str, name: str) -> None:
        self.arr, self.where, self.name = arr, where, name
        self.shape, self.dtype, self.ndim = tuple(arr.shape), np.dtype(arr.dtype), arr.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            out = np.asarray(self.arr[key])  # on dask's threads: no catch_warnings here
        except Exception as exc:  # noqa: BLE001 - any codec/store failure is this one error
            raise CorruptDataError(
                f"Store {self.where}: array {self.name!r} cannot be decoded at {_fmt(key)} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}): a stored chunk "
                "is corrupt or truncated. Delete the store and rerun the stage that writes it "
                "(a run's cube stage verifies a cube it reuses and rebuilds a corrupt one)."
            ) from exc
        if isinstance(key, tuple) and all(isinstance(k, slice) for k in key):
            want = tuple(len(range(*k.indices(n))) for k, n in zip(key, self.shape, strict=False))
            if out.shape != want + self.shape[len(want) :]:
                raise CorruptDataError(
                    f"Store {self.where}: array {self.name!r} decoded to shape {out.shape} at "
                    f"{_fmt(key)}, expected {want}; the stored chunk is corrupt. Delete the "
                    "store and rerun the stage that writes it."
                )
        return out


def _fmt(key: Any) -> str:
    if isinstance(key, tuple):
        return (
            "["
            + ", ".join(f"{k.start or 0}:{k.stop}" if isinstance(k, slice) else str(k) for k in key)
            + "]"
        )
    return str(key)
