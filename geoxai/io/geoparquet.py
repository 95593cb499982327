"""STAC Items as stac-geoparquet: written in batches with ``rustac``, verified, read back.

stac-geoparquet (one row per Item, properties as columns, geometry as WKB) is what a catalog
of hundreds of thousands of Items is queried through: ``rustac``, ``stac-geoparquet``, DuckDB
or any Parquet reader. :func:`write_stac_geoparquet` streams: it holds one batch of Item dicts
at a time, never the whole catalog.

The first batch fixes the file's schema (the Arrow schema ``rustac`` builds from it; a later
batch is conformed to it, and a field it lacks would be lost). So the first batch must hold
every field a later Item has; the writer checks each later batch against it and raises
:class:`~geoxai.errors.CorruptDataError` naming the Item and the field rather than losing it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
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


def write_stac_geoparquet(path: str | Path, batches: Iterable[Sequence[Mapping[str, Any]]]) -> int:
    """Write Item dicts, batch by batch, to the local stac-geoparquet file ``path``; verify it.

    Each batch is converted by ``rustac`` (``write_sync`` to a part file: its synchronous API;
    its async writer crashes the interpreter at exit) and appended as one row group by a
    ``pyarrow`` writer whose schema is the first batch's; a later batch's columns are conformed
    to it (absent fields become nulls).

    Args:
        path: local file to write (replaced).
        batches: lists of STAC Item dicts (empty objects are dropped: Parquet has no empty
            struct); the first batch must hold every field any later Item has (module doc).

    Returns:
        The number of Items written, equal to the file's row count.

    Raises:
        InvalidInputError: no Item at all.
        CorruptDataError: a later Item has a field the first batch lacks or of another type,
            or the file read back does not have one row per Item written.
    """
    import pyarrow as pa  # lazy: arrow only when a catalog is written
    import pyarrow.parquet as pq  # lazy: arrow only when a catalog is written
    import rustac  # lazy: the Rust STAC library (arrow + parquet) only when a catalog is written

    out = Path(path)
    part = out.with_name(f".{out.stem}.part.parquet")  # rustac picks the format by suffix
    schema_paths: set[str] | None = None
    writer: Any = None
    meta: dict[bytes, Any] = {}
    n = 0
    try:
        for raw in batches:
            batch = [_without_empty_members(i) for i in raw]
            if not batch:
                continue
            if schema_paths is None:
                schema_paths = set().union(*(field_paths(i) for i in batch))
            else:
                for item in batch:
                    extra = field_paths(item) - schema_paths
                    if extra:
                        raise CorruptDataError(
                            f"Item {item.get('id')!r} has field(s) {sorted(extra)[:5]} that no "
                            f"Item of the first batch of {out.name} has. Put an Item with every "
                            "field in the first batch."
                        )
            rustac.write_sync(str(part), batch)
            table = pq.read_table(part)
            meta = _merge_meta(meta, pq.read_metadata(part).metadata or {})
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema, compression="zstd")
            else:
                try:
                    table = pa.concat_tables(
                        [writer.schema.empty_table(), table], promote_options="permissive"
                    )
                    table = table.select(writer.schema.names).cast(writer.schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise CorruptDataError(
                        f"Items {batch[0].get('id')!r}..{batch[-1].get('id')!r} do not fit the "
                        f"columns of the first batch of {out.name} ({exc}); give a field one "
                        "type in every Item."
                    ) from exc
            writer.write_table(table)
            n += len(batch)
        if writer is not None:
            writer.add_key_value_metadata({k: json.dumps(v) for k, v in meta.items()})
    finally:
        if writer is not None:
            writer.close()
        part.unlink(missing_ok=True)
    if writer is None:
        raise InvalidInputError(f"write_stac_geoparquet({out}) got no Item: nothing to write.")
    rows = pq.read_metadata(out).num_rows
    if rows != n:
        raise CorruptDataError(
            f"{out} holds {rows} rows after writing {n} Items; rewrite the catalog "
            "(`geoxai run` on the same config rewrites it)."
        )
    return n


def _merge_meta(meta: dict[bytes, Any], part: Mapping[bytes, bytes]) -> dict[bytes, Any]:
    """The file metadata rustac wrote for a part (``geo``: GeoParquet, ``stac-geoparquet``),
    the ``geo`` column bbox and geometry types widened to cover every part so far."""
    out = dict(meta)
    for key in (b"geo", b"stac-geoparquet"):
        if key not in part:
            continue
        new = json.loads(part[key])
        if key == b"geo" and key in out:
            for name, col in new.get("columns", {}).items():
                old = out[key]["columns"].get(name)
                if old is None:
                    out[key]["columns"][name] = col
                    continue
                old["geometry_types"] = sorted({*old["geometry_types"], *col["geometry_types"]})
                if "bbox" in old and "bbox" in col:
                    a, b = old["bbox"], col["bbox"]
                    old["bbox"] = [
                        min(a[0], b[0]),
                        min(a[1], b[1]),
                        max(a[2], b[2]),
                        max(a[3], b[3]),
                    ]
        else:
            out[key] = new
    return out


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
