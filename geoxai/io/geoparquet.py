"""STAC Items as stac-geoparquet: written in batches with ``rustac``, verified, read back.

stac-geoparquet (one row per Item, properties as columns, geometry as WKB) is what a catalog
of hundreds of thousands of Items is queried through: ``rustac``, ``stac-geoparquet``, DuckDB
or any Parquet reader. :func:`write_stac_geoparquet` streams: it holds one batch of Item dicts
at a time, never the whole catalog.

The first batch fixes the file's schema (``rustac`` builds the Arrow schema from it and
silently drops, in later batches, any field it does not have). So the first batch must hold
every field a later Item has; the writer checks each later batch against it and raises
:class:`~geoxai.errors.CorruptDataError` naming the Item and the field rather than losing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from geoxai.errors import CorruptDataError, InvalidInputError

__all__ = ["field_paths", "read_stac_geoparquet", "without_empty_objects", "write_stac_geoparquet"]

_UNPATHED = ("geometry", "bbox")  # geoarrow WKB / a bbox struct: any shape is one column


def without_empty_objects(value: Any) -> Any:
    """``value`` without ``{}`` members at any depth (Parquet has no empty struct; an empty
    object, e.g. the timings of a tile recorded without them, carries nothing)."""
    if isinstance(value, dict):
        return {k: without_empty_objects(v) for k, v in value.items() if v != {}}
    if isinstance(value, list):
        return [without_empty_objects(v) for v in value]
    return value


def _without_empty_members(item: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`without_empty_objects` of an Item, not walking its geometry and bbox (numbers)."""
    return {
        k: v if k in _UNPATHED else without_empty_objects(v) for k, v in item.items() if v != {}
    }


def field_paths(item: Mapping[str, Any]) -> set[str]:
    """The fields of an Item dict as dotted paths (``properties.geoxai:timings_s.cube_s``,
    ``assets.prediction.raster:bands[].nodata``; a list's elements are ``[]``); geometry and
    bbox count as one field each. Two Items with the same paths have the same Arrow schema
    up to value types."""
    out: set[str] = set()

    def walk(value: Any, path: str) -> None:
        out.add(path)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for v in value:
                walk(v, f"{path}[]")

    for key, value in item.items():
        if key in _UNPATHED:
            out.add(key)
        else:
            walk(value, key)
    return out


async def _write(
    path: Path, batches: Iterator[list[dict[str, Any]]], collection: Mapping[str, Any] | None
) -> int:
    import rustac  # lazy: the Rust STAC library (arrow + parquet) only when a catalog is written

    first = next(batches, [])
    if not first:
        raise InvalidInputError(f"write_stac_geoparquet({path}) got no Item: nothing to write.")
    schema: set[str] = set().union(*(field_paths(i) for i in first))
    writer = await rustac.GeoparquetWriter.open(first, str(path), False)
    if collection is not None:
        writer.add_collection(dict(collection))
    n = len(first)
    for batch in batches:
        for item in batch:
            extra = field_paths(item) - schema
            if extra:
                raise CorruptDataError(
                    f"Item {item.get('id')!r} has field(s) {sorted(extra)[:5]} that no Item of "
                    f"the first batch of {path.name} has: rustac would drop them. Put an Item "
                    "with every field in the first batch."
                )
        if batch:
            await writer.write(batch)
            n += len(batch)
    await writer.finish()
    return n


def write_stac_geoparquet(
    path: str | Path,
    batches: Iterable[Sequence[Mapping[str, Any]]],
    *,
    collection: Mapping[str, Any] | None = None,
) -> int:
    """Write Item dicts, batch by batch, to the local stac-geoparquet file ``path``; verify it.

    Args:
        path: local file to write (replaced).
        batches: lists of STAC Item dicts (empty objects are dropped: Parquet has no empty
            struct); the first batch must hold every field any later Item has (module doc).
        collection: the Collection dict, stored in the file's metadata (stac-geoparquet 1.1).

    Returns:
        The number of Items written, equal to the file's row count.

    Raises:
        InvalidInputError: no Item at all.
        CorruptDataError: a later Item has a field the first batch lacks, or the file read back
            does not have one row per Item written.
    """
    import pyarrow.parquet as pq  # lazy: arrow only when a catalog is written

    out = Path(path)
    it = ([_without_empty_members(i) for i in b] for b in batches)
    n = asyncio.run(_write(out, it, collection))
    rows = pq.read_metadata(out).num_rows
    if rows != n:
        raise CorruptDataError(
            f"{out} holds {rows} rows after writing {n} Items; rewrite the catalog "
            "(`geoxai run` on the same config rewrites it)."
        )
    return n


def read_stac_geoparquet(path: str | Path) -> list[dict[str, Any]]:
    """The Item dicts of a local stac-geoparquet file (all of them: mind the memory).

    Raises:
        CorruptDataError: the file is missing or not stac-geoparquet.
    """
    import rustac  # lazy: the Rust STAC library (arrow + parquet) only when a catalog is read

    try:
        return list(rustac.read_sync(str(path))["features"])
    except (OSError, rustac.RustacError) as exc:
        raise CorruptDataError(
            f"{path} cannot be read as stac-geoparquet ({exc}); rewrite the catalog "
            "(`geoxai run` on the same config rewrites it)."
        ) from exc
