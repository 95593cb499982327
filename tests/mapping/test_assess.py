"""``geoxai assess sample`` / ``geoxai assess`` over a run's outputs, with synthetic truth.

The run is written the way ``geoxai run`` writes one (zone Zarr store, exactly-once tile writes
and records, :func:`geoxai.mapping.records.write_tile`) over the 2 x 2 test tiles of
``tests/fixtures/world.py``; its prediction is the synthetic world's tree cover degraded like a
real model's (blurred, under-predicted, smooth noise), with a sparse-quality quarter and a
nodata strip. The interpreters are the world's truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geoxai.assess.estimators import SampleDesignError
from geoxai.errors import InvalidInputError
from geoxai.io.points import read_points
from geoxai.mapping.assess import RunMap, StrataSpec, census, map_at_points
from geoxai.mapping.assess_report import assess_run, write_assessment
from pipelines.cli import app
from tests.fixtures import world as world_fixture


class _Run:
    def __init__(self, root: Path, world, truth: dict, valid: dict):
        self.root, self.world, self.truth, self.valid = root, world, truth, valid

    def truth_at(self, epsg, x, y) -> np.ndarray:
        """Truth tree cover at zone coordinates (the interpreter)."""
        x0, _, _, y1 = self.world.bounds
        r = np.floor((y1 - np.asarray(y)) / 10).astype(int)
        c = np.floor((np.asarray(x) - x0) / 10).astype(int)
        assert set(np.asarray(epsg).tolist()) <= {self.world.epsg}
        return self.world.tree_cover()[r, c].astype(np.float64)

    def true_tree_ha(self) -> float:
        return sum(float(((self.truth[t] >= 0.5) & self.valid[t]).sum()) for t in self.truth) / 100


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    from scipy.ndimage import gaussian_filter

    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
    from geoxai.mapping.records import write_tile
    from geoxai.synthetic.world import SyntheticWorld, WorldParams

    tiles = world_fixture.test_tiles()
    world = SyntheticWorld(WorldParams(tiles=tuple(tiles), year=2024, seed=3, margin_px=0))
    tc = world.tree_cover().astype(np.float64)
    rng = np.random.default_rng(7)
    noise = gaussian_filter(rng.normal(size=tc.shape), 6) * 12
    pred = np.clip(gaussian_filter(tc, 2.0) - 0.1 + 0.15 * noise, 0, 1).astype(np.float32)
    root = tmp_path_factory.mktemp("assess") / "store" / "test" / "2024"
    layout = RunLayout(str(root))
    (grid,) = ZoneGrid.from_tiles(tiles).values()
    zone = ZoneStore.create(layout, grid, default_layers())
    truth, valid = {}, {}
    for k, t in enumerate(tiles):
        sl = world.block_slices(t)
        p = pred[sl].copy()
        q = np.ones(p.shape, np.uint8)
        if k == 0:
            q[:, :100] = 2  # sparse observations in half a tile
        if k == 3:
            q[:10, :] = 0  # a strip without data
            p[:10, :] = np.nan
        write_tile(zone, t, {"prediction": p, "quality": q}, {"config_hash": "assess-test"})
        truth[t.id], valid[t.id] = tc[sl], q > 0
    return _Run(root, world, truth, valid)


def _label(run: _Run, src: Path, dst: Path, *, kind: str = "class", crs: str = "EPSG:4326"):
    """Interpreters: fill the reference column from the truth and save in another CRS."""
    import pyogrio
    import shapely
    from pyproj import Transformer

    meta, _, wkb, fields = pyogrio.raw.read(str(src))
    names = list(meta["fields"])
    cols = dict(zip(names, fields, strict=True))
    tc = run.truth_at(cols["epsg"], cols["x"], cols["y"])
    cols["reference"] = (
        (tc >= 0.5).astype(int).astype(str) if kind == "class" else np.char.mod("%.4f", tc)
    ).astype(object)
    g = shapely.from_wkb(wkb)
    tr = Transformer.from_crs(meta["crs"], crs, always_xy=True)
    x, y = tr.transform(shapely.get_x(g), shapely.get_y(g))
    pyogrio.raw.write(
        str(dst), geometry=shapely.to_wkb(shapely.points(x, y)), field_data=list(cols.values()),
        fields=list(cols), crs=crs, driver="GeoJSON" if dst.suffix == ".geojson" else "GPKG",
        geometry_type="Point",
    )  # fmt: skip
    return dst


def _epsg(crs: str) -> int | None:
    from pyproj import CRS

    return CRS.from_user_input(str(crs)).to_epsg()


@pytest.fixture(scope="module")
def sample(fake_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "points.gpkg"
    res = CliRunner().invoke(
        app,
        ["assess", "sample", str(fake_run.root), "--n", "300", "--strata", "prediction:0.5",
         "--out", str(out), "--seed", "11"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, json.loads(res.output)


def test_sample_is_stratified_reproducible_and_on_valid_pixels(fake_run, sample, tmp_path):
    out, summary = sample
    pts = read_points(out)
    assert pts.n == 300 and all(_epsg(c) == 32631 for c in set(pts.crs))  # one zone: its CRS
    cen = census(RunMap.open(fake_run.root), [StrataSpec.parse("prediction:0.5")])
    assert summary["stratum_px"] == {cen.stratum_name(k): v for k, v in cen.strata.items()}
    assert sum(cen.strata.values()) == sum(int(v.sum()) for v in fake_run.valid.values())
    assert summary["stratum_n"]["prediction>=0.5"] >= 50  # the rare class gets its minimum
    assert set(pts.fields) >= {"stratum", "stratum_px", "map_value", "tile", "quality", "reference"}
    assert all(v == "" for v in pts.fields["reference"])
    assert np.isfinite(pts.fields["map_value"].astype(float)).all()
    assert set(pts.fields["quality"].astype(int)) <= {1, 2}
    again = tmp_path / "again.csv"
    res = CliRunner().invoke(
        app,
        ["assess", "sample", str(fake_run.root), "--n", "300", "--strata", "prediction:0.5",
         "--out", str(again), "--seed", "11"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    csv_pts = read_points(again)
    np.testing.assert_allclose(csv_pts.fields["x"].astype(float), pts.fields["x"].astype(float))
    np.testing.assert_allclose(csv_pts.fields["y"].astype(float), pts.fields["y"].astype(float))


def test_assess_gives_intervals_containing_the_true_area_and_a_report_section(
    fake_run, sample, tmp_path
):
    out, _ = sample
    labelled = _label(fake_run, out, tmp_path / "labelled.geojson")  # EPSG:4326 now
    res = CliRunner().invoke(app, ["assess", str(fake_run.root), "--reference", str(labelled)])
    assert res.exit_code == 0, res.output
    doc = json.loads((fake_run.root / "assessment.json").read_text())
    assert doc["points"]["used"] == 300 and doc["design"]["kind"] == "stratified (as drawn)"
    tree = next(c for c in doc["overall"]["per_class"] if c["name"] == "prediction>=0.5")
    lo, hi = tree["area_ha"]["ci95"]
    true_ha = fake_run.true_tree_ha()
    assert lo <= true_ha <= hi, (lo, true_ha, hi)
    assert tree["mapped_ha"] < 0.9 * true_ha  # the map under-predicts; the estimate corrects it
    assert {d["domain"] for d in doc["by_quality"]} == {"quality=good", "quality=sparse"}
    assert sum(d["n"] for d in doc["by_quality"]) == 300
    page = (fake_run.root / "report.html").read_text()
    assert page.count("<section id='accuracy'>") == 1 and "data:image/png;base64" in page
    # a second assessment replaces the section instead of adding one
    res = CliRunner().invoke(app, ["assess", str(fake_run.root), "--reference", str(labelled)])
    assert res.exit_code == 0, res.output
    assert (fake_run.root / "report.html").read_text().count("<section id='accuracy'>") == 1


def test_report_renderer_keeps_the_accuracy_section(fake_run, sample, tmp_path):
    """A later `geoxai run` that rewrites report.html keeps the assessment in it."""
    from geoxai.io.layout import RunLayout
    from geoxai.mapping.records import read_records
    from geoxai.mapping.report import render_report

    out, _ = sample
    labelled = _label(fake_run, out, tmp_path / "l.gpkg", crs="EPSG:3035")
    rm = RunMap.open(fake_run.root)
    write_assessment(rm, assess_run(rm, read_points(labelled)))
    layout = RunLayout(str(fake_run.root))
    page = render_report(layout, {"name": "t", "year": 2024}, read_records(layout))
    assert "<section id='accuracy'>" in page and "overall accuracy" in page


def test_fraction_reference_gives_continuous_errors(fake_run, sample, tmp_path):
    out, _ = sample
    labelled = _label(fake_run, out, tmp_path / "frac.gpkg", kind="value", crs="EPSG:32631")
    rm = RunMap.open(fake_run.root)
    doc = assess_run(rm, read_points(labelled), reference_kind="value")
    c = doc["continuous"]["all"]
    # the population's own errors, over the valid pixels
    zone = rm.zones[32631]
    errs = []
    for t in rm.tiles[32631]:
        p = zone.read_tile(t, "prediction").astype(np.float64)
        ok = fake_run.valid[t.id]
        errs.append(p[ok] - fake_run.truth[t.id][ok])
    e = np.concatenate(errs)
    for name, true in (
        ("bias", e.mean()),
        ("mae", np.abs(e).mean()),
        ("rmse", np.sqrt((e**2).mean())),
    ):
        assert abs(c[name]["value"] - true) < 3.5 * c[name]["se"], (name, c[name], true)
    assert set(doc["continuous"]) == {"all", "quality=good", "quality=sparse"}


# ---- bad input ----------------------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, edit) -> Path:
    import pyogrio

    meta, _, wkb, fields = pyogrio.raw.read(str(src))
    cols = dict(zip(list(meta["fields"]), fields, strict=True))
    wkb, cols, crs = edit(wkb, cols, meta["crs"])
    pyogrio.raw.write(
        str(dst), geometry=wkb, field_data=list(cols.values()), fields=list(cols), crs=crs,
        driver="GPKG" if dst.suffix == ".gpkg" else "GeoJSON", geometry_type="Point",
    )  # fmt: skip
    return dst


def test_duplicated_points_are_an_error(fake_run, sample, tmp_path):
    out, _ = sample
    lab = _label(fake_run, out, tmp_path / "l.gpkg", crs="EPSG:32631")

    def dup(wkb, cols, crs):
        return (np.concatenate([wkb, wkb[:2]]),
                {k: np.concatenate([v, v[:2]]) for k, v in cols.items()}, crs)  # fmt: skip

    bad = _rewrite(lab, tmp_path / "dup.gpkg", dup)
    with pytest.raises(InvalidInputError, match=r"2 point\(s\) repeat a sample pixel.*\(0, 300\)"):
        assess_run(RunMap.open(fake_run.root), read_points(bad))


def test_labels_outside_the_map_classes_are_an_error(fake_run, sample, tmp_path):
    out, _ = sample
    lab = _label(fake_run, out, tmp_path / "l.gpkg", crs="EPSG:32631")

    def relabel(wkb, cols, crs):
        ref = cols["reference"].copy()
        ref[:3] = "forest"
        return wkb, {**cols, "reference": ref}, crs

    bad = _rewrite(lab, tmp_path / "bad.gpkg", relabel)
    with pytest.raises(SampleDesignError, match=r"\['forest'\].*not among the map's classes"):
        assess_run(RunMap.open(fake_run.root), read_points(bad))


def test_projected_points_without_their_crs_are_an_error(fake_run, sample, tmp_path):
    out, _ = sample
    lab = _label(fake_run, out, tmp_path / "l.gpkg", crs="EPSG:32631")

    def as_geojson(wkb, cols, crs):  # metres written into a GeoJSON (EPSG:4326 by definition)
        return wkb, cols, "EPSG:4326"

    bad = _rewrite(lab, tmp_path / "bad.geojson", as_geojson)
    with pytest.raises(InvalidInputError, match="projected .* without their CRS"):
        read_points(bad)
    pts = read_points(lab)  # EPSG:32631 metres, labelled
    csv = tmp_path / "xy.csv"
    rows = [f"{x},{y},{r}" for x, y, r in zip(pts.x, pts.y, pts.fields["reference"], strict=True)]
    csv.write_text("x,y,reference\n" + "\n".join(rows) + "\n")
    with pytest.raises(InvalidInputError, match="without a CRS.*--crs EPSG"):
        read_points(csv)
    # declared: fine; without strata columns it is post-stratified by map class
    doc = assess_run(
        RunMap.open(fake_run.root), read_points(csv, crs="EPSG:32631"),
        strata=[StrataSpec.parse("prediction:0.5")],
    )  # fmt: skip
    assert doc["design"]["kind"].startswith("simple random") and doc["points"]["used"] == 300


def test_points_outside_the_run_on_nodata_or_unlabelled_are_reported(fake_run, sample, tmp_path):
    out, _ = sample
    lab = _label(fake_run, out, tmp_path / "l.gpkg", crs="EPSG:32631")

    def edit(wkb, cols, crs):
        import shapely

        g = shapely.from_wkb(wkb)
        g[0] = shapely.points(shapely.get_x(g[0]) + 50_000, shapely.get_y(g[0]))  # far away
        strip = world_fixture.test_tiles()[3]  # its top 10 rows are nodata (quality 0)
        g[2] = shapely.points(strip.col * 2000 + 505, (strip.row + 1) * 2000 - 45)
        ref = cols["reference"].copy()
        ref[1] = ""
        return shapely.to_wkb(g), {**cols, "reference": ref}, crs

    doc = assess_run(
        RunMap.open(fake_run.root), read_points(_rewrite(lab, tmp_path / "o.gpkg", edit))
    )
    assert doc["points"]["by_status"] == {"ok": 297, "outside": 1, "unlabelled": 1, "nodata": 1}
    assert [e["status"] for e in doc["points"]["excluded"]] == ["outside", "unlabelled", "nodata"]
    assert [e["row"] for e in doc["points"]["excluded"]] == [0, 1, 2]
    assert any("outside the run" in w for w in doc["warnings"])
    assert any("on nodata" in w for w in doc["warnings"])


def test_a_stratum_left_without_labels_says_what_to_add(fake_run, sample, tmp_path):
    out, _ = sample
    lab = _label(fake_run, out, tmp_path / "l.gpkg", crs="EPSG:32631")

    def unlabel_rare(wkb, cols, crs):
        ref = cols["reference"].copy()
        ref[np.asarray(cols["stratum"]) == "prediction>=0.5"] = ""
        return wkb, {**cols, "reference": ref}, crs

    bad = _rewrite(lab, tmp_path / "r.gpkg", unlabel_rare)
    with pytest.raises(
        SampleDesignError, match=r"'prediction>=0.5' \(\d+ px\) has no sample point"
    ):
        assess_run(RunMap.open(fake_run.root), read_points(bad))


def test_cli_reports_typed_errors_in_one_line(fake_run, tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "nothing.csv"
    bad.write_text("x,y,reference\n1,2,1\n")
    r = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "assess", str(fake_run.root), "--reference",
         str(bad), "--strata", "prediction:0.5"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert r.returncode == 2 and "InvalidInputError" in r.stderr and "--crs" in r.stderr


def test_strata_crossed_with_quality_are_not_the_map_classes(fake_run, tmp_path):
    """Strata = map class x quality (Stehman 2014: strata need not be the map classes)."""
    out = tmp_path / "crossed.gpkg"
    res = CliRunner().invoke(
        app,
        ["assess", "sample", str(fake_run.root), "--n", "300", "--strata", "prediction:0.5",
         "--strata", "quality", "--out", str(out), "--seed", "5"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert set(summary["stratum_n"]) == {
        "prediction<0.5|good", "prediction<0.5|sparse", "prediction>=0.5|good",
        "prediction>=0.5|sparse",
    }  # fmt: skip
    labelled = _label(fake_run, out, tmp_path / "crossed_l.gpkg", crs="EPSG:32631")
    doc = assess_run(RunMap.open(fake_run.root), read_points(labelled))
    assert doc["design"]["strata"] == ["prediction:0.5", "quality"]
    assert len(doc["design"]["stratum_px"]) == 4 and len(doc["overall"]["classes"]) == 2
    tree = next(c for c in doc["overall"]["per_class"] if c["code"] == 1)
    lo, hi = tree["area_ha"]["ci95"]
    assert lo <= fake_run.true_tree_ha() <= hi
    # other map classes than the strata: the design stays the one drawn, nothing moved
    again = assess_run(
        RunMap.open(fake_run.root), read_points(labelled),
        strata=[StrataSpec.parse("prediction:0.5")],
    )  # fmt: skip
    assert again["design"]["strata"] == ["prediction:0.5", "quality"]
    assert again["overall"]["per_class"][1]["area_ha"] == tree["area_ha"]
    assert not any("another stratum" in w for w in again["warnings"])


def test_a_run_across_two_utm_zones_is_sampled_and_read_in_each_zone(tmp_path):
    """Tiles on both sides of 6 E (zones 31N and 32N): points go out in EPSG:4326 and each is
    read back in its own zone's store."""
    from pyproj import Transformer

    from geoxai.geo.grid import TileSpec
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneGrid, ZoneStore, default_layers
    from geoxai.mapping.records import write_tile

    root = tmp_path / "store" / "two-zones" / "2024"
    layout = RunLayout(str(root))
    for epsg, lon, v in ((32631, 5.98, 0.8), (32632, 6.02, 0.2)):
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, 50.8)
        t = TileSpec(epsg, int(x // 2000), int(y // 2000), 0, 2000)
        (grid,) = ZoneGrid.from_tiles([t]).values()
        zone = ZoneStore.create(layout, grid, default_layers())
        p = np.full((200, 200), v, np.float32)
        p[:, :100] -= 0.5  # two classes in each tile
        write_tile(zone, t, {"prediction": p, "quality": np.ones((200, 200), np.uint8)},
                   {"config_hash": "zones"})  # fmt: skip
    out = tmp_path / "zones.gpkg"
    res = CliRunner().invoke(
        app,
        ["assess", "sample", str(root), "--n", "60", "--strata", "prediction:0.5", "--out",
         str(out), "--seed", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    pts = read_points(out)
    assert _epsg(pts.crs[0]) == 4326  # two zones: lon/lat
    assert set(pts.fields["epsg"].astype(int)) == {32631, 32632}
    rm = RunMap.open(root)
    at = map_at_points(rm, [StrataSpec.parse("prediction:0.5")], pts)
    assert (at["status"] == "ok").all()
    np.testing.assert_array_equal(at["epsg"], pts.fields["epsg"].astype(int))
    np.testing.assert_array_equal(at["tile"], pts.fields["tile"])
    np.testing.assert_allclose(at["map_value"], pts.fields["map_value"].astype(float))


def test_strata_specs_that_cannot_make_classes_are_errors(fake_run):
    rm = RunMap.open(fake_run.root)
    with pytest.raises(InvalidInputError, match="prediction"):  # did you mean
        census(rm, [StrataSpec.parse("predicton:0.5")])
    with pytest.raises(InvalidInputError, match=r"continuous .*'prediction:0.5'"):
        census(rm, [StrataSpec.parse("prediction")])
    with pytest.raises(InvalidInputError, match="increasing"):
        StrataSpec.parse("prediction:0.6,0.3")
    with pytest.raises(InvalidInputError, match="LAYER"):
        StrataSpec.parse("prediction>0.5")
    assert StrataSpec.parse("prediction:0.3,0.6").class_name(1) == "prediction[0.3,0.6)"


def test_a_simple_random_sample_is_one_stratum_over_the_run(fake_run, tmp_path):
    out = tmp_path / "srs.gpkg"
    res = CliRunner().invoke(
        app,
        ["assess", "sample", str(fake_run.root), "--n", "300", "--strata", "prediction:0.5",
         "--simple", "--out", str(out), "--seed", "3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["stratum_n"] == {"all": 300}
    labelled = _label(fake_run, out, tmp_path / "srs_l.gpkg", crs="EPSG:32631")
    pts = read_points(labelled)
    doc = assess_run(RunMap.open(fake_run.root), pts)
    assert doc["design"]["kind"] == "simple random (as drawn)"
    assert doc["design"]["stratum_n"] == {"all": 300}
    agree = pts.fields["map_class"].astype(int) == pts.fields["reference"].astype(int)
    oa = doc["overall"]["overall_accuracy"]
    assert oa["value"] == pytest.approx(agree.mean())  # one stratum: the plain proportion
    assert oa["se"] == pytest.approx(np.sqrt(agree.mean() * (1 - agree.mean()) / 299))
    tree = next(c for c in doc["overall"]["per_class"] if c["code"] == 1)
    lo, hi = tree["area_ha"]["ci95"]
    assert lo <= fake_run.true_tree_ha() <= hi
