"""The zone overview COG: a valid COG with internal overviews, values equal to the decimated
zone values (average for continuous layers, nearest for classes), named by the flat VRT as its
overview, built one row of tiles at a time."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rio_cogeo.cogeo import cog_validate

from geoxai.geo.grid import TileSpec
from geoxai.io.cog import gdal_path, write_tile_cogs
from geoxai.io.layout import RunLayout
from geoxai.io.mosaic import build_mosaics, build_overview, overview_factor
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.records import write_tile
from tests.fixtures.zones import layers_for

F = 8  # 600 px cores


def _tiles() -> list[TileSpec]:
    """8 x 2 tiles of 600 px (the overview is 600 x 150 px: wide enough for an internal
    overview), one missing (a gap of nodata)."""
    return [TileSpec(32631, c, r, 0) for r in (5, 6) for c in range(100, 108) if (c, r) != (103, 5)]


def _layers(t: TileSpec) -> dict[str, np.ndarray]:
    out = layers_for(t)
    n = t.core_px
    r, c = np.mgrid[0:n, 0:n]
    # classes constant on each 8 x 8 block (so the nearest pick is known), different per block
    out["quality"] = (((r // F) * 7 + (c // F) * 3 + t.col) % 200 + 1).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    layout = RunLayout(str(tmp_path_factory.mktemp("mosaic") / "run" / "2024"))
    tiles = _tiles()
    zone = ZoneStore.create(
        layout, ZoneGrid.from_tiles(tiles)[32631], default_layers(("tree", "crop"))
    )
    values = {}
    for t in tiles:
        layers = _layers(t)
        layers = {k: layers[k] for k in ("prediction", "quality")}
        write_tile(zone, t, layers, {"config_hash": "h"})
        write_tile_cogs(layout, zone, t, layers)
        values[t.id] = layers
    specs = [zone.layers["prediction"], zone.layers["quality"]]
    urls = build_mosaics(layout, tiles, specs)
    return layout, zone, tiles, values, urls


def _blocks(a: np.ndarray) -> np.ndarray:
    k, n, _ = a.shape
    return (
        a.reshape(k, n // F, F, n // F, F).transpose(0, 1, 3, 2, 4).reshape(k, n // F, n // F, -1)
    )


def test_overview_cog_is_valid_with_overviews_and_decimated_zone_values(run):
    layout, zone, tiles, values, _ = run
    assert overview_factor(600) == 8 and overview_factor(300) == 4 and overview_factor(61) == 1
    grid = zone.grid
    m = grid.core_px // F
    for name in ("prediction", "quality"):
        path = gdal_path(layout.overview_url(name, 32631))
        ok, errors, _ = cog_validate(path, quiet=True)
        assert ok, errors
        with rasterio.open(path) as src:
            assert src.overviews(1) == [2]
            assert (src.width, src.height) == (grid.ncols * m, grid.nrows * m)
            assert src.transform.a == grid.resolution_m * F
            assert (src.transform.c, src.transform.f) == (grid.transform[2], grid.transform[5])
            got = src.read()
            nodata = src.nodata
        for t in tiles:
            i, j = grid.chunk_index(t)
            part = got[:, i * m : (i + 1) * m, j * m : (j + 1) * m]
            full = values[t.id][name]
            blocks = _blocks(full if full.ndim == 3 else full[None]).astype("float64")
            if name == "prediction":
                # average: the 8 x 8 mean where the block has no NaN (float32 rounding) ...
                clean = ~np.isnan(blocks).any(axis=-1)
                np.testing.assert_allclose(part[clean], blocks.mean(axis=-1)[clean], rtol=2e-6)
                # ... and, where some pixels are NaN, a mean of the valid ones (within them)
                part64 = part.astype("float64")
                with np.errstate(invalid="ignore"):
                    lo, hi = np.nanmin(blocks, -1), np.nanmax(blocks, -1)
                assert (~clean).any() and np.isfinite(part64[~clean]).all()
                assert (
                    (part64[~clean] >= lo[~clean] - 1e-6) & (part64[~clean] <= hi[~clean] + 1e-6)
                ).all()
            else:
                # nearest: the block's class (constant on each block here)
                np.testing.assert_array_equal(part, blocks[..., 0].astype(part.dtype))
        gap = got[:, 1 * m : 2 * m, 3 * m : 4 * m]  # tile (103, 5): top row, fourth column
        assert np.isnan(gap).all() if np.isnan(nodata) else (gap == nodata).all()


def test_the_vrt_reads_coarse_requests_from_the_overview_cog(run):
    """The flat VRT names the overview COG as its overview: a read at 1/8 equals the overview
    COG, at 1/16 its internal overview; full resolution still comes from the tiles."""
    layout, zone, tiles, values, urls = run
    vrt = gdal_path(urls[32631]["prediction"])
    text = open(vrt, encoding="utf-8").read()
    assert '<SourceFilename relativeToVRT="1">prediction.overview.tif</SourceFilename>' in text
    ovr = gdal_path(layout.overview_url("prediction", 32631))
    with rasterio.open(vrt) as src, rasterio.open(ovr) as o:
        assert src.overviews(1) == [8]
        h, w = src.height, src.width
        np.testing.assert_array_equal(
            src.read(out_shape=(2, h // 8, w // 8), resampling=Resampling.nearest), o.read()
        )
        np.testing.assert_array_equal(
            src.read(out_shape=(2, h // 16, w // 16), resampling=Resampling.nearest),
            o.read(out_shape=(2, o.height // 2, o.width // 2), resampling=Resampling.nearest),
        )
        t = tiles[0]
        rows, cols = zone.grid.region(t)
        win = ((rows.start, rows.stop), (cols.start, cols.stop))
        np.testing.assert_array_equal(src.read(window=win), values[t.id]["prediction"])


def test_the_tile_index_reads_like_the_vrt_from_any_folder_and_coarse_from_the_overview(
    run, tmp_path, monkeypatch
):
    """The GTI (``<layer>.gti.gpkg``) opens with the zone grid, CRS, nodata and band names;
    every full-resolution pixel equals the VRT's (tiles, the gap of the missing tile); a read at
    1/8 and 1/16 equals the overview COG and its internal overview; the paths inside are
    relative: a copy of the run folder elsewhere, opened from another working directory, reads
    the same."""
    import shutil

    layout, zone, tiles, values, urls = run
    for name in ("prediction", "quality"):
        gti = gdal_path(layout.tile_index_url(name, 32631))
        vrt = gdal_path(urls[32631][name])
        ovr = gdal_path(layout.overview_url(name, 32631))
        with rasterio.open(gti) as g, rasterio.open(vrt) as v, rasterio.open(ovr) as o:
            assert g.driver == "GTI"
            assert (g.shape, g.crs, g.transform, g.dtypes) == (
                v.shape,
                v.crs,
                v.transform,
                v.dtypes,
            )
            # band names as band metadata (GTI layer metadata has no band description)
            assert [g.tags(k)["DESCRIPTION"] for k in g.indexes] == list(v.descriptions)
            assert g.nodata == v.nodata or (np.isnan(g.nodata) and np.isnan(v.nodata))
            assert g.overviews(1)[:1] == [8]
            np.testing.assert_array_equal(g.read(), v.read())
            h, w = g.height, g.width
            np.testing.assert_array_equal(
                g.read(out_shape=(g.count, h // 8, w // 8), resampling=Resampling.nearest),
                o.read(),
            )
            np.testing.assert_array_equal(
                g.read(out_shape=(g.count, h // 16, w // 16), resampling=Resampling.nearest),
                o.read(
                    out_shape=(o.count, o.height // 2, o.width // 2), resampling=Resampling.nearest
                ),
            )
    moved = tmp_path / "moved"
    shutil.copytree(layout.root, moved)
    monkeypatch.chdir(tmp_path)
    t = tiles[0]
    rows, cols = zone.grid.region(t)
    win = ((rows.start, rows.stop), (cols.start, cols.stop))
    with rasterio.open(moved / "mosaics" / "zone=32631" / "prediction.gti.gpkg") as g:
        np.testing.assert_array_equal(g.read(window=win), values[t.id]["prediction"])
        assert not np.isnan(g.read(1, out_shape=(g.height // 8, g.width // 8))).all()


def test_overview_is_built_one_row_of_tiles_at_a_time(run, tmp_path):
    """Memory: on a grid 200 tile rows tall with tiles in 2 rows, the Python-side peak stays
    near one strip (a tile row at 1/8), far below the whole overview array."""
    layout, zone, tiles, _, _ = run
    spec = zone.layers["prediction"]
    g = zone.grid
    tall = ZoneGrid(g.epsg, g.col0, g.row0 - 198, g.ncols, g.nrows + 198)
    m = g.core_px // F
    whole = 2 * tall.nrows * m * tall.ncols * m * 4  # bytes of the full float32 overview
    strip = 2 * m * tall.ncols * m * 4
    tracemalloc.start()
    try:
        url = build_overview(layout, spec, tiles, grid=tall)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * strip < whole / 20, (peak, strip, whole)
    with rasterio.open(gdal_path(url)) as src:
        assert src.height == tall.nrows * m and src.overviews(1)


@pytest.mark.s3
def test_the_tile_index_reads_on_s3_like_the_vrt(s3_bucket):
    """A run root on the local S3 server: the index's relative COG paths and its overview layer
    resolve under ``/vsis3``; every pixel equals the VRT's, coarse reads equal the overview."""
    from geoxai.io.tiler import gdal_env

    layout = RunLayout(f"s3://{s3_bucket}/mosaic/2024")
    tiles = [TileSpec(32631, c, r, 0) for r in (5, 6) for c in (100, 101) if (c, r) != (101, 5)]
    zone = ZoneStore.create(
        layout, ZoneGrid.from_tiles(tiles)[32631], default_layers(("tree", "crop"))
    )
    for t in tiles:
        layers = {"prediction": layers_for(t)["prediction"]}
        write_tile(zone, t, layers, {"config_hash": "h"})
        write_tile_cogs(layout, zone, t, layers)
    urls = build_mosaics(layout, tiles, [zone.layers["prediction"]])
    with rasterio.Env(**gdal_env(layout.location)):
        gti = gdal_path(layout.tile_index_url("prediction", 32631))
        assert gti.startswith("/vsis3/")
        with (
            rasterio.open(gti) as g,
            rasterio.open(gdal_path(urls[32631]["prediction"])) as v,
            rasterio.open(gdal_path(layout.overview_url("prediction", 32631))) as o,
        ):
            assert g.driver == "GTI" and g.shape == v.shape
            np.testing.assert_array_equal(g.read(), v.read())
            np.testing.assert_array_equal(
                g.read(out_shape=(g.count, g.height // 8, g.width // 8)), o.read()
            )
