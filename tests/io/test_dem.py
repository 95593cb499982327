"""Terrain: slope by Horn's method, DEM items from STAC warped onto tiles, voids, seams."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoxai.errors import InvalidInputError
from geoxai.geo.grid import TileSpec
from geoxai.io.dem import build_dem
from geoxai.io.stac import read_items
from geoxai.io.stac_items import normalize_item
from geoxai.mapping.ancillary_dem import terrain
from geoxai.synthetic.ancillary import slope_at
from geoxai.synthetic.files import write_cog
from geoxai.synthetic.params import WorldParams
from geoxai.synthetic.world import SyntheticWorld
from geoxai.temporal.terrain import (
    FLAG_NO_DEM,
    FLAG_VOID,
    FLAG_VOID_FILLED,
    DemParams,
    fill_voids,
    slope_degrees,
)

TILE = TileSpec(32631, 960, 9380, halo_px=4, tile_size_m=600)  # 68 x 68 px


def _dem_item(path: Path, epsg: int, transform: Affine, shape, nodata=-32767.0) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"dem-{path.stem}",
        "collection": "cop-dem-glo-30",
        "geometry": None,
        "properties": {
            "datetime": "2021-04-22T00:00:00Z",
            "proj:epsg": epsg,
            "proj:shape": list(shape),
            "proj:transform": list(transform)[:6],
        },
        "links": [],
        "assets": {
            "data": {
                "href": str(path),
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
                "raster:bands": [{"nodata": nodata, "data_type": "float32"}],
            }
        },
    }


def _plane_item(tmp_path: Path, a: float, b: float, void=None) -> dict:
    """A plane z = 100 + a*(x - x0) + b*(y - y0) on a 10 m grid of the tile's zone."""
    x0, y0, x1, y1 = TILE.with_halo(40).bounds
    n = int((x1 - x0) // 10)
    xs = x0 + 10 * (np.arange(n) + 0.5)
    ys = y1 - 10 * (np.arange(n) + 0.5)
    xx, yy = np.meshgrid(xs, ys)
    z = (100.0 + a * (xx - x0) + b * (yy - y0)).astype(np.float32)
    if void is not None:
        z[void] = -32767.0
    path = tmp_path / "plane.tif"
    transform = Affine(10.0, 0.0, x0, 0.0, -10.0, y1)
    write_cog(path, z, transform, TILE.crs, None)
    return _dem_item(path, TILE.epsg, transform, z.shape)


@pytest.mark.parametrize("a, b", [(0.0, 0.0), (0.1, 0.0), (0.05, -0.2), (-1.0, 1.0)])
def test_slope_of_a_plane_is_the_analytic_slope(a, b):
    yy, xx = np.mgrid[0:20, 0:30].astype(np.float64)
    res = 10.0
    z = 50 + a * xx * res - b * yy * res  # rows grow southwards: northing = -row * res
    s = slope_degrees(z, res)
    assert s.shape == (18, 28)
    np.testing.assert_allclose(s, math.degrees(math.atan(math.hypot(a, b))), atol=1e-4)


def test_slope_consumes_one_pixel_and_propagates_voids():
    z = np.zeros((5, 5))
    z[2, 2] = np.nan
    s = slope_degrees(z, 10.0)
    assert s.shape == (3, 3) and np.isnan(s).all()  # every interior pixel touches (2, 2)
    with pytest.raises(InvalidInputError, match="H, W >= 3"):
        slope_degrees(np.zeros((2, 5)), 10.0)


def test_plane_dem_item_gives_the_analytic_slope_on_the_tile_grid(tmp_path):
    ds = terrain([_plane_item(tmp_path, 0.12, -0.05)], TILE)
    assert ds["slope"].shape == TILE.shape
    np.testing.assert_array_equal(ds["y"].values, TILE.coords()[0])
    np.testing.assert_array_equal(ds["x"].values, TILE.coords()[1])
    np.testing.assert_allclose(ds["slope"].values, math.degrees(math.atan(0.13)), atol=1e-3)
    y, x = TILE.coords()
    x0, y0 = TILE.with_halo(40).bounds[:2]
    expect = 100.0 + 0.12 * (x[None, :] - x0) - 0.05 * (y[:, None] - y0)
    np.testing.assert_allclose(ds["DEM"].values, expect, atol=2e-3)
    assert (ds["dem_flags"].values == 0).all()


def test_small_voids_are_filled_and_flagged_large_ones_stay_nan(tmp_path):
    n = TILE.with_halo(40).shape[0]
    void = np.zeros((n, n), bool)
    r, c = 36 + 20, 36 + 20  # inside the tile's haloed grid (offset 36 = 40 - 4)
    void[r : r + 3, c : c + 3] = True  # 3 x 3 px: filled
    void[r + 20 : r + 45, c + 20 : c + 45] = True  # 25 x 25 px: farther than 8 px from data
    ds = terrain([_plane_item(tmp_path, 0.1, 0.0, void)], TILE)
    flags = ds["dem_flags"].values
    small = (slice(20, 23), slice(20, 23))
    assert (flags[small] & FLAG_VOID_FILLED).all()
    # a weighted mean of the neighbours is not exactly planar: within 1 degree of 5.7
    np.testing.assert_allclose(ds["slope"].values[small], math.degrees(math.atan(0.1)), atol=1.0)
    centre = (52, 52)
    assert flags[centre] & FLAG_VOID and np.isnan(ds["slope"].values[centre])
    clean = flags == 0
    np.testing.assert_allclose(ds["slope"].values[clean], math.degrees(math.atan(0.1)), atol=1e-3)


def test_fill_voids_reaches_only_its_radius():
    z = np.ones((30, 30), np.float32)
    z[5:25, 5:25] = np.nan
    filled, was = fill_voids(z, 3)
    assert was.sum() == 400
    assert np.isfinite(filled[5:8, 5:25]).all() and np.isnan(filled[15, 15])
    np.testing.assert_allclose(filled[np.isfinite(filled)], 1.0, atol=1e-6)


def test_no_dem_is_a_flagged_layer_and_bad_items_name_the_asset(tmp_path):
    ds = terrain([], TILE)
    assert (ds["dem_flags"].values & FLAG_NO_DEM).all() and np.isnan(ds["slope"].values).all()
    item = _plane_item(tmp_path, 0.1, 0.0)
    item["assets"]["elevation"] = item["assets"].pop("data")
    with pytest.raises(InvalidInputError, match="no asset 'data'.*DemParams.asset"):
        build_dem([item], TILE)
    ok = terrain([item], TILE, DemParams(asset="elevation"))
    assert np.isfinite(ok["slope"].values).all()


@pytest.fixture(scope="module")
def dem_world(tmp_path_factory):
    tiles = tuple(TileSpec(32631, 960 + c, 9380, tile_size_m=600) for c in range(2))
    world = SyntheticWorld(
        WorldParams(
            tiles=tiles, margin_px=16, start=date(2023, 6, 1), end=date(2023, 6, 5), with_dem=True
        )
    )
    archive = world.write(tmp_path_factory.mktemp("dem_world"))
    return world, archive


def test_synthetic_dem_is_a_geographic_cog_served_as_a_stac_item(dem_world):
    world, archive = dem_world
    assert len(archive.dem_item_ids) == 1 and {"elevation", "slope"} <= set(archive.truth)
    items = read_items(archive.root / "dem" / "items.ndjson")
    assert normalize_item(items[0]).properties["proj:epsg"] == 4326 and "data" in items[0].assets
    coll = json.loads((archive.root / "dem" / "collection.json").read_text())
    assert coll["id"] == "cop-dem-glo-30"


def test_synthetic_dem_slope_matches_the_analytic_slope(dem_world):
    """The 1 arc-second EPSG:4326 DEM, warped to 10 m UTM: slope within 0.1 degree."""
    world, archive = dem_world
    tile = world.tiles[0].with_halo(8)
    ds = terrain(archive.root / "dem" / "items.ndjson", tile)  # searched like an API
    y, x = tile.coords()
    truth = slope_at(world, x[None, :], y[:, None])
    err = np.abs(ds["slope"].values - truth)
    print(f"slope error vs analytic: mean {err.mean():.4f}, max {err.max():.4f} degrees")
    assert err.mean() < 0.05 and err.max() < 0.2
    assert truth.max() > 1.0  # there is relief to measure


def test_adjacent_tiles_agree_on_slope_in_their_overlap(dem_world):
    world, archive = dem_world
    items = read_items(archive.root / "dem" / "items.ndjson")
    west, east = (t.with_halo(8) for t in world.tiles)
    a = terrain(items, west)
    b = terrain(items, east)
    xs = np.intersect1d(a["x"].values, b["x"].values)
    assert xs.size == 16  # the two halos overlap
    sa = a["slope"].sel(x=xs).values
    sb = b["slope"].sel(x=xs).values
    diff = np.abs(sa - sb).max()
    print(f"max slope difference in the overlap: {diff:.2e} degrees")
    assert diff < 1e-3
