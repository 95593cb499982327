"""Tile grid: id <-> bounds round trips, gap- and duplicate-free AOI covers, zone boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import box

from geoxai.errors import AOIError, UnknownTileError
from geoxai.geo.aoi import cover_aoi, parse_aoi, tiles_to_geojson
from geoxai.geo.grid import TILE_SIZE_M, TileSpec, from_lonlat, reproject, tile_at, tile_from_id

epsgs = st.one_of(st.integers(32601, 32660), st.integers(32701, 32760))
cols = st.integers(0, 9999)
rows = st.integers(0, 9999)
halos = st.integers(0, 128)


@given(epsgs, cols, rows, halos)
def test_id_round_trip(epsg, col, row, halo):
    t = TileSpec(epsg, col, row, halo)
    back = tile_from_id(t.id, halo)
    assert back == t
    # bounds <-> id: the core's lower-left corner gives the tile back
    x0, y0, x1, y1 = t.core_bounds
    assert (x1 - x0, y1 - y0) == (TILE_SIZE_M, TILE_SIZE_M)
    assert (int(x0 // TILE_SIZE_M), int(y0 // TILE_SIZE_M)) == (col, row)
    # haloed grid is consistent: shape * resolution == bounds extent, transform origin == top-left
    hx0, hy0, hx1, hy1 = t.bounds
    assert t.shape == (round((hy1 - hy0) / 10), round((hx1 - hx0) / 10))
    assert (t.transform.c, t.transform.f) == (hx0, hy1)
    y, x = t.coords()
    assert x[0] == hx0 + 5 and y[0] == hy1 - 5 and len(x) == t.shape[1]
    # the core slice cuts exactly the core
    rs, cs = t.core_slice
    assert x[cs][0] == x0 + 5 and x[cs][-1] == x1 - 5 and y[rs][0] == y1 - 5


@given(epsgs, st.integers(1, 9998), st.integers(1, 9998), halos)
def test_neighbours_share_edges_and_overlap_by_halo(epsg, col, row, halo):
    t = TileSpec(epsg, col, row, halo)
    e = t.neighbour(1, 0)
    assert t.core_bounds[2] == e.core_bounds[0]
    # haloed grids of neighbours overlap by 2*halo pixels, on the same pixel lattice
    _, xt = t.coords()
    _, xe = e.coords()
    common = np.intersect1d(xt, xe)
    assert len(common) == 2 * halo
    assert ((xt - 5) % 10 == 0).all() and ((xe - 5) % 10 == 0).all()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "32631_E96_N938",
        "32631-E0096-N0938",
        "32661_E0096_N0938",
        "32600_E0096_N0938",
        "12345_E0001_N0001",
        "32631_E0096_N0938x",
        "tile",
    ],
)
def test_bad_tile_ids_are_typed_errors(bad):
    with pytest.raises(UnknownTileError, match="Tile id|zone"):
        tile_from_id(bad)


def _assert_cover(aoi_geom, tiles):
    ids = [t.id for t in tiles]
    assert len(ids) == len(set(ids)), "duplicate tiles"
    # no gaps: every zone part of the AOI lies inside the union of that zone's tile cores
    by_zone: dict[int, list[TileSpec]] = {}
    for t in tiles:
        by_zone.setdefault(t.epsg, []).append(t)
    for epsg, zone_tiles in by_zone.items():
        zone = epsg % 100
        lon0 = -180 + 6 * (zone - 1)
        lat = (-80, 0) if epsg > 32700 else (0, 84)
        part = aoi_geom.intersection(box(lon0, lat[0], lon0 + 6, lat[1]))
        proj = reproject(shapely.segmentize(part, 0.01), from_lonlat(epsg))
        union = shapely.union_all([box(*t.core_bounds) for t in zone_tiles])
        missing = proj.difference(union).area
        assert missing <= 1e-6 * max(proj.area, 1.0), f"gap of {missing} m2 in zone {epsg}"
        # and no tile is superfluous: each core overlaps the AOI part
        for t in zone_tiles:
            assert box(*t.core_bounds).intersection(proj).area > 0


lons = st.floats(-179.0, 178.0, allow_nan=False)
lats = st.floats(-79.0, 83.0, allow_nan=False)
sizes = st.floats(0.001, 0.9, allow_nan=False)


@given(lons, lats, sizes, sizes)
def test_bbox_cover_has_no_gaps_or_duplicates(lon, lat, w, h):
    aoi = box(lon, lat, min(lon + w, 180.0), min(lat + h, 84.0))
    tiles = cover_aoi(aoi)
    _assert_cover(aoi, tiles)


def test_zone_boundary_rule_splits_at_the_meridian():
    # 2.9E..3.1E straddles the 31N/32N... no: the 30N/31N boundary is 0E; 31N/32N is 6E.
    aoi = box(5.95, 50.0, 6.05, 50.05)
    tiles = cover_aoi(aoi)
    zones = {t.epsg for t in tiles}
    assert zones == {32631, 32632}
    _assert_cover(aoi, tiles)
    # an AOI that only touches the meridian from the west belongs to the western zone alone
    west = cover_aoi(box(5.9, 50.0, 6.0, 50.05))
    assert {t.epsg for t in west} == {32631}


def test_equator_splits_north_and_south_zones():
    tiles = cover_aoi(box(10.0, -0.02, 10.03, 0.02))
    assert {t.epsg for t in tiles} == {32632, 32732}
    _assert_cover(box(10.0, -0.02, 10.03, 0.02), tiles)


def test_point_aoi_gives_the_tile_holding_it():
    p = shapely.Point(4.35, 50.85)
    assert [t.id for t in cover_aoi(p)] == [tile_at(4.35, 50.85).id]


def test_country_code_and_geojson_file(tmp_path):
    bel = cover_aoi("BEL", 32)
    assert 700 < len(bel) < 1300  # ~30,500 km2 / 36 km2 plus edge tiles
    assert {t.epsg for t in bel} == {32631, 32632}
    assert all(t.halo_px == 32 for t in bel)
    assert cover_aoi("be") == cover_aoi("BEL")
    f = tmp_path / "aoi.geojson"
    f.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": shapely.geometry.mapping(box(4.3, 50.8, 4.4, 50.9)),
                    }
                ],
            }
        )
    )
    assert cover_aoi(str(f)) == cover_aoi("4.3,50.8,4.4,50.9")
    gj = tiles_to_geojson(cover_aoi(str(f)))
    assert gj["type"] == "FeatureCollection" and gj["features"][0]["id"].startswith("32631_")


@pytest.mark.parametrize(
    "aoi, match",
    [
        ("4.4,50.8,4.3,50.9", "inverted"),
        ("4.3,50.8,4.4", "four"),
        ("a,b,c,d", "four numbers"),
        ("0,85,1,89", "outside UTM"),
        ("ZZZ", "Unknown ISO 3166"),
        ("/nonexistent/aoi.geojson", "does not exist"),
        ("500000,5600000,510000,5610000", "lon/lat"),
    ],
)
def test_bad_aois_are_typed_errors(aoi, match):
    with pytest.raises(AOIError, match=match):
        cover_aoi(aoi)


def test_empty_and_corrupt_geojson(tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(AOIError, match="empty"):
        parse_aoi(str(empty))
    corrupt = tmp_path / "corrupt.geojson"
    corrupt.write_text("{not json")
    with pytest.raises(AOIError, match="not readable GeoJSON"):
        parse_aoi(str(corrupt))


def test_tiles_cli(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    res = CliRunner().invoke(app, ["tiles", "--aoi", "4.3,50.8,4.32,50.81", "--halo", "16"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out[0]["id"] == "32631_E0098_N0938" and out[0]["shape"] == [632, 632]
    res = CliRunner().invoke(app, ["tiles", "--aoi", "4.3,50.8,4.32,50.81", "--format", "geojsn"])
    assert res.exit_code != 0 and "Did you mean 'geojson'" in str(res.exception)
