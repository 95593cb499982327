"""geoxai: explained maps from Sentinel time series, tile by tile, seamless by construction.

The library is pure compute on numpy/xarray/torch plus thin I/O adapters; it never imports Ray
(the drivers and actors live in ``pipelines/``). Modules, one per concept:

- ``grid``: the UTM tile lattice and AOI covers.
- ``errors``: the typed errors.
- ``provenance``: code version and config hashes recorded with outputs.
"""

from geoxai.errors import (
    AOIError,
    ConfigError,
    CorruptDataError,
    DataAccessError,
    GeoXAIError,
    IncompleteOutputError,
    InvalidInputError,
    ModelBundleError,
    NoDataError,
    StacError,
    StoreError,
    UnknownTileError,
)
from geoxai.grid import TileSpec, cover_aoi, parse_aoi, tile_at, tile_from_id

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "AOIError",
    "ConfigError",
    "CorruptDataError",
    "DataAccessError",
    "GeoXAIError",
    "IncompleteOutputError",
    "InvalidInputError",
    "ModelBundleError",
    "NoDataError",
    "StacError",
    "StoreError",
    "UnknownTileError",
    "TileSpec",
    "cover_aoi",
    "parse_aoi",
    "tile_at",
    "tile_from_id",
]
