"""A single-date spectral cloud / shadow / snow / water mask for cubes without SCL.

:func:`spectral_classes` gives every pixel and acquisition one class of :data:`CLASS_NAMES`
(clear, cloud, shadow, snow, water, nodata) from its reflectances;
:mod:`geoxai.temporal.clouds` turns the classes into weights (clouds and shadows grown by
``buffer_m``).

The rules (reflectance units; every one reads only the pixel, except the shadow projection):

* **nodata**: any band the rules read is NaN.
* **cloud**: bright and blue: ``blue > cloud_blue`` and mean visible ``> cloud_brightness``,
  where blue is B02 (B01 when B02 is absent) and the visible mean is over B02/B03/B04 present.
* **snow** (needs B03 and B11): ``NDSI = (B03 - B11) / (B03 + B11) > snow_ndsi``,
  ``B08 > snow_nir`` and ``B11 < snow_swir_max``; snow is never cloud.
* **water** (Fmask's rule, needs B04 and B08): ``NDVI < 0.01 and B08 < 0.11`` or
  ``NDVI < 0.1 and B08 < 0.05``.
* **shadow, single date** (Fmask's geometry, without its per-object height matching): the
  date's clouds are projected away from the sun, along the item's solar azimuth, over the
  horizontal distances ``h / tan(sun elevation)`` for cloud heights ``h`` in
  ``cloud_heights_m``, capped at ``max_shadow_distance_m``; a *dark* pixel (``B08 <
  shadow_nir_max`` and, when present, ``B11 < shadow_swir_max``) that is neither cloud, snow
  nor water and lies under that projection is shadow. Fmask matches each cloud object to one
  height; that decision depends on the whole object, which a neighbouring tile may see cut
  differently, so here the union over the height range is used: a fixed stencil per date, so
  a tile with a halo of :func:`shadow_reach_px` pixels decides its core exactly as its
  neighbour does (seamless by construction, DESIGN.md principle 1).
* **shadow, temporal** (the extra test where a series exists): ``B08`` and ``B11`` below
  ``shadow_ratio`` times the pixel's own median over its clear dates (and ``B08 <
  shadow_nir_max``), used on pixels with at least ``temporal_min_clear`` clear dates. It is
  per pixel through time, hence seamless too. It catches shadows of clouds beyond the
  projection's reach and of dates without solar angles.

Solar angles come from the items (``view:sun_azimuth`` / ``view:sun_elevation``, or
``s2:mean_solar_azimuth`` / ``s2:mean_solar_zenith``; read by
:func:`geoxai.io.stac_items.item_sun_angles`), carried by the cube as coordinates along time
(:data:`geoxai.geo.bands.SUN_AZIMUTH`, ``SUN_ELEVATION``; :func:`cube_sun_angles`). A date
without them has no projected shadows: a :class:`MissingSunAnglesWarning` says how many, and
the temporal test alone is used.
:func:`solar_angles` computes the angles from the acquisition time and place (NOAA's
formulas, ~0.1 degree) for data that lost its metadata.

:func:`mask_scores` states precision / recall / F1 per class against a reference
(:func:`scl_classes` maps an L2A scene classification onto the same classes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.bands import SUN_AZIMUTH, SUN_ELEVATION

__all__ = [
    "CLEAR",
    "CLOUD",
    "SHADOW",
    "SNOW",
    "WATER",
    "NODATA",
    "CLASS_NAMES",
    "SUN_AZIMUTH",
    "SUN_ELEVATION",
    "MissingSunAnglesWarning",
    "SpectralMaskParams",
    "spectral_classes",
    "shadow_reach_px",
    "project_clouds",
    "cube_sun_angles",
    "solar_angles",
    "scl_classes",
    "mask_scores",
]

CLEAR, CLOUD, SHADOW, SNOW, WATER, NODATA = 0, 1, 2, 3, 4, 5
CLASS_NAMES: tuple[str, ...] = ("clear", "cloud", "shadow", "snow", "water", "nodata")
"""Class names, indexed by the class value (uint8) of :func:`spectral_classes`."""

MASK_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B08", "B11")
"""Bands the rules can read (B01 only stands in for a missing B02)."""


class MissingSunAnglesWarning(UserWarning):
    """Some dates have no solar angles: their clouds cast no projected shadow."""


@dataclass(frozen=True)
class SpectralMaskParams:
    """Thresholds of the spectral mask (reflectance units unless stated).

    Attributes:
        cloud_blue: blue (B02, else B01) above this, and bright, is cloud.
        cloud_brightness: mean of the visible bands (B02, B03, B04 present) above this, and
            blue, is cloud.
        snow_ndsi: NDSI = (B03 - B11) / (B03 + B11) above this, with B08 > snow_nir and
            B11 < snow_swir_max, is snow.
        snow_nir: minimum B08 of snow (separates snow from water).
        snow_swir_max: maximum B11 of snow (bright clouds with a high NDSI keep B11 > 0.17).
        shadow_ratio: temporal test: B08 and B11 both below this fraction of the pixel's
            median over its clear dates is shadow.
        shadow_nir_max: shadows (both tests) need B08 below this.
        shadow_swir_max: the projection test also needs B11 below this (when B11 exists).
        cloud_heights_m: (lowest, highest) cloud height, metres above ground, projected.
        max_shadow_distance_m: cap of the horizontal projection distance, metres; it sets
            the halo (:func:`shadow_reach_px`). 0 disables the projection test.
        temporal_shadow: also use the temporal test where a series exists.
        temporal_min_clear: clear dates a pixel needs for the temporal test.
    """

    cloud_blue: float = 0.15
    cloud_brightness: float = 0.14
    snow_ndsi: float = 0.6
    snow_nir: float = 0.11
    snow_swir_max: float = 0.15
    shadow_ratio: float = 0.6
    shadow_nir_max: float = 0.15
    shadow_swir_max: float = 0.12
    cloud_heights_m: tuple[float, float] = (200.0, 4000.0)
    max_shadow_distance_m: float = 1200.0
    temporal_shadow: bool = True
    temporal_min_clear: int = 5

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.cloud_heights_m)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise ConfigError(
                f"SpectralMaskParams.cloud_heights_m={self.cloud_heights_m} must be "
                "(lowest, highest) metres with 0 <= lowest <= highest, e.g. (200, 4000)."
            )
        object.__setattr__(self, "cloud_heights_m", (lo, hi))
        d = self.max_shadow_distance_m
        if not (math.isfinite(d) and d >= 0):
            raise ConfigError(
                f"SpectralMaskParams.max_shadow_distance_m={d} must be >= 0 metres "
                "(0 disables the projected-shadow test)."
            )
        if self.temporal_min_clear < 1:
            raise ConfigError(
                f"SpectralMaskParams.temporal_min_clear={self.temporal_min_clear} must be >= 1."
            )


def shadow_reach_px(params: SpectralMaskParams, resolution_m: float) -> int:
    """Pixels from a cloud to the farthest shadow it can cast (the projection's halo)."""
    if params.max_shadow_distance_m <= 0:
        return 0
    return int(math.ceil(params.max_shadow_distance_m / resolution_m))


# ---- solar angles ------------------------------------------------------------------------------


def cube_sun_angles(raw: Any, time_index: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(T,)`` azimuth and elevation, degrees, from a cube's coordinates (NaN where absent).

    Args:
        raw: an xarray object with a ``time`` dimension and optional :data:`SUN_AZIMUTH` /
            :data:`SUN_ELEVATION` coordinates along it (as :func:`geoxai.io.cube.build_cube`
            writes them).
        time_index: optional positions along time (as for ``isel``).
    """
    coords = raw.coords
    n = raw.sizes["time"]
    out = []
    for name in (SUN_AZIMUTH, SUN_ELEVATION):
        if name in coords:
            v = np.asarray(coords[name].values, dtype=np.float64)
        else:
            v = np.full(n, np.nan)
        out.append(v if time_index is None else v[time_index])
    return out[0], out[1]


def solar_angles(
    times: np.ndarray | Sequence[np.datetime64], lon: float, lat: float
) -> tuple[np.ndarray, np.ndarray]:
    """Solar ``(azimuth, elevation)``, degrees, at UTC ``times`` and a place (NOAA formulas).

    The NOAA Global Monitoring Division's "General Solar Position Calculations" (fractional
    year series for the equation of time and declination); good to ~0.1 degree, far finer than
    the cloud-height uncertainty of the shadow projection. No refraction correction.

    Args:
        times: ``(T,)`` datetime64 acquisition times, UTC.
        lon: longitude, degrees east.
        lat: latitude, degrees north.

    Returns:
        ``(T,)`` azimuth (degrees clockwise from north) and elevation (degrees) arrays.
    """
    t = np.asarray(times).astype("datetime64[s]")
    year_start = t.astype("datetime64[Y]").astype("datetime64[s]")
    secs = (t - year_start).astype(np.float64)
    year = t.astype("datetime64[Y]").astype(np.int64) + 1970
    ndays = np.where((year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0)), 366.0, 365.0)
    day = secs / 86400.0  # fractional day of the year, 0 = 1 Jan 00:00
    hour = (day - np.floor(day)) * 24.0
    g = 2.0 * np.pi / ndays * (np.floor(day) + (hour - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * np.cos(g)
        - 0.032077 * np.sin(g)
        - 0.014615 * np.cos(2 * g)
        - 0.040849 * np.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * np.cos(g)
        + 0.070257 * np.sin(g)
        - 0.006758 * np.cos(2 * g)
        + 0.000907 * np.sin(2 * g)
        - 0.002697 * np.cos(3 * g)
        + 0.00148 * np.sin(3 * g)
    )
    true_solar_min = hour * 60.0 + eqtime + 4.0 * lon
    ha = np.radians(true_solar_min / 4.0 - 180.0)
    phi = np.radians(lat)
    cos_zen = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(ha)
    elev = 90.0 - np.degrees(np.arccos(np.clip(cos_zen, -1.0, 1.0)))
    az = np.degrees(np.arctan2(np.sin(ha), np.cos(ha) * np.sin(phi) - np.tan(decl) * np.cos(phi)))
    return (az + 180.0) % 360.0, elev


# ---- the mask ----------------------------------------------------------------------------------


def _offsets(azimuth: float, d_min_px: float, d_max_px: float, y_ascending: bool) -> np.ndarray:
    """``(K, 2)`` unique (row, col) shifts from a cloud to its possible shadow pixels."""
    az = math.radians(azimuth)
    # the shadow lies away from the sun: east = -sin(az), north = -cos(az); rows grow to the
    # south on a north-up grid (y decreasing), to the north when y increases.
    drow = math.cos(az) if not y_ascending else -math.cos(az)
    dcol = -math.sin(az)
    step = 0.5 / max(abs(drow), abs(dcol))  # half a pixel along the major axis: no gaps
    dist = np.arange(d_min_px, d_max_px + step, step)
    dist = dist[dist <= d_max_px + 1e-9]
    off = np.stack([np.rint(dist * drow), np.rint(dist * dcol)], axis=1).astype(np.int64)
    return np.unique(off, axis=0)


def project_clouds(
    cloud: np.ndarray,
    azimuth: float,
    elevation: float,
    params: SpectralMaskParams,
    resolution_m: float,
    *,
    y_ascending: bool = False,
) -> np.ndarray:
    """``(Y, X)`` bool: pixels a cloud of ``cloud`` (``(Y, X)`` bool) may shade on one date.

    The union of the cloud mask shifted away from the sun by every horizontal distance
    ``h / tan(elevation)`` for ``h`` in ``params.cloud_heights_m``, capped at
    ``params.max_shadow_distance_m`` (metres, converted with ``resolution_m``). Pixels
    within :func:`shadow_reach_px` of the array edge are exact only with that much halo.
    Returns all False when the sun is at or below the horizon or the angles are NaN.
    """
    out = np.zeros_like(cloud, dtype=bool)
    if not (math.isfinite(azimuth) and math.isfinite(elevation)) or elevation <= 0.0:
        return out
    if params.max_shadow_distance_m <= 0 or not cloud.any():
        return out
    tan_el = math.tan(math.radians(min(elevation, 89.9)))
    h_lo, h_hi = params.cloud_heights_m
    d_max = min(h_hi / tan_el, params.max_shadow_distance_m) / resolution_m
    d_min = min(h_lo / tan_el / resolution_m, d_max)
    ny, nx = cloud.shape
    for dr, dc in _offsets(azimuth, d_min, d_max, y_ascending):
        if abs(dr) >= ny or abs(dc) >= nx:
            continue
        src = cloud[max(0, -dr) : ny - max(0, dr), max(0, -dc) : nx - max(0, dc)]
        out[max(0, dr) : ny - max(0, -dr), max(0, dc) : nx - max(0, -dc)] |= src
    return out


def _band(refl: np.ndarray, bands: Sequence[str], name: str) -> np.ndarray | None:
    return refl[:, list(bands).index(name)] if name in bands else None


def spectral_classes(
    refl: np.ndarray,
    bands: Sequence[str],
    params: SpectralMaskParams,
    resolution_m: float,
    *,
    sun: tuple[np.ndarray, np.ndarray] | None = None,
    y_ascending: bool = False,
) -> np.ndarray:
    """Per pixel and date class (see the module docstring for the rules).

    Args:
        refl: ``(T, C, Y, X)`` reflectance, NaN = nodata.
        bands: the ``C`` canonical band names; needs B04, B08 and a blue band (B02, or B01);
            B03 and B11 enable snow, B11 sharpens shadows. Other bands are ignored.
        params: thresholds.
        resolution_m: pixel size, metres (converts the projection distance to pixels).
        sun: ``((T,), (T,))`` solar azimuth and elevation, degrees (NaN = unknown), or None:
            dates without angles get no projected shadows (:class:`MissingSunAnglesWarning`).
        y_ascending: the rows run south to north (y increasing); default north-up.

    Returns:
        ``(T, Y, X)`` uint8 classes, values of :data:`CLASS_NAMES` (CLEAR ... NODATA).

    Raises:
        InvalidInputError: a needed band is missing, or shapes disagree.
    """
    bands = [str(b) for b in bands]
    if refl.ndim != 4 or refl.shape[1] != len(bands):
        raise InvalidInputError(
            f"spectral_classes needs (time, band, y, x) reflectance with one band per name; "
            f"got shape {refl.shape} for bands {bands}."
        )
    blue_name = "B02" if "B02" in bands else ("B01" if "B01" in bands else None)
    missing = [b for b in ("B04", "B08") if b not in bands] + ([] if blue_name else ["B02"])
    if missing or blue_name is None:
        raise InvalidInputError(
            f"The spectral cloud mask needs B02 (or B01), B04 and B08 (B03 and B11 add snow "
            f"and sharpen shadows); the cube lacks {missing}. Provide SCL "
            "(CloudMaskParams(method='scl')) or use method='none'."
        )
    t = refl.shape[0]
    used = [b for b in MASK_BANDS if b in bands and not (b == "B01" and blue_name == "B02")]
    finite = np.isfinite(refl[:, [bands.index(b) for b in used]]).all(axis=1)
    blue = refl[:, bands.index(blue_name)]
    red, nir = refl[:, bands.index("B04")], refl[:, bands.index("B08")]
    green, swir = _band(refl, bands, "B03"), _band(refl, bands, "B11")
    vis = [v for v in (_band(refl, bands, "B02"), green, red) if v is not None]
    with np.errstate(invalid="ignore", divide="ignore"):
        bright = sum(vis[1:], vis[0]) / float(len(vis))
        cloud = (blue > params.cloud_blue) & (bright > params.cloud_brightness) & finite
        snow = np.zeros_like(cloud)
        if green is not None and swir is not None:
            ndsi = (green - swir) / (green + swir)
            snow = (ndsi > params.snow_ndsi) & (nir > params.snow_nir) & finite
            snow &= swir < params.snow_swir_max
        cloud &= ~snow
        ndvi = (nir - red) / (nir + red)
        water = (((ndvi < 0.01) & (nir < 0.11)) | ((ndvi < 0.1) & (nir < 0.05))) & finite
        water &= ~(cloud | snow)
        dark = (nir < params.shadow_nir_max) & finite & ~(cloud | snow | water)
        if swir is not None:
            dark_proj = dark & (swir < params.shadow_swir_max)
        else:
            dark_proj = dark
    shadow = np.zeros_like(cloud)
    az, el = (np.full(t, np.nan), np.full(t, np.nan)) if sun is None else sun
    az, el = np.asarray(az, dtype=np.float64), np.asarray(el, dtype=np.float64)
    if az.shape != (t,) or el.shape != (t,):
        raise InvalidInputError(
            f"Solar angles must be one (azimuth, elevation) per date: got {az.shape} and "
            f"{el.shape} for {t} dates."
        )
    no_sun = ~(np.isfinite(az) & np.isfinite(el))
    if params.max_shadow_distance_m > 0:
        cloudy = cloud.reshape(t, -1).any(axis=1)
        if (no_sun & cloudy).any():
            warnings.warn(
                f"{int((no_sun & cloudy).sum())} of {t} dates with clouds have no solar angles "
                "(view:sun_azimuth / view:sun_elevation): their shadows are not projected, "
                "only the temporal shadow test applies there. Build the cube from STAC items "
                "that carry the view extension, or add the angles (geoxai.temporal.masks."
                "solar_angles) as cube coordinates.",
                MissingSunAnglesWarning,
                stacklevel=2,
            )
        for i in np.nonzero(cloudy & ~no_sun)[0]:
            proj = project_clouds(
                cloud[i], az[i], el[i], params, resolution_m, y_ascending=y_ascending
            )
            shadow[i] = proj & dark_proj[i]
    if params.temporal_shadow or (no_sun.any() and params.max_shadow_distance_m > 0):
        shadow |= _temporal_shadow(nir, swir, cloud | snow | water | ~finite, dark, params)
    classes = np.full(cloud.shape, CLEAR, dtype=np.uint8)
    classes[water] = WATER
    classes[shadow] = SHADOW
    classes[snow] = SNOW
    classes[cloud] = CLOUD
    classes[~finite] = NODATA
    return classes


def _temporal_shadow(
    nir: np.ndarray,
    swir: np.ndarray | None,
    not_clear: np.ndarray,
    dark: np.ndarray,
    params: SpectralMaskParams,
) -> np.ndarray:
    """``(T, Y, X)``: darker than the pixel's own clear median in NIR (and SWIR)."""
    clear = ~not_clear
    enough = clear.sum(axis=0) >= params.temporal_min_clear
    if not enough.any():
        return np.zeros_like(dark)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: median NaN, no flag
        nir_med = np.nanmedian(np.where(clear, nir, np.nan), axis=0)
        out = dark & (nir < params.shadow_ratio * nir_med)
        if swir is not None:
            swir_med = np.nanmedian(np.where(clear, swir, np.nan), axis=0)
            out &= swir < params.shadow_ratio * swir_med
    return out & enough


# ---- evaluation --------------------------------------------------------------------------------

_SCL_TO_CLASS = {
    0: NODATA,
    1: NODATA,  # saturated / defective
    2: CLEAR,  # dark area pixels (topographic shade)
    3: SHADOW,
    4: CLEAR,
    5: CLEAR,
    6: WATER,
    7: CLEAR,  # unclassified
    8: CLOUD,
    9: CLOUD,
    10: CLOUD,  # thin cirrus
    11: SNOW,
}


def scl_classes(scl: np.ndarray) -> np.ndarray:
    """Map Sentinel-2 L2A SCL values (``(...)`` float, NaN = missing) onto :data:`CLASS_NAMES`.

    0/1 (no data, saturated) and NaN -> nodata; 2, 4, 5, 7 -> clear; 3 -> shadow; 6 -> water;
    8, 9, 10 (cloud medium/high probability, thin cirrus) -> cloud; 11 -> snow.
    """
    scl = np.asarray(scl)
    lut = np.array([_SCL_TO_CLASS[c] for c in range(12)], dtype=np.uint8)
    finite = np.isfinite(scl)
    idx = np.where(finite, scl, 0).astype(np.int64)
    bad = finite & ((idx < 0) | (idx > 11) | (idx != np.where(finite, scl, 0)))
    if bad.any():
        raise InvalidInputError(
            f"SCL holds {np.unique(np.asarray(scl)[bad])[:5].tolist()}, not classes 0..11."
        )
    return lut[idx]


def mask_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int] = (CLOUD, SHADOW),
    *,
    ignore: Sequence[int] = (NODATA,),
) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 of each class of ``pred`` against ``ref``.

    Args:
        pred: predicted classes (any shape, values of :data:`CLASS_NAMES`).
        ref: reference classes, same shape (e.g. :func:`scl_classes` of SCL).
        classes: the classes scored.
        ignore: pixels where either side has one of these are left out (default nodata).

    Returns:
        ``{class name: {"precision", "recall", "f1", "tp", "n_pred", "n_ref"}}``; precision
        (recall) is NaN when nothing was predicted (referenced) in the class.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise InvalidInputError(
            f"mask_scores: prediction shape {pred.shape} differs from reference {ref.shape}."
        )
    keep = ~(np.isin(pred, ignore) | np.isin(ref, ignore))
    out: dict[str, dict[str, float]] = {}
    for c in classes:
        p, r = (pred == c) & keep, (ref == c) & keep
        tp, n_p, n_r = int((p & r).sum()), int(p.sum()), int(r.sum())
        prec = tp / n_p if n_p else math.nan
        rec = tp / n_r if n_r else math.nan
        f1 = 2 * tp / (n_p + n_r) if (n_p + n_r) else math.nan
        out[CLASS_NAMES[c]] = {
            "precision": prec,
            "recall": rec,
            "f1": f1,
            "tp": float(tp),
            "n_pred": float(n_p),
            "n_ref": float(n_r),
        }
    return out
