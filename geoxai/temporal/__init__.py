"""Time series, arrays in and arrays out: observation weights from SCL or a single-date spectral
cloud/shadow mask (classes and scores against a reference mask), the
weighted Whittaker smoother, spectral indices, resampling onto the fixed time axis, Sentinel-1
aggregation, slope, fusion into the features a model reads, and the 20 m bands super-resolved to
10 m per date (WRI's DSen2-lite).
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "smoothing": ["preprocess", "PreprocessParams", "SmoothingParams", "feature_names"],
        "whittaker": ["whittaker", "whittaker_torch"],
        "heldout": ["heldout_score", "HeldoutParams"],
        "clouds": ["CloudMaskParams", "scl_weights", "spectral_weights"],
        "masks": ["SpectralMaskParams", "spectral_classes", "mask_scores"],
        "indices": ["IndexParams", "FeatureRanges", "compute_indices"],
        "s1": ["S1Params", "aggregate_s1"],
        "terrain": ["DemParams", "slope_degrees"],
        "superres": ["superresolve_cube", "prepare_tile", "wald_protocol"],
    },
)
