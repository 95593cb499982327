"""geoxai: explained maps from Sentinel time series, tile by tile, seamless by construction.

The library is pure compute on numpy/xarray/torch plus thin I/O adapters; it never imports Ray
(the drivers and actors live in ``pipelines/``). One sub-package per stage::

    geo/        tile lattice (6 km UTM tiles, 10 m pixels, halo), AOIs, band names       pure
    io/         STAC search + item normalization, raw cubes, S1/DEM reading, Zarr stores,
                zone stores and the run layout, COGs, EuroSAT and user rasters: the only
                package that touches network or disk
    temporal/   cloud weights, Whittaker, indices, resampling, S1 aggregation, slope, fusion
    models/     TemporalUNet/U-Net, backbones, ASOS and SpacEX networks, losses, bundles
    inference/  lattice windows, Gaussian blending, scene class maps
    xai/        ASOS table/fit/map, SpacEX attribution, Captum baselines, evaluation
    train/      the trainer, the workflow registry, one module per task (each a BaseTask)
    mapping/    plan, cube stage, tile stages, records, change, COGs, catalog, report, the
                assessment of a run against reference points: the only place that chains
                io -> temporal -> inference/xai -> outputs
    assess/     accuracy and area estimators with confidence intervals (Olofsson 2014)  pure
    synthetic/  demo and test worlds
    config.py   the run config; errors.py typed errors; provenance.py code version, hashes

temporal, models, inference and xai never import io or mapping (tests/architecture checks it).
Top-level names below are imported lazily (``import geoxai`` stays light; torch loads on use).
"""

from __future__ import annotations

import lazy_loader as _lazy

from geoxai.errors import (  # noqa: F401 (re-exported: the typed errors are public)
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

__version__ = "0.1.0"

__getattr__, __dir__, _lazy_all = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["RunConfig", "load_run_config"],
        "inference.predict": ["predict_windows"],
        "inference.windows": ["WindowParams"],
        "io.cube": ["build_cube"],
        "io.tile_cube": ["build_tile_cube"],
        "io.stac": ["search"],
        "io.stac_items": ["normalize_item"],
        "io.store": ["read_cube", "read_dataset", "write_dataset"],
        "models.asos_net": ["ASOSNet"],
        "models.bundle": ["load_bundle", "save_bundle", "wrap_module"],
        "synthetic.world": ["make_world"],
        "temporal.smoothing": ["PreprocessParams", "SmoothingParams", "preprocess"],
        "temporal.whittaker": ["whittaker"],
        "xai.asos": ["ASOSTable", "asos_map", "fit_partial"],
        "xai.evaluate": ["evaluate_attributions"],
        "xai.spacex": ["spacex_attribution"],
        "geo.aoi": ["cover_aoi", "parse_aoi"],
        "geo.grid": ["TileSpec", "tile_at", "tile_from_id"],
    },
)

__all__ = [
    "__version__",
    *sorted(
        {
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
        }
    ),
    *_lazy_all,
]
