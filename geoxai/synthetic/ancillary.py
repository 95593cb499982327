"""Sentinel-1 backscatter and a DEM for the synthetic world, written as their own STAC collections.

Made when :class:`geoxai.synthetic.WorldParams` has ``with_s1`` / ``with_dem`` (both off by
default so the optical archive keeps its speed and bytes); :func:`write_ancillary` is called by
:func:`geoxai.synthetic.archive.write_archive`. Layout under the archive folder::

    OUT/s1/collection.json, OUT/s1/items.ndjson, OUT/s1/items/<id>.json
                                   Planetary Computer ``sentinel-1-rtc`` style items: assets
                                   ``vv``/``vh`` (float32 linear gamma0, nodata -32768, 10 m,
                                   the world's UTM grid), ``sat:orbit_state``, ``sar:*``
    OUT/s1/data/<id>/{vv,vh}.tif   the COGs
    OUT/dem/collection.json, OUT/dem/items.ndjson, OUT/dem/items/<id>.json
                                   one ``cop-dem-glo-30`` style item, asset ``data``
    OUT/dem/data/dem.tif           float32 elevation, metres, **EPSG:4326** at 1 arc-second
                                   (as Copernicus GLO-30), so reading it reprojects
    OUT/truth/elevation.tif, OUT/truth/slope.tif
                                   analytic elevation (m) and slope (degrees) on the 10 m block

Backscatter model (per pixel, acquisition; linear power)::

    P_pol = tc * TREE[pol] + (1 - tc) * CLASS[class][pol](g) ,   observed = P_pol * speckle

``tc`` is the world's tree-cover truth and ``g`` the greenness of its optical phenology (crops
brighten as they grow, VH more than VV), so radar and optics tell the same story. dB means
(VV, VH): tree canopy (-7.0, -12.5), cropland (-13 + 4 g, -22 + 7 g), grassland
(-11 + 1.5 g, -19 + 3 g), water (-21, -27), built-up (-4, -11), bare (-14, -22); descending
passes are 0.3 dB brighter (another incidence). Speckle is gamma distributed with mean 1 and
4.4 looks (the equivalent number of looks of IW GRDH), independent per pixel, polarisation and
date. Clouds do not touch it. Acquisitions every ``s1_revisit_days`` (default 6) alternate
descending (05:50 UTC) and ascending (17:40 UTC).

Elevation is analytic in the zone's metres (so any grid can be checked against it): a base of
60 m, a regional tilt and six Gaussian hills (20-120 m high, 0.8-2.5 km wide) drawn from the
seed; slopes reach ~5-10 degrees on hill flanks.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from pyproj import Transformer

from geoxai.geo.grid import RESOLUTION_M
from geoxai.synthetic.files import collection_links, write_cog

if TYPE_CHECKING:
    from geoxai.synthetic.world import SyntheticWorld

__all__ = [
    "S1_COLLECTION",
    "DEM_COLLECTION",
    "ENL",
    "s1_acquisitions",
    "s1_mean_power",
    "s1_power",
    "elevation_at",
    "slope_at",
    "dem_block",
    "write_ancillary",
]

S1_COLLECTION = "sentinel-1-rtc"
"""Collection id of the synthetic S1 items (Planetary Computer RTC layout)."""


DEM_COLLECTION = "cop-dem-glo-30"
"""Collection id of the synthetic DEM item (Copernicus GLO-30 layout)."""


ENL = 4.4
"""Equivalent number of looks of the speckle (IW GRDH)."""


_DEM_RES_DEG = 1.0 / 3600.0


_COG = "image/tiff; application=geotiff; profile=cloud-optimized"


# class code -> ((VV dB at g=0, VV dB slope in g), (VH dB at g=0, VH dB slope in g))
_CLASS_DB = {
    1: ((-11.0, 1.5), (-19.0, 3.0)),  # forest: the non-tree part is understory / grass
    2: ((-13.0, 4.0), (-22.0, 7.0)),
    3: ((-11.0, 1.5), (-19.0, 3.0)),
    4: ((-21.0, 0.0), (-27.0, 0.0)),
    5: ((-4.0, 0.0), (-11.0, 0.0)),
    6: ((-14.0, 0.0), (-22.0, 0.0)),
}


_TREE_DB = (-7.0, -12.5)


_DESC_BIAS_DB = 0.3


def s1_acquisitions(world: SyntheticWorld) -> list[tuple[datetime, str]]:
    """``(UTC time, orbit direction)`` of every S1 acquisition over the world's date span."""
    if not world.dates:
        return []
    first, last = world.dates[0], world.dates[-1]
    step = int(world.params.s1_revisit_days)
    out = []
    k = 0
    day = first
    while day <= last:
        desc = k % 2 == 0
        hms = (5, 50, 12) if desc else (17, 40, 31)
        out.append(
            (
                datetime(day.year, day.month, day.day, *hms, tzinfo=UTC),
                "descending" if desc else "ascending",
            )
        )
        k += 1
        day = first + timedelta(days=k * step)
    return out


def _greenness(world: SyntheticWorld, d: date) -> np.ndarray:
    s = world._static
    gbase, gamp, peak, width = s["pheno"].T
    dist = ((world._doy(d) - peak + 182.625) % 365.25 - 182.625) / width
    return np.take((gbase + gamp * np.exp(-0.5 * dist * dist)).astype(np.float32), s["pheno_id"])


def s1_mean_power(world: SyntheticWorld, when: date, orbit: str = "ascending") -> np.ndarray:
    """``(2, H, W)`` float32 speckle-free linear power (VV, VH) on the 10 m block grid."""
    lc = world.landcover()
    tc = world.tree_cover()
    g = _greenness(world, when)
    bias = _DESC_BIAS_DB if orbit == "descending" else 0.0
    out = np.empty((2, *lc.shape), np.float32)
    for k in range(2):
        base = np.zeros(7, np.float32)
        slope = np.zeros(7, np.float32)
        for code, pols in _CLASS_DB.items():
            base[code], slope[code] = pols[k]
        db_other = np.take(base, lc) + np.take(slope, lc) * g + bias
        p_other = np.power(np.float32(10.0), db_other / np.float32(10.0))
        p_tree = np.float32(10.0 ** ((_TREE_DB[k] + bias) / 10.0))
        out[k] = tc * p_tree + (1.0 - tc) * p_other
    return out


def s1_power(world: SyntheticWorld, i: int) -> np.ndarray:
    """``(2, H, W)`` float32 observed linear power (VV, VH) of S1 acquisition ``i`` (speckled)."""
    when, orbit = s1_acquisitions(world)[i]
    mean = s1_mean_power(world, when.date(), orbit)
    rng = np.random.default_rng((world.params.seed, 4, when.toordinal(), when.hour))
    speckle = rng.gamma(ENL, 1.0 / ENL, size=mean.shape).astype(np.float32)
    return mean * speckle


def _hills(world: SyntheticWorld) -> tuple[np.ndarray, tuple[float, float, float]]:
    rng = np.random.default_rng((world.params.seed, 5))
    x0, y0, x1, y1 = world.bounds
    n = 6
    cx = rng.uniform(x0 - 2000, x1 + 2000, n)
    cy = rng.uniform(y0 - 2000, y1 + 2000, n)
    amp = rng.uniform(20.0, 120.0, n)
    sig = rng.uniform(800.0, 2500.0, n)
    tilt = rng.uniform(-0.004, 0.004, 2)
    return np.stack([cx, cy, amp, sig]), (float(tilt[0]), float(tilt[1]), 60.0)


def elevation_at(world: SyntheticWorld, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Analytic elevation, metres, at zone coordinates ``(x, y)`` (metres, any shape)."""
    (cx, cy, amp, sig), (tx, ty, base) = _hills(world)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xm, ym = (world.bounds[0] + world.bounds[2]) / 2, (world.bounds[1] + world.bounds[3]) / 2
    z = base + tx * (x - xm) + ty * (y - ym)
    for k in range(cx.size):
        z = z + amp[k] * np.exp(-0.5 * ((x - cx[k]) ** 2 + (y - cy[k]) ** 2) / sig[k] ** 2)
    return z


def slope_at(world: SyntheticWorld, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Analytic slope, degrees, at zone coordinates ``(x, y)``."""
    (cx, cy, amp, sig), (tx, ty, _) = _hills(world)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    gx = np.full(np.broadcast(x, y).shape, tx)
    gy = np.full(np.broadcast(x, y).shape, ty)
    for k in range(cx.size):
        e = amp[k] * np.exp(-0.5 * ((x - cx[k]) ** 2 + (y - cy[k]) ** 2) / sig[k] ** 2)
        gx = gx - e * (x - cx[k]) / sig[k] ** 2
        gy = gy - e * (y - cy[k]) / sig[k] ** 2
    return np.degrees(np.arctan(np.hypot(gx, gy)))


def dem_block(world: SyntheticWorld) -> tuple[np.ndarray, np.ndarray]:
    """``(elevation m, slope degrees)`` float32 ``(H, W)`` at the 10 m block's pixel centres."""
    h, w = world.shape
    x0, _, _, y1 = world.bounds
    xs = x0 + RESOLUTION_M * (np.arange(w) + 0.5)
    ys = y1 - RESOLUTION_M * (np.arange(h) + 0.5)
    xx, yy = np.meshgrid(xs, ys)
    return (
        elevation_at(world, xx, yy).astype(np.float32),
        slope_at(world, xx, yy).astype(np.float32),
    )


def _footprint(world: SyntheticWorld) -> tuple[dict[str, Any], list[float]]:
    x0, y0, x1, y1 = world.bounds
    lon, lat = world.to_lonlat([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
    geom = {"type": "Polygon", "coordinates": [[[a, b] for a, b in zip(lon, lat, strict=True)]]}
    return geom, [min(lon), min(lat), max(lon), max(lat)]


def _collection(cid: str, title: str, root: Path, items: list[dict], bbox: list[float]) -> dict:
    times = [it["properties"]["datetime"] for it in items]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "title": title,
        "description": f"{title} made by geoxai.synthetic.ancillary.",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[min(times), max(times)] if times else [None, None]]},
        },
        "links": collection_links(root, items),
    }


def _write_items(root: Path, cid: str, title: str, items: list[dict], bbox: list[float]) -> None:
    (root / "items").mkdir(parents=True, exist_ok=True)
    for it in items:
        (root / "items" / f"{it['id']}.json").write_text(json.dumps(it, indent=1))
    (root / "items.ndjson").write_text("".join(json.dumps(it) + "\n" for it in items))
    (root / "collection.json").write_text(json.dumps(_collection(cid, title, root, items, bbox)))


def _s1_item(world: SyntheticWorld, i: int, when: datetime, orbit: str, folder: Path) -> dict:
    stamp = when.strftime("%Y%m%dT%H%M%S")
    orbit_no = 10_000 + i * world.params.s1_revisit_days
    item_id = f"S1A_IW_GRDH_1SDV_{stamp}_{stamp}_{orbit_no:06d}_SYN{i:03d}_rtc"
    geom, bbox = _footprint(world)
    x0, _, _, y1 = world.bounds
    assets = {
        pol: {
            "href": str(folder / f"{pol}.tif"),
            "type": _COG,
            "title": f"{pol.upper()}: vertical transmit, {pol[1].upper()} receive",
            "roles": ["data"],
            "proj:shape": list(world.shape),
            "proj:transform": [RESOLUTION_M, 0, x0, 0, -RESOLUTION_M, y1],
            "raster:bands": [
                {"nodata": -32768, "data_type": "float32", "spatial_resolution": RESOLUTION_M}
            ],
        }
        for pol in ("vv", "vh")
    }
    iso = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": item_id,
        "collection": S1_COLLECTION,
        "geometry": geom,
        "bbox": bbox,
        "properties": {
            "datetime": iso,
            "start_datetime": iso,
            "end_datetime": iso,
            "platform": "SENTINEL-1A",
            "constellation": "Sentinel-1",
            "sar:frequency_band": "C",
            "sar:center_frequency": 5.405,
            "sar:instrument_mode": "IW",
            "sar:polarizations": ["VV", "VH"],
            "sar:product_type": "GRD",
            "sar:looks_equivalent_number": ENL,
            "sat:orbit_state": orbit,
            "sat:relative_orbit": 37 if orbit == "ascending" else 110,
            "proj:epsg": world.epsg,
            "s1:processing_level": "1",
            "geoxai:synthetic": True,
            "geoxai:seed": world.params.seed,
        },
        "links": [],
        "assets": assets,
    }


def _dem_item(world: SyntheticWorld, path: Path, transform: Affine, shape: tuple[int, int]):
    geom, bbox = _footprint(world)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
        "id": f"Copernicus_DSM_COG_10_SYNTHETIC_{world.params.seed}_DEM",
        "collection": DEM_COLLECTION,
        "geometry": geom,
        "bbox": bbox,
        "properties": {
            "datetime": "2021-04-22T00:00:00Z",
            "platform": "TanDEM-X",
            "gsd": 30,
            "proj:epsg": 4326,
            "proj:shape": list(shape),
            "proj:transform": list(transform)[:6],
            "geoxai:synthetic": True,
        },
        "links": [],
        "assets": {
            "data": {
                "href": str(path),
                "type": _COG,
                "title": "Elevation (synthetic)",
                "roles": ["data"],
                "raster:bands": [{"nodata": -32767.0, "data_type": "float32", "unit": "metre"}],
            }
        },
    }


def write_ancillary(world: SyntheticWorld, root: Path) -> dict[str, Any]:
    """Write the S1 and/or DEM collections (as the world's params ask) under ``root``.

    Returns:
        ``{"s1_items": [ids], "dem_items": [ids], "files": [paths]}``.
    """

    p = world.params
    files: list[Path] = []
    out: dict[str, Any] = {"s1_items": [], "dem_items": [], "files": files}
    _, bbox = _footprint(world)
    if p.with_s1:
        s1root = root / "s1"
        items = []
        for i, (when, orbit) in enumerate(s1_acquisitions(world)):
            folder = s1root / "data" / f"{i:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            power = s1_power(world, i)
            for k, pol in enumerate(("vv", "vh")):
                write_cog(folder / f"{pol}.tif", power[k], world.transform, world.crs, -32768)
                files.append(folder / f"{pol}.tif")
            items.append(_s1_item(world, i, when, orbit, folder))
        _write_items(s1root, S1_COLLECTION, "Synthetic Sentinel-1 RTC (geoxai)", items, bbox)
        out["s1_items"] = [it["id"] for it in items]
    if p.with_dem:
        demroot = root / "dem"
        (demroot / "data").mkdir(parents=True, exist_ok=True)
        pad = 0.01
        lon0, lat0, lon1, lat1 = bbox[0] - pad, bbox[1] - pad, bbox[2] + pad, bbox[3] + pad
        nx = int(math.ceil((lon1 - lon0) / _DEM_RES_DEG))
        ny = int(math.ceil((lat1 - lat0) / _DEM_RES_DEG))
        transform = Affine(_DEM_RES_DEG, 0.0, lon0, 0.0, -_DEM_RES_DEG, lat1)
        lons = lon0 + _DEM_RES_DEG * (np.arange(nx) + 0.5)
        lats = lat1 - _DEM_RES_DEG * (np.arange(ny) + 0.5)

        to_utm = Transformer.from_crs(4326, world.epsg, always_xy=True)
        lon2, lat2 = np.meshgrid(lons, lats)
        ux, uy = to_utm.transform(lon2, lat2)
        z = elevation_at(world, ux, uy).astype(np.float32)
        path = demroot / "data" / "dem.tif"
        write_cog(path, z, transform, "EPSG:4326", None)
        files.append(path)
        item = _dem_item(world, path, transform, (ny, nx))
        _write_items(
            demroot, DEM_COLLECTION, "Synthetic Copernicus DEM GLO-30 (geoxai)", [item], bbox
        )
        out["dem_items"] = [item["id"]]
        elev, slope = dem_block(world)
        for name, arr in (("elevation", elev), ("slope", slope)):
            write_cog(root / "truth" / f"{name}.tif", arr, world.transform, world.crs, None)
            files.append(root / "truth" / f"{name}.tif")
    return out
