"""Synthetic worlds for the demo and the tests: a Sentinel-2 L2A world with clouds, shadows and
SCL, written as an archive of COGs and STAC items with its truth; Sentinel-1 and DEM layers;
segmentation scenes.

Modules: ``archive``, ``fields``, ``files``, ``params``, ``radar``, ``segment``, ``spectra``,
``world``. Names below load on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["archive", "fields", "files", "params", "radar", "segment", "spectra", "world"],
    submod_attrs={
        "archive": [
            "Archive",
            "write_archive",
            "stac_item",
            "stac_collection",
        ],
        "fields": [
            "DEFAULT_ORIGIN_TILE",
            "block_tiles",
        ],
        "files": [
            "BLOCK_PX",
            "collection_links",
            "write_cog",
        ],
        "params": [
            "WorldParams",
            "Atmosphere",
        ],
        "radar": [
            "S1_COLLECTION",
            "DEM_COLLECTION",
            "ENL",
            "s1_acquisitions",
            "s1_mean_power",
            "s1_power",
            "elevation_at",
            "slope_at",
            "dem_block",
            "write_radar",
        ],
        "segment": [
            "write_synthetic_scene",
        ],
        "spectra": [
            "FOREST",
            "CROPLAND",
            "GRASSLAND",
            "WATER",
            "BUILT",
            "BARE",
            "LANDCOVER_CLASSES",
            "NATURAL_CLASSES",
            "CROP_GROUPS",
            "CLOUD_FLAG",
            "SHADOW_FLAG",
            "SCALE",
            "OFFSET",
        ],
        "world": [
            "SyntheticWorld",
            "make_world",
            "load_world",
        ],
    },
)
