"""Zone stores: the zone-global Zarr v3 group of a run, its grid, its layers, and the run layout.

See :mod:`geoxai.mapping.records` for the layout of a run folder and the exactly-once tile protocol
that writes into these stores. A :class:`ZoneStore` covers the bounding box of the run's tiles in
one UTM zone (:class:`ZoneGrid`, origin on the 6,000 m lattice), one array per :class:`LayerSpec`,
chunked ``(600, 600)`` in y/x with the band axis whole, so a tile core is exactly one chunk of
every layer and concurrent writers of different tiles never share a chunk. Creation is idempotent
and safe when workers race (identical metadata, nothing deleted); a grid or layer mismatch is a
:class:`~geoxai.errors.ConfigError` naming both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.errors import ContainsArrayError, ContainsGroupError

from geoxai.errors import ConfigError, InvalidInputError, StoreError, look_up_option
from geoxai.geo.grid import RESOLUTION_M, TILE_SIZE_M, TileSpec
from geoxai.io.layout import RunLayout
from geoxai.io.location import StoreLocation, storage_errors

__all__ = [
    "ZONE_FORMAT",
    "LayerSpec",
    "ZoneGrid",
    "ZoneStore",
    "default_layers",
    "change_layer_specs",
]

ZONE_FORMAT = "geoxai-zone/1"
"""Value of ``attrs["geoxai:format"]`` of a zone group."""

_MISSING = (FileNotFoundError,)
"""Passed through :func:`storage_errors` as it is: the callers decide what a missing key means."""


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


def _zarr_store(loc: StoreLocation) -> Any:

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
        self.loc = layout.at(layout.zone_url(grid.epsg))
        self._group: Any = None
        self._arrays: dict[str, Any] = {}  # name -> zarr array, its metadata read once

    # -- construction --
    @classmethod
    def create(cls, layout: RunLayout, grid: ZoneGrid, layers: Iterable[LayerSpec]) -> ZoneStore:
        """Create the zone store, or open it when it exists with the same grid.

        Several workers may call this at once with the same arguments: every one writes the same
        metadata and none deletes anything. Layers missing from an existing store are added.

        An existing store (a rerun) is opened first and its metadata read once: the group's,
        one listing of its arrays and each array's (kept by the returned store, so
        :meth:`array` reads none again); only the coordinate values are read back (a creator
        that died before writing them left them empty). Nothing is written to it unless a
        layer or coordinate is missing.

        Raises:
            ConfigError: the store exists with another grid, or a layer of the same name with
                another dtype/bands/fill; the message names both.
        """

        store = cls(layout, grid, {})
        attrs = {
            "geoxai:format": ZONE_FORMAT,
            "geoxai:grid": grid.to_dict(),
            "crs": f"EPSG:{grid.epsg}",
            "transform": list(grid.transform),
            "resolution_m": grid.resolution_m,
            "tile_size_m": grid.tile_size_m,
        }
        with storage_errors(store.loc, "create the zone store", passthrough=_MISSING):
            zs = _zarr_store(store.loc)
            try:
                group = zarr.open_group(zs, mode="r+", zarr_format=3)
            except FileNotFoundError:
                try:
                    group = zarr.create_group(zs, attributes=attrs, zarr_format=3, overwrite=False)
                except ContainsGroupError:  # a racing creator was first
                    group = zarr.open_group(zs, mode="r+", zarr_format=3)
            store._check_grid(group)
            store._group = group
            store._load_layers()
            y, x = grid.coords()
            for name, values in (("y", y), ("x", x)):
                old: Any = store._arrays.get(name)
                if old is None:
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
                        store._arrays[name] = arr
                        continue
                    except ContainsArrayError:  # a racing creator was first
                        old = store._arrays[name] = group[name]
                if not np.array_equal(np.asarray(old[:]), values):
                    old[:] = values  # a racing creator died before writing them
        for spec in layers:
            store.ensure_layer(spec)
        return store

    @classmethod
    def open(cls, layout: RunLayout, epsg: int) -> ZoneStore:
        """Open an existing zone store.

        Raises:
            StoreError: there is no zone store for ``epsg`` under the run root.
        """

        loc = layout.at(layout.zone_url(epsg))
        with storage_errors(loc, "open the zone store", passthrough=_MISSING):
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
        """Every array of the group and its layer spec (one listing, each array's metadata)."""
        self._arrays = {}
        for name, arr in self._group.arrays():
            self._remember(name, arr)

    def _remember(self, name: str, arr: Any) -> None:
        self._arrays[name] = arr
        spec = arr.attrs.get("geoxai:layer")
        if isinstance(spec, dict):
            self.layers[name] = LayerSpec.from_dict(spec)

    def ensure_layer(self, spec: LayerSpec) -> Any:
        """Add the array of ``spec`` if absent (idempotent); return it.

        Raises:
            ConfigError: an array of that name exists with another dtype, bands or fill value.
        """

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
        with storage_errors(self.loc, f"create layer {spec.name!r} in", passthrough=_MISSING):
            try:
                arr = self._group.create_array(
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
            except ContainsArrayError:  # a racing creator was first: its metadata
                arr = self._group[spec.name]
            self._remember(spec.name, arr)
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
        """The zarr array of layer ``name`` (writes empty chunks too, so they can be checked);
        its metadata was read when the store was opened (no request)."""
        look_up_option(name, list(self.layers), what="zone store layer", error=InvalidInputError)
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self._group[name]
        return arr.with_config({"write_empty_chunks": True})

    def chunk_key(self, layer: str, tile: TileSpec) -> str:
        """Key of the tile's chunk of ``layer``, relative to the group (``prediction/c/0/1/2``)."""
        i, j = self.grid.chunk_index(tile)
        idx = [0, i, j] if self.layers[layer].bands else [i, j]
        return f"{layer}/c/" + "/".join(str(v) for v in idx)

    def read_tile(self, tile: TileSpec, layer: str) -> np.ndarray:
        """The tile core of ``layer``: ``(K, n, n)`` or ``(n, n)`` in the layer's dtype."""
        rows, cols = self.grid.region(tile)
        arr = self.array(layer)
        with storage_errors(
            self.loc, f"read {layer!r} of tile {tile.id} from", passthrough=_MISSING
        ):
            return np.asarray(arr[..., rows, cols])

    def read_chunk_bytes(self, layer: str, tile: TileSpec) -> bytes | None:
        """The stored (encoded) chunk object of the tile, or None when it does not exist."""
        loc = self.loc.child(self.chunk_key(layer, tile))
        fs = loc.filesystem()
        with storage_errors(loc, "read", passthrough=_MISSING):
            try:
                return bytes(fs.cat_file(loc.path))
            except FileNotFoundError:
                return None

    def read_region(self, layer: str, *, step: int = 1, band: int | None = None) -> np.ndarray:
        """The whole layer, every ``step``-th pixel (for quicklooks); ``band`` picks one band."""
        arr = self.array(layer)
        with storage_errors(self.loc, f"read {layer!r} from", passthrough=_MISSING):
            if self.layers[layer].bands:
                b = 0 if band is None else band
                return np.asarray(arr[b, ::step, ::step])
            return np.asarray(arr[::step, ::step])

    def to_xarray(self) -> Any:
        """The group as a lazy ``xarray.Dataset`` (dims ``y``, ``x``; attrs with CRS/transform)."""

        target, so = self.loc.zarr_target()
        with storage_errors(self.loc, "open", passthrough=_MISSING):
            return xr.open_zarr(
                target, consolidated=False, zarr_format=3, storage_options=so, chunks={}
            )
