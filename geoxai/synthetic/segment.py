"""A small rasters + mask scene cut from the synthetic world (tests, examples, the guided UI).

:func:`write_synthetic_scene` writes two feature rasters in two CRSs and resolutions, with two
nodata conventions, and tree-cover polygons from the world's truth layer: the inputs of
``geoxai train segment`` (:mod:`geoxai.train.segment`) with a known answer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer

from geoxai.errors import ConfigError
from geoxai.geo.grid import TileSpec, tile_from_id
from geoxai.io.rasters import to_crs
from geoxai.synthetic.ancillary import elevation_at
from geoxai.synthetic.fields import DEFAULT_ORIGIN_TILE
from geoxai.synthetic.params import WorldParams
from geoxai.synthetic.world import SyntheticWorld

__all__ = [
    "write_synthetic_scene",
]


def write_synthetic_scene(
    out_dir: str | Path,
    *,
    size_px: int = 256,
    seed: int = 0,
    date: str = "2023-07-15",
    tree_threshold: float = 0.5,
    canopy_height_m: float = 0.0,
) -> dict[str, str]:
    """Write a small scene of the synthetic world: two rasters in two CRSs and tree polygons.

    - ``image.tif``: 5 bands (B02 B03 B04 B08 B11) of cloud-free reflectance on ``date`` as
      uint16 DN (reflectance x 10,000), 10 m, the world's UTM zone (EPSG:32631), nodata 0, with
      a nodata stripe of 4 columns on the west edge;
    - ``dem.tif``: elevation (m; plus canopy height if asked) float32 at 5 m in ETRS89-LAEA
      (EPSG:3035), nodata -9999, with a hole over the north-east sixteenth of the image;
    - ``trees.geojson``: polygons (EPSG:4326) where the world's tree-cover fraction is
      ``>= tree_threshold``.

    Args:
        out_dir: folder to create.
        size_px: edge of the square area, 10 m pixels (even).
        seed: world seed.
        date: acquisition date of the image.
        tree_threshold: tree-cover fraction above which a pixel is "tree".
        canopy_height_m: add ``canopy_height_m * tree cover`` to the elevation (a surface
            model, as from lidar or stereo, instead of bare terrain).

    Returns:
        ``{"image": path, "dem": path, "trees": path}``.
    """
    import pyogrio  # lazy: pyogrio (GDAL vectors) only when a vector file is read
    import rasterio  # lazy: rasterio (GDAL) only on this path
    from rasterio.features import shapes  # lazy: rasterio (GDAL) only on this path
    from rasterio.warp import transform_bounds  # lazy: rasterio (GDAL) only on this path

    if size_px < 32 or size_px % 2:
        raise ConfigError(f"size_px must be an even number >= 32, got {size_px}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = tile_from_id(DEFAULT_ORIGIN_TILE)  # near Brussels, whatever the scene size
    size_m = 10 * size_px
    x0, y0 = t0.core_bounds[:2]
    tile = TileSpec(t0.epsg, int(x0 // size_m), int(y0 // size_m), 0, tile_size_m=size_m)
    world = SyntheticWorld(WorldParams(tiles=(tile,), seed=seed, margin_px=0, clouds=False))
    refl = world.clean_reflectance(date, bands=("B02", "B03", "B04", "B08", "B11"))
    dn = np.clip(np.round(refl * 10_000), 1, 65_535).astype(np.uint16)
    dn[:, :, :4] = 0
    paths = {k: str(out / f) for k, f in (("image", "image.tif"), ("dem", "dem.tif"))}
    paths["trees"] = str(out / "trees.geojson")
    h, w = world.shape
    with rasterio.open(
        paths["image"],
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=5,
        dtype="uint16",
        crs=world.crs,
        transform=world.transform,
        nodata=0,
    ) as dst:
        dst.write(dn)
        for i, b in enumerate(("B02", "B03", "B04", "B08", "B11"), start=1):
            dst.set_band_description(i, b)
    # DEM: 5 m in EPSG:3035 over the world's footprint (+100 m)
    x0, y0, x1, y1 = transform_bounds(world.crs, "EPSG:3035", *world.bounds, densify_pts=21)
    x0, y0, x1, y1 = x0 - 100, y0 - 100, x1 + 100, y1 + 100
    dw, dh = int((x1 - x0) // 5), int((y1 - y0) // 5)
    dt = Affine(5.0, 0.0, math.floor(x0), 0.0, -5.0, math.ceil(y1))
    cols, rows = np.meshgrid(np.arange(dw) + 0.5, np.arange(dh) + 0.5)
    ex, ey = dt * (cols, rows)

    ux, uy = Transformer.from_crs("EPSG:3035", world.crs, always_xy=True).transform(ex, ey)
    dem = elevation_at(world, ux, uy).astype(np.float32)
    if canopy_height_m:
        inv = ~world.transform
        cc, rr = inv * (ux, uy)
        rr = np.clip(np.floor(rr).astype(int), 0, h - 1)
        cc = np.clip(np.floor(cc).astype(int), 0, w - 1)
        dem += np.float32(canopy_height_m) * world.tree_cover()[rr, cc]
    wx0, wy0, wx1, wy1 = world.bounds
    dem[(ux > wx1 - (wx1 - wx0) / 4) & (uy > wy1 - (wy1 - wy0) / 4)] = -9999.0
    with rasterio.open(
        paths["dem"],
        "w",
        driver="GTiff",
        height=dh,
        width=dw,
        count=1,
        dtype="float32",
        crs="EPSG:3035",
        transform=dt,
        nodata=-9999.0,
    ) as dst:
        dst.write(dem, 1)
        dst.set_band_description(1, "elevation")
    trees = (world.tree_cover() >= tree_threshold).astype(np.uint8)
    geoms = [
        shapely.geometry.shape(g)
        for g, v in shapes(trees, mask=trees > 0, transform=world.transform)
        if v == 1
    ]
    geoms = [to_crs(g, world.crs, "EPSG:4326") for g in geoms]
    pyogrio.raw.write(
        paths["trees"],
        geometry=shapely.to_wkb(np.asarray(geoms, dtype=object)),
        field_data=[np.ones(len(geoms), np.int32)],
        fields=["tree"],
        crs="EPSG:4326",
        driver="GeoJSON",
        geometry_type="Polygon",
    )
    return paths
