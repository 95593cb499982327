"""STAC item normalization: canonical band names, EPSG and reflectance scaling, whatever the
catalog.

Earth Search v0/v1 (``B04``/``red`` keys, ``proj:code``) and Planetary Computer items are mapped
to one shape: assets keyed by canonical band (``B02``..``B12``, ``SCL``; ``VV``/``VH``/``HH``/``HV``
for Sentinel-1) with ``raster:bands`` scale/offset (the -0.1 offset of processing baseline
>= 04.00 included).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pystac

from geoxai.errors import DataAccessError, InvalidInputError
from geoxai.geo.bands import (
    BANDS,
    S2_BANDS,
    SCL,
    SUN_AZIMUTH,
    SUN_ELEVATION,
    canonical_band_name,
)

log = logging.getLogger(__name__)

__all__ = [
    "S1_POLARIZATIONS",
    "DEFAULT_S2_SCALE",
    "BASELINE_OFFSET_START",
    "normalize_item",
    "band_scaling",
    "sensor",
    "processing_baseline",
    "check_bands",
    "item_sun_angles",
]

S1_POLARIZATIONS: tuple[str, ...] = ("vv", "vh", "hh", "hv")
"""Canonical (lower-case) asset keys of Sentinel-1 polarisation assets."""


DEFAULT_S2_SCALE = 1e-4
"""Reflectance per DN of Sentinel-2 L1C/L2A (QUANTIFICATION_VALUE 10000)."""


BASELINE_OFFSET = -0.1
"""Reflectance offset of processing baseline >= 04.00 (BOA/RADIO_ADD_OFFSET -1000 DN)."""


BASELINE_OFFSET_START = dt.datetime(2022, 1, 25, tzinfo=dt.UTC)
"""First acquisitions processed with baseline 04.00 (used only when no baseline is recorded)."""


_NON_DATA_ROLES = {"thumbnail", "overview", "metadata", "visual", "tiles"}


_AMBIGUOUS_COMMON_NAMES = {"rededge", "nir"}


_REFLECTANCE_BANDS = {b for b in BANDS if b != SCL}


_BASELINE_IN_ID = re.compile(r"_N(\d{2})(\d{2})(?:_|$)")


def sensor(item: pystac.Item) -> str | None:
    """``"sentinel-1"``, ``"sentinel-2"`` or None (unknown) from an item's properties."""
    props = item.properties
    names = " ".join(
        str(props.get(k, "")) for k in ("constellation", "platform", "mission")
    ).lower()
    names = names.replace(" ", "-").replace("_", "-")
    if "sentinel-1" in names or any(k.startswith(("sar:", "s1:")) for k in props):
        return "sentinel-1"
    if "sentinel-2" in names or any(k.startswith(("s2:", "sentinel:")) for k in props):
        return "sentinel-2"
    return None


def processing_baseline(item: pystac.Item) -> str | None:
    """The Sentinel-2 processing baseline as ``"NN.NN"`` (e.g. ``"05.09"``), or None."""
    props = item.properties
    for key in ("s2:processing_baseline", "sentinel:processing_baseline"):
        value = props.get(key)
        if value:
            match = re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})\s*", str(value))
            if match:
                return f"{int(match[1]):02d}.{int(match[2]):02d}"
    for key in ("s2:product_uri", "sentinel:product_id", "s2:product_id"):
        value = props.get(key)
        if value:
            match = _BASELINE_IN_ID.search(str(value).removesuffix(".SAFE"))
            if match:
                return f"{match[1]}.{match[2]}"
    match = _BASELINE_IN_ID.search(item.id)
    return f"{match[1]}.{match[2]}" if match else None


def item_from_dict(doc: dict[str, Any], source: str) -> pystac.Item:
    """pystac.Item.from_dict with typed errors; silences pystac's storage-migration warning."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Could not parse bucket", category=UserWarning
            )
            return pystac.Item.from_dict(doc, preserve_dict=False)
    except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{source}: STAC item {doc.get('id')!r} is not a valid item ({type(exc).__name__}: "
            f"{exc}). Every item needs id, geometry, properties.datetime (or start/end_datetime) "
            "and assets."
        ) from exc


def item_datetime(item: pystac.Item) -> dt.datetime:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InvalidInputError(
            f"STAC item {item.id!r} has neither 'datetime' nor 'start_datetime'; "
            "every acquisition needs a time. Fix the item or drop it from the source."
        )
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _epsg_from_code(code: Any) -> int | None:
    if code is None:
        return None
    match = re.fullmatch(r"\s*EPSG:(\d+)\s*", str(code), flags=re.IGNORECASE)
    return int(match[1]) if match else None


def _is_jp2(key: str, asset: pystac.Asset) -> bool:
    return key.lower().endswith("-jp2") or "jp2" in str(asset.media_type or "").lower()


def _is_data_asset(asset: pystac.Asset) -> bool:
    roles = set(asset.roles or [])
    if roles & _NON_DATA_ROLES:
        return False
    media = str(asset.media_type or "").lower()
    if media and not media.startswith(("image/tiff", "image/jp2", "image/vnd.stac.geotiff")):
        return False
    eo_bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    return len(eo_bands) <= 1


def _band_from_asset(key: str, asset: pystac.Asset) -> str | None:
    """Canonical S2 band of one asset, or None."""
    base = key[: -len("-jp2")] if key.lower().endswith("-jp2") else key
    canon = canonical_band_name(base)
    if canon is not None and base.lower() != "rededge":
        return canon
    eo_bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    if len(eo_bands) == 1 and isinstance(eo_bands[0], dict):
        name = eo_bands[0].get("name")
        if name and canonical_band_name(name) and str(name).lower() != "rededge":
            return canonical_band_name(name)
        common = eo_bands[0].get("common_name") or eo_bands[0].get("eo:common_name")
        if common and str(common).lower() not in _AMBIGUOUS_COMMON_NAMES:
            return canonical_band_name(common)
    return None


def _s1_key(key: str) -> str | None:
    base = key.lower().removesuffix("-jp2")
    return base if base in S1_POLARIZATIONS else None


def _declared_scaling(asset: pystac.Asset) -> tuple[float, float] | None:
    """(scale, offset) declared by raster:bands (STAC 1.0) or asset fields (STAC 1.1)."""
    bands = asset.extra_fields.get("raster:bands") or []
    first = bands[0] if bands and isinstance(bands[0], dict) else {}
    for source in (first, asset.extra_fields):
        scale = source.get("scale", source.get("raster:scale"))
        if scale is not None:
            offset = source.get("offset", source.get("raster:offset", 0.0))
            return float(scale), float(offset or 0.0)
    return None


def _rule_scaling(item: pystac.Item) -> tuple[tuple[float, float], str]:
    baseline = processing_baseline(item)
    if baseline is not None:
        offset = BASELINE_OFFSET if baseline >= "04.00" else 0.0
        return (DEFAULT_S2_SCALE, offset), f"processing-baseline {baseline}"
    when = item_datetime(item)
    offset = BASELINE_OFFSET if when >= BASELINE_OFFSET_START else 0.0
    return (DEFAULT_S2_SCALE, offset), "acquisition-date"


def _with_scaling(asset: pystac.Asset, scale: float, offset: float) -> pystac.Asset:
    new = asset.clone()
    bands = copy.deepcopy(new.extra_fields.get("raster:bands") or [{}])
    first = dict(bands[0]) if isinstance(bands[0], dict) else {}
    first.setdefault("nodata", 0)
    first["scale"] = scale
    first["offset"] = offset
    new.extra_fields["raster:bands"] = [first, *bands[1:]]
    return new


def normalize_item(item: pystac.Item | dict[str, Any]) -> pystac.Item:
    """A normalized copy of ``item`` (see the module docstring); the input is not changed.

    Idempotent: normalizing a normalized item gives the same item.
    """
    if isinstance(item, dict):
        item = item_from_dict(copy.deepcopy(item), "normalize_item")
    elif not isinstance(item, pystac.Item):
        raise InvalidInputError(
            f"normalize_item needs a pystac.Item or an item dict, got {type(item).__name__}."
        )
    out = item.clone()
    props = out.properties
    if "geoxai:scaling" in props:
        return out  # already normalized
    item_datetime(out)  # typed error when the item has no time at all
    # An unresolved root link makes pystac's to_dict() fetch it over the network (offline
    # that fails, online it is slow): keep only roots that are already loaded objects.
    out.links = [link for link in out.links if link.rel != "root" or link.is_resolved()]

    if props.get("proj:epsg") is None:
        epsg = _epsg_from_code(props.get("proj:code"))
        if epsg is not None:
            props["proj:epsg"] = epsg
    for asset in out.assets.values():
        if asset.extra_fields.get("proj:epsg") is None:
            epsg = _epsg_from_code(asset.extra_fields.get("proj:code"))
            if epsg is not None:
                asset.extra_fields["proj:epsg"] = epsg

    kind = sensor(out)
    props["geoxai:sensor"] = kind
    if kind == "sentinel-1":
        _map_s1(out)
    elif kind == "sentinel-2" or kind is None:
        _map_s2(out)
    return out


def _map_s1(item: pystac.Item) -> None:
    found: dict[str, tuple[int, str]] = {}
    for key, asset in item.assets.items():
        pol = _s1_key(key)
        if pol is None or not _is_data_asset(asset):
            continue
        rank = 0 if key == pol else (2 if _is_jp2(key, asset) else 1)
        if pol not in found or rank < found[pol][0]:
            found[pol] = (rank, key)
    for pol, (_, key) in found.items():
        asset = item.assets[key]
        scale, offset = _declared_scaling(asset) or (1.0, 0.0)
        item.assets[pol] = _with_scaling(asset, scale, offset)
    item.properties["geoxai:scaling"] = {pol: "raster:bands" for pol in found}


def _map_s2(item: pystac.Item) -> None:
    found: dict[str, tuple[int, str]] = {}
    for key, asset in item.assets.items():
        if not _is_data_asset(asset):
            continue
        canon = _band_from_asset(key, asset)
        if canon is None:
            continue
        # preference: the canonical key itself, then a COG, then a JPEG2000 duplicate
        rank = 0 if key == canon else (2 if _is_jp2(key, asset) else 1)
        if canon not in found or rank < found[canon][0]:
            found[canon] = (rank, key)
    rules: dict[str, str] = {}
    rule_scaling: tuple[tuple[float, float], str] | None = None
    for canon, (_, key) in sorted(found.items()):
        asset = item.assets[key]
        if canon == SCL:
            scale, offset = 1.0, 0.0
            rules[canon] = "classification"
        else:
            declared = _declared_scaling(asset)
            if declared is not None:
                (scale, offset), rules[canon] = declared, "raster:bands"
            else:
                if rule_scaling is None:
                    rule_scaling = _rule_scaling(item)
                (scale, offset), rules[canon] = rule_scaling
        item.assets[canon] = _with_scaling(asset, scale, offset)
    item.properties["geoxai:scaling"] = rules


def band_scaling(item: pystac.Item, band: str) -> tuple[float, float]:
    """``(scale, offset)`` with reflectance = DN * scale + offset for one band of an item.

    ``band`` is a canonical name or an alias (``"red"``, ``"B04"``), or a Sentinel-1
    polarisation (``"vv"``). Works on raw and normalized items alike.
    """
    norm = item if "geoxai:scaling" in item.properties else normalize_item(item)
    key = band.lower() if band.lower() in S1_POLARIZATIONS else canonical_band_name(band)
    if key is None:
        valid = sorted(k for k in norm.assets if k in BANDS or k in S1_POLARIZATIONS)
        raise InvalidInputError(
            f"Unknown band {band!r} for STAC item {item.id!r}. Use a Sentinel-2 band name "
            f"(B02 ... B12, B8A, SCL, or a common name like 'red') or a polarisation; "
            f"this item has {valid}."
        )
    _require(norm, key)
    declared = _declared_scaling(norm.assets[key])
    if declared is None:  # pragma: no cover - normalize_item always records one
        raise DataAccessError(f"STAC item {item.id!r}: band {key} has no scale recorded.")
    return declared


def _require(item: pystac.Item, band: str) -> None:
    if band not in item.assets:
        have = sorted(k for k in item.assets if k in BANDS or k in S1_POLARIZATIONS)
        raise DataAccessError(
            f"STAC item {item.id!r} (collection {item.collection_id!r}, sensor "
            f"{item.properties.get('geoxai:sensor')}) has no asset for band {band}; "
            f"bands found: {have or 'none'}. Fix: choose a collection that carries {band} "
            "(e.g. sentinel-2-l2a for SCL), drop the band from the request, or pass "
            "on_missing='drop' to skip such items."
        )


def check_bands(
    items: Sequence[pystac.Item], bands: Sequence[str], *, on_missing: str = "raise"
) -> list[pystac.Item]:
    """Items (normalized) that carry every band in ``bands``.

    Args:
        items: normalized items.
        bands: canonical band names or aliases (``"B04"``, ``"red"``) or polarisations.
        on_missing: ``"raise"`` (DataAccessError naming the item and band) or ``"drop"``
            (skip the item, log a warning).
    """
    if on_missing not in ("raise", "drop"):
        raise InvalidInputError(
            f"on_missing={on_missing!r} is not a policy; use 'raise' or 'drop'."
        )
    keys = []
    for b in bands:
        key = b.lower() if b.lower() in S1_POLARIZATIONS else canonical_band_name(b)
        if key is None:
            raise InvalidInputError(
                f"Unknown band {b!r}; use names like {', '.join(S2_BANDS)}, SCL or vv/vh."
            )
        keys.append(key)
    kept = []
    for item in items:
        try:
            for key in keys:
                _require(item, key)
        except DataAccessError as exc:
            if on_missing == "raise":
                raise
            log.warning("dropping STAC item: %s", exc)
            continue
        kept.append(item)
    return kept


def _num(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def item_sun_angles(properties: Mapping[str, object]) -> tuple[float, float]:
    """``(azimuth, elevation)`` degrees from STAC item properties; NaN where absent.

    Reads ``view:sun_azimuth`` / ``view:sun_elevation`` (the view extension), else
    ``s2:mean_solar_azimuth`` / ``s2:mean_solar_zenith`` (elevation = 90 - zenith). The cube
    carries them as coordinates :data:`geoxai.geo.bands.SUN_AZIMUTH` / ``SUN_ELEVATION``.
    """
    az = _num(properties.get(SUN_AZIMUTH))
    el = _num(properties.get(SUN_ELEVATION))
    if math.isnan(az):
        az = _num(properties.get("s2:mean_solar_azimuth"))
    if math.isnan(el):
        el = 90.0 - _num(properties.get("s2:mean_solar_zenith"))
    return az, el
