"""Spectra, phenology and cloud flags of the synthetic world: reflectance per land-cover class at
B02 B03 B04 B05 B06 B07 B08 B8A B11 B12, crop peaks, the SCL thresholds of clouds and shadows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


__all__ = [
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
]

FOREST, CROPLAND, GRASSLAND, WATER, BUILT, BARE = 1, 2, 3, 4, 5, 6


LANDCOVER_CLASSES: dict[int, str] = {
    FOREST: "forest",
    CROPLAND: "cropland",
    GRASSLAND: "grassland",
    WATER: "water",
    BUILT: "built_up",
    BARE: "bare",
}
"""Codes of ``truth/landcover.tif`` (0 is never used)."""


NATURAL_CLASSES: tuple[int, ...] = (FOREST, GRASSLAND, WATER)
"""Classes labelled natural (1) in ``truth/natural.tif``; every other class is anthropogenic."""


CROP_GROUPS: dict[str, tuple[float, float]] = {
    "winter_cereal": (135.0, 35.0),
    "maize": (215.0, 28.0),
    "sugar_beet": (205.0, 38.0),
    "potato": (185.0, 25.0),
}
"""Crop group -> (day of year of peak greenness, Gaussian width in days)."""


# ---- spectra: reflectance at B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 ---------------------------
GREEN = (0.030, 0.075, 0.035, 0.120, 0.340, 0.440, 0.480, 0.500, 0.220, 0.110)


CANOPY = (0.020, 0.045, 0.022, 0.075, 0.220, 0.280, 0.310, 0.320, 0.150, 0.065)


LITTER = (0.040, 0.060, 0.070, 0.090, 0.120, 0.140, 0.150, 0.160, 0.200, 0.130)


_SOIL = (0.070, 0.100, 0.130, 0.160, 0.180, 0.200, 0.210, 0.220, 0.270, 0.210)


_DRYVEG = (0.050, 0.080, 0.100, 0.130, 0.170, 0.200, 0.220, 0.230, 0.250, 0.170)


_URBAN = (0.090, 0.110, 0.130, 0.150, 0.170, 0.180, 0.190, 0.200, 0.270, 0.240)


_BARE = (0.110, 0.150, 0.190, 0.220, 0.240, 0.260, 0.270, 0.280, 0.360, 0.310)


_WATER = (0.045, 0.050, 0.030, 0.022, 0.014, 0.011, 0.009, 0.008, 0.004, 0.003)


CLOUD = (0.550, 0.540, 0.530, 0.540, 0.550, 0.550, 0.550, 0.550, 0.420, 0.300)


CIRRUS = (1.000, 0.950, 0.900, 0.850, 0.820, 0.800, 0.780, 0.780, 0.550, 0.400)


NOISE = (0.003, 0.003, 0.003, 0.004, 0.004, 0.004, 0.004, 0.004, 0.005, 0.005)


_BACKGROUND = {
    FOREST: _DRYVEG,
    CROPLAND: _SOIL,
    GRASSLAND: _DRYVEG,
    WATER: _WATER,
    BUILT: _URBAN,
    BARE: _BARE,
}


# class -> (green base, green amplitude, peak day of year, width days)
BG_TABLE = np.array(
    [[_BACKGROUND.get(c, _SOIL)[k] for c in range(7)] for k in range(10)], np.float32
)
"""(band, class) background reflectance lookup."""


PHENOLOGY = {
    FOREST: (0.45, 0.40, 150.0, 80.0),  # understory of the non-tree part
    CROPLAND: (0.03, 0.90, 180.0, 30.0),  # peak/width replaced per crop group
    GRASSLAND: (0.45, 0.40, 150.0, 80.0),
    WATER: (0.0, 0.0, 180.0, 60.0),
    BUILT: (0.08, 0.08, 180.0, 60.0),
    BARE: (0.02, 0.04, 180.0, 50.0),
}


CLOUD_FLAG = 0.35
"""Cloud opacity from which SCL says cloud (8; 9 from 0.75); below: unflagged haze rim."""


SHADOW_FLAG = 0.1
"""Shadow darkening above which SCL says cloud shadow (3)."""


SCALE, OFFSET = 1e-4, -0.1
"""DN -> reflectance: ``reflectance = DN * SCALE + OFFSET`` (processing baseline >= 04.00)."""


UTC_TIME = (10, 50, 31)


MAX_SHADOW_M = 2000.0
