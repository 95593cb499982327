"""Everything that touches network or disk: STAC search and item normalization, raw tile cubes
(stackstac), Sentinel-1 and DEM reading, Zarr stores and commit markers, zone output stores and
the run layout, COGs and mosaics, EuroSAT and user rasters. Compute packages never import it.
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "stac": ["search", "read_items"],
        "stac_items": ["normalize_item"],
        "cube": ["build_cube"],
        "tile_cube": ["build_tile_cube"],
        "signing": ["resolve_signing"],
        "store": ["write_dataset", "read_dataset", "read_cube"],
        "location": ["StoreLocation", "resolve"],
        "layout": ["RunLayout"],
        "config_file": ["save_config"],
        "zonestore": ["ZoneStore", "ZoneGrid", "LayerSpec"],
        "cog": ["write_cog"],
        "mosaic": ["build_mosaics"],
        "s1": ["search_s1", "build_s1_cube"],
        "dem": ["search_dem", "build_dem"],
        "eurosat": ["read_eurosat"],
        "rasters": ["stack_rasters", "prepare_scene"],
        "points": ["read_points", "write_points"],
    },
)
