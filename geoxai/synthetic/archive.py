"""Writing a synthetic world as a Sentinel-2 L2A archive: COGs, Earth Search v1 STAC, truth.

Layout written by :func:`write_archive` (``SyntheticWorld.write``)::

    OUT/collection.json        STAC Collection (Earth Search v1 style), links to every item
    OUT/items/<id>.json        one Item per acquisition, absolute asset hrefs
    OUT/items.ndjson           all Items, one per line (for ``rustac serve`` / pypgstac)
    OUT/item_collection.json   all Items as one GeoJSON FeatureCollection
    OUT/data/<id>/<BAND>.tif   COGs: uint16 DN = round((reflectance + 0.1) / 1e-4), nodata 0;
                               B02 B03 B04 B08 at 10 m, B05 B06 B07 B8A B11 B12 and SCL (uint8)
                               at 20 m; ZSTD + predictor, 512 px blocks, overviews
    OUT/truth/tree_cover.tif   float32 fraction 0..1, 10 m block grid
    OUT/truth/landcover.tif    uint8 codes of ``geoxai.synthetic.LANDCOVER_CLASSES``
    OUT/truth/natural.tif      uint8 1 natural / 0 anthropogenic (``NATURAL_CLASSES``)
    OUT/s1/, OUT/dem/          Sentinel-1 and DEM collections when the world has ``with_s1`` /
                               ``with_dem`` (layout in :mod:`geoxai.synthetic.ancillary`)
    OUT/world.json             ``WorldParams.to_json()``; ``load_world(OUT)`` rebuilds the world.
                               Written last: an archive without it is incomplete (rewrite it)

Items mirror a real Earth Search v1 item (asset keys ``blue green red rededge1 rededge2
rededge3 nir nir08 swir16 swir22 scl``, ``proj:code`` without ``proj:epsg``, per-asset
``proj:shape``/``proj:transform``, ``raster:bands`` with scale 1e-4 and offset -0.1,
``s2:processing_baseline`` "05.10", ``eo:cloud_cover`` and the ``s2:*_percentage`` fields from
the scene's SCL, MGRS fields, sun angles) plus ``geoxai:synthetic: true``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import antimeridian
import numpy as np
from affine import Affine
from shapely.geometry import Polygon, mapping

from geoxai.geo.bands import BANDS, S2_BANDS
from geoxai.geo.grid import RESOLUTION_M, split_at_antimeridian
from geoxai.synthetic.ancillary import write_ancillary
from geoxai.synthetic.files import collection_links, write_cog

if TYPE_CHECKING:
    from geoxai.synthetic.params import Atmosphere
    from geoxai.synthetic.world import SyntheticWorld

__all__ = [
    "Archive",
    "write_archive",
    "stac_item",
    "stac_collection",
]
"""COG internal tile size, pixels."""


SCALE, OFFSET = 1e-4, -0.1


_BASELINE = "05.10"


_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


_ES_EXTENSIONS = [
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]


_TITLES = {
    "B02": "Blue (band 2)",
    "B03": "Green (band 3)",
    "B04": "Red (band 4)",
    "B05": "Red edge 1 (band 5)",
    "B06": "Red edge 2 (band 6)",
    "B07": "Red edge 3 (band 7)",
    "B08": "NIR 1 (band 8)",
    "B8A": "NIR 2 (band 8A)",
    "B11": "SWIR 1 (band 11)",
    "B12": "SWIR 2 (band 12)",
}


@dataclass(frozen=True)
class Archive:
    """What :meth:`SyntheticWorld.write` produced.

    Attributes:
        root: output folder.
        collection: path of collection.json.
        items_dir: folder of the item JSON files.
        ndjson: all items, one JSON per line.
        item_collection: all items as one GeoJSON FeatureCollection.
        item_ids: ids of the items, in date order.
        truth: truth layer name -> GeoTIFF path.
        n_files: files written.
        bytes_written: total size of the files, bytes.
        corrupt_hrefs: asset hrefs that were truncated on purpose.
        seconds: wall time of the write.
        s1_item_ids: ids of the Sentinel-1 items (``OUT/s1``; empty unless ``with_s1``).
        dem_item_ids: ids of the DEM items (``OUT/dem``; empty unless ``with_dem``).
    """

    root: Path
    collection: Path
    items_dir: Path
    ndjson: Path
    item_collection: Path
    item_ids: tuple[str, ...]
    truth: Mapping[str, Path]
    n_files: int
    bytes_written: int
    corrupt_hrefs: tuple[str, ...]
    seconds: float
    s1_item_ids: tuple[str, ...] = ()
    dem_item_ids: tuple[str, ...] = ()


def write_archive(
    world: SyntheticWorld,
    out: str | Path,
    *,
    workers: int = 2,
    progress: Callable[[int, int, str], None] | None = None,
) -> Archive:
    """Write ``world`` under ``out``, one acquisition at a time (bounded memory).

    Args:
        world: the synthetic world.
        out: output folder (created; files of the same names are replaced).
        workers: threads compressing COGs (GDAL releases the GIL).
        progress: called as ``progress(done, total, item_id)`` after each acquisition.
    """
    t_start = time.perf_counter()
    root = Path(out).resolve()
    (root / "items").mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir(parents=True, exist_ok=True)
    truth = {}
    for name, arr in (
        ("tree_cover", world.tree_cover()),
        ("landcover", world.landcover()),
        ("natural", world.natural()),
    ):
        truth[name] = root / "truth" / f"{name}.tif"
        write_cog(truth[name], arr, world.transform, world.crs, None)
    files: list[Path] = list(truth.values())
    items: list[dict[str, Any]] = []
    corrupt: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i in range(len(world.dates)):
            item_id = world.item_id(i)
            folder = root / "data" / item_id
            folder.mkdir(parents=True, exist_ok=True)
            atm = world.atmosphere(i)
            jobs = []
            scl = np.zeros((0, 0), np.uint8)
            for name, arr in world.render(i, atm):
                path = folder / f"{name}.tif"
                transform = world.transform @ Affine.scale(world.shape[0] // arr.shape[0])
                jobs.append(pool.submit(write_cog, path, arr, transform, world.crs, 0))
                files.append(path)
                scl = arr if name == "SCL" else scl
            for job in jobs:
                job.result()
            for idx, band in world.params.corrupt:
                if idx == i:  # truncate: the header survives, the tiles do not
                    path = folder / f"{band}.tif"
                    path.write_bytes(path.read_bytes()[: max(512, path.stat().st_size // 3)])
                    corrupt.append(str(path))
            item = stac_item(world, i, root, atm, scl)
            files.append(root / "items" / f"{item_id}.json")
            files[-1].write_text(json.dumps(item, indent=1))
            items.append(item)
            if progress is not None:
                progress(i + 1, len(world.dates), item_id)
    paths = {
        "collection": root / "collection.json",
        "ndjson": root / "items.ndjson",
        "fc": root / "item_collection.json",
        "world": root / "world.json",
    }
    paths["collection"].write_text(json.dumps(stac_collection(world, root, items), indent=1))
    paths["ndjson"].write_text("".join(json.dumps(it) + "\n" for it in items))
    paths["fc"].write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    ancillary: dict[str, Any] = {"s1_items": [], "dem_items": [], "files": []}
    if world.params.with_s1 or world.params.with_dem:
        ancillary = write_ancillary(world, root)
        truth.update(
            {
                n: root / "truth" / f"{n}.tif"
                for n in ("elevation", "slope")
                if world.params.with_dem
            }
        )
    files += ancillary["files"]
    paths["world"].write_text(json.dumps(world.params.to_json(), indent=1))
    files += paths.values()
    return Archive(
        root=root,
        collection=paths["collection"],
        items_dir=root / "items",
        ndjson=paths["ndjson"],
        item_collection=paths["fc"],
        item_ids=tuple(it["id"] for it in items),
        truth=truth,
        n_files=len(files),
        bytes_written=sum(f.stat().st_size for f in files),
        corrupt_hrefs=tuple(corrupt),
        seconds=time.perf_counter() - t_start,
        s1_item_ids=tuple(ancillary["s1_items"]),
        dem_item_ids=tuple(ancillary["dem_items"]),
    )


def _asset(name: str, href: Path, bounds: tuple[float, ...], shape10: tuple[int, int]) -> dict:
    b = BANDS[name]
    res = b.resolution_m
    x0, y1 = bounds[0], bounds[3]
    asset: dict[str, Any] = {"href": str(href), "type": _COG_TYPE}
    if name == "SCL":
        asset["title"] = "Scene classification map (SCL)"
        bands = [{"nodata": 0, "data_type": "uint8", "spatial_resolution": res}]
    else:
        asset["title"] = f"{_TITLES[name]} - {res}m"
        asset["eo:bands"] = [
            {
                "name": b.common_name,
                "common_name": b.common_name,
                "description": _TITLES[name],
                "center_wavelength": b.center_um,
            }
        ]
        asset["gsd"] = res
        bands = [
            {
                "nodata": 0,
                "data_type": "uint16",
                "bits_per_sample": 15,
                "spatial_resolution": res,
                "scale": SCALE,
                "offset": OFFSET,
            }
        ]
    asset["proj:shape"] = [n * RESOLUTION_M // res for n in shape10]
    asset["proj:transform"] = [res, 0, x0, 0, -res, y1]
    asset["raster:bands"] = bands
    asset["roles"] = ["data", "reflectance"]
    return asset


def _lonlat_footprint(lon: Any, lat: Any) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON geometry and bbox of a footprint ring; across the antimeridian split at 180
    degrees with ``minlon > maxlon`` in the bbox (RFC 7946)."""
    ring = [[a, b] for a, b in zip(lon, lat, strict=True)]
    geom = split_at_antimeridian(Polygon(ring))
    if geom.geom_type == "Polygon":
        return {"type": "Polygon", "coordinates": [ring]}, [min(lon), min(lat), max(lon), max(lat)]
    return json.loads(json.dumps(mapping(geom))), [float(v) for v in antimeridian.bbox(geom)]


def stac_item(
    world: SyntheticWorld, i: int, root: Path, atm: Atmosphere, scl: np.ndarray
) -> dict[str, Any]:
    """Earth Search v1 style STAC Item (a dict) of acquisition ``i`` written under ``root``.

    ``scl`` is the acquisition's (H/2, W/2) SCL array: the percentages come from it.
    """
    x0, y0, x1, y1 = world.bounds
    lon, lat = world.to_lonlat([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
    geometry, bbox = _lonlat_footprint(lon, lat)
    counts = np.bincount(scl.ravel(), minlength=12).astype(np.float64)
    valid = max(float(counts[1:].sum()), 1.0)

    def pct(*classes: int) -> float:
        return round(100.0 * float(sum(counts[c] for c in classes)) / valid, 6)

    item_id = world.item_id(i)
    zone = world.epsg % 100
    lat_band, square = world.mgrs
    when = world.acquisition_time(i)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sat = "S2A" if world.platform(i) == "sentinel-2a" else "S2B"
    compact = when.strftime("%Y%m%dT%H%M%S")
    props = {
        "created": stamp,
        "platform": world.platform(i),
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": pct(8, 9, 10),
        "proj:code": world.crs,
        "mgrs:utm_zone": zone,
        "mgrs:latitude_band": lat_band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{zone}{lat_band}{square}",
        "view:sun_azimuth": round(atm.sun_azimuth, 6),
        "view:sun_elevation": round(atm.sun_elevation, 6),
        "s2:nodata_pixel_percentage": round(100.0 * counts[0] / max(counts.sum(), 1.0), 6),
        "s2:cloud_shadow_percentage": pct(3),
        "s2:vegetation_percentage": pct(4),
        "s2:not_vegetated_percentage": pct(5),
        "s2:water_percentage": pct(6),
        "s2:unclassified_percentage": pct(7),
        "s2:medium_proba_clouds_percentage": pct(8),
        "s2:high_proba_clouds_percentage": pct(9),
        "s2:thin_cirrus_percentage": pct(10),
        "s2:snow_ice_percentage": 0.0,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": _BASELINE,
        "s2:product_uri": f"{sat}_MSIL2A_{compact}_N0510_R051_T{zone}{lat_band}{square}"
        f"_{compact}.SAFE",
        "datetime": stamp,
        "s2:sequence": "0",
        "earthsearch:boa_offset_applied": True,
        "geoxai:synthetic": True,
        "geoxai:seed": world.params.seed,
        "updated": stamp,
    }
    folder = root / "data" / item_id
    coll = str(root / "collection.json")
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(_ES_EXTENSIONS),
        "id": item_id,
        "properties": props,
        "geometry": geometry,
        "links": [
            *({"rel": r, "type": "application/json", "href": coll} for r in ("collection", "root")),
            {"rel": "parent", "type": "application/json", "href": coll},
            {
                "rel": "self",
                "type": "application/geo+json",
                "href": str(root / "items" / f"{item_id}.json"),
            },
        ],
        "assets": {
            BANDS[n].common_name: _asset(n, folder / f"{n}.tif", world.bounds, world.shape)
            for n in (*S2_BANDS, "SCL")
        },
        "bbox": bbox,
        "collection": world.params.collection_id,
    }


def stac_collection(world: SyntheticWorld, root: Path, items: list[dict[str, Any]]) -> dict:
    """STAC Collection (a dict) of the written items, with an ``item`` link to each."""
    times = [it["properties"]["datetime"] for it in items]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": list(_ES_EXTENSIONS),
        "id": world.params.collection_id,
        "title": "Synthetic Sentinel-2 Level-2A (geoxai)",
        "description": (
            f"Synthetic Sentinel-2 L2A archive made by geoxai.synthetic (seed "
            f"{world.params.seed}, year {world.year}) in the Earth Search v1 layout."
        ),
        "keywords": ["sentinel", "sentinel-2", "l2a", "synthetic"],
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [list(world.bbox)]},
            "temporal": {"interval": [[min(times), max(times)] if times else [None, None]]},
        },
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b"],
            "constellation": ["sentinel-2"],
            "proj:code": [world.crs],
            "gsd": [10, 20],
        },
        "links": collection_links(root, items),
    }
