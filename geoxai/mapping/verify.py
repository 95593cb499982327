"""Full verification of a run's outputs: every byte of each ``done`` tile's zone chunks and COGs
against the SHA-256 its record holds.

Planning trusts a ``done`` record whose objects exist with their recorded sizes (one listing per
prefix, :func:`geoxai.mapping.records.check_tiles`): cheap at 240,000 tiles, blind to a flipped
byte. ``geoxai verify`` reads everything: :func:`verify_tiles` checks a batch of tiles (the Ray
tasks of :mod:`pipelines.verify` each call it on one batch), and the caller deletes the records
of the tiles that fail (:func:`geoxai.mapping.records.delete_record`) so the next run redoes
them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geoxai.io.cog import check_cog
from geoxai.io.layout import RunLayout
from geoxai.io.listing import read_json_batch
from geoxai.io.location import storage_errors
from geoxai.io.zonestore import ZoneStore
from geoxai.mapping.records import RECORD_FORMAT, cog_url

__all__ = ["VerifyResult", "verify_record", "verify_tiles"]


@dataclass
class VerifyResult:
    """What :func:`verify_tiles` found.

    Attributes:
        checked: ``done`` tiles whose outputs were read.
        objects: chunk and COG objects read. nbytes: their total bytes.
        problems: tile id -> why its outputs do not check out (one line).
    """

    checked: int = 0
    objects: int = 0
    nbytes: int = 0
    problems: dict[str, str] = field(default_factory=dict)

    def merge(self, other: VerifyResult) -> None:
        """Add ``other``'s counts and problems to this one."""
        self.checked += other.checked
        self.objects += other.objects
        self.nbytes += other.nbytes
        self.problems.update(other.problems)


def verify_record(
    layout: RunLayout, rec: Mapping[str, Any], zone: ZoneStore | None, result: VerifyResult
) -> str | None:
    """Why one ``done`` record's chunks or COGs are missing or differ from its checksums, or None.

    Reads every chunk object the record lists (``layers[*].chunk`` against ``chunk_sha256``)
    and every COG (``cogs[*]`` against ``sha256`` and ``bytes``, :func:`check_cog`); adds what
    it read to ``result``.

    Raises:
        StoreError: the store cannot be reached (not a verdict on the tile).
    """
    if rec.get("format") != RECORD_FORMAT:
        return f"record of another format ({rec.get('format')!r})"
    layers = rec.get("layers")
    if not isinstance(layers, dict) or not layers:
        return "record lists no layers"
    if zone is None:
        return f"no zone store for EPSG:{rec.get('epsg')}"
    fs = zone.loc.filesystem()
    for name, meta in layers.items():
        key = meta.get("chunk") if isinstance(meta, dict) else None
        want = meta.get("chunk_sha256") if isinstance(meta, dict) else None
        if not key or not want:
            return f"layer {name!r}: the record holds no chunk key or checksum"
        loc = zone.loc.child(str(key))
        with storage_errors(loc, "read", passthrough=(FileNotFoundError,)):
            try:
                raw = fs.cat_file(loc.path)
            except FileNotFoundError:
                return f"chunk {key} missing"
        result.objects += 1
        result.nbytes += len(raw)
        if hashlib.sha256(raw).hexdigest() != want:
            return f"chunk {key} differs from its record (checksum)"
    cogs = rec.get("cogs") or {}
    if not isinstance(cogs, dict):
        return "the record's 'cogs' is not a mapping"
    for name, meta in cogs.items():
        href = meta.get("href") if isinstance(meta, dict) else None
        sha = meta.get("sha256") if isinstance(meta, dict) else None
        if not href or not sha:
            return f"COG of layer {name!r}: the record holds no href or checksum"
        problem = check_cog(
            cog_url(layout, str(href)),
            str(sha),
            meta.get("bytes"),
            storage_options=layout.storage_options,
        )
        if problem:
            return f"COG {href}: {problem}"
        result.objects += 1
        result.nbytes += int(meta.get("bytes") or 0)
    return None


def verify_tiles(layout: RunLayout, tile_ids: Sequence[str]) -> VerifyResult:
    """Read the outputs of each tile of ``tile_ids`` whose record says ``done`` against the
    record's checksums; writes nothing.

    A record that is not valid JSON is a problem too; tiles without a record, or recorded
    ``failed``/``empty``, are skipped (planning redoes them anyway).

    Raises:
        StoreError: the store cannot be reached.
    """
    result = VerifyResult()
    present = set(layout.zones())  # a store that cannot be listed raises here, deletes nothing
    zones: dict[int, ZoneStore | None] = {}
    records = layout.at(layout.records_url())
    for key, rec, why in read_json_batch(records, [f"{t}.json" for t in tile_ids]):
        tile_id = key[: -len(".json")]
        if why is not None or (rec is not None and not isinstance(rec, dict)):
            result.problems[tile_id] = f"record unreadable: {why or 'not a JSON object'}"
            continue
        if rec is None or rec.get("status") != "done":
            continue
        if rec.get("tile_id") != tile_id:
            result.problems[tile_id] = f"record of another tile ({rec.get('tile_id')!r})"
            continue
        epsg = int(rec.get("epsg") or 0)
        if epsg not in zones:
            zones[epsg] = ZoneStore.open(layout, epsg) if epsg in present else None
        result.checked += 1
        problem = verify_record(layout, rec, zones[epsg], result)
        if problem:
            result.problems[tile_id] = problem
    return result
