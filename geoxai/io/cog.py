"""Per-tile Cloud-Optimized GeoTIFFs (the per-zone mosaics over them: :mod:`geoxai.io.mosaic`).

Tile COGs (:func:`write_cog`, :func:`write_tile_cogs`): one file per tile and layer, the tile
core only (600 x 600 px, the tile's UTM CRS), written with GDAL's COG driver (DEFLATE with a
predictor, 256 px internal tiles, overviews 2x and 4x by averaging, nodata NaN for float layers
and the layer's fill value otherwise, one band per layer band with its name as description).
Each file is written to a local temporary file, validated with ``rio_cogeo.cog_validate`` and
only then moved into place (``os.replace`` locally, one PUT on S3): a COG that exists is valid.

Stored COGs are checked by the same rule as the zone chunks: planning and the mosaics trust a
COG that exists with the size its tile record holds (one listing per folder,
:mod:`geoxai.mapping.records`); :func:`check_cog` reads it against the recorded SHA-256, for
``geoxai verify`` (:mod:`geoxai.mapping.verify`).

Mosaics (VRTs and the zone overview COGs) are written by :mod:`geoxai.io.mosaic`.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.errors import CorruptDataError, InvalidInputError, look_up_option
from geoxai.geo.grid import TileSpec
from geoxai.io.layout import RunLayout
from geoxai.io.location import resolve, storage_errors
from geoxai.io.store import upload_file
from geoxai.io.zonestore import ZoneStore

__all__ = [
    "COG_BLOCKSIZE",
    "GDAL_TYPES",
    "cog_block",
    "write_cog",
    "write_array_cog",
    "validate_cog",
    "check_cog",
    "write_tile_cogs",
    "gdal_path",
]

COG_BLOCKSIZE = 256
"""Internal tile edge of the COGs, pixels (600 px cores get overviews at 300 and 150 px)."""


GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}
"""numpy dtype name -> GDAL data type name, for the dtypes a COG or mosaic may hold."""


def gdal_path(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The path GDAL/rasterio opens for a store URL (``/vsis3/bucket/key`` for S3).

    For a custom S3 endpoint GDAL needs ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and
    ``AWS_VIRTUAL_HOSTING`` in the environment (see DESIGN.md).
    """
    loc = resolve(url, storage_options)
    return f"/vsis3/{loc.path}" if loc.is_s3 else loc.path


def _as_bands(values: np.ndarray, band_names: Sequence[str], what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InvalidInputError(f"{what}: expected (H, W) or (K, H, W), got shape {a.shape}.")
    if len(band_names) != a.shape[0]:
        raise InvalidInputError(
            f"{what}: {a.shape[0]} bands but {len(band_names)} band names {list(band_names)}."
        )
    return a


def validate_cog(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a COG with rio-cogeo; return ``{"warnings": [...], "overviews": [...]}``.

    Raises:
        CorruptDataError: the file is not a valid COG (the message lists rio-cogeo's errors).
    """
    import rasterio  # lazy: rasterio (GDAL) only on this path
    from rio_cogeo.cogeo import cog_validate  # lazy: rio-cogeo only when a COG is written

    is_valid, errors, warnings = cog_validate(str(path), quiet=True)
    if not is_valid:
        raise CorruptDataError(
            f"{path} is not a valid Cloud-Optimized GeoTIFF: {'; '.join(errors)}. Rewrite it "
            "with geoxai.io.cog.write_cog."
        )
    with rasterio.open(path) as src:
        overviews = src.overviews(1)
    return {"warnings": list(warnings), "overviews": overviews}


def check_cog(
    url: str,
    sha256: str,
    nbytes: int | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> str | None:
    """Why the stored COG at ``url`` is not the one its record describes, or None if it is.

    Checks that the object exists, has ``nbytes`` bytes (when given) and the SHA-256
    ``sha256`` of its bytes. A truncated or altered file fails here before GDAL decodes it.
    Every call reads the whole object (``geoxai verify``; planning only compares sizes).

    Args:
        url: the COG (path or ``s3://`` URL).
        sha256: hex SHA-256 recorded when it was written (:func:`write_cog`).
        nbytes: recorded size in bytes; None skips the size check.
        storage_options: s3fs options; default from the environment.

    Returns:
        None, or one line: ``"missing"``, ``"N bytes, recorded M"``, ``"checksum differs from
        its record"``.

    Raises:
        StoreError: the store cannot be reached (not a verdict on the file).
    """
    loc = resolve(url, storage_options)
    fs = loc.filesystem()
    with storage_errors(loc, "check the COG", passthrough=(FileNotFoundError,)):
        try:
            fs.invalidate_cache(loc.path)
            info = fs.info(loc.path)
        except FileNotFoundError:
            return "missing"
        size = int(info.get("size") or 0)
        if nbytes is not None and size != int(nbytes):
            return f"{size} bytes, recorded {int(nbytes)} (truncated or replaced)"
        h = hashlib.sha256()
        try:
            with fs.open(loc.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except FileNotFoundError:
            return "missing"
    if h.hexdigest() != sha256:
        return "checksum differs from its record"
    return None


def write_cog(
    values: np.ndarray,
    tile: TileSpec,
    url: str,
    *,
    band_names: Sequence[str],
    nodata: float | int | None = None,
    tags: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    resampling: str = "average",
) -> dict[str, Any]:
    """Write a tile core as a validated COG with overviews: :func:`write_array_cog` on the
    tile's core grid, tagged with the tile id.

    Args:
        values: the core, ``(H, W)`` or ``(K, H, W)`` with ``H == W == tile.core_px``.
        tile: the tile (its core grid is used; the halo is ignored).
        url, band_names, nodata, tags, storage_options, resampling: as
            :func:`write_array_cog`.

    Returns:
        ``{"href": url, "sha256": ..., "bytes": ..., "overviews": [2, 4]}``.

    Raises:
        InvalidInputError: the array is not core-sized, or as :func:`write_array_cog`.
    """
    from rasterio.transform import from_origin  # lazy: rasterio (GDAL) only on this path

    a = _as_bands(values, band_names, f"COG {url}")
    n = tile.core_px
    if a.shape[1:] != (n, n):
        raise InvalidInputError(
            f"COG {url}: tile {tile.id} core is {n}x{n} px, got {a.shape[1:]}; cut the core out "
            "with tile.core_slice."
        )
    x0, _, _, y1 = tile.core_bounds
    return write_array_cog(
        a,
        url,
        crs=tile.crs,
        transform=from_origin(x0, y1, tile.resolution_m, tile.resolution_m),
        band_names=band_names,
        nodata=nodata,
        tags={"tile_id": tile.id, **(tags or {})},
        storage_options=storage_options,
        resampling=resampling,
    )


def write_array_cog(
    values: np.ndarray,
    url: str,
    *,
    crs: Any,
    transform: Any,
    band_names: Sequence[str],
    nodata: float | int | None = None,
    tags: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    resampling: str = "average",
) -> dict[str, Any]:
    """Write any georeferenced array as a validated COG with overviews (the core of write_cog).

    Args:
        values: ``(H, W)`` or ``(K, H, W)`` array of a GDAL dtype (uint8 .. float64).
        url: destination path or ``s3://`` URL (``.tif``).
        crs: CRS of the grid (anything rasterio accepts, e.g. ``"EPSG:32631"``).
        transform: affine of the grid (``affine.Affine``).
        band_names: one name per band (stored as band descriptions).
        nodata: nodata value; None = NaN for float data, none for integers.
        tags: extra dataset tags.
        storage_options: s3fs options; default from the environment.
        resampling: overview resampling (``average`` for continuous, ``nearest`` for classes).

    Returns:
        ``{"href": url, "sha256": ..., "bytes": ..., "overviews": [...]}``.

    Raises:
        InvalidInputError: wrong rank, dtype, or names that do not match the bands.
        CorruptDataError: GDAL wrote something rio-cogeo does not accept as a COG.
        StoreError: the file could not be written to ``url``.
    """
    import rasterio  # lazy: rasterio (GDAL) only on this path

    a = _as_bands(values, band_names, f"COG {url}")
    h, w = int(a.shape[1]), int(a.shape[2])
    dtype = a.dtype.name
    if dtype not in GDAL_TYPES:
        raise InvalidInputError(f"COG {url}: dtype {dtype} is not supported; use float32/uint8.")
    if nodata is None and a.dtype.kind == "f":
        nodata = math.nan
    n = max(h, w)
    profile = {
        "driver": "COG",
        "width": w,
        "height": h,
        "count": a.shape[0],
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "predictor": 3 if a.dtype.kind == "f" else 2,
        "blocksize": cog_block(n),
        "overview_resampling": resampling,
        "overviews": "AUTO",
        "overview_count": _overview_count(n),
        "bigtiff": "NO",
    }
    loc = resolve(url, storage_options)
    with tempfile.TemporaryDirectory(prefix="geoxai-cog-") as tmp:
        path = Path(tmp) / "cog.tif"
        with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(path, "w", **profile) as dst:
            dst.write(a)
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, str(name))
            dst.update_tags(**{str(k): str(v) for k, v in (tags or {}).items()})
        info = validate_cog(path)
        if not info["overviews"]:
            raise CorruptDataError(f"COG {url}: GDAL wrote no overviews; check the GDAL build.")
        payload = path.read_bytes()
        upload_file(path, loc)
    return {
        "href": loc.url,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "overviews": list(info["overviews"]),
    }


def write_tile_cogs(
    layout: RunLayout,
    zone: ZoneStore,
    tile: TileSpec,
    layers: Mapping[str, np.ndarray] | None = None,
    *,
    names: Sequence[str] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write ``<root>/cogs/<layer>/<tile_id>.tif`` for each layer of a tile.

    Args:
        layout: the run's layout.
        zone: the tile's zone store (gives each layer's dtype, bands and fill value).
        tile: the tile.
        layers: core arrays to write; None = read them from the zone store (for tiles whose
            COGs are missing after a crash: they are derived products, rebuilt from Zarr).
        names: restrict to these layers (default: every layer given, or every layer of the
            store when ``layers`` is None).
        tags: provenance tags for every file.

    Returns:
        layer -> ``{"href": relative to the run root, "sha256", "bytes", "overviews"}``, ready to
        go into the tile record (``record["cogs"]``).
    """
    chosen = list(names) if names is not None else list(layers or zone.layers)
    out: dict[str, dict[str, Any]] = {}
    for name in chosen:
        look_up_option(
            name, list(zone.layers), what=f"layer of {zone.url}", error=InvalidInputError
        )
        spec = zone.layers[name]
        values = layers[name] if layers is not None else zone.read_tile(tile, name)
        bands = list(spec.bands) or [spec.name]
        resampling = "nearest" if np.dtype(spec.dtype).kind in "iu" else "average"
        url = layout.cog_url(name, tile.id)
        info = write_cog(
            np.asarray(values, dtype=spec.dtype),
            tile,
            url,
            band_names=bands,
            nodata=spec.fill,
            tags={"layer": name, "units": spec.units, **dict(tags or {})},
            storage_options=layout.storage_options,
            resampling=resampling,
        )
        info["href"] = f"cogs/{name}/{tile.id}.tif"
        out[name] = info
    return out


def cog_block(n: int) -> int:
    """COG block edge for an ``n`` px core: 256, or 128 (GDAL's minimum) for small cores."""
    return COG_BLOCKSIZE if n >= 2 * COG_BLOCKSIZE else 128


def _overview_count(n: int) -> int:
    """Halvings until a level fits one block; at least one, so every COG has an overview."""
    count, m = 0, n
    while m > cog_block(n):
        m = math.ceil(m / 2)
        count += 1
    return max(count, 1)
