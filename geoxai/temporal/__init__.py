"""Time series, arrays in and arrays out: observation weights from SCL or a spectral rule, the
weighted Whittaker smoother, spectral indices, resampling onto the fixed time axis, Sentinel-1
aggregation, slope, and fusion into the features a model reads.

Modules: ``clouds``, ``fuse``, ``indices``, ``s1``, ``smoothing``, ``terrain``, ``whittaker``.
Names below load on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["clouds", "fuse", "indices", "s1", "smoothing", "terrain", "whittaker"],
    submod_attrs={
        "clouds": [
            "CloudMaskParams",
            "SpectralMaskParams",
            "buffer_mask",
            "scl_weights",
            "spectral_weights",
            "item_screen",
        ],
        "fuse": [
            "fused_feature_names",
        ],
        "indices": [
            "INDICES",
            "INDEX_BANDS",
            "IndexParams",
            "NormalizationParams",
            "compute_index",
            "compute_indices",
            "normalize",
        ],
        "s1": [
            "S1_BANDS",
            "CUBE_NAME",
            "ORBITS",
            "FLAG_NO_COVERAGE",
            "FLAG_GAP_FILLED",
            "FLAG_NONPOSITIVE",
            "FLAG_MIXED_ORBIT",
            "FLAG_MISSING_POL",
            "S1Params",
            "to_db",
            "db_to_unit",
            "aggregate_s1",
            "s1_nodata",
        ],
        "smoothing": [
            "SmoothingParams",
            "PreprocessParams",
            "time_axis",
            "fine_grid",
            "grid_lambda",
            "binning_matrix",
            "sampling_matrix",
            "observation_weights",
            "smooth_series",
            "preprocess",
            "feature_names",
            "REFERENCE_FEATURES",
        ],
        "terrain": [
            "DEM_BAND",
            "SLOPE_BAND",
            "FLAG_VOID_FILLED",
            "FLAG_VOID",
            "FLAG_NO_DEM",
            "DemParams",
            "slope_degrees",
            "fill_voids",
            "terrain_nodata",
        ],
        "whittaker": [
            "ENGINES",
            "WhittakerResult",
            "difference_penalty_bands",
            "whittaker_torch",
            "check_lambda",
        ],
    },
)
