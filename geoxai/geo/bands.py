"""Canonical Sentinel-2 band names and the asset keys real catalogs use for them.

geoxai names bands ``B02 B03 B04 B05 B06 B07 B08 B8A B11 B12`` (+ ``SCL``) whatever the catalog
calls them: Earth Search v1 uses common names (``red``, ``nir08``, ``swir16`` ...), Earth Search
v0 and Planetary Computer use ``B04``-style keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from geoxai.errors import InvalidInputError, look_up_option

__all__ = [
    "Band",
    "BANDS",
    "S2_BANDS",
    "CUBE_BANDS",
    "SCL",
    "SCL_CLASSES",
    "SUN_AZIMUTH",
    "SUN_ELEVATION",
    "band",
    "canonical_band_name",
    "check_bands",
]


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 band.

    Attributes:
        name: canonical name (``"B04"``).
        common_name: STAC ``eo:common_name`` / Earth Search v1 asset key (``"red"``).
        resolution_m: native pixel size, metres.
        center_um: centre wavelength, micrometres (None for SCL).
        aliases: other asset keys seen in real catalogs.
    """

    name: str
    common_name: str
    resolution_m: int
    center_um: float | None
    aliases: tuple[str, ...] = ()


BANDS: dict[str, Band] = {
    b.name: b
    for b in [
        Band("B01", "coastal", 60, 0.443),
        Band("B02", "blue", 10, 0.490),
        Band("B03", "green", 10, 0.560),
        Band("B04", "red", 10, 0.665),
        Band("B05", "rededge1", 20, 0.704, ("rededge",)),
        Band("B06", "rededge2", 20, 0.740),
        Band("B07", "rededge3", 20, 0.783),
        Band("B08", "nir", 10, 0.842),
        Band("B8A", "nir08", 20, 0.865, ("nir08", "B8a")),
        Band("B09", "nir09", 60, 0.945),
        Band("B10", "cirrus", 60, 1.375),
        Band("B11", "swir16", 20, 1.610),
        Band("B12", "swir22", 20, 2.190),
        Band("SCL", "scl", 20, None),
    ]
}


S2_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
"""The ten 10/20 m reflectance bands every cube carries, in this order."""


SCL = "SCL"


CUBE_BANDS: tuple[str, ...] = (*S2_BANDS, SCL)
"""Band axis of a raw tile cube: the ten reflectance bands, then the scene classification."""

SUN_AZIMUTH = "view:sun_azimuth"
"""Raw-cube coordinate along time: solar azimuth, degrees clockwise from north (NaN = unknown)."""
SUN_ELEVATION = "view:sun_elevation"
"""Raw-cube coordinate along time: solar elevation above the horizon, degrees (NaN = unknown)."""


SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}
"""Sentinel-2 L2A scene classification (SCL) values."""


_ALIASES: dict[str, str] = {}


for _b in BANDS.values():
    for _k in (_b.name, _b.common_name, *_b.aliases):
        _ALIASES[_k.lower()] = _b.name


def canonical_band_name(key: str) -> str | None:
    """Canonical name for an asset key (``"red"``, ``"B04"``, ``"nir08"`` ...), else None."""
    return _ALIASES.get(str(key).lower())


def band(name: str) -> Band:
    """Look a band up by canonical name or alias; typed error with suggestions otherwise."""
    canon = canonical_band_name(name)
    if canon is None:
        look_up_option(name, list(BANDS), what="band", error=InvalidInputError)
        raise AssertionError("unreachable")  # look_up_option raised
    return BANDS[canon]


def check_bands(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Canonicalise a list of band names, raising on unknown names or duplicates."""
    out = tuple(band(n).name for n in names)
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise InvalidInputError(f"Band list {list(names)} names {dupes} more than once.")
    return out
