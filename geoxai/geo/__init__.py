"""Geometry of the tile lattice: UTM tiles of 6 km on 10 m pixels with a halo, AOIs (bbox,
GeoJSON, country) and the tiles that cover them, canonical Sentinel-2 band names. Pure: no I/O.
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "grid": ["TileSpec", "tile_from_id", "tile_at", "utm_epsg"],
        "aoi": ["parse_aoi", "cover_aoi", "tiles_to_geojson"],
        "bands": ["BANDS", "S2_BANDS", "canonical_band_name"],
    },
)
