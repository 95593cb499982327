"""Tiles across 180 degrees: AOI, tile bboxes, split STAC searches and a cube built there."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyproj import Transformer

from geoxai.geo.aoi import cover_aoi, parse_aoi
from geoxai.geo.grid import TileSpec
from geoxai.io.stac import search
from geoxai.io.store import read_cube
from geoxai.io.tile_cube import build_tile_cube

AOI = "179.95,-16.55,-179.95,-16.45"  # Fiji (Taveuni), across the antimeridian


def _width(bbox) -> float:
    """East-west extent of a lon/lat bbox, degrees (minlon > maxlon crosses 180)."""
    return (bbox[2] - bbox[0]) % 360.0


def _crossing_tile(halo: int = 16, size: int = 2000) -> TileSpec:
    x, y = Transformer.from_crs(4326, 32760, always_xy=True).transform(179.999, -16.5)
    return TileSpec(32760, int(x // size), int(y // size), halo, tile_size_m=size)


def test_an_aoi_across_180_is_covered_on_both_sides_with_narrow_bboxes():
    geom = parse_aoi(AOI)
    assert geom.geom_type == "MultiPolygon" and geom.area == pytest.approx(0.1 * 0.1)
    tiles = cover_aoi(AOI, 64)
    assert {t.epsg for t in tiles} == {32760, 32701}  # UTM zones 60 S and 1 S
    for t in tiles:  # never a whole-globe search box
        assert _width(t.lonlat_bbox(halo=True)) < 0.2
    across = [t for t in tiles if t.lonlat_bbox(halo=True)[0] > t.lonlat_bbox(halo=True)[2]]
    assert across and all(t.footprint(halo=True).geom_type == "MultiPolygon" for t in across)
    assert all(t.to_dict()["bbox_lonlat"] == list(t.lonlat_bbox()) for t in tiles)


def _item(item_id: str, lon0: float, lon1: float) -> dict:
    ring = [[lon0, -16.6], [lon1, -16.6], [lon1, -16.4], [lon0, -16.4], [lon0, -16.6]]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "s2",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [lon0, -16.6, lon1, -16.4],
        "properties": {"datetime": "2024-03-01T00:00:00Z"},
        "links": [],
        "assets": {},
    }


@pytest.fixture
def three_items(tmp_path):
    items = [_item("east", 179.8, 180.0), _item("west", -180.0, -179.8), _item("lon0", 0.0, 0.2)]
    path = tmp_path / "items.ndjson"
    path.write_text("\n".join(json.dumps(i) for i in items))
    return items, path


def test_search_splits_a_bbox_across_180_locally(three_items):
    _, path = three_items
    bbox = (179.9, -16.55, -179.9, -16.45)
    assert [i.id for i in search(str(path), collections="s2", bbox=bbox)] == ["east", "west"]


@pytest.mark.stac
def test_search_splits_a_bbox_across_180_on_an_api(three_items, rustac_api):
    items, _ = three_items
    url = rustac_api(items)
    bbox = (179.9, -16.55, -179.9, -16.45)
    assert sorted(i.id for i in search(url, collections="s2", bbox=bbox)) == ["east", "west"]


@pytest.mark.slow
def test_a_tile_across_180_builds_its_cube_from_scenes_on_both_sides(tmp_path):
    from geoxai.synthetic.world import make_world

    tile = _crossing_tile()
    assert tile.lonlat_bbox(halo=True)[0] > tile.lonlat_bbox(halo=True)[2]
    _, archive = make_world(
        tmp_path / "world", tiles=[tile], year=2024, seed=1, revisit_days=60, margin_px=16
    )
    first = json.loads(archive.ndjson.read_text().splitlines()[0])
    assert first["geometry"]["type"] == "MultiPolygon"  # the scenes are split at 180 too
    assert first["bbox"][0] > first["bbox"][2] and _width(first["bbox"]) < 0.2
    rec = build_tile_cube(
        str(archive.ndjson),
        tile,
        str(tmp_path / "cube.zarr"),
        start="2023-01-01",
        end="2025-12-31",
    )
    cube = read_cube(rec.url).load()
    assert cube.sizes["time"] == len(archive.ndjson.read_text().splitlines())
    assert cube.sizes["y"] == tile.shape[0] and cube.sizes["x"] == tile.shape[1]
    b04 = cube.sel(band="B04").values
    assert np.isfinite(b04).mean() > 0.9  # pixels on both sides of 180 are read
