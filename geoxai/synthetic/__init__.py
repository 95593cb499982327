"""Synthetic worlds for the demo and the tests: a Sentinel-2 L2A world with clouds, shadows and
SCL, written as an archive of COGs and STAC items with its truth; Sentinel-1 and DEM layers;
segmentation scenes.
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "world": ["SyntheticWorld", "make_world", "load_world"],
        "params": ["WorldParams"],
        "archive": ["write_archive"],
        "ancillary": ["write_ancillary"],
        "segment": ["write_synthetic_scene"],
    },
)
