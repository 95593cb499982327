"""Geometry of the tile lattice: UTM tiles of 6 km on 10 m pixels with a halo, AOIs (bbox,
GeoJSON, country) and the tiles that cover them, canonical Sentinel-2 band names. Pure: no I/O.

Modules: ``aoi``, ``bands``, ``grid``. Names below load on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["aoi", "bands", "grid"],
    submod_attrs={
        "aoi": [
            "parse_aoi",
            "country_geometry",
            "cover_aoi",
            "tiles_to_geojson",
        ],
        "bands": [
            "Band",
            "BANDS",
            "S2_BANDS",
            "CUBE_BANDS",
            "SCL",
            "SCL_CLASSES",
            "band",
            "canonical_band_name",
            "check_bands",
        ],
        "grid": [
            "TILE_SIZE_M",
            "RESOLUTION_M",
            "TileSpec",
            "tile_from_id",
            "tile_at",
            "utm_epsg",
        ],
    },
)
