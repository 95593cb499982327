"""A run's outputs: zone-global Zarr stores, exactly-once tile writes, per-tile records.

Layout of one run and year (``run_root`` = ``RunConfig.run_root()`` =
``<store.root>/<name>/<year>``, a local path or ``s3://bucket/prefix``)::

    <run_root>/
        config.json                     the run config (written by the driver, :func:`save_config`)
        zone=<epsg>/outputs.zarr/       Zarr v3 group, one per UTM zone (:class:`ZoneStore`)
            prediction/                 float32 (K, Y, X) or (Y, X), fill NaN
            asos_sensitivity/           float32, fill NaN
            quality/                    uint8 (Y, X), fill 0 = nodata
            change/ change_flag/        optional, against a previous year (:func:`change_layers`)
            x/ y/                       pixel-centre coordinates, metres of the zone CRS
        records/<tile_id>.json          per-tile record, written LAST (:func:`write_tile`)
        cogs/<layer>/<tile_id>.tif      per-tile COGs (:mod:`geoxai.cog`)
        mosaics/zone=<epsg>/<layer>.vrt per-zone mosaics of the COGs (:mod:`geoxai.cog`)
        catalog/                        self-contained STAC catalog (:mod:`geoxai.catalog`)
        report.html                     run report (:mod:`geoxai.report`)

Zone grid: the arrays of a zone cover the bounding box of the run's tiles in that zone, on the
zone lattice (origin at multiples of 6,000 m), chunked ``(600, 600)`` in y/x (a leading band axis
is one chunk), so one tile core is exactly one chunk of every layer and concurrent writers never
share a chunk. Chunks that are never written read as the fill value.

Exactly-once protocol of :func:`write_tile`: (1) delete the tile's old record, (2) write the core
chunks, (3) read them back and compare SHA-256 checksums of the values, (4) hash the stored
(encoded) chunk objects, (5) write the record atomically (one PUT on S3, ``os.replace`` locally).
A record therefore implies verified chunks; :func:`tile_state` re-checks the stored chunk hashes
(one GET per layer, no decoding), so a tile whose record or chunks are missing, corrupt or from
another config is planned again by :func:`plan_tiles`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.errors import (
    ConfigError,
    InvalidInputError,
    NoDataError,
    StoreError,
    look_up_option,
)
from geoxai.grid import RESOLUTION_M, TILE_SIZE_M, TileSpec
from geoxai.store import StoreLocation, read_json, resolve, write_json

__all__ = [
    "RECORD_FORMAT",
    "ZONE_FORMAT",
    "STATUSES",
    "LayerSpec",
    "ZoneGrid",
    "RunLayout",
    "ZoneStore",
    "TileState",
    "default_layers",
    "change_layer_specs",
    "write_tile",
    "write_status",
    "read_record",
    "read_records",
    "tile_state",
    "tile_is_done",
    "plan_tiles",
    "change_layers",
    "save_config",
    "layer_checksum",
    "upload_file",
]

RECORD_FORMAT = "geoxai-tile-record/1"
"""Value of the ``format`` field of every per-tile record."""
ZONE_FORMAT = "geoxai-zone/1"
"""Value of ``attrs["geoxai:format"]`` of a zone group."""
STATUSES = ("done", "failed", "empty")
"""Statuses a tile record can carry."""

_CHANGE_NODATA, _CHANGE_STABLE, _CHANGE_UP, _CHANGE_DOWN = 0, 1, 2, 3


# ---- value objects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One array of a zone store.

    Attributes:
        name: array name (``prediction``, ``asos_sensitivity``, ``quality`` ...).
        dtype: numpy dtype name of the stored values (``float32``, ``uint8`` ...).
        bands: names along a leading band axis, stored ``(K, Y, X)``; empty = 2-D ``(Y, X)``.
        fill_value: value of never-written pixels and nodata; None = NaN for floats, 0 otherwise.
        description: one line for humans (Zarr attrs, COG descriptions, STAC).
        units: physical unit of the values ("1" for fractions/probabilities, "" if categorical).
    """

    name: str
    dtype: str = "float32"
    bands: tuple[str, ...] = ()
    fill_value: float | int | None = None
    description: str = ""
    units: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ConfigError(
                f"Layer name {self.name!r} must be letters, digits and underscores (it becomes "
                "a Zarr array and a file name)."
            )
        if self.name in ("x", "y"):
            raise ConfigError("Layer names 'x' and 'y' are reserved for the coordinate arrays.")
        try:
            np.dtype(self.dtype)
        except TypeError as exc:
            raise ConfigError(f"Layer {self.name!r}: unknown dtype {self.dtype!r}.") from exc
        object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))

    @property
    def fill(self) -> float | int:
        """The effective fill value (NaN for floats when ``fill_value`` is None)."""
        if self.fill_value is not None:
            return self.fill_value
        return math.nan if np.dtype(self.dtype).kind == "f" else 0

    def core_shape(self, core_px: int) -> tuple[int, ...]:
        """Shape of one tile core of this layer: ``(K, n, n)`` or ``(n, n)``."""
        return (len(self.bands), core_px, core_px) if self.bands else (core_px, core_px)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN fill written as the string ``"NaN"``)."""
        d = asdict(self)
        d["bands"] = list(self.bands)
        fill = self.fill
        d["fill_value"] = "NaN" if isinstance(fill, float) and math.isnan(fill) else fill
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerSpec:
        """Inverse of :meth:`to_dict`."""
        fill = d.get("fill_value")
        if fill == "NaN":
            fill = math.nan
        return cls(
            name=str(d["name"]),
            dtype=str(d.get("dtype", "float32")),
            bands=tuple(d.get("bands", ())),
            fill_value=fill,
            description=str(d.get("description", "")),
            units=str(d.get("units", "")),
        )

    def same_as(self, other: LayerSpec) -> bool:
        """Equal storage contract (name, dtype, bands, fill); descriptions may differ."""
        return self.to_dict() | {"description": "", "units": ""} == other.to_dict() | {
            "description": "",
            "units": "",
        }


def default_layers(
    prediction_bands: Sequence[str] = (),
    asos_bands: Sequence[str] = (),
    *,
    prediction_units: str = "1",
) -> tuple[LayerSpec, ...]:
    """The standard layers: ``prediction``, ``asos_sensitivity`` (float32, NaN) and ``quality``.

    Args:
        prediction_bands: output names of the model (``(K, Y, X)``); empty = one 2-D map.
        asos_bands: names of the ASOS sensitivity maps; empty = one 2-D map.
        prediction_units: unit of the prediction ("1" for a fraction or probability).
    """
    return (
        LayerSpec(
            "prediction",
            "float32",
            tuple(prediction_bands),
            description="model prediction, Gaussian-blended windows",
            units=prediction_units,
        ),
        LayerSpec(
            "asos_sensitivity",
            "float32",
            tuple(asos_bands),
            description="ASOS occlusion sensitivity of the prediction",
            units="1",
        ),
        LayerSpec(
            "quality",
            "uint8",
            (),
            fill_value=0,
            description="per-pixel quality; 0 = nodata (no valid observation)",
        ),
    )


def change_layer_specs(prediction: LayerSpec) -> tuple[LayerSpec, LayerSpec]:
    """Specs of ``change`` (float32, same bands as the prediction) and ``change_flag`` (uint8).

    ``change_flag``: 0 = nodata in either year, 1 = stable, 2 = increase, 3 = decrease.
    """
    return (
        LayerSpec(
            "change",
            "float32",
            prediction.bands,
            description="prediction minus the previous year's prediction",
            units=prediction.units,
        ),
        LayerSpec(
            "change_flag",
            "uint8",
            prediction.bands,
            fill_value=0,
            description="0 nodata, 1 stable, 2 increase, 3 decrease (|change| > threshold)",
        ),
    )


@dataclass(frozen=True)
class ZoneGrid:
    """The zone-global grid of a zone store: whole tiles of the zone lattice.

    Attributes:
        epsg: EPSG code of the UTM zone.
        col0: lattice column of the westmost tile.
        row0: lattice row of the southmost tile.
        ncols: number of tile columns (west to east).
        nrows: number of tile rows (south to north).
        tile_size_m: tile core edge, metres.
        resolution_m: pixel size, metres.
    """

    epsg: int
    col0: int
    row0: int
    ncols: int
    nrows: int
    tile_size_m: int = TILE_SIZE_M
    resolution_m: int = RESOLUTION_M

    def __post_init__(self) -> None:
        if self.ncols < 1 or self.nrows < 1:
            raise ConfigError(f"ZoneGrid needs >= 1 tile column and row, got {self}.")

    @classmethod
    def from_tiles(cls, tiles: Iterable[TileSpec]) -> dict[int, ZoneGrid]:
        """One grid per EPSG code: the bounding box (in tiles) of ``tiles`` of that zone."""
        by_zone: dict[int, list[TileSpec]] = {}
        for t in tiles:
            by_zone.setdefault(t.epsg, []).append(t)
        if not by_zone:
            raise InvalidInputError("ZoneGrid.from_tiles got no tiles; a run needs >= 1 tile.")
        grids = {}
        for epsg, ts in sorted(by_zone.items()):
            sizes = {(t.tile_size_m, t.resolution_m) for t in ts}
            if len(sizes) != 1:
                raise InvalidInputError(
                    f"Tiles of EPSG:{epsg} mix tile/pixel sizes {sorted(sizes)}; a zone store "
                    "holds one lattice."
                )
            (size, res) = sizes.pop()
            c0, c1 = min(t.col for t in ts), max(t.col for t in ts)
            r0, r1 = min(t.row for t in ts), max(t.row for t in ts)
            grids[epsg] = cls(epsg, c0, r0, c1 - c0 + 1, r1 - r0 + 1, size, res)
        return grids

    @property
    def core_px(self) -> int:
        """Pixels per tile edge (600)."""
        return self.tile_size_m // self.resolution_m

    @property
    def shape(self) -> tuple[int, int]:
        """``(Y, X)`` pixels of the whole grid."""
        return (self.nrows * self.core_px, self.ncols * self.core_px)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)``, metres of the zone CRS."""
        s = self.tile_size_m
        return (
            self.col0 * s,
            self.row0 * s,
            (self.col0 + self.ncols) * s,
            (self.row0 + self.nrows) * s,
        )

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """Affine ``(a, b, c, d, e, f)`` pixel -> CRS, north-up (top-left origin)."""
        x0, _, _, y1 = self.bounds
        r = float(self.resolution_m)
        return (r, 0.0, float(x0), 0.0, -r, float(y1))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres ``(y, x)``, metres (y decreasing), float64."""
        x0, _, _, y1 = self.bounds
        r = self.resolution_m
        ny, nx = self.shape
        return y1 - r * (np.arange(ny) + 0.5), x0 + r * (np.arange(nx) + 0.5)

    def contains(self, tile: TileSpec) -> bool:
        """True when ``tile`` lies on this grid."""
        return (
            tile.epsg == self.epsg
            and tile.tile_size_m == self.tile_size_m
            and tile.resolution_m == self.resolution_m
            and self.col0 <= tile.col < self.col0 + self.ncols
            and self.row0 <= tile.row < self.row0 + self.nrows
        )

    def chunk_index(self, tile: TileSpec) -> tuple[int, int]:
        """``(chunk_row, chunk_col)`` of the tile's core (row 0 = northmost tile row)."""
        if not self.contains(tile):
            raise InvalidInputError(
                f"Tile {tile.id} is not on the zone grid {self.describe()}; the zone store was "
                "created for another set of tiles (use a new run root, or add the tile to the "
                "run before its first write)."
            )
        return (self.row0 + self.nrows - 1 - tile.row, tile.col - self.col0)

    def region(self, tile: TileSpec) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of the tile core in the grid's ``(Y, X)`` arrays."""
        i, j = self.chunk_index(tile)
        n = self.core_px
        return slice(i * n, (i + 1) * n), slice(j * n, (j + 1) * n)

    def tiles(self) -> list[TileSpec]:
        """Every tile of the grid (sorted by row, col)."""
        return [
            TileSpec(self.epsg, c, r, 0, self.tile_size_m, self.resolution_m)
            for r in range(self.row0, self.row0 + self.nrows)
            for c in range(self.col0, self.col0 + self.ncols)
        ]

    def describe(self) -> str:
        """Short text: EPSG, tile columns/rows."""
        return (
            f"EPSG:{self.epsg} cols {self.col0}..{self.col0 + self.ncols - 1} "
            f"rows {self.row0}..{self.row0 + self.nrows - 1} ({self.tile_size_m} m tiles, "
            f"{self.resolution_m} m px)"
        )

    def to_dict(self) -> dict[str, int]:
        """JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class RunLayout:
    """Where the outputs of one run and year live (see the module docstring).

    Attributes:
        root: the year-partitioned run root, ``<store.root>/<name>/<year>`` (path or s3 URL).
        storage_options: s3fs options; None = from the AWS_* environment variables.
    """

    root: str
    storage_options: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", self.location.url)

    @property
    def location(self) -> StoreLocation:
        """The resolved root."""
        return resolve(self.root, self.storage_options)

    def url(self, *parts: str) -> str:
        """URL of ``parts`` joined under the root."""
        return "/".join([self.root.rstrip("/"), *parts])

    def loc(self, *parts: str) -> StoreLocation:
        """Resolved location of ``parts`` under the root."""
        return resolve(self.url(*parts), self.storage_options)

    def zone_url(self, epsg: int) -> str:
        """``<root>/zone=<epsg>/outputs.zarr``."""
        return self.url(f"zone={epsg}", "outputs.zarr")

    def record_url(self, tile_id: str) -> str:
        """``<root>/records/<tile_id>.json``."""
        return self.url("records", f"{tile_id}.json")

    def cog_url(self, layer: str, tile_id: str) -> str:
        """``<root>/cogs/<layer>/<tile_id>.tif``."""
        return self.url("cogs", layer, f"{tile_id}.tif")

    def mosaic_url(self, layer: str, epsg: int) -> str:
        """``<root>/mosaics/zone=<epsg>/<layer>.vrt``."""
        return self.url("mosaics", f"zone={epsg}", f"{layer}.vrt")

    def catalog_url(self) -> str:
        """``<root>/catalog`` (the STAC catalog folder)."""
        return self.url("catalog")

    def report_url(self) -> str:
        """``<root>/report.html``."""
        return self.url("report.html")

    def config_url(self) -> str:
        """``<root>/config.json``."""
        return self.url("config.json")

    def zones(self) -> list[int]:
        """EPSG codes of the zone stores present under the root."""
        loc = self.location
        fs = loc.filesystem()
        try:
            fs.invalidate_cache()
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(loc.path, detail=False)]
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if n.startswith("zone=") and n[5:].isdigit():
                out.append(int(n[5:]))
        return sorted(out)


# ---- zone stores ------------------------------------------------------------------------------


def _zarr_store(loc: StoreLocation) -> Any:
    import zarr

    if loc.is_s3:
        return zarr.storage.FsspecStore.from_url(loc.url, storage_options=dict(loc.storage_options))
    return zarr.storage.LocalStore(loc.path)


class ZoneStore:
    """The Zarr v3 group of one UTM zone of a run: one array per layer on a :class:`ZoneGrid`.

    Use :meth:`create` (idempotent, safe when workers race) or :meth:`open` (existing store).
    The group attrs hold ``crs``, ``transform`` (6 floats), ``geoxai:grid`` and
    ``geoxai:format``; every array has ``dimension_names`` so ``xarray.open_zarr`` reads it.
    """

    def __init__(self, layout: RunLayout, grid: ZoneGrid, layers: Mapping[str, LayerSpec]) -> None:
        self.layout = layout
        self.grid = grid
        self.layers = dict(layers)
        self.loc = layout.loc(f"zone={grid.epsg}", "outputs.zarr")
        self._group: Any = None

    # -- construction --
    @classmethod
    def create(cls, layout: RunLayout, grid: ZoneGrid, layers: Iterable[LayerSpec]) -> ZoneStore:
        """Create the zone store, or open it when it exists with the same grid.

        Several workers may call this at once with the same arguments: every one writes the same
        metadata and none deletes anything. Layers missing from an existing store are added.

        Raises:
            ConfigError: the store exists with another grid, or a layer of the same name with
                another dtype/bands/fill; the message names both.
        """
        import zarr
        from zarr.errors import ContainsArrayError, ContainsGroupError

        store = cls(layout, grid, {})
        attrs = {
            "geoxai:format": ZONE_FORMAT,
            "geoxai:grid": grid.to_dict(),
            "crs": f"EPSG:{grid.epsg}",
            "transform": list(grid.transform),
            "resolution_m": grid.resolution_m,
            "tile_size_m": grid.tile_size_m,
        }
        with _io(store.loc, "create the zone store"):
            zs = _zarr_store(store.loc)
            try:
                group = zarr.create_group(zs, attributes=attrs, zarr_format=3, overwrite=False)
            except ContainsGroupError:
                group = zarr.open_group(zs, mode="r+", zarr_format=3)
                store._check_grid(group)
            store._group = group
            y, x = grid.coords()
            for name, values in (("y", y), ("x", x)):
                try:
                    arr = group.create_array(
                        name,
                        shape=values.shape,
                        dtype="float64",
                        chunks=values.shape,
                        dimension_names=(name,),
                        attributes={"units": "metre", "crs": f"EPSG:{grid.epsg}"},
                        overwrite=False,
                    )
                    arr[:] = values
                except ContainsArrayError:
                    arr = group[name]
                    if not np.array_equal(np.asarray(arr[:]), values):
                        arr[:] = values  # a racing creator died before writing them
        store._load_layers()
        for spec in layers:
            store.ensure_layer(spec)
        return store

    @classmethod
    def open(cls, layout: RunLayout, epsg: int) -> ZoneStore:
        """Open an existing zone store.

        Raises:
            StoreError: there is no zone store for ``epsg`` under the run root.
        """
        import zarr

        loc = layout.loc(f"zone={epsg}", "outputs.zarr")
        with _io(loc, "open the zone store"):
            try:
                group = zarr.open_group(_zarr_store(loc), mode="r+", zarr_format=3)
            except FileNotFoundError as exc:
                raise StoreError(
                    f"No zone store for EPSG:{epsg} at {loc.describe()}; no tile of that zone "
                    "was written in this run (check the run root and year)."
                ) from exc
        grid_d = group.attrs.get("geoxai:grid")
        if not isinstance(grid_d, dict):
            raise StoreError(
                f"{loc.describe()} is not a geoxai zone store (no 'geoxai:grid' attribute); "
                "delete it or use another run root."
            )
        store = cls(layout, ZoneGrid(**grid_d), {})
        store._group = group
        store._load_layers()
        return store

    def _check_grid(self, group: Any) -> None:
        got = group.attrs.get("geoxai:grid")
        if got != self.grid.to_dict():
            other = ZoneGrid(**got).describe() if isinstance(got, dict) else repr(got)
            raise ConfigError(
                f"Zone store {self.loc.describe()} exists with grid {other}, but this run asks "
                f"for {self.grid.describe()}. A run root's zone grid is fixed by its first "
                "write: use a new run name/root for another set of tiles, or delete the zone "
                "store to rebuild it."
            )

    def _load_layers(self) -> None:
        for name, arr in self._group.arrays():
            spec = arr.attrs.get("geoxai:layer")
            if isinstance(spec, dict):
                self.layers[name] = LayerSpec.from_dict(spec)

    def ensure_layer(self, spec: LayerSpec) -> Any:
        """Add the array of ``spec`` if absent (idempotent); return it.

        Raises:
            ConfigError: an array of that name exists with another dtype, bands or fill value.
        """
        from zarr.errors import ContainsArrayError

        existing = self.layers.get(spec.name)
        if existing is not None:
            if not existing.same_as(spec):
                raise ConfigError(
                    f"Zone store {self.loc.describe()}: layer {spec.name!r} exists as "
                    f"{existing.to_dict()}, but this run writes {spec.to_dict()}. Use a new run "
                    "root, or another layer name."
                )
            return self.array(spec.name)
        n = self.grid.core_px
        ny, nx = self.grid.shape
        k = len(spec.bands)
        shape, chunks, dims = (
            ((k, ny, nx), (k, n, n), (f"{spec.name}_band", "y", "x"))
            if k
            else ((ny, nx), (n, n), ("y", "x"))
        )
        with _io(self.loc, f"create layer {spec.name!r} in"):
            try:
                self._group.create_array(
                    spec.name,
                    shape=shape,
                    dtype=spec.dtype,
                    chunks=chunks,
                    fill_value=spec.fill,
                    dimension_names=dims,
                    chunk_key_encoding={"name": "default", "separator": "/"},
                    attributes={
                        "geoxai:layer": spec.to_dict(),
                        "description": spec.description,
                        "units": spec.units,
                        "band_names": list(spec.bands),
                        "grid_mapping_crs": f"EPSG:{self.grid.epsg}",
                    },
                    overwrite=False,
                )
            except ContainsArrayError:
                pass
        self._load_layers()
        got = self.layers.get(spec.name)
        if got is None or not got.same_as(spec):
            raise ConfigError(
                f"Zone store {self.loc.describe()}: layer {spec.name!r} exists as "
                f"{got.to_dict() if got else 'a foreign array'}, but this run writes "
                f"{spec.to_dict()}. Use a new run root, or another layer name."
            )
        return self.array(spec.name)

    # -- access --
    @property
    def epsg(self) -> int:
        """EPSG code of the zone."""
        return self.grid.epsg

    @property
    def url(self) -> str:
        """URL of the Zarr group."""
        return self.loc.url

    def array(self, name: str) -> Any:
        """The zarr array of layer ``name`` (writes empty chunks too, so they can be checked)."""
        look_up_option(name, list(self.layers), what="zone store layer", error=InvalidInputError)
        return self._group[name].with_config({"write_empty_chunks": True})

    def chunk_key(self, layer: str, tile: TileSpec) -> str:
        """Key of the tile's chunk of ``layer``, relative to the group (``prediction/c/0/1/2``)."""
        i, j = self.grid.chunk_index(tile)
        idx = [0, i, j] if self.layers[layer].bands else [i, j]
        return f"{layer}/c/" + "/".join(str(v) for v in idx)

    def read_tile(self, tile: TileSpec, layer: str) -> np.ndarray:
        """The tile core of ``layer``: ``(K, n, n)`` or ``(n, n)`` in the layer's dtype."""
        rows, cols = self.grid.region(tile)
        arr = self.array(layer)
        with _io(self.loc, f"read {layer!r} of tile {tile.id} from"):
            return np.asarray(arr[..., rows, cols])

    def read_chunk_bytes(self, layer: str, tile: TileSpec) -> bytes | None:
        """The stored (encoded) chunk object of the tile, or None when it does not exist."""
        loc = self.loc.child(self.chunk_key(layer, tile))
        fs = loc.filesystem()
        with _io(loc, "read"):
            try:
                return bytes(fs.cat_file(loc.path))
            except FileNotFoundError:
                return None

    def read_region(self, layer: str, *, step: int = 1, band: int | None = None) -> np.ndarray:
        """The whole layer, every ``step``-th pixel (for quicklooks); ``band`` picks one band."""
        arr = self.array(layer)
        with _io(self.loc, f"read {layer!r} from"):
            if self.layers[layer].bands:
                b = 0 if band is None else band
                return np.asarray(arr[b, ::step, ::step])
            return np.asarray(arr[::step, ::step])

    def to_xarray(self) -> Any:
        """The group as a lazy ``xarray.Dataset`` (dims ``y``, ``x``; attrs with CRS/transform)."""
        import xarray as xr

        target, so = self.loc.zarr_target()
        with _io(self.loc, "open"):
            return xr.open_zarr(
                target, consolidated=False, zarr_format=3, storage_options=so, chunks={}
            )


class _io:
    """Context manager: storage-layer exceptions become :class:`StoreError` naming the place."""

    def __init__(self, loc: StoreLocation, action: str) -> None:
        self.loc, self.action = loc, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, OSError) or isinstance(exc, StoreError):
            return False
        if isinstance(exc, FileNotFoundError):
            return False
        raise StoreError(
            f"Could not {self.action} {self.loc.describe()}: {type(exc).__name__}: {exc}"
        ) from exc


# ---- checksums and records ---------------------------------------------------------------


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
    from geoxai.provenance import code_version

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
    rec_loc = layout.loc("records", f"{tile.id}.json")
    # 1. the old record goes first: from now on the tile reads as not done
    fs = rec_loc.filesystem()
    with _io(rec_loc, "delete the old record"):
        try:
            fs.rm_file(rec_loc.path)
        except FileNotFoundError:
            pass
    rows, cols = zone.grid.region(tile)
    # 2. write the core chunks (whole chunks: nothing else is read or touched)
    for name, values in data.items():
        with _io(zone.loc, f"write {name!r} of tile {tile.id} to"):
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
    from geoxai.provenance import code_version

    look_up_option(status, ["failed", "empty"], what="tile status", error=InvalidInputError)
    if not reason:
        raise InvalidInputError(f"write_status({tile.id}, {status!r}) needs a reason.")
    out = _base_record(tile, status, dict(record or {}), code_version())
    out["reason"] = str(reason)[:4000]
    write_json(out, layout.loc("records", f"{tile.id}.json"))
    return out


def read_record(layout: RunLayout, tile_id: str) -> dict[str, Any] | None:
    """The tile's record, or None when absent.

    Raises:
        StoreError: the record exists but is not valid JSON (see :func:`tile_state`).
    """
    rec = read_json(layout.loc("records", f"{tile_id}.json"), default=None)
    if rec is not None and not isinstance(rec, dict):
        raise StoreError(f"Record of tile {tile_id} under {layout.root} is not a JSON object.")
    return rec


def read_records(layout: RunLayout) -> list[dict[str, Any]]:
    """Every readable record of the run, sorted by tile id (unreadable ones are skipped)."""
    loc = layout.loc("records")
    fs = loc.filesystem()
    try:
        fs.invalidate_cache()
        paths = sorted(p for p in fs.ls(loc.path, detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for p in paths:
        tile_id = p.rstrip("/").rsplit("/", 1)[-1][: -len(".json")]
        try:
            rec = read_record(layout, tile_id)
        except StoreError:
            continue
        if rec is not None and rec.get("tile_id") == tile_id:
            out.append(rec)
    return out


# ---- planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileState:
    """What the store says about one tile.

    Attributes:
        tile_id: the tile.
        state: ``done``, ``empty``, ``failed``, ``missing`` (no record), ``stale`` (another
            config hash) or ``invalid`` (unreadable record, missing or altered chunks).
        reason: why, for logs and the report.
    """

    tile_id: str
    state: str
    reason: str = ""


def tile_state(
    layout: RunLayout,
    tile: TileSpec,
    config_hash: str,
    *,
    zone: ZoneStore | None = None,
) -> TileState:
    """Check a tile's record and, for ``done`` tiles, the stored chunks (one GET per layer)."""
    try:
        rec = read_record(layout, tile.id)
    except StoreError as exc:
        return TileState(tile.id, "invalid", f"record unreadable: {exc}")
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
        raw = zone.read_chunk_bytes(name, tile)
        if raw is None:
            return TileState(tile.id, "invalid", f"chunk {key} missing")
        if hashlib.sha256(raw).hexdigest() != meta.get("chunk_sha256"):
            return TileState(tile.id, "invalid", f"chunk {key} differs from its record")
    return TileState(tile.id, "done")


def tile_is_done(layout: RunLayout, tile: TileSpec, config_hash: str) -> bool:
    """True when the tile has a ``done`` record of this config and all its chunks check out."""
    return tile_state(layout, tile, config_hash).state == "done"


def plan_tiles(
    layout: RunLayout,
    tiles: Sequence[TileSpec],
    config_hash: str,
    *,
    force: bool = False,
    redo_empty: bool = False,
) -> tuple[list[TileSpec], list[TileSpec]]:
    """Split ``tiles`` into ``(todo, done)``.

    ``done`` holds tiles whose record is ``done`` with this config hash and verified chunks,
    and (unless ``redo_empty``) tiles recorded ``empty`` with this hash: no data is a result.
    Everything else (missing, failed, stale, invalid) is in ``todo``; ``force`` puts every tile
    in ``todo``. Order is preserved.
    """
    if force:
        return list(tiles), []
    zones: dict[int, ZoneStore | None] = {}
    todo, done = [], []
    for t in tiles:
        if t.epsg not in zones:
            try:
                zones[t.epsg] = ZoneStore.open(layout, t.epsg)
            except StoreError:
                zones[t.epsg] = None
        st = tile_state(layout, t, config_hash, zone=zones[t.epsg])
        if st.state == "done" or (st.state == "empty" and not redo_empty):
            done.append(t)
        else:
            todo.append(t)
    return todo, done


# ---- change against a previous year -------------------------------------------------------------


def change_layers(
    previous: RunLayout,
    tile: TileSpec,
    prediction: np.ndarray,
    *,
    threshold: float,
    layer: str = "prediction",
) -> dict[str, np.ndarray]:
    """``change`` = prediction - previous year's, and ``change_flag``, for one tile core.

    The previous tile must be ``done`` in ``previous`` with verified chunks (any config hash:
    the years' configs differ by definition). Add the result to ``write_tile``'s layers after
    ``zone.ensure_layer`` of :func:`change_layer_specs`.

    Args:
        previous: layout of the previous year's run.
        tile: the tile.
        prediction: this year's core, ``(n, n)`` or ``(K, n, n)``, float.
        threshold: ``|change|`` above which a pixel is flagged (units of the prediction).
        layer: the layer compared.

    Returns:
        ``{"change": float32, "change_flag": uint8}`` shaped like ``prediction``; flags:
        0 nodata (NaN in either year), 1 stable, 2 increase, 3 decrease.

    Raises:
        NoDataError: the previous run has no verified ``done`` record for the tile.
        InvalidInputError: shapes differ, or the threshold is negative or not finite.
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise InvalidInputError(f"change threshold must be finite and >= 0, got {threshold}.")
    rec = None
    try:
        rec = read_record(previous, tile.id)
    except StoreError:
        rec = None
    if rec is None or rec.get("status") != "done":
        raise NoDataError(
            f"Tile {tile.id} has no done record in the previous run {previous.root} "
            f"(found {rec.get('status') if rec else 'none'}); the change layer needs both "
            "years. Run the previous year for this tile, or drop the baseline."
        )
    st = tile_state(previous, tile, str(rec.get("config_hash")))
    if st.state != "done":
        raise NoDataError(
            f"Tile {tile.id} in the previous run {previous.root} is {st.state} ({st.reason}); "
            "rerun the previous year for this tile."
        )
    prev = ZoneStore.open(previous, tile.epsg).read_tile(tile, layer).astype("float32")
    now = np.asarray(prediction, dtype="float32")
    if prev.shape != now.shape:
        raise InvalidInputError(
            f"Tile {tile.id}: prediction {now.shape} vs previous year {prev.shape}; the change "
            "layer needs the same model outputs in both years."
        )
    diff = now - prev
    flag = np.full(diff.shape, _CHANGE_NODATA, dtype="uint8")
    ok = np.isfinite(diff)
    flag[ok] = _CHANGE_STABLE
    flag[ok & (diff > threshold)] = _CHANGE_UP
    flag[ok & (diff < -threshold)] = _CHANGE_DOWN
    return {"change": diff, "change_flag": flag}


def upload_file(src: str | os.PathLike[str], loc: StoreLocation) -> None:
    """Move a finished local file to ``loc`` whole: ``os.replace`` locally, one PUT on S3.

    Raises:
        StoreError: the destination cannot be written.
    """
    src = Path(src)
    try:
        if loc.is_s3:
            fs = loc.filesystem()
            fs.put_file(str(src), loc.path)
            fs.invalidate_cache()
        else:
            dst = Path(loc.path)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"Could not write {loc.describe()}: {type(exc).__name__}: {exc}") from exc


def save_config(layout: RunLayout, config: Any) -> str:
    """Write the run config (a pydantic model or dict) to ``<root>/config.json``; return its URL."""
    doc = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    write_json(doc, layout.loc("config.json"))
    return layout.config_url()
