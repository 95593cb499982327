"""Datasets and JSON records at a URL (local path or ``s3://``), committed by a marker written last.

Every stage of geoxai writes through this module, so a half-written output never looks done.

Commit protocol (no temporary key, no rename: renames are not atomic on S3):

1. If ``<url>`` already holds a *committed* store, refuse unless ``overwrite=True``; then the
   marker is deleted first (from that instant the old store reads as incomplete), then the data.
   Leftovers of an *uncommitted* store (a write that failed or was killed) are always replaced:
   they are not outputs.
2. The dataset is written as Zarr v3 (``xarray.Dataset.to_zarr(zarr_format=3)``).
3. The written store is re-opened and checked against the source (variables, shapes, dtypes).
4. The marker ``<url>/_geoxai_commit.json`` is written last, in one PUT (S3) or one atomic
   ``os.replace`` (local). It records per-array shape, dtype, chunk shape, number of stored
   chunk objects and their bytes, the SHA-256 of every stored chunk object (``sha256``:
   key under the array -> hex digest), the code version and the time.

:func:`verify` re-reads every chunk object of a committed store and checks it against the
marker: a flipped bit, a truncated or missing chunk is a :class:`~geoxai.errors.CorruptDataError`
naming the chunk and the fix. Reading a chunk that does not decode (e.g. zstd's own checksum
fails) through :func:`read_cube` is the same typed error, never a bare codec ``RuntimeError``.

Readers (:func:`read_dataset`, :func:`read_cube`) refuse a store without a valid marker with
:class:`~geoxai.errors.IncompleteOutputError`. A failed write is cleaned up on a best-effort
basis; if the process dies instead, the missing marker is what makes the leftovers harmless.

S3 access goes through s3fs/fsspec, configured by the standard variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``) or an
explicit ``storage_options`` dict (s3fs keyword arguments, e.g. ``endpoint_url``, ``key``,
``secret``, ``client_kwargs``). Secrets never appear in messages or logs: URLs are described by
bucket/prefix and endpoint only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import xarray as xr

from geoxai.errors import (
    CorruptDataError,
    IncompleteOutputError,
    InvalidInputError,
    StoreError,
    look_up_option,
)
from geoxai.io.checksums import check_digests, chunk_digests
from geoxai.io.cube_codec import (
    CUBE_NAME,
    CheckedChunks,
    decode_cube,
    decode_layer,
    quiet_codecs,
)
from geoxai.io.cube_rows import lazy_rows
from geoxai.io.json_safe import _clean_attrs, json_safe
from geoxai.io.location import URL, StoreLocation, _as_location, storage_errors
from geoxai.io.objects import _put_json, put_atomic, read_json, upload_file, write_json
from geoxai.provenance import code_version

__all__ = [
    "COMMIT_MARKER",
    "STORE_FORMAT",
    "json_safe",
    "write_dataset",
    "read_dataset",
    "load_dataset",
    "read_cube",
    "read_layer",
    "read_commit",
    "verify",
    "is_committed",
    "exists",
    "delete",
    "write_json",
    "read_json",
    "put_atomic",
    "upload_file",
]

COMMIT_MARKER = "_geoxai_commit.json"
"""Name of the commit marker inside a store; written last."""


STORE_FORMAT = "geoxai-store/1"
"""Value of the marker's ``format`` field."""


def _prepare(obj: xr.Dataset | xr.DataArray, attrs: Mapping[str, Any] | None) -> xr.Dataset:
    """A Zarr-v3-ready dataset: JSON-safe attrs, object/str coords as variable-length strings."""
    if isinstance(obj, xr.DataArray):
        if obj.name is None:
            raise InvalidInputError(
                "write_dataset got an unnamed DataArray; give it a name (da.rename('x')) so "
                "the store knows what to call the array."
            )
        ds = obj.to_dataset(promote_attrs=True)
        ds[obj.name].attrs = _clean_attrs(obj.attrs)
    elif isinstance(obj, xr.Dataset):
        ds = obj.copy()
    else:
        raise InvalidInputError(
            f"write_dataset needs an xarray Dataset or DataArray, got {type(obj).__name__}."
        )
    ds.attrs = _clean_attrs({**ds.attrs, **dict(attrs or {})})
    updates: dict[Any, xr.Variable] = {}
    for name, var in ds.variables.items():
        var.attrs = _clean_attrs(var.attrs)
        var.encoding = {}  # stale Zarr/NetCDF encodings (chunks, codecs) must not leak in
        if var.dtype.kind in "US" or (var.dtype.kind == "O" and _all_str(var.values)):
            # variable-length UTF-8 strings: the Zarr v3 string type (fixed-width is unstable)
            updates[name] = var.copy(data=np.asarray(var.values).astype(object))
        elif var.dtype.kind == "O":
            raise InvalidInputError(
                f"Variable {name!r} holds Python objects that are not strings; Zarr cannot store "
                "them. Drop it or convert it to a numeric or string dtype before writing."
            )
    ds = ds.assign_coords({k: v for k, v in updates.items() if k in ds.coords})
    for k, v in updates.items():
        if k in ds.data_vars:
            ds[k] = v
    return ds


def _all_str(values: np.ndarray) -> bool:
    return all(isinstance(v, str) for v in np.asarray(values).ravel())


def write_dataset(
    obj: xr.Dataset | xr.DataArray,
    url: URL,
    *,
    storage_options: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
    write_chunks: Callable[[Any, str], None] | None = None,
) -> dict[str, Any]:
    """Write ``obj`` as Zarr v3 at ``url`` and commit it (see the module docstring).

    Args:
        obj: a Dataset, or a named DataArray (written as a one-variable dataset). Dask-backed
            data is computed chunk by chunk while writing; Zarr chunks follow the dask chunks.
        url: local path or ``s3://bucket/prefix``.
        storage_options: s3fs options; default from the AWS_* environment variables.
        attrs: extra group attributes (provenance, config); made JSON-safe.
        overwrite: replace a committed store at ``url``; otherwise that is an error.
        extra: JSON-safe values recorded in the commit marker under ``"extra"``.
        encoding: per array, Zarr encoding (``chunks``, ``compressors``, ``filters``) as
            ``to_zarr`` takes it; encodings the arrays carry are dropped (they may be stale).
        write_chunks: ``write_chunks(fs, path)`` writes the chunk objects of the dask-backed
            variables itself (under ``path`` on the fsspec filesystem ``fs``, as Zarr would
            store them), after ``to_zarr`` wrote the metadata and the other variables; their
            dask graphs are then never computed. The store is checked and committed the same.

    Returns:
        The commit marker (a dict): ``url``, ``format``, ``code_version``, ``written_at``,
        ``variables`` (per array ``shape``, ``dtype``, ``chunks``, ``objects``, ``bytes``),
        ``nbytes`` (stored bytes in all), ``extra``.

    Raises:
        StoreError: a committed store exists and ``overwrite`` is False; or the target cannot
            be written (unreachable endpoint, bad credentials, missing bucket).
        GeoXAIError: whatever computing the data raised (e.g. ``CorruptDataError`` for an
            unreadable input), after removing the partial write.
    """
    loc = _as_location(url, storage_options)
    ds = _prepare(obj, attrs)
    fs = None
    with storage_errors(loc, "open"):
        fs = loc.filesystem()
        fs.invalidate_cache()
        marker = loc.child(COMMIT_MARKER)
        if fs.exists(marker.path):
            if not overwrite:
                raise StoreError(
                    f"A committed store already exists at {loc.describe()}; pass overwrite=True "
                    "(CLI: --overwrite) to replace it, or delete it first."
                )
            fs.rm(marker.path)  # from here on the old store reads as incomplete
        if fs.exists(loc.path):
            fs.rm(loc.path, recursive=True)
            fs.invalidate_cache()
    store, so = loc.zarr_target()
    try:
        with storage_errors(loc, "write"):
            with quiet_codecs():
                how: dict[str, Any] = {"compute": write_chunks is None}
                ds.to_zarr(
                    store,
                    mode="w",
                    zarr_format=3,
                    consolidated=False,
                    storage_options=so,
                    encoding={k: dict(v) for k, v in (encoding or {}).items()},
                    **how,
                )
            if write_chunks is not None:
                fs.invalidate_cache()
                write_chunks(fs, loc.path)
    except BaseException:
        _best_effort_rm(fs, loc)
        raise
    with storage_errors(loc, "verify"):
        fs.invalidate_cache()
        with _quiet_marker(), quiet_codecs():
            written = xr.open_zarr(store, consolidated=False, storage_options=so, zarr_format=3)
        variables: dict[str, dict[str, Any]] = {}
        for name, var in ds.variables.items():
            if name not in written.variables:
                raise IncompleteOutputError(
                    f"Store {loc.describe()}: array {name!r} is missing after the write; the "
                    "store was not committed. Rerun the write."
                )
            got = written.variables[name]
            if tuple(got.shape) != tuple(var.shape):
                raise IncompleteOutputError(
                    f"Store {loc.describe()}: array {name!r} has shape {got.shape} after the "
                    f"write, expected {var.shape}; not committed. Rerun the write."
                )
            digests, nbytes = chunk_digests(fs, loc.child(str(name)).path)
            chunks = got.encoding.get("chunks") or got.encoding.get("preferred_chunks")
            variables[str(name)] = {
                "dims": list(var.dims),
                "shape": list(var.shape),
                "dtype": _dtype_name(var.dtype),
                "chunks": list(chunks) if isinstance(chunks, tuple | list) else None,
                "objects": len(digests),
                "bytes": nbytes,
                "sha256": digests,
            }

    record = {
        "format": STORE_FORMAT,
        "url": loc.url,
        "code_version": code_version(),
        "written_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "variables": variables,
        "nbytes": int(sum(v["bytes"] for v in variables.values())),
        "extra": _clean_attrs(dict(extra or {})),
    }
    _put_json(loc.child(COMMIT_MARKER), record, fs=fs)
    return record


@contextmanager
def _quiet_marker() -> Iterator[None]:
    """Silence zarr's warning that the commit marker is not part of the Zarr hierarchy."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{COMMIT_MARKER}.*not recognized")
        yield


def _dtype_name(dtype: np.dtype) -> str:
    return "str" if dtype.kind in "OUST" else np.dtype(dtype).name


def _best_effort_rm(fs: Any, loc: StoreLocation) -> None:
    if fs is None:
        return
    try:
        fs.invalidate_cache()
        if fs.exists(loc.path):
            fs.rm(loc.path, recursive=True)
    except Exception:  # noqa: BLE001 - cleanup must not hide the original error
        pass


def read_commit(url: URL, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The commit marker of the store at ``url``.

    Raises:
        IncompleteOutputError: there is no valid marker (never written, write failed or in
            flight, or the marker is corrupt). The message names the URL and says to rerun.
        StoreError: the location cannot be reached.
    """
    loc = _as_location(url, storage_options)
    marker = loc.child(COMMIT_MARKER)
    with storage_errors(loc, "read"):
        fs = loc.filesystem()
        fs.invalidate_cache()
        try:
            raw = fs.cat_file(marker.path)
        except FileNotFoundError:
            what = "holds data but was never committed" if fs.exists(loc.path) else "does not exist"
            raise IncompleteOutputError(
                f"Store {loc.describe()} {what} (no {COMMIT_MARKER}): its write failed, was "
                "killed or is still running. Rerun the stage that writes it."
            ) from None
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IncompleteOutputError(
            f"Store {loc.describe()}: commit marker is not valid JSON ({exc}); treat the store "
            "as incomplete and rerun the stage that writes it."
        ) from exc
    if not isinstance(record, dict) or record.get("format") != STORE_FORMAT:
        raise IncompleteOutputError(
            f"Store {loc.describe()}: commit marker has format "
            f"{record.get('format') if isinstance(record, dict) else type(record).__name__!r}, "
            f"expected {STORE_FORMAT!r}; rerun the stage that writes it."
        )
    return record


def is_committed(url: URL, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when ``url`` holds a store with a valid commit marker."""
    try:
        read_commit(url, storage_options=storage_options)
    except IncompleteOutputError:
        return False
    return True


def verify(url: URL, *, storage_options: Mapping[str, Any] | None = None) -> int:
    """Check every stored chunk object of a committed store against its commit marker.

    Reads every chunk (the stored, compressed bytes) once and hashes it (SHA-256).

    Returns:
        The number of chunk objects checked; 0 when the marker holds no checksums (a store
        committed before they were recorded: nothing can be checked).

    Raises:
        IncompleteOutputError: the store is not committed.
        CorruptDataError: a chunk object is missing, or its bytes differ from those committed
            (bit rot, truncation, tampering); the message names the store, the array, the chunk
            and the fix (delete the store and rerun the stage that writes it).
        StoreError: the location cannot be reached.
    """
    loc = _as_location(url, storage_options)
    record = read_commit(loc)
    checked = 0
    with storage_errors(loc, "read"):
        fs = loc.filesystem()
        for name, meta in record.get("variables", {}).items():
            want = meta.get("sha256")
            if isinstance(want, dict):
                checked += check_digests(fs, loc.child(str(name)).path, want, loc.describe(), name)
    return checked


def exists(url: URL, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when anything (committed or not) exists at ``url``."""
    loc = _as_location(url, storage_options)
    with storage_errors(loc, "check"):
        fs = loc.filesystem()
        fs.invalidate_cache()
        return bool(fs.exists(loc.path))


def read_dataset(
    url: URL,
    *,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Any = "auto",
) -> xr.Dataset:
    """Open a committed store lazily (dask-backed), checked against its commit marker.

    String variables come back as numpy unicode arrays; attrs as written (JSON types).

    Args:
        url: the store URL.
        storage_options: s3fs options; default from the environment.
        chunks: dask chunks for ``xarray.open_zarr`` (``"auto"`` keeps the stored chunks as
            far as possible; ``{}`` exactly the stored chunks).

    Raises:
        IncompleteOutputError: no valid marker, or the arrays do not match it.
    """
    loc = _as_location(url, storage_options)
    record = read_commit(loc)
    store, so = loc.zarr_target()
    with storage_errors(loc, "open"), _quiet_marker(), quiet_codecs():
        ds = xr.open_zarr(
            store, consolidated=False, storage_options=so, chunks=chunks, zarr_format=3
        )
    _check_shapes(loc, ds, record)
    return _plain_strings(ds)


def _plain_strings(ds: xr.Dataset) -> xr.Dataset:
    """String variables as numpy unicode arrays (Zarr v3 gives object/StringDType)."""
    for name in list(ds.variables):
        var = ds.variables[name]
        if var.dtype.kind in "OT" or type(var.dtype).__name__ == "StringDType":
            raw = np.asarray(var.values)
            values = np.array([str(v) for v in raw.ravel()], dtype=str).reshape(raw.shape)
            if name in ds.coords:
                ds = ds.assign_coords({name: (var.dims, values, var.attrs)})
            else:
                ds[name] = (var.dims, values, var.attrs)
    return ds


def load_dataset(url: URL, *, storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """:func:`read_dataset`, loaded into memory; a chunk that does not decode is a typed error.

    Raises:
        IncompleteOutputError: no valid marker, or the arrays do not match it.
        CorruptDataError: a stored chunk cannot be decoded (zstd's checksum, a truncated
            object); the message names the store and the fix.
    """
    loc = _as_location(url, storage_options)
    ds = read_dataset(loc)
    try:
        return ds.load()
    except (RuntimeError, ValueError, TypeError) as exc:  # the codecs' bare errors
        raise CorruptDataError(
            f"Store {loc.describe()}: a stored chunk cannot be decoded ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}): it is corrupt or truncated. Delete the store "
            "and rerun the stage that writes it (a run's cube stage verifies the layers it "
            "reuses and rebuilds corrupt ones)."
        ) from exc


def read_layer(
    url: URL, *, storage_options: Mapping[str, Any] | None = None, load: bool = True
) -> xr.Dataset:
    """A layer committed beside a cube (S1 steps, terrain), loaded (``load=False``: lazily),
    checked first (:func:`~geoxai.io.cube_codec.decode_layer`: a typed CorruptDataError)."""
    loc = _as_location(url, storage_options)
    decode_layer(read_dataset(loc), loc.describe())
    return load_dataset(loc) if load else read_dataset(loc)


def read_cube(
    url: URL,
    *,
    name: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Any = {},  # noqa: B006 - read-only default, means "stored chunks"
) -> xr.DataArray:
    """Open one array of a committed store as a lazy DataArray with its grid attrs.

    A raw cube (``reflectance``) comes back as float32 reflectance whatever its stored encoding
    (:func:`geoxai.io.cube_codec.decode_cube`: uint16 DN + uint8 SCL, or float32 as written
    before), lazily: slicing rows (``.isel(y=...).values``) reads only the stored chunks of those
    rows. A uint16 DN cube is xarray's lazily indexed data over
    :class:`~geoxai.io.cube_rows.DecodedRows` (whole row blocks decoded straight into float32,
    ``.load()`` decodes them in parallel threads, no dask); other cubes are dask-backed with
    the stored chunks. A chunk that cannot be read or decoded raises
    :class:`~geoxai.errors.CorruptDataError` naming the store, array and chunk when read.

    Args:
        url: the store URL.
        name: the array to open; default the only data variable (``"reflectance"`` for a
            raw cube, ``"features"`` for a model-ready cube).
        storage_options: s3fs options; default from the environment.
        chunks: dask chunks; ``{}`` (default) = as stored (see above), anything else makes
            the cube dask-backed with those chunks.

    Returns:
        The DataArray with attrs ``crs`` (``"EPSG:xxxxx"``), ``transform`` (6 floats),
        ``tile_id``, ``halo_px``, ``resolution_m`` where the writer set them (dataset-level attrs
        are merged under the array's own).

    Raises:
        IncompleteOutputError: the store is not committed.
        InvalidInputError: ``name`` is not in the store, or it is ambiguous.
        CorruptDataError: a raw cube whose encoding is unknown or whose scaling is missing.
    """
    loc = _as_location(url, storage_options)
    if name in (None, CUBE_NAME):
        raw = _open_checked(loc)
        if raw is not None:
            da = _grid_attrs(decode_cube(raw[0], loc.describe(), raw[1], raw[2]))
            return da if chunks == {} else da.chunk(chunks)
    ds = read_dataset(url, storage_options=storage_options, chunks=chunks)
    names = [str(n) for n in ds.data_vars]
    if name is None:
        if len(names) != 1:
            raise InvalidInputError(
                f"Store {url} holds {len(names)} arrays {names}; pass name= to pick one."
            )
        name = names[0]
    if name not in ds.data_vars:
        look_up_option(name, names, what=f"array in store {url}", error=InvalidInputError)
    da = ds[name]
    da.attrs = {**ds.attrs, **da.attrs}
    return _grid_attrs(da)


def _grid_attrs(da: xr.DataArray) -> xr.DataArray:
    if "transform" in da.attrs:
        da.attrs["transform"] = [float(v) for v in da.attrs["transform"]][:6]
    return da


def _open_checked(loc: StoreLocation) -> tuple[xr.Dataset, Any, Any] | None:
    """``(dataset, checked, rows)`` of a raw cube store: the dataset opened without dask
    (coords and attrs; nothing of the big arrays read), ``checked(name)``, the dask array of a
    stored variable whose chunk reads raise typed errors, and ``rows(names, refl, scale,
    offset)``, the decoded cube read by whole row blocks
    (:class:`~geoxai.io.cube_rows.DecodedRows`; None when the codecs need Zarr). None when the
    store is no raw cube.
    """
    import dask.array as dsa  # lazy: dask only when a cube is read
    import zarr  # lazy: zarr's own API only on this path (xarray opens the rest)

    record = read_commit(loc)
    store, so = loc.zarr_target()
    with storage_errors(loc, "open"), _quiet_marker(), quiet_codecs():
        ds = xr.open_zarr(store, consolidated=False, storage_options=so, chunks=None, zarr_format=3)
        group = zarr.open_group(store, mode="r", zarr_format=3, storage_options=so)
    if CUBE_NAME not in ds.data_vars and "cube_encoding" not in ds.attrs:
        return None
    _check_shapes(loc, ds, record)
    ds = ds.assign_coords(_plain_strings(ds.coords.to_dataset().load()).coords)
    where = loc.describe()
    token = f"{loc.url}-{record.get('written_at')}"

    def checked(name: str) -> Any:
        with quiet_codecs(), _quiet_marker():
            arr = group.get(name)
        if not isinstance(arr, zarr.Array):
            raise CorruptDataError(
                f"Store {where}: {name!r} is not an array of the cube (found "
                f"{type(arr).__name__}); delete the store and rerun the cube stage."
            )
        return dsa.from_array(
            CheckedChunks(arr, where, name),
            # all dates of a row block in one task: zarr reads the stored chunks of those rows
            # straight into one buffer (no per-date blocks for dask to concatenate)
            chunks=(arr.shape[0], *arr.chunks[1:]),
            name=f"read-{hashlib.sha1(f'{token}/{name}'.encode()).hexdigest()}",
            asarray=True,
            lock=False,
            fancy=False,
            meta=np.empty((0,) * arr.ndim, arr.dtype),
        )

    def rows(names: list[str], refl: list[str], sc: np.ndarray, of: np.ndarray) -> Any:
        with quiet_codecs(), _quiet_marker():
            arrays = {n: group.get(n) for n in ([CUBE_NAME] if refl else []) + ["SCL"]}
        return lazy_rows(loc.filesystem(), loc.path, where, arrays, names, refl, sc, of)

    return ds, checked, rows


def _check_shapes(loc: StoreLocation, ds: xr.Dataset, record: Mapping[str, Any]) -> None:
    for name, meta in record.get("variables", {}).items():
        if name not in ds.variables or list(ds.variables[name].shape) != meta["shape"]:
            got = None if name not in ds.variables else list(ds.variables[name].shape)
            raise IncompleteOutputError(
                f"Store {loc.describe()}: array {name!r} is {got}, its commit marker says "
                f"{meta['shape']}; the store was modified after commit. Rerun the stage."
            )


def delete(url: URL, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Delete the store (marker first, then the data). Returns False when nothing was there."""
    loc = _as_location(url, storage_options)
    with storage_errors(loc, "delete"):
        fs = loc.filesystem()
        fs.invalidate_cache()
        if not fs.exists(loc.path):
            return False
        marker = loc.child(COMMIT_MARKER)
        if fs.exists(marker.path):
            fs.rm(marker.path)
        fs.rm(loc.path, recursive=True)
        fs.invalidate_cache()
    return True
