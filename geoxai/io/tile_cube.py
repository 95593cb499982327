"""The one tile cube builder: search, build and commit a tile's raw cube, or reuse a committed one.

``geoxai cube`` and a run's cube stage (:func:`geoxai.mapping.cube_stage.stage_cube`) both call
:func:`build_tile_cube`, so a cube has one commit marker and one reuse rule:

* **Query.** :func:`tile_cube_query` is everything that decides the cube's pixels: STAC source,
  collection, cloud limit, dates, tile id and halo, and (only when not the defaults) the bands
  and the resampling; a caller adds more (a run: its S1/DEM settings). Signing is left out (it
  changes URLs, not pixels).
* **Marker.** The store's commit marker (:mod:`geoxai.io.store`) holds ``extra = {"query",
  "tile", "start", "end", "item_ids"}`` plus ``<key>_item_ids`` of every layer committed beside
  the cube (``s1``, ``dem``); those layers are committed first, each with the same query.
* **Reuse.** With ``reuse=True`` a committed cube whose marker holds the same query, and whose
  beside layers are committed with it, is kept as it is (``CubeRecord.reused``) once every
  stored chunk of it and of its beside layers matches the SHA-256 in its marker
  (:func:`geoxai.io.store.verify`) and its layout decodes (encoding, bands, scaling); any other
  committed cube is replaced. A cube that fails either check (bit rot, truncation, an unknown
  encoding, missing scaling), or was written by an older geoxai (float32, no checksums), is
  rebuilt with a warning, and ``CubeRecord.repaired`` says why. Without ``reuse`` a committed
  cube is an error unless ``overwrite``.
* **Storage.** :mod:`geoxai.io.cube_codec`: uint16 DN + uint8 SCL in row-block chunks, decoded
  by :func:`geoxai.io.store.read_cube` to exactly the float32 cube; a cube whose values are not
  whole DN is stored as float32 (with a warning).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac

from geoxai.errors import CorruptDataError, IncompleteOutputError
from geoxai.geo.bands import CUBE_BANDS
from geoxai.geo.grid import TileSpec
from geoxai.io import store
from geoxai.io.cube import CUBE_NAME, _as_day, build_cube, is_location
from geoxai.io.cube_codec import (
    DN_ENCODING,
    ENCODINGS,
    ROWS,
    NotWholeDNError,
    encode_cube,
    encode_layer,
)
from geoxai.io.cube_direct import ChunkWriter, DirectPlan, Fallback, plan
from geoxai.io.location import resolve
from geoxai.io.stac import search

__all__ = [
    "CubeRecord",
    "build_tile_cube",
    "committed_query",
    "tile_cube_query",
]

Source = str | os.PathLike[str] | Sequence[pystac.Item | Mapping[str, Any]]
"""A STAC API URL, local item files, or the items themselves."""

log = logging.getLogger(__name__)

DIRECT = "direct"
"""``CubeRecord.build_path`` of a cube read straight from the COGs as DN
(:mod:`geoxai.io.cube_direct`)."""
FLOAT = "stackstac"
"""``CubeRecord.build_path`` of a cube built as float32 reflectance and encoded
(:func:`geoxai.io.cube.build_cube`, :func:`geoxai.io.cube_codec.encode_cube`)."""


def tile_cube_query(
    source: Source,
    tile: TileSpec,
    *,
    collection: str = "sentinel-2-l2a",
    start: str | dt.date,
    end: str | dt.date,
    max_cloud: float | None = None,
    bands: Sequence[str] = CUBE_BANDS,
    resampling: str = "bilinear",
) -> dict[str, Any]:
    """The query of a tile cube: what its commit marker holds and what reuse compares.

    ``stac`` is the source as given (None for items passed in); ``bands`` and ``resampling``
    appear only when they differ from :data:`~geoxai.geo.bands.CUBE_BANDS` / ``"bilinear"``.
    Dates are ISO days.
    """
    sig: dict[str, Any] = {
        "stac": _source_text(source),
        "collection": collection,
        "max_cloud": max_cloud,
        "start": str(_as_day(start, "start")),
        "end": str(_as_day(end, "end")),
        "tile": tile.id,
        "halo_px": tile.halo_px,
    }
    if resampling != "bilinear":
        sig["resampling"] = resampling
    if tuple(bands) != tuple(CUBE_BANDS):
        sig["bands"] = list(bands)
    return sig


def _source_text(source: Source) -> str | list[str] | None:
    """The source of a query as JSON: the URL/path(s) as given, None for items passed in."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if is_location(source):
        return [os.fspath(s) for s in source]
    return None


def _committed_marker(url: str, so: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The commit marker of the store at ``url``; None when it is not committed."""
    if not store.is_committed(url, storage_options=so):
        return None
    return store.read_commit(url, storage_options=so)


def committed_query(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The query in the commit marker of the store at ``url``; None when it is not committed."""
    marker = _committed_marker(url, storage_options)
    return None if marker is None else marker.get("extra", {}).get("query")


@dataclass(frozen=True)
class CubeRecord:
    """What :func:`build_tile_cube` made (or found).

    Attributes:
        url: the committed store.
        tile_id: the tile.
        n_items: STAC items used.
        item_ids: their ids, in time order.
        shape: ``(time, band, y, x)`` of the cube (time after mosaicking days).
        nbytes: bytes stored (compressed), the beside layers included.
        seconds: wall time of search + build + write (or of the reuse check).
        marker: the store's commit marker.
        reused: True when a committed cube of the same query was kept.
        beside_item_ids: per beside layer (``s1``, ``dem``), the STAC ids in it.
        repaired: why a committed cube of the same query was rebuilt instead of reused (a
            chunk failed its checksum, or an old float32 cube); empty otherwise.
        verify_seconds: wall time of checking the committed cube's chunks on reuse.
        build_path: how the cube was made: :data:`DIRECT` (read straight from the COGs as DN)
            or :data:`FLOAT` (stackstac's float32 cube, encoded); "" when reused. Both commit
            the same bytes.
        fallback: why the direct build was not used (empty when it was, or when reused).
    """

    url: str
    tile_id: str
    n_items: int
    item_ids: tuple[str, ...]
    shape: tuple[int, int, int, int]
    nbytes: int
    seconds: float
    marker: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    reused: bool = False
    beside_item_ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    repaired: str = ""
    verify_seconds: float = 0.0
    build_path: str = ""
    fallback: str = ""


def _reusable(
    url: str,
    query: Mapping[str, Any],
    beside: Mapping[str, str],
    so: Mapping[str, Any] | None,
) -> tuple[dict[str, Any] | None, str]:
    """``(marker, why)``: the marker of a committed cube of ``query`` whose beside layers are
    committed with it and whose stored chunks all match their checksums; else None, and why a
    cube of this query is not reused ("" when there is none to reuse)."""
    marker = _committed_marker(url, so)
    if marker is None or marker.get("extra", {}).get("query") != query:
        return None, ""
    if any(committed_query(u, so) != query for u in beside.values()):
        return None, ""
    where = resolve(url, so).describe()
    encoding = marker.get("extra", {}).get("cube_encoding")
    if encoding is None:
        return None, (
            f"the cube at {where} was written by an older geoxai (float32, no chunk checksums); "
            "it is rebuilt in the current layout (uint16 DN, checksummed)"
        )
    if encoding not in ENCODINGS:
        return None, (
            f"the cube at {where} has cube_encoding {encoding!r}, which this geoxai does not "
            f"read (it reads {list(ENCODINGS)}); it is rebuilt"
        )
    try:
        for u in (url, *beside.values()):
            if store.verify(u, storage_options=so) == 0:
                raise CorruptDataError(
                    f"Store {resolve(u, so).describe()} has no chunk checksums in its commit "
                    "marker; it cannot be verified."
                )
        # the chunks match; its layout (encoding, band list, scaling) must decode too: opening
        # is lazy (metadata only) and raises what a tile actor's read would raise
        store.read_cube(url, storage_options=so)
        for u in beside.values():
            store.read_layer(u, storage_options=so, load=False)
    except (CorruptDataError, IncompleteOutputError) as exc:
        return None, f"{' '.join(str(exc).split())} It is rebuilt."
    return marker, ""


def build_tile_cube(
    source: Source,
    tile: TileSpec,
    out_url: str,
    *,
    collection: str = "sentinel-2-l2a",
    start: str | dt.date,
    end: str | dt.date,
    max_cloud: float | None = None,
    bands: Sequence[str] = CUBE_BANDS,
    resampling: str = "bilinear",
    signing: str = "none",
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    reuse: bool = False,
    query_extra: Mapping[str, Any] | None = None,
    beside: Mapping[str, str] | None = None,
    make_beside: Callable[[], Mapping[str, Any]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    direct: bool = True,
) -> CubeRecord:
    """Search (or take) the items of one tile, build its cube and commit it at ``out_url``.

    Args:
        source: a STAC API URL or local item files (searched with :func:`geoxai.io.stac.search`
            over the tile's haloed footprint), or the items themselves.
        tile: the tile, with its halo.
        out_url: store URL (local path or ``s3://``), see :mod:`geoxai.io.store`.
        collection: STAC collection id (ignored when items are given).
        start: first day, ISO date (inclusive).
        end: last day, ISO date (inclusive).
        max_cloud: keep items with ``eo:cloud_cover`` <= this, percent.
        bands: cube bands.
        resampling: for reflectance bands, see :func:`geoxai.io.cube.build_cube`.
        signing: asset URL signing (:func:`geoxai.io.signing.resolve_signing`); not in the query.
        storage_options: s3fs options for the store (default from AWS_* variables).
        overwrite: replace a committed store at ``out_url``.
        reuse: keep a committed cube of the same query (see the module docstring); replace
            any other.
        query_extra: more keys of the query (they must decide the pixels of the cube or of its
            beside layers).
        beside: key -> store URL of each layer committed beside the cube (``"s1"``, ``"dem"``).
        make_beside: called after the cube is built and before it is committed; returns
            key -> dataset (or None: nothing to write) for the keys of ``beside``. Each dataset
            is committed at its URL with the query and its ``attrs["item_ids"]``.
        progress: ``progress(done, total)`` in dask tasks while the cube is computed/written.
        direct: read the stored DN straight from the COGs (:mod:`geoxai.io.cube_direct`) when
            that makes the same store, else (and with False) build the float32 cube with
            stackstac and encode it; ``CubeRecord.build_path``/``fallback`` say which and why.

    Raises:
        NoDataError, DataAccessError, CorruptDataError, StacError, StoreError (a committed
        store without ``overwrite``/``reuse``), and whatever ``make_beside`` raises.
    """
    t0 = time.perf_counter()
    beside = dict(beside or {})
    query = tile_cube_query(
        source,
        tile,
        collection=collection,
        start=start,
        end=end,
        max_cloud=max_cloud,
        bands=bands,
        resampling=resampling,
    ) | dict(query_extra or {})
    so = storage_options
    repaired = ""
    if reuse and not overwrite:
        t_check = time.perf_counter()
        marker, repaired = _reusable(out_url, query, beside, so)
        if repaired:
            warnings.warn(f"Tile {tile.id}: {repaired}", stacklevel=2)
        if marker is not None:
            extra = marker.get("extra", {})
            ids = tuple(extra.get("item_ids", ()))
            return CubeRecord(
                url=resolve(out_url, so).url,
                tile_id=tile.id,
                n_items=len(ids),
                item_ids=ids,
                shape=tuple(marker["variables"][CUBE_NAME]["shape"]),  # type: ignore[arg-type]
                nbytes=int(marker.get("nbytes", 0)),
                seconds=time.perf_counter() - t0,
                marker=marker,
                reused=True,
                beside_item_ids={k: tuple(extra.get(f"{k}_item_ids", ())) for k in beside},
                verify_seconds=time.perf_counter() - t_check,
            )
    items: list[Any]
    if is_location(source):
        items = search(
            source,
            collections=collection,
            bbox=tile.lonlat_bbox(halo=True),
            datetime=(query["start"], query["end"]),
            max_cloud=max_cloud,
        )
    else:
        items = list(source)
    cube = build_cube(
        items,
        tile,
        bands=bands,
        start=start,
        end=end,
        resampling=resampling,
        signing=signing,
    )
    ids = tuple(str(i) for i in cube.attrs.get("item_ids") or cube["id"].values)
    replace = overwrite or reuse
    nbytes = 0
    beside_ids: dict[str, tuple[str, ...]] = {k: () for k in beside}
    layers = make_beside() if make_beside is not None else {}
    for key, target in beside.items():
        layer = layers.get(key)
        if layer is None:
            continue
        beside_ids[key] = tuple(str(i) for i in layer.attrs.get("item_ids", ()))
        stored, encoding = encode_layer(layer)
        m = store.write_dataset(
            stored,
            target,
            storage_options=so,
            overwrite=True,
            extra={"query": query, "item_ids": beside_ids[key]},
            encoding=encoding,
        )
        nbytes += int(m.get("nbytes", 0))
    extra = {
        "query": query,
        "cube_encoding": DN_ENCODING,
        "tile": tile.to_dict(),
        "start": query["start"],
        "end": query["end"],
        "item_ids": list(ids),
        **{f"{k}_item_ids": list(v) for k, v in beside_ids.items()},
    }
    how = (
        plan(items, cube, tile, resampling=resampling, signing=signing)
        if direct
        else "direct=False"
    )
    marker, path, why = _write_cube(cube, out_url, so, replace, extra, progress, tile, how)
    log.info("Tile %s: cube built by the %s path%s", tile.id, path, f" ({why})" if why else "")
    return CubeRecord(
        url=str(marker["url"]),
        tile_id=tile.id,
        n_items=len(ids),
        item_ids=ids,
        shape=tuple(int(n) for n in cube.shape),  # type: ignore[arg-type]
        nbytes=nbytes + int(marker["nbytes"]),
        seconds=time.perf_counter() - t0,
        marker=marker,
        beside_item_ids=beside_ids,
        repaired=repaired,
        build_path=path,
        fallback=why,
    )


def _write_cube(
    cube: Any,
    out_url: str,
    so: Mapping[str, Any] | None,
    replace: bool,
    extra: dict[str, Any],
    progress: Callable[[int, int], None] | None,
    tile: TileSpec,
    how: DirectPlan | str,
) -> tuple[dict[str, Any], str, str]:
    """Commit ``cube`` as uint16 DN, or as float32 when its values are not whole DN:
    ``(marker, build path, why not direct)``. With a :class:`DirectPlan` the DN are read
    straight from the COGs; a :class:`Fallback` while they are (the write is undone by
    :func:`geoxai.io.store.write_dataset`) writes the float path instead."""

    def write(dn: bool, direct: DirectPlan | None = None) -> dict[str, Any]:
        # direct: the arrays' metadata are the float path's, their chunks are written by the
        # direct reads (which start now): the float cube's dask graph is never computed
        chunks = ChunkWriter(direct, cube, tile, progress) if direct is not None else None
        try:
            ds, encoding = encode_cube(cube if chunks is None else _metadata_only(cube), dn=dn)
            if chunks is not None:
                if ds.attrs["cube_encoding"] != DN_ENCODING:
                    raise Fallback(f"the cube is stored as {ds.attrs['cube_encoding']}")
                ds = _placeholders(ds)
            extra["cube_encoding"] = ds.attrs["cube_encoding"]
            report = progress is not None and chunks is None
            with _DaskProgress(progress) if report else contextlib.nullcontext():  # type: ignore[arg-type]
                return store.write_dataset(
                    ds,
                    out_url,
                    storage_options=so,
                    overwrite=replace,
                    extra=extra,
                    encoding=encoding,
                    write_chunks=chunks,
                )
        finally:
            if chunks is not None:
                chunks.close()

    why = how if isinstance(how, str) else ""
    if isinstance(how, DirectPlan):
        try:
            return write(dn=True, direct=how), DIRECT, ""
        except Fallback as exc:
            why = str(exc)
    try:
        return write(dn=True), FLOAT, why
    except NotWholeDNError as exc:
        warnings.warn(f"Tile {tile.id}: {exc}", stacklevel=3)
    return write(dn=False), FLOAT, why


def _metadata_only(cube: Any) -> Any:
    """``cube`` with its stackstac data replaced by uncomputed zeros in the stored chunks
    (``(1, bands, ROWS, x)``): what ``encode_cube`` makes of it has the same arrays, coordinates,
    attributes and encodings, without a graph of rechunked float tiles that is never computed
    (the direct build writes the chunks)."""
    import dask.array as dsa  # lazy: dask only when a cube is written

    nt, nb, ny, nx = cube.shape
    return cube.copy(data=dsa.zeros(cube.shape, dtype=cube.dtype, chunks=(1, nb, ROWS, nx)))


def _placeholders(ds: Any) -> Any:
    """``ds`` with its dask-backed arrays replaced by uncomputed zeros of the same dtype and
    chunks: ``to_zarr(compute=False)`` then writes their metadata without building the float
    cube's graph into a store graph (their chunks are written by the direct reads)."""
    import dask.array as dsa  # lazy: dask only when a cube is written

    out = ds.copy()
    for name, var in ds.data_vars.items():
        if var.chunks is not None:
            out[name] = var.copy(data=dsa.zeros(var.shape, dtype=var.dtype, chunks=var.chunks))
    return out


class _DaskProgress:
    """Report finished dask tasks as ``progress(done, total)`` (a dask local-scheduler callback)."""

    def __init__(self, progress: Callable[[int, int], None]) -> None:
        from dask.callbacks import Callback  # lazy: dask only when a graph is computed

        self._progress = progress
        self._total = 0
        self._done = 0
        outer = self

        class _CB(Callback):  # type: ignore[misc]
            def _start_state(self, dsk: Any, state: Any) -> None:
                outer._total += sum(len(state[k]) for k in ("ready", "waiting", "running"))
                outer._progress(outer._done, outer._total)

            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                outer._done += 1
                outer._progress(outer._done, outer._total)

        self._cb = _CB()

    def __enter__(self) -> _DaskProgress:
        self._cb.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cb.__exit__(*exc)
