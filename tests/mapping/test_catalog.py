"""The STAC catalog of a run's outputs: required fields, provenance, hrefs that resolve."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pystac.validation
import pytest
import rasterio
from shapely.geometry import Point, shape

from geoxai.config import load_run_config
from geoxai.errors import ConfigError, CorruptDataError
from geoxai.io.cog import write_tile_cogs
from geoxai.io.config_file import save_config
from geoxai.io.layout import RunLayout
from geoxai.io.mosaic import build_mosaics
from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
from geoxai.mapping.catalog import COG_MEDIA_TYPE, check_catalog, write_catalog
from geoxai.mapping.records import read_records, write_status, write_tile
from tests.fixtures.zones import layers_for, small_tile

ITEMS = ["S2A_31UFS_20240101_0_L2A", "S2B_31UFS_20240106_0_L2A"]


def run_config(root: str):
    return load_run_config(
        {
            "name": "belgium",
            "aoi": "4.0,50.0,5.0,51.0",
            "year": 2024,
            "stac": {"url": "http://127.0.0.5:9999"},
            "store": {"root": root},
            "models": {"prediction": "/models/treecover"},
        }
    )


def make_run(root: str):
    """Three done tiles with COGs, one empty, one failed; config saved, mosaics built."""
    config = run_config(root)
    layout = RunLayout(config.run_root())
    done = [small_tile(10, 20), small_tile(11, 20), small_tile(10, 21)]
    zone = ZoneStore.create(layout, ZoneGrid.from_tiles(done)[32631], default_layers(("tree",)))
    h = config.output_hash()
    for t in done:
        layers = layers_for(t)
        layers["prediction"] = layers["prediction"][:1]
        cogs = write_tile_cogs(layout, zone, t, layers)
        write_tile(zone, t, layers, {"config_hash": h, "input_items": ITEMS, "cogs": cogs})
    write_status(layout, small_tile(12, 20), "empty", "NoDataError: 0 scenes", {"config_hash": h})
    write_status(layout, small_tile(13, 20), "failed", "CorruptDataError: bad", {"config_hash": h})
    save_config(config, layout.loc("config.json"))
    build_mosaics(layout, done, list(zone.layers.values()))
    return config, layout, done


def test_catalog_fields_and_hrefs(tmp_path):
    config, layout, done = make_run(str(tmp_path / "store"))
    records = list(read_records(layout))
    url = write_catalog(layout, config, records)
    root = Path(url)
    assert root == tmp_path / "store" / "belgium" / "2024" / "catalog" / "collection.json"
    assert check_catalog(root) == []

    coll = pystac.Collection.from_file(str(root))
    assert coll.id == "geoxai-belgium-2024"
    assert coll.extra_fields["geoxai:config_hash"] == config.output_hash()
    interval = coll.extent.temporal.intervals[0]
    assert interval[0].year == interval[1].year == 2024
    assert {"config", "zarr_32631", "mosaic_prediction_32631"} <= set(coll.assets)
    ovr = coll.assets["overview_prediction_32631"]  # the zone's overview COG, href resolves
    assert ovr.media_type == pystac.MediaType.COG and ovr.roles == ["overview"]
    assert (root.parent / ovr.href).resolve() == (
        tmp_path / "store" / "belgium" / "2024" / "mosaics" / "zone=32631"
    ) / "prediction.overview.tif"
    gti = coll.assets["tile_index_prediction_32631"]  # the zone's GDAL tile index, opens
    assert gti.media_type == "application/geopackage+sqlite3"
    with rasterio.open(root.parent / gti.href) as g:
        assert g.driver == "GTI" and g.crs.to_epsg() == 32631
    items = {i.id: i for i in coll.get_items()}
    assert sorted(items) == sorted(t.id for t in done)  # empty/failed tiles get no item
    for t in done:
        item = items[t.id]
        props = item.properties
        assert props["geoxai:config_hash"] == config.output_hash()
        assert props["geoxai:code_version"].startswith("geoxai ")
        assert props["geoxai:input_items"] == ITEMS
        assert props["start_datetime"].startswith("2024-01-01")
        assert props["end_datetime"].startswith("2024-12-31")
        assert props["proj:code"] == "EPSG:32631"
        assert props["proj:shape"] == [60, 60]
        assert props["proj:transform"] == list(t.transform)[:6]
        assert shape(item.geometry).contains(Point(t.footprint().centroid))
        assert item.bbox == pytest.approx(list(t.footprint().bounds))
        for layer in ("prediction", "asos_sensitivity", "quality"):
            asset = item.assets[layer]
            assert asset.media_type == COG_MEDIA_TYPE and asset.roles == ["data"]
            raw = json.loads((root.parent / t.id / f"{t.id}.json").read_text())
            assert not raw["assets"][layer]["href"].startswith(("/", "file:"))
            target = Path(asset.get_absolute_href())
            assert target == Path(layout.cog_url(layer, t.id))
            assert target.is_file()
        assert Path(item.assets["record"].get_absolute_href()).is_file()
    # every other href resolves as well
    for key, asset in coll.assets.items():
        assert Path(asset.get_absolute_href()).exists(), key


def test_geoparquet_mirror_round_trips_with_every_tiles_provenance(tmp_path):
    """``catalog/items.parquet`` (stac-geoparquet) holds the same Items as the JSON catalog,
    provenance included, read back by rustac and by a plain Parquet reader; its hrefs are
    relative to ``catalog/`` and resolve."""
    import pyarrow.parquet as pq
    import rustac

    config, layout, done = make_run(str(tmp_path / "store"))
    root = Path(write_catalog(layout, config, read_records(layout)))
    coll = pystac.Collection.from_file(str(root))
    asset = coll.assets["geoparquet-items"]
    assert asset.media_type == "application/vnd.apache.parquet"
    path = Path(asset.get_absolute_href())
    assert path == root.parent / "items.parquet" and path.is_file()

    back = {f["id"]: f for f in rustac.read_sync(str(path))["features"]}
    assert sorted(back) == sorted(t.id for t in done)
    for item in coll.get_items():
        got, want = back[item.id], item.to_dict(transform_hrefs=False)
        for key in ("geoxai:config_hash", "geoxai:code_version", "geoxai:input_items"):
            assert got["properties"][key] == want["properties"][key], key
        assert got["properties"]["geoxai:input_items"] == ITEMS
        assert got["bbox"] == pytest.approx(want["bbox"])
        assert set(got["assets"]) == set(want["assets"])
        for key, a in got["assets"].items():
            assert not a["href"].startswith("/")
            target = (root.parent / a["href"]).resolve()
            assert target == Path(item.assets[key].get_absolute_href()).resolve(), key
            assert target.is_file()
            if "file:checksum" in want["assets"][key]:
                assert a["file:checksum"] == want["assets"][key]["file:checksum"]
    table = pq.read_table(path)
    assert table.num_rows == len(done)
    assert set(table.column("geoxai:config_hash").to_pylist()) == {config.output_hash()}


def test_check_catalog_reports_broken_hrefs(tmp_path):
    config, layout, done = make_run(str(tmp_path / "store"))
    url = write_catalog(layout, config, read_records(layout))
    Path(layout.cog_url("quality", done[0].id)).unlink()
    problems = check_catalog(url)
    assert len(problems) == 1
    assert done[0].id in problems[0] and "'quality'" in problems[0] and "resolve" in problems[0]


def test_catalog_on_each_store(store_root):
    config, layout, done = make_run(store_root)
    url = write_catalog(layout, config, read_records(layout))
    assert url == f"{layout.root}/catalog/collection.json"
    fs = layout.location.filesystem()
    fs.invalidate_cache()
    base = layout.loc("catalog").path
    names = sorted(p[len(base) + 1 :] for p in fs.find(base))
    assert names == sorted(
        ["collection.json", "items.parquet"] + [f"{t.id}/{t.id}.json" for t in done]
    )
    coll = json.loads(fs.cat_file(f"{base}/collection.json"))
    assert coll["type"] == "Collection"
    assert all(not lk["href"].startswith(("s3:", "/")) for lk in coll["links"])


SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "stac-schemas"


def _offline_validator() -> pystac.validation.JsonSchemaSTACValidator:
    """pystac's jsonschema validator with the published extension schemas read from
    tests/data/stac-schemas (copies of stac-extensions' json-schema/schema.json at the tags
    pystac writes: projection v2.0.0, raster v1.1.0, file v2.1.0); pystac ships the STAC 1.1
    core and GeoJSON schemas itself. Nothing is fetched."""
    validator = pystac.validation.JsonSchemaSTACValidator()
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        uri = schema["$id"].rstrip("#")
        validator.schema_cache[uri] = schema
    return validator


def test_catalog_validates_against_the_published_schemas(tmp_path):
    config, layout, done = make_run(str(tmp_path / "store"))
    url = write_catalog(layout, config, read_records(layout))
    coll = pystac.Collection.from_file(url)
    validator = _offline_validator()
    pystac.validation.set_validator(validator)
    try:
        assert coll.validate()  # the Collection against collection.json
        n = coll.validate_all()  # and every Item, with its extensions
        assert n == len(done)
        item = next(coll.get_items())
        uris = set(item.stac_extensions)
        assert {
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
        } <= uris
        pred = item.assets["prediction"].extra_fields
        assert pred["raster:bands"] == [{"data_type": "float32", "nodata": "nan", "unit": "1"}]
        assert pred["file:checksum"].startswith("1220") and len(pred["file:checksum"]) == 68
        quality = item.assets["quality"].extra_fields["raster:bands"]
        assert quality[0]["data_type"] == "uint8" and quality[0]["nodata"] == 0
        # a broken item is caught by the same validator (the check can fail)
        bad = item.clone()
        bad.properties["proj:shape"] = "60x60"
        with pytest.raises(pystac.errors.STACValidationError, match="projection"):
            bad.validate()
    finally:
        pystac.validation.set_validator(pystac.validation.JsonSchemaSTACValidator())


def test_parquet_only_catalog_holds_every_item_and_checks(tmp_path):
    """``items_json=False`` (the default past 10,000 tiles): no JSON Item, no item link; the
    Parquet file is the catalog, with every tile's provenance, and check_catalog reads it."""
    import rustac

    config, layout, done = make_run(str(tmp_path / "store"))
    root = Path(write_catalog(layout, config, read_records(layout), items_json=False))
    names = sorted(p.relative_to(root.parent).as_posix() for p in root.parent.rglob("*"))
    assert names == ["collection.json", "items.parquet"]
    coll = json.loads(root.read_text())
    assert [lk["rel"] for lk in coll["links"]] == ["root"]
    assert coll["geoxai:tiles_done"] == len(done)
    back = {f["id"]: f for f in rustac.read_sync(str(root.parent / "items.parquet"))["features"]}
    assert sorted(back) == sorted(t.id for t in done)
    for f in back.values():
        assert f["properties"]["geoxai:config_hash"] == config.output_hash()
        assert f["properties"]["geoxai:code_version"].startswith("geoxai ")
        assert f["properties"]["geoxai:input_items"] == ITEMS
    assert check_catalog(root) == []
    Path(layout.cog_url("quality", done[0].id)).unlink()
    problems = check_catalog(root)
    assert len(problems) == 1 and done[0].id in problems[0] and "'quality'" in problems[0]


def test_items_of_every_shape_keep_their_fields_across_batches(tmp_path, monkeypatch):
    """Records with other timings than the first batch's (here: batches of 2, the one record
    with ``asos_s`` last) keep them: one Item of each shape opens the Parquet file."""
    import rustac

    import geoxai.mapping.catalog as catalog

    monkeypatch.setattr(catalog, "BATCH", 2)
    config, layout, done = make_run(str(tmp_path / "store"))
    records = sorted(read_records(layout), key=lambda r: r["tile_id"])
    last = [r for r in records if r["status"] == "done"][-1]
    last["timings"] = {**last.get("timings", {}), "asos_s": 4.5}
    root = Path(write_catalog(layout, config, records, items_json=False))
    back = {f["id"]: f for f in rustac.read_sync(str(root.parent / "items.parquet"))["features"]}
    assert back[last["tile_id"]]["properties"]["geoxai:timings_s"]["asos_s"] == 4.5
    assert len(back) == len(done)


def test_a_failed_rewrite_keeps_the_previous_catalog(tmp_path, monkeypatch):
    """Everything is staged and checked before the old root is touched; the root is written
    last (a catalog whose collection.json exists is complete)."""
    import geoxai.mapping.catalog as catalog

    config, layout, done = make_run(str(tmp_path / "store"))
    root = Path(write_catalog(layout, config, read_records(layout)))
    before = root.read_bytes(), (root.parent / "items.parquet").read_bytes()

    def broken(*args, **kwargs):
        raise CorruptDataError("items.parquet holds 1 rows after writing 3 Items")

    monkeypatch.setattr(catalog, "write_stac_geoparquet", broken)
    with pytest.raises(CorruptDataError, match="holds 1 rows"):
        write_catalog(layout, config, read_records(layout))
    assert (root.read_bytes(), (root.parent / "items.parquet").read_bytes()) == before
    assert check_catalog(root) == []


def test_items_json_setting(tmp_path):
    config = run_config(str(tmp_path))
    assert config.catalog.items_json == "auto" and config.catalog.items_json_flag() is None
    doc = config.model_dump(mode="json")
    for value, flag in ((False, False), (True, True), ("auto", None)):
        doc["catalog"] = {"items_json": value}
        assert load_run_config(doc).catalog.items_json_flag() is flag
    doc["catalog"] = {"items_json": "sometimes"}
    with pytest.raises(ConfigError, match="items_json"):
        load_run_config(doc)
    assert load_run_config(doc | {"catalog": {}}).output_hash() == config.output_hash()
