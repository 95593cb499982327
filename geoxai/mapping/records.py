"""A run's outputs: zone-global Zarr stores, exactly-once tile writes, per-tile records.

Layout of one run and year (``run_root`` = ``RunConfig.run_root()`` =
``<store.root>/<name>/<year>``, a local path or ``s3://bucket/prefix``)::

    <run_root>/
        config.json                     the run config (driver, ``io.config_file.save_config``)
        zone=<epsg>/outputs.zarr/       Zarr v3 group, one per UTM zone (:class:`ZoneStore`)
            prediction/                 float32 (K, Y, X) or (Y, X), fill NaN
            asos_sensitivity/           float32, fill NaN
            quality/                    uint8 (Y, X), fill 0 = nodata
            change/ change_flag/        vs. the previous year (:mod:`geoxai.mapping.change`)
            x/ y/                       pixel-centre coordinates, metres of the zone CRS
        records/<tile_id>.json          per-tile record, written LAST (:func:`write_tile`)
        _records_index.parquet          the records compacted (:mod:`.record_index`)
        cogs/<layer>/<tile_id>.tif      per-tile COGs (:mod:`geoxai.io.cog`)
        ...                             mosaics, catalog, report (:class:`RunLayout`)

Zone grid: the arrays of a zone cover the bounding box of the run's tiles in that zone, on the
zone lattice (origin at multiples of 6,000 m), chunked ``(600, 600)`` in y/x (a leading band axis
is one chunk), so one tile core is exactly one chunk of every layer and concurrent writers never
share a chunk. Chunks that are never written read as the fill value.

Exactly-once protocol of :func:`write_tile`: (1) delete the tile's old record, (2) write the core
chunks, (3) read them back and compare SHA-256 checksums of the values, (4) hash the stored
(encoded) chunk objects, (5) write the record atomically (one PUT on S3, ``os.replace`` locally).
A record therefore implies verified chunks, and holds each chunk's and COG's size and SHA-256.
Deciding what is done (:func:`check_tiles`, :func:`plan_tiles`, :func:`tile_state`) trusts a
``done`` record whose chunks and COGs exist with their recorded sizes, looked up by one listing per
prefix (:class:`~geoxai.io.listing.Listing`), records read via their index (:mod:`.record_index`),
not one request per tile; checksums are ``geoxai verify``. A tile whose record, chunks or COGs are
missing, resized or from another config is planned again. Whenever a stored output is found damaged
(at planning, :func:`check_tiles` with ``repair``; after the tile phase, :func:`verify_cogs`; by
``geoxai verify``), the tile's stale ``done`` record is deleted (:func:`delete_record`): a record
never says ``done`` over outputs that do not check out.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from geoxai.errors import InvalidInputError, StoreError, look_up_option
from geoxai.geo.grid import TileSpec
from geoxai.io.layout import RunLayout
from geoxai.io.listing import Listing, Probe
from geoxai.io.location import storage_errors
from geoxai.io.store import read_json, write_json
from geoxai.io.zonestore import LayerSpec, ZoneStore
from geoxai.mapping.record_index import iter_records, record_docs
from geoxai.provenance import code_version

__all__ = [
    "RECORD_FORMAT",
    "STATUSES",
    "TileState",
    "write_tile",
    "write_status",
    "delete_record",
    "read_record",
    "read_records",
    "ObjectSizes",
    "tile_state",
    "record_state",
    "tile_is_done",
    "cog_url",
    "cog_size_problem",
    "TileSort",
    "check_tiles",
    "plan_tiles",
    "verify_cogs",
    "layer_checksum",
]

RECORD_FORMAT = "geoxai-tile-record/1"
"""Value of the ``format`` field of every per-tile record."""


STATUSES = ("done", "failed", "empty")
"""Statuses a tile record can carry."""


def layer_checksum(values: np.ndarray) -> str:
    """SHA-256 (hex) of an array's dtype, shape and C-order bytes (NaN payloads included)."""
    a = np.ascontiguousarray(values)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _check_layers(
    zone: ZoneStore, tile: TileSpec, layers: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    if not layers:
        raise InvalidInputError(f"write_tile({tile.id}): no layers given; nothing to write.")
    n = zone.grid.core_px
    out = {}
    for name, values in layers.items():
        look_up_option(
            name, list(zone.layers), what=f"layer of zone store {zone.url}", error=InvalidInputError
        )
        spec = zone.layers[name]
        a = np.asarray(values)
        want = spec.core_shape(n)
        if a.shape != want:
            hint = (
                " Cut the core out of a haloed array with tile.core_slice."
                if a.shape[-2:] != (n, n)
                else ""
            )
            raise InvalidInputError(
                f"Tile {tile.id}, layer {name!r}: got shape {a.shape}, expected the core "
                f"{want} (bands {list(spec.bands) or 'none'}).{hint}"
            )
        cast = a.astype(spec.dtype, copy=False)
        if np.dtype(spec.dtype).kind in "iu" and a.dtype.kind == "f":
            finite = np.isfinite(a)
            info = np.iinfo(spec.dtype)
            if (
                not finite.all()
                or (a[finite] != np.round(a[finite])).any()
                or (a[finite].size and (a[finite].min() < info.min or a[finite].max() > info.max))
            ):
                raise InvalidInputError(
                    f"Tile {tile.id}, layer {name!r}: float values do not fit {spec.dtype} "
                    "exactly (NaN, fractions or out of range); convert them before writing."
                )
        out[name] = np.ascontiguousarray(cast)
    return out


def write_tile(
    zone: ZoneStore,
    tile: TileSpec,
    layers: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
) -> dict[str, Any]:
    """Write a tile's core chunks, verify them, then write its record (exactly once).

    Args:
        zone: the zone store of the tile's zone.
        tile: the tile (any halo).
        layers: layer name -> core-sized array, ``(n, n)`` or ``(K, n, n)`` (n = 600).
        record: what made the tile: ``config_hash`` (required), ``code_version`` (default the
            running code), ``input_items`` (STAC item ids), ``timings`` (stage -> seconds), and
            any other JSON-able fields to keep.

    Returns:
        The record as written (``status`` "done", per-layer checksums and chunk keys).

    Raises:
        InvalidInputError: a layer is unknown or not core-sized, or ``config_hash`` is missing.
        StoreError: the chunks read back differ from what was written (nothing is marked done).
    """

    if tile.epsg != zone.epsg:
        raise InvalidInputError(
            f"Tile {tile.id} is in EPSG:{tile.epsg}, the zone store {zone.url} in "
            f"EPSG:{zone.epsg}; open the store of the tile's zone."
        )
    if not record.get("config_hash"):
        raise InvalidInputError(
            f"write_tile({tile.id}): record has no 'config_hash'; pass RunConfig.output_hash()."
        )
    data = _check_layers(zone, tile, layers)
    layout = zone.layout
    rec_loc = layout.at(layout.record_url(tile.id))
    # 1. the old record goes first: from now on the tile reads as not done
    delete_record(layout, tile.id)
    rows, cols = zone.grid.region(tile)
    # 2. write the core chunks (whole chunks: nothing else is read or touched)
    for name, values in data.items():
        with storage_errors(
            zone.loc, f"write {name!r} of tile {tile.id} to", passthrough=(FileNotFoundError,)
        ):
            zone.array(name)[..., rows, cols] = values
    # 3-4. read back, compare, hash the stored objects
    checks: dict[str, Any] = {}
    for name, values in data.items():
        want = layer_checksum(values)
        got = layer_checksum(zone.read_tile(tile, name))
        if got != want:
            raise StoreError(
                f"Tile {tile.id}, layer {name!r}: the chunk read back from {zone.url} differs "
                "from what was written (checksum mismatch); the tile is not marked done. Check "
                "the store for concurrent writers of the same tile and rerun it."
            )
        raw = zone.read_chunk_bytes(name, tile)
        if raw is None:
            raise StoreError(
                f"Tile {tile.id}, layer {name!r}: chunk {zone.chunk_key(name, tile)} is absent "
                f"from {zone.url} after writing; the tile is not marked done. Rerun it."
            )
        spec = zone.layers[name]
        checks[name] = {
            "sha256": want,
            "chunk": zone.chunk_key(name, tile),
            "chunk_sha256": hashlib.sha256(raw).hexdigest(),
            "chunk_bytes": len(raw),
            "shape": list(values.shape),
            "dtype": spec.dtype,
            "bands": list(spec.bands),
            "stats": _stats(values, spec),
        }
    # 5. the record, last
    out = _base_record(tile, "done", record, code_version())
    out["zone"] = {"epsg": zone.epsg, "url": _relative(layout, zone.url)}
    out["layers"] = {**dict(record.get("layers") or {}), **checks}
    write_json(out, rec_loc)
    return out


def _stats(values: np.ndarray, spec: LayerSpec) -> dict[str, float | int]:
    """Valid-pixel count, min, mean, max of a core (for reports; NaN/fill excluded)."""
    a = values.astype("float64", copy=False)
    fill = spec.fill
    valid = np.isfinite(a) if isinstance(fill, float) and math.isnan(fill) else a != fill
    if np.dtype(spec.dtype).kind == "f":
        valid &= np.isfinite(a)
    n = int(valid.sum())
    if not n:
        return {"valid_px": 0}
    v = a[valid]
    return {"valid_px": n, "min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())}


def _relative(layout: RunLayout, url: str) -> str:
    root = layout.root.rstrip("/") + "/"
    return url[len(root) :] if url.startswith(root) else url


def _base_record(
    tile: TileSpec, status: str, record: Mapping[str, Any], version: str
) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in ("layers",)}
    out.update(
        {
            "format": RECORD_FORMAT,
            "status": status,
            "tile_id": tile.id,
            "epsg": tile.epsg,
            "tile_size_m": tile.tile_size_m,
            "resolution_m": tile.resolution_m,
            "config_hash": str(record.get("config_hash", "")),
            "code_version": str(record.get("code_version") or version),
            "input_items": [str(i) for i in record.get("input_items", [])],
            "timings": {str(k): float(v) for k, v in dict(record.get("timings") or {}).items()},
            "created": _now(),
        }
    )
    return out


def write_status(
    layout: RunLayout,
    tile: TileSpec,
    status: str,
    reason: str,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a tile that produced no outputs: ``"failed"`` or ``"empty"``, with the reason.

    Args:
        layout: the run's layout.
        tile: the tile.
        status: ``"failed"`` (an error; rerun retries it) or ``"empty"`` (no usable data).
        reason: one line for the report (e.g. ``"NoDataError: 0 scenes below 80% cloud"``).
        record: ``config_hash``, ``input_items``, ``timings`` ... as for :func:`write_tile`.
    """

    look_up_option(status, ["failed", "empty"], what="tile status", error=InvalidInputError)
    if not reason:
        raise InvalidInputError(f"write_status({tile.id}, {status!r}) needs a reason.")
    out = _base_record(tile, status, dict(record or {}), code_version())
    out["reason"] = str(reason)[:4000]
    write_json(out, layout.at(layout.record_url(tile.id)))
    return out


def delete_record(layout: RunLayout, tile_id: str) -> bool:
    """Delete the tile's record (the tile then reads as not done); True if there was one.

    Raises:
        StoreError: the store cannot be reached.
    """
    loc = layout.at(layout.record_url(tile_id))
    fs = loc.filesystem()
    with storage_errors(loc, "delete the old record", passthrough=(FileNotFoundError,)):
        try:
            fs.rm_file(loc.path)
        except FileNotFoundError:
            return False
    return True


def read_record(layout: RunLayout, tile_id: str) -> dict[str, Any] | None:
    """The tile's record, or None when absent.

    Raises:
        StoreError: the record exists but is not valid JSON (see :func:`tile_state`).
    """
    rec = read_json(layout.at(layout.record_url(tile_id)), default=None)
    if rec is not None and not isinstance(rec, dict):
        raise StoreError(f"Record of tile {tile_id} under {layout.root} is not a JSON object.")
    return rec


def read_records(layout: RunLayout) -> Iterator[dict[str, Any]]:
    """Every readable record of the run, in tile id order, as a stream (``list`` it to hold
    them all): :func:`geoxai.mapping.record_index.iter_records`."""
    return iter_records(layout)


@dataclass(frozen=True)
class TileState:
    """What the store says about one tile.

    Attributes:
        tile_id: the tile.
        state: ``done``, ``empty``, ``failed``, ``missing`` (no record), ``stale`` (another
            config hash) or ``invalid`` (unreadable record, missing chunks or COGs, or ones
            whose size differs from the record).
        reason: why, for logs and the report.
    """

    tile_id: str
    state: str
    reason: str = ""


class ObjectSizes(Protocol):
    """Where the sizes of stored objects come from (:class:`~geoxai.io.listing.Listing`: one
    listing per prefix; :class:`~geoxai.io.listing.Probe`: one request per object)."""

    def size(self, prefix_url: str, key: str) -> int | None: ...


def tile_state(
    layout: RunLayout,
    tile: TileSpec,
    config_hash: str,
    *,
    zone: ZoneStore | None = None,
    sizes: ObjectSizes | None = None,
) -> TileState:
    """Check one tile's record and, for a ``done`` one, that every chunk and COG it lists exists
    with its recorded size (no object is read; :mod:`geoxai.mapping.verify` checks checksums).

    Args:
        sizes: where sizes come from; default one request per object (:class:`Probe`). For
            many tiles use :func:`check_tiles` (one listing per prefix).
    """
    try:
        rec = read_record(layout, tile.id)
    except StoreError as exc:
        return TileState(tile.id, "invalid", f"record unreadable: {exc}")
    return record_state(
        layout, tile, rec, config_hash, zone=zone, sizes=sizes or Probe(layout.storage_options)
    )


def record_state(
    layout: RunLayout,
    tile: TileSpec,
    rec: Mapping[str, Any] | None,
    config_hash: str,
    *,
    sizes: ObjectSizes,
    zone: ZoneStore | None = None,
) -> TileState:
    """The :class:`TileState` of ``tile`` given its record (None: absent); see :func:`tile_state`.

    A ``done`` record is trusted when its chunks (``layers[*].chunk``, ``chunk_bytes``) and
    COGs (``cogs[*].href``, ``bytes``) exist with the recorded sizes, looked up in ``sizes``.
    """
    if rec is None:
        return TileState(tile.id, "missing", "no record")
    if rec.get("format") != RECORD_FORMAT or rec.get("tile_id") != tile.id:
        return TileState(tile.id, "invalid", "record of another format or tile")
    if rec.get("config_hash") != config_hash:
        return TileState(
            tile.id, "stale", f"config hash {rec.get('config_hash')!r} != {config_hash!r}"
        )
    status = rec.get("status")
    if status in ("failed", "empty"):
        return TileState(tile.id, str(status), str(rec.get("reason", "")))
    if status != "done":
        return TileState(tile.id, "invalid", f"unknown status {status!r}")
    layers = rec.get("layers")
    if not isinstance(layers, dict) or not layers:
        return TileState(tile.id, "invalid", "record lists no layers")
    if zone is None:
        try:
            zone = ZoneStore.open(layout, tile.epsg)
        except StoreError as exc:
            return TileState(tile.id, "invalid", str(exc))
    for name, meta in layers.items():
        if name not in zone.layers or not isinstance(meta, dict):
            return TileState(tile.id, "invalid", f"layer {name!r} missing from the zone store")
        try:
            key = zone.chunk_key(name, tile)
        except InvalidInputError as exc:
            return TileState(tile.id, "invalid", str(exc))
        if meta.get("chunk") != key:
            return TileState(tile.id, "invalid", f"layer {name!r}: chunk key changed")
        got = sizes.size(f"{zone.url}/{name}", key[len(name) + 1 :])
        problem = _size_problem(got, meta.get("chunk_bytes"))
        if problem:
            return TileState(tile.id, "invalid", f"chunk {key} {problem}")
    problem = cog_size_problem(layout, rec, sizes)
    if problem:
        return TileState(tile.id, "invalid", problem)
    return TileState(tile.id, "done")


def _size_problem(got: int | None, recorded: Any) -> str | None:
    if got is None:
        return "missing"
    if not isinstance(recorded, int) or isinstance(recorded, bool):
        return "has no recorded size (run `geoxai verify` on the run, or redo the tile)"
    if got != recorded:
        return f"is {got} bytes, recorded {recorded} (truncated or replaced)"
    return None


def cog_url(layout: RunLayout, href: str) -> str:
    """URL of a COG a record lists (``href`` relative to the run root, or absolute)."""
    return href if "://" in href or href.startswith("/") else layout.url(href)


def cog_size_problem(layout: RunLayout, rec: Mapping[str, Any], sizes: ObjectSizes) -> str | None:
    """Why one of the COGs a ``done`` record lists is missing or not of its recorded size, or
    None (no COG is read; sizes come from ``sizes``)."""
    cogs = rec.get("cogs") or {}
    if not isinstance(cogs, dict):
        return "the record's 'cogs' is not a mapping"
    for name, meta in cogs.items():
        href = meta.get("href") if isinstance(meta, dict) else None
        if not href or not meta.get("sha256"):
            return f"COG of layer {name!r}: the record holds no href or checksum"
        prefix, _, key = cog_url(layout, str(href)).rpartition("/")
        problem = _size_problem(sizes.size(prefix, key), meta.get("bytes"))
        if problem:
            return f"COG {href}: {problem}"
    return None


def tile_is_done(layout: RunLayout, tile: TileSpec, config_hash: str) -> bool:
    """True when the tile has a ``done`` record of this config and its chunks and COGs exist
    with their recorded sizes."""
    return tile_state(layout, tile, config_hash).state == "done"


@dataclass(frozen=True)
class TileSort:
    """Tiles split by :func:`check_tiles`.

    Attributes:
        todo: tiles to (re)do, in the given order.
        done: tiles whose outputs check out (or are recorded ``empty``), in the given order.
        invalidated: tile id -> why, for tiles whose record said ``done`` (of this config) but
            whose chunks or COGs are missing or of another size, or whose record was unreadable.
    """

    todo: list[TileSpec]
    done: list[TileSpec]
    invalidated: dict[str, str]


_DONE = TileState("", "done")  # what check_tiles keeps for every done tile (no copy each)


def check_tiles(
    layout: RunLayout,
    tiles: Sequence[TileSpec],
    config_hash: str,
    *,
    force: bool = False,
    redo_empty: bool = False,
    repair: bool = False,
    listing: Listing | None = None,
    zones: Mapping[int, ZoneStore] | None = None,
) -> TileSort:
    """Split ``tiles`` into to-do and done (see :func:`plan_tiles`) and say which were invalid.

    Cost: one listing of the records prefix, one of each zone layer's chunks and of each COG
    layer folder (:class:`~geoxai.io.listing.Listing`), one read of the record index and one GET
    per record absent from it or changed since it was written (fetched in concurrent batches;
    :func:`geoxai.mapping.record_index.record_docs`); no chunk or COG is read. Memory: the
    listed sizes (~100 bytes per object), one state per tile, one batch of records.

    With ``repair``, the record of every ``invalid`` tile (a ``done`` record over missing or
    resized chunks or COGs, an unreadable record) is deleted, so the store no longer claims
    the tile is done; without it nothing is written (a dry run).

    Args:
        listing: the listings to use (and count); default a fresh one.
        zones: zone stores already open (EPSG -> store, e.g. those :func:`~geoxai.mapping.
            plan.resume_plan` just created): used as they are; the others are opened here
            (their metadata read once each).

    Raises:
        StoreError: the store cannot be reached or listed.
    """
    if force:
        return TileSort(list(tiles), [], {})
    listing, by_id = listing or Listing(layout.storage_options), {t.id: t for t in tiles}
    opened: dict[int, ZoneStore | None] = dict(zones or {})
    states: dict[str, TileState] = {}
    for tile_id, doc, why in record_docs(layout, listing, tile_ids=by_id):
        t = by_id[tile_id]
        if why is not None or (doc is not None and not isinstance(doc, dict)):
            why = f"record unreadable: {why or 'not an object'}"
            states[tile_id] = TileState(t.id, "invalid", why)
        if why is not None or doc is None:  # unreadable, or vanished since the listing
            continue
        if t.epsg not in opened:
            try:
                opened[t.epsg] = ZoneStore.open(layout, t.epsg)
            except StoreError:
                opened[t.epsg] = None
        zone = opened[t.epsg]
        if doc.get("status") == "done" and zone is None:
            states[tile_id] = TileState(t.id, "invalid", f"no zone store for EPSG:{t.epsg}")
        else:
            st = record_state(layout, t, doc, config_hash, zone=zone, sizes=listing)
            states[tile_id] = _DONE if st.state == "done" else st  # one object for every done
    todo, done = [], []
    invalid: dict[str, str] = {}
    for t in tiles:
        st = states.get(t.id) or TileState(t.id, "missing", "no record")
        if st.state == "done" or (st.state == "empty" and not redo_empty):
            done.append(t)
            continue
        todo.append(t)
        if st.state == "invalid":
            invalid[t.id] = st.reason
            if repair:
                delete_record(layout, t.id)
    return TileSort(todo, done, invalid)


def plan_tiles(
    layout: RunLayout,
    tiles: Sequence[TileSpec],
    config_hash: str,
    *,
    force: bool = False,
    redo_empty: bool = False,
) -> tuple[list[TileSpec], list[TileSpec]]:
    """Split ``tiles`` into ``(todo, done)``; writes nothing.

    ``done`` holds tiles whose record is ``done`` with this config hash and whose chunks and
    COGs exist with their recorded sizes, and (unless ``redo_empty``) tiles recorded ``empty``
    with this hash: no data is a result. Everything else (missing, failed, stale, invalid) is
    in ``todo``; ``force`` puts every tile in ``todo``. Order is preserved.
    """
    s = check_tiles(layout, tiles, config_hash, force=force, redo_empty=redo_empty)
    return s.todo, s.done


def verify_cogs(
    layout: RunLayout, records: Iterable[Mapping[str, Any]], invalidated: dict[str, str]
) -> Iterator[Mapping[str, Any]]:
    """Check that the COGs of every ``done`` record exist with their recorded sizes before they
    are read (mosaics, report): one listing per COG layer folder, no COG read. A streaming
    filter: records are checked as they are drawn, none is held.

    A record whose COGs do not check out (:func:`cog_size_problem`) is deleted from the store:
    the tile reads as not done and the next run redoes it. Checksums: ``geoxai verify``.

    Args:
        layout: the run's layout.
        records: the run's records (:func:`read_records`), read once.
        invalidated: filled with tile id -> why, for each record left out.

    Yields:
        The records that check out (and those not ``done``), in the order of ``records``.

    Raises:
        StoreError: the store cannot be reached.
    """
    listing = Listing(layout.storage_options)
    for rec in records:
        problem = cog_size_problem(layout, rec, listing) if rec.get("status") == "done" else None
        if problem:
            tile_id = str(rec.get("tile_id"))
            invalidated[tile_id] = problem
            delete_record(layout, tile_id)
        else:
            yield rec
