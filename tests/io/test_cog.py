"""Per-tile COGs (valid, with overviews, georeferenced) and VRT mosaics equal to the tiles."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geoxai.errors import CorruptDataError, InvalidInputError
from geoxai.geo.grid import tile_from_id
from geoxai.io.cog import gdal_path, validate_cog, write_cog, write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.mosaic import build_mosaics, build_vrt
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.records import write_tile
from tests.fixtures.zones import layers_for, small_tile


def test_tile_cog_is_valid_with_overviews_and_georeferenced(tmp_path):
    tile = tile_from_id("32631_E0096_N0938", halo_px=32)  # the halo must not matter
    layout = RunLayout(str(tmp_path / "run" / "2024"))
    zone = ZoneStore.create(layout, ZoneGrid.from_tiles([tile])[32631], default_layers(("tree",)))
    data = layers_for(tile.with_halo(0))
    data["prediction"] = data["prediction"][:1]
    write_tile(zone, tile, data, {"config_hash": "h"})
    info = write_tile_cogs(layout, zone, tile, tags={"config_hash": "h"})
    assert set(info) == {"prediction", "asos_sensitivity", "quality"}
    for name, meta in info.items():
        path = tmp_path / "run" / "2024" / meta["href"]
        assert meta["href"] == f"cogs/{name}/{tile.id}.tif" and path.is_file()
        ok, errors, _ = cog_validate(str(path), quiet=True)
        assert ok, errors
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32631
            assert src.shape == (600, 600)
            assert tuple(src.transform)[:6] == (10.0, 0.0, 576000.0, 0.0, -10.0, 5634000.0)
            assert src.bounds == tile.core_bounds
            assert src.overviews(1) == [2, 4]
            assert src.compression.name == "deflate"
            assert src.tags()["tile_id"] == tile.id and src.tags()["config_hash"] == "h"
            values = src.read()
        want = data[name] if data[name].ndim == 3 else data[name][None]
        np.testing.assert_array_equal(values, want)
    with rasterio.open(tmp_path / "run" / "2024" / info["prediction"]["href"]) as src:
        assert np.isnan(src.nodata) and src.descriptions == ("tree",)
    with rasterio.open(tmp_path / "run" / "2024" / info["quality"]["href"]) as src:
        assert src.nodata == 0 and src.dtypes[0] == "uint8"


def test_cog_rejects_wrong_shapes(tmp_path):
    tile = tile_from_id("32631_E0096_N0938", halo_px=8)
    with pytest.raises(InvalidInputError, match="core_slice"):
        write_cog(np.zeros((616, 616), "float32"), tile, str(tmp_path / "a.tif"), band_names=["p"])
    with pytest.raises(InvalidInputError, match="2 bands but 1 band names"):
        write_cog(np.zeros((2, 600, 600), "float32"), tile, str(tmp_path / "a.tif"), band_names="p")
    assert not (tmp_path / "a.tif").exists()


def test_validate_cog_fails_loudly_on_a_plain_tiff(tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=600, height=600, count=1, dtype="float32"
    ) as dst:  # striped, no overviews: not a COG
        dst.write(np.zeros((1, 600, 600), "float32"))
    with pytest.raises(CorruptDataError, match="not a valid Cloud-Optimized GeoTIFF"):
        validate_cog(path)


def test_mosaic_reads_back_equal_to_the_tiles(store_root):
    tiles = [small_tile(10, 20), small_tile(11, 20), small_tile(10, 21), small_tile(13, 21)]
    layout = RunLayout(store_root + "/run/2024")
    zone = ZoneStore.create(
        layout, ZoneGrid.from_tiles(tiles)[32631], default_layers(("tree", "crop"))
    )
    for t in tiles:
        layers = layers_for(t)
        write_tile(zone, t, layers, {"config_hash": "h"})
        info = write_tile_cogs(layout, zone, t, layers)
        assert all(meta["overviews"] == [2] for meta in info.values())  # 60 px cores too
    urls = build_mosaics(layout, tiles, list(zone.layers.values()))
    assert set(urls) == {32631} and set(urls[32631]) == set(zone.layers)
    for name, spec in zone.layers.items():
        with rasterio.open(gdal_path(urls[32631][name])) as src:
            mosaic = src.read()
            assert tuple(src.transform)[:6] == zone.grid.transform
            assert src.crs.to_epsg() == 32631
            assert list(src.descriptions) == (list(spec.bands) or [name])
            nodata = src.nodata
        assert mosaic.shape[1:] == zone.grid.shape
        # equal to the zone store everywhere: tiles where written, nodata elsewhere
        zarr_all = np.asarray(zone.array(name)[...])
        zarr_all = zarr_all if zarr_all.ndim == 3 else zarr_all[None]
        np.testing.assert_array_equal(mosaic, zarr_all)
        for t in tiles:
            rows, cols = zone.grid.region(t)
            with rasterio.open(gdal_path(layout.cog_url(name, t.id))) as tile_src:
                np.testing.assert_array_equal(mosaic[:, rows, cols], tile_src.read())
        gap = zone.grid.region(small_tile(12, 20))
        block = mosaic[:, gap[0], gap[1]]
        assert np.isnan(block).all() if np.isnan(nodata) else (block == nodata).all()


def test_vrt_is_relative_and_rejects_mixed_zones(tmp_path):
    layout = RunLayout(str(tmp_path / "run" / "2024"))
    spec = default_layers()[0]
    with pytest.raises(InvalidInputError, match="several zones"):
        build_vrt(layout, spec, [small_tile(1, 1), small_tile(1, 1, epsg=32632)])
    with pytest.raises(InvalidInputError, match="no tiles"):
        build_vrt(layout, spec, [])
    url = build_vrt(layout, spec, [small_tile(1, 1)])
    text = open(url, encoding="utf-8").read()
    assert 'relativeToVRT="1">../../cogs/prediction/32631_E0001_N0001.tif' in text
    assert str(tmp_path) not in text
