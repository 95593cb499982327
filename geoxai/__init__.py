"""geoxai: explained maps from Sentinel time series, tile by tile, seamless by construction.

The library is pure compute on numpy/xarray/torch plus thin I/O adapters; it never imports Ray
(the drivers and actors live in ``pipelines/``). One module per concept:

========================  =====================================================================
``grid``                  UTM tile lattice (6 km, 10 m pixels, halo), AOI covers
``bands``                 canonical Sentinel-2 band names and catalog aliases
``stac``                  STAC search (API or local files) and item normalization
``cube``                  STAC items -> lazy raw tile cube (stackstac)
``store``                 Zarr v3 datasets / JSON records at a URL, committed by a marker
``clouds``                per-pixel observation weights from SCL or a spectral rule
``whittaker``             batched weighted Whittaker smoother (numpy and torch)
``indices``               NDVI, EVI, BI, MSAVI2, GRNDVI; normalization
``temporal``              raw cube -> model-ready features on a fixed time axis
``s1``, ``dem``           Sentinel-1 backscatter and DEM slope layers
``inference``             Gaussian-blended windows on a zone-fixed lattice
``models``                built-in networks (TemporalUNet)
``bundle``                model bundles: model.json + safe weights
``asos``                  activation space occlusion sensitivity
``xai``                   Captum baselines (occlusion, Grad-CAM, DeepLIFT), IoU, figures
``spacex``, ``spacex_nets``  SpacEX: pattern maximizer/minimizer GAN explanations
``xai_eval``              top-q IoU table of SpacEX, ASOS, OSM, Grad-CAM, DeepLIFT
``eurosat``               EuroSAT reader
``classify``, ``backbones``  scene classifiers on EuroSAT-format patches, class maps
``train``                 training of the temporal model
``config``                the run config (pydantic)
``mapping``               the stages of a run as functions (the Ray driver chains them)
``outputs``, ``zonestore``  zone Zarr stores, exactly-once tile writes, records, planning
``cog``, ``catalog``, ``report``  COGs and mosaics, STAC catalog of outputs, report.html
``synthetic``             synthetic Sentinel-2 (and S1/DEM) worlds for demos and tests
``errors``, ``provenance``  typed errors; code version and config hashes
========================  =====================================================================

Top-level names below are imported lazily (``import geoxai`` stays light; torch loads on use).
"""

from __future__ import annotations

import importlib
from typing import Any

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

_LAZY = {
    "search": "geoxai.stac",
    "normalize_item": "geoxai.stac",
    "build_cube": "geoxai.cube",
    "build_tile_cube": "geoxai.cube",
    "write_dataset": "geoxai.store",
    "read_dataset": "geoxai.store",
    "read_cube": "geoxai.store",
    "preprocess": "geoxai.temporal",
    "PreprocessParams": "geoxai.temporal",
    "SmoothingParams": "geoxai.temporal",
    "whittaker": "geoxai.whittaker",
    "predict_windows": "geoxai.inference",
    "WindowParams": "geoxai.inference",
    "load_bundle": "geoxai.bundle",
    "save_bundle": "geoxai.bundle",
    "wrap_module": "geoxai.bundle",
    "ASOSNet": "geoxai.asos",
    "ASOSTable": "geoxai.asos",
    "asos_map": "geoxai.asos",
    "fit_partial": "geoxai.asos",
    "spacex_attribution": "geoxai.spacex",
    "evaluate_attributions": "geoxai.xai_eval",
    "RunConfig": "geoxai.config",
    "load_run_config": "geoxai.config",
    "make_world": "geoxai.synthetic",
}

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
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geoxai' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
