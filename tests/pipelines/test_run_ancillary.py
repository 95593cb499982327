"""Sentinel-1 and the DEM in the mapping run, through the library chain (no Ray).

World: two 1 km tiles side by side (2024, S2 every 20 days, S1 every 12 days alternating
directions, a Copernicus-style DEM in EPSG:4326), served by a real local STAC API (rustac on
127.0.0.5) with all three collections. The S1 items' footprints are cut to the west tile (the
east tile's haloed footprint misses them): the east tile is a tile without S1 coverage. A tiny
TemporalUNet bundle reads S2 + ``slope`` + ``VV`` + ``VH`` in a shuffled order (seeded
initialisation: these tests check the wiring, not skill; skill is tests/train/test_s1_fusion.py).

Each tile goes plan_run -> stage_cube -> map_and_write as the Ray driver chains them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geoxai.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.stac]

HALO = 32
TILE_M = 1000
"""1 km tiles (100 px, 164 with the halo): the run's lattice rules at a quarter of the pixels of
the 2 km run-test tiles (this module preprocesses each tile three times)."""
WINDOW = {"window": 32, "stride": 16, "context": 4}


def _tiles():
    from geoxai.geo.grid import TileSpec

    return [TileSpec(32631, 576 + dc, 5628, 0, TILE_M) for dc in (0, 1)]


def _read_ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _west_only(items: list[dict], west) -> list[dict]:
    """S1 items whose footprint covers the west tile's west part and stops (halo + 100 m) short
    of its east edge, where the east tile's haloed footprint starts: the east tile finds no S1
    item. (The COGs still cover everything; the footprint only steers the search.)"""
    from pyproj import Transformer

    x0, y0, x1, y1 = west.with_halo(HALO).bounds
    x1 -= 2 * HALO * west.resolution_m + 100
    to_ll = Transformer.from_crs(west.epsg, 4326, always_xy=True)
    ring = [to_ll.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    out = []
    for it in items:
        it = dict(it)
        it["geometry"] = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
        it["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
        out.append(it)
    return out


def _bundle(path: Path, feats: list[str]) -> str:
    import torch

    from geoxai.models.unet import TemporalUNet
    from geoxai.train.temporal import save_temporal_bundle

    torch.manual_seed(0)
    net = TemporalUNet(in_features=len(feats), time_steps=24, embed=4, base=4, depth=1)
    off = [-15.0 if f in ("VV", "VH") else 0.0 if f == "slope" else 0.1 for f in feats]
    sc = [5.0 if f in ("VV", "VH") else 10.0 if f == "slope" else 0.2 for f in feats]
    save_temporal_bundle(path, net, feats, (off, sc), name=path.name, **WINDOW)
    return str(path)


@pytest.fixture(scope="module")
def ancillary_world(tmp_path_factory):
    from geoxai.synthetic.world import make_world
    from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams, feature_names
    from pipelines.services import local_stac_api

    root = tmp_path_factory.mktemp("ancillary_world")
    tiles = _tiles()
    world, archive = make_world(
        root / "world",
        tiles=tiles,
        year=2024,
        seed=5,
        revisit_days=20,
        margin_px=HALO,
        with_s1=True,
        with_dem=True,
        s1_revisit_days=12,
    )
    s2 = _read_ndjson(archive.ndjson)
    s1 = _west_only(_read_ndjson(archive.root / "s1" / "items.ndjson"), tiles[0])
    dem = _read_ndjson(archive.root / "dem" / "items.ndjson")
    optical = list(feature_names(PreprocessParams(smoothing=SmoothingParams(year=2024))))
    feats = ["VH", "slope", *optical, "VV"]  # not the default order: fused by name
    models = root / "models"
    bundles = {
        "radar": _bundle(models / "s1s2", feats),
        "s1_only": _bundle(models / "s1", [*optical, "VV", "VH"]),
        "optical": _bundle(models / "s2", optical),
    }
    with local_stac_api(s2 + s1 + dem) as url:
        yield {
            "world": world,
            "archive": archive,
            "url": url,
            "bundles": bundles,
            "features": feats,
            "root": root,
        }


def _config(w: dict, store: Path, *, bundle: str = "radar", **sections):
    from geoxai.config import load_run_config

    doc = {
        "name": "radar",
        "aoi": ",".join(f"{v:.6f}" for v in w["world"].aoi),
        "year": 2024,
        "stac": {"url": w["url"], "collection": "sentinel-2-l2a"},
        "store": {"root": str(store)},
        "models": {"prediction": w["bundles"][bundle]},
        "processing": {"halo_px": HALO, "tile_size_m": TILE_M},
        "tiles": [t.id for t in _tiles()],
        **sections,
    }
    return load_run_config(doc)


@pytest.fixture(scope="module")
def ancillary_run(ancillary_world):
    """Both tiles mapped once, as the Ray driver chains the stages."""
    from geoxai import mapping

    cfg = _config(ancillary_world, ancillary_world["root"] / "store", sentinel1={}, dem={})
    plan = mapping.plan_run(cfg)
    models = mapping.load_models(cfg)
    cubes, records = {}, {}
    for tile in plan.todo:
        cubes[tile.id] = mapping.stage_cube(tile, cfg)
        assert cubes[tile.id].status == "ok", cubes[tile.id].reason
        records[tile.id] = mapping.map_and_write(tile, cubes[tile.id], models, cfg).to_dict()
    return cfg, plan, cubes, records


def test_ancillary_run_maps_both_tiles_and_records_every_input(ancillary_run, ancillary_world):
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore
    from geoxai.mapping.records import read_records

    cfg, plan, cubes, records = ancillary_run
    west, east = (t.id for t in _tiles())
    assert len(plan.todo) == 2
    archive = ancillary_world["archive"]
    dem_ids = list(archive.dem_item_ids)
    for tid, rec in records.items():
        assert rec["status"] == "done", rec.get("reason")
        assert rec["dem_items"] == dem_ids
        assert rec["input_items"] == [*cubes[tid].item_ids, *rec["s1_items"], *dem_ids]
        assert set(cubes[tid].item_ids) <= set(archive.item_ids)
    # the west tile read S1 items of one direction (auto: ascending has enough days)
    s1_west = records[west]["s1_items"]
    assert s1_west and set(s1_west) <= set(archive.s1_item_ids)
    assert len(s1_west) < len(archive.s1_item_ids)  # one orbit direction only
    info = records[west]["info"]["s1"]
    assert (info["items"], info["orbit"]) == (len(s1_west), "ascending")
    assert info["valid_fraction"] == 1.0 and not info["no_coverage"]
    # the east tile has no S1 item: it completes, its S1 layer flagged as no coverage
    from geoxai.temporal.s1 import FLAG_NO_COVERAGE

    assert records[east]["s1_items"] == []
    info = records[east]["info"]["s1"]
    assert info["no_coverage"] and info["valid_fraction"] == 0.0
    assert info["flag_bits"] & FLAG_NO_COVERAGE
    assert records[east]["info"]["dem"]["valid_fraction"] == 1.0
    # outputs: zone arrays, COGs, records as read back by the report/catalog code
    layout = RunLayout(cfg.run_root())
    for t in plan.tiles:
        pred = ZoneStore.open(layout, t.epsg).read_tile(t, "prediction")
        assert pred.shape == (100, 100) and np.isfinite(pred).mean() > 0.95
        assert 0 <= np.nanmin(pred) and np.nanmax(pred) <= 1
    assert len(list((Path(cfg.run_root()) / "cogs" / "prediction").glob("*.tif"))) == 2
    assert {r["tile_id"]: r["s1_items"] for r in read_records(layout)} == {
        tid: r["s1_items"] for tid, r in records.items()
    }


def test_fused_features_are_in_bundle_order_from_the_committed_layers(
    ancillary_run, ancillary_world
):
    from geoxai import mapping
    from geoxai.io import store

    cfg, plan, cubes, _ = ancillary_run
    feats = ancillary_world["features"]
    tiles = {t.id: t for t in plan.tiles}
    for tid, cube in cubes.items():
        raw = store.read_cube(cube.url).load()
        s1 = store.read_dataset(cube.s1_url).load()
        terr = store.read_dataset(cube.dem_url).load()
        optical, model = mapping.tile_features(raw, tiles[tid], cfg, feats, s1=s1, terrain=terr)
        assert [str(b) for b in model["band"].values] == feats
        x = model["features"]
        db = s1["backscatter"].sel(band="VV").values
        vv = x.sel(band="VV").values
        if cube.s1_item_ids:  # dB per step, as the S1 stage committed it
            np.testing.assert_array_equal(vv, db)
            assert -20 < float(np.median(vv)) < -5
            assert model["valid"].values.all()
        else:  # no coverage: the floor, flagged; validity is the optical one
            assert np.isnan(db).all() and (vv == -22.0).all()
            assert (model["s1_flags"].values & 1).all()
            np.testing.assert_array_equal(model["valid"].values, optical["valid"].values)
        np.testing.assert_array_equal(x.sel(band="slope").values[5], terr["slope"].values)
        np.testing.assert_array_equal(x.sel(band="B04").values, optical["features"].sel(band="B04"))
        # what ancillary_layers computes again == the stage's stores, and tile_features
        # without layers passed in reads those stores
        s1_here, terr_here = mapping.ancillary_layers(tiles[tid], cfg)
        np.testing.assert_array_equal(s1_here["backscatter"].values, s1["backscatter"].values)
        np.testing.assert_array_equal(terr_here["slope"].values, terr["slope"].values)
        _, read = mapping.tile_features(raw, tiles[tid], cfg, feats)
        np.testing.assert_array_equal(read["features"].values, x.values)


def test_rerun_reuses_the_committed_cube_and_ancillary_layers(ancillary_run):
    from geoxai import mapping

    cfg, plan, cubes, _ = ancillary_run
    tile = plan.tiles[0]
    again = mapping.stage_cube(tile, cfg)
    assert again.reused
    assert again.s1_item_ids == cubes[tile.id].s1_item_ids
    assert again.dem_item_ids == cubes[tile.id].dem_item_ids
    assert mapping.plan_run(cfg).todo == []  # both tiles done with this config hash


def test_plan_run_refuses_an_ancillary_bundle_without_its_config_sections(
    ancillary_world, tmp_path
):
    from geoxai import mapping

    with pytest.raises(ConfigError, match=r"\['VH', 'VV'\].*'sentinel1'"):
        mapping.plan_run(_config(ancillary_world, tmp_path, dem={}))
    with pytest.raises(ConfigError, match=r"\['slope'\].*'dem'"):
        mapping.plan_run(_config(ancillary_world, tmp_path, sentinel1={}))
    with pytest.raises(ConfigError, match=r"reads \['VH'\] but sentinel1.polarizations"):
        mapping.plan_run(
            _config(ancillary_world, tmp_path, sentinel1={"polarizations": ["VV"]}, dem={})
        )
    with pytest.raises(ConfigError, match="'dem' section but the prediction bundle"):
        mapping.plan_run(_config(ancillary_world, tmp_path, bundle="s1_only", sentinel1={}, dem={}))
    with pytest.raises(ConfigError, match="'sentinel1' section but"):
        mapping.plan_run(_config(ancillary_world, tmp_path, bundle="optical", sentinel1={}))
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_config_sections_validate_and_enter_the_output_hash(ancillary_world, tmp_path):
    base = _config(ancillary_world, tmp_path, bundle="optical")
    with_s1 = _config(ancillary_world, tmp_path, bundle="optical", sentinel1={})
    assert base.sentinel1 is None and base.dem is None  # off by default
    assert with_s1.output_hash() != base.output_hash()
    floor = _config(ancillary_world, tmp_path, bundle="optical", sentinel1={"db_floor": -25})
    assert floor.output_hash() != with_s1.output_hash()
    assert with_s1.sentinel1.params().collection == "sentinel-1-rtc"
    for bad, msg in (
        ({"sentinel1": {"colection": "x"}}, "Did you mean 'collection'"),
        ({"dem": {"void_fil_px": 3}}, "Did you mean 'void_fill_px'"),
        ({"sentinel1": {"orbit": "ascend"}}, "sentinel1.orbit"),
        ({"sentinel1": {"db_floor": 3}}, "sentinel1.db_floor"),
        ({"sentinel1": {"polarizations": ["VV", "VV"]}}, "more than once"),
        ({"sentinel": {}}, "Did you mean 'sentinel1'"),
    ):
        with pytest.raises(ConfigError, match=msg):
            _config(ancillary_world, tmp_path, bundle="optical", **bad)


def test_a_layer_gone_bad_is_a_failed_tile_and_the_cube_stage_rebuilds_it(ancillary_run):
    """The S1 layer is stored in row-block chunks; one whose layout this geoxai does not know
    (an unknown layer_encoding) is a failed record naming the store and the fix, and the next
    cube stage rebuilds it (the chunks match their checksums; the layout does not)."""
    from geoxai import mapping
    from geoxai.io.cube_codec import ROWS

    cfg, plan, cubes, _ = ancillary_run
    tile = plan.tiles[0]
    cube = cubes[tile.id]
    root = Path(cube.s1_url)
    meta = json.loads((root / "backscatter" / "zarr.json").read_text())
    ny, nx = tile.with_halo(HALO).shape
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 2, min(ROWS, ny), nx]
    group = json.loads((root / "zarr.json").read_text())
    group["attributes"]["layer_encoding"] = "geoxai-layer/9"
    (root / "zarr.json").write_text(json.dumps(group))
    models = mapping.load_models(cfg)
    out = mapping.map_and_write(tile, cube, models, cfg)
    assert out.status == "failed"
    assert "layer_encoding 'geoxai-layer/9'" in out.reason and ".s1.zarr" in out.reason
    assert "rerun the cube stage" in out.reason
    with pytest.warns(UserWarning, match="layer_encoding"):
        again = mapping.stage_cube(tile, cfg)
    assert again.status == "ok" and not again.reused and "layer_encoding" in again.repaired
    assert mapping.map_and_write(tile, again, models, cfg).status == "done"
