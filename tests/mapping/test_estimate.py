"""The arithmetic of ``geoxai plan``: sampling, extrapolation with its range, hours, bill."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoxai.errors import InvalidInputError
from geoxai.geo.grid import TileSpec
from geoxai.mapping.estimate import (
    ASSUMED_FACTOR,
    Figure,
    Prices,
    TileSample,
    actors_on,
    bill,
    compute_hours,
    extrapolate,
    scaled_total,
    spread_sample,
    storage_figures,
    wall_time,
)


def _grid(n: int = 10) -> list[TileSpec]:
    return [TileSpec(32631, 100 + c, 900 + r) for r in range(n) for c in range(n)]


def test_spread_sample_is_deterministic_spread_and_bounded():
    tiles = _grid()
    a = spread_sample(tiles, 5)
    assert a == spread_sample(tiles, 5) and len({t.id for t in a}) == 5
    cols = {t.col for t in a[1:]}
    rows = {t.row for t in a[1:]}
    # after the central tile, farthest-point picks reach the grid's edges
    assert {100, 109} <= cols and {900, 909} <= rows
    assert spread_sample(tiles, 500) == tiles
    with pytest.raises(InvalidInputError, match="--sample 0"):
        spread_sample(tiles, 0)


def test_spread_sample_covers_every_zone_of_a_two_zone_aoi():
    tiles = _grid(4) + [TileSpec(32632, 10 + c, 900 + r) for r in range(4) for c in range(4)]
    assert {t.epsg for t in spread_sample(tiles, 3)} == {32631, 32632}


def test_extrapolate_is_exact_when_every_tile_is_sampled():
    f = extrapolate([3, 4, 5], 3, "scenes", "scenes")
    assert f.value == f.low == f.high == 12 and "every tile" in f.how


def test_extrapolate_from_one_tile_states_the_assumed_factor():
    f = extrapolate([10.0], 100, "s", "cpu")
    assert f.value == 1000 and f.low == 1000 / ASSUMED_FACTOR and f.high == 1000 * ASSUMED_FACTOR
    assert "assumed" in f.how and "1 tile" in f.how


def test_extrapolate_interval_covers_the_true_total_about_as_often_as_stated():
    rng = np.random.default_rng(0)
    population = rng.gamma(4.0, 10.0, size=2000)  # skewed per-tile values
    truth = population.sum()
    hits = 0
    for _ in range(300):
        s = rng.choice(population, 30, replace=False)
        f = extrapolate(s, len(population), "B", "bytes")
        hits += f.low <= truth <= f.high
    assert 0.82 <= hits / 300 <= 0.97  # nominal 90 %


def test_extrapolate_refuses_nonsense():
    with pytest.raises(InvalidInputError, match="no sampled tile"):
        extrapolate([], 10, "s", "x")
    with pytest.raises(InvalidInputError, match="only 2 tiles"):
        extrapolate([1, 2, 3], 2, "s", "x")


def _sample(tile: str, scenes: int, cube: float, smooth: float, predict: float) -> TileSample:
    return TileSample(
        tile,
        scenes,
        {"cube_s": cube, "smooth_s": smooth, "predict_s": predict},
        cube_bytes=scenes * 1000,
        output_bytes=500,
        cog_bytes=300,
        record_bytes=10,
        objects=20,
        cube_objects=15,
    )


def test_scene_bound_stages_scale_with_the_scene_count():
    samples = [_sample("a", 10, 10.0, 10.0, 5.0)]
    exact = Figure(400.0, 400.0, 400.0, "scenes", "all")  # 20 scenes per tile over 20 tiles
    f = compute_hours(samples, 20, exact, cpus_per_worker=2, gpus_per_worker=0, source="t")
    # per tile: cube 10 x 2 (scenes doubled) + 2 CPUs x (smooth 10 x 2 + predict 5) = 70 s
    assert f["cpu_seconds"].value == pytest.approx(20 * 70)
    assert f["gpu_hours"].value == 0
    g = compute_hours(samples, 20, exact, cpus_per_worker=1, gpus_per_worker=1, source="t")
    assert g["gpu_hours"].value == pytest.approx(20 * 25 / 3600)
    warm = compute_hours(
        samples,
        20,
        exact,
        cpus_per_worker=1,
        gpus_per_worker=0,
        source="t",
        warmup={"cube_s": 3.0, "smooth_s": 7.0},
        actors=4,
        cube_processes=2,
    )
    base = compute_hours(samples, 20, exact, cpus_per_worker=1, gpus_per_worker=0, source="t")
    assert warm["cpu_seconds"].value - base["cpu_seconds"].value == pytest.approx(3 * 2 + 7 * 4)


def test_ranges_combine_timing_spread_and_scene_range():
    samples = [_sample(t, 10, 10 + i, 10, 5) for i, t in enumerate("abcd")]
    wide = Figure(400.0, 300.0, 500.0, "scenes", "sampled")
    f = scaled_total(
        samples, 20, wide, lambda s: s.stage_seconds(), lambda s: 0.0, "s", "no scene part"
    )
    g = scaled_total(
        samples,
        20,
        wide,
        lambda s: s.stage_seconds(),
        lambda s: s.stage_seconds(),
        "s",
        "all scene-bound",
    )
    assert f.low < f.value < f.high
    # the scene range (+-25 %) widens the relative range of the scene-bound figure only
    assert g.value == pytest.approx(2 * f.value)  # 20 scenes per tile, sampled tiles had 10
    assert g.low / g.value < f.low / f.value and g.high / g.value > f.high / f.value


def test_storage_parts_add_up():
    samples = [_sample("a", 10, 1, 1, 1)]
    exact = Figure(200.0, 200.0, 200.0, "scenes", "all")
    s = storage_figures(samples, 10, exact, source="t")
    assert s["cubes"].value == pytest.approx(10 * 20 * 1000)
    assert s["total"].value == pytest.approx(
        sum(s[k].value for k in ("cubes", "outputs", "cogs", "records"))
    )


def test_bill_prices_only_what_is_priced():
    figs = {
        "cpu_hours": Figure(10.0, 5.0, 20.0, "CPU-h", "x"),
        "gpu_hours": Figure(2.0, 1.0, 4.0, "GPU-h", "x"),
        "storage_bytes": Figure(5e9, 4e9, 6e9, "B", "x"),
        "requests": Figure(10_000, 9_000, 11_000, "requests", "x"),
    }
    assert bill(figs, Prices()) == {}
    b = bill(figs, Prices(cpu_hour=0.1, gb_month=0.02), months=3)
    assert set(b) == {"cpu", "storage", "total"}
    assert b["cpu"].value == pytest.approx(1.0) and b["storage"].value == pytest.approx(0.3)
    assert b["total"].low == pytest.approx(0.5 + 0.24)
    full = bill(figs, Prices(cpu_hour=0.1, gpu_hour=2, gb_month=0.02, requests_1k=0.005))
    assert full["requests"].value == pytest.approx(0.05) and full["gpu"].value == 4


def test_prices_must_be_finite_and_non_negative():
    with pytest.raises(InvalidInputError, match="--price-cpu-hour"):
        Prices(cpu_hour=-1)
    with pytest.raises(InvalidInputError, match="gb_month"):
        Prices(gb_month=math.inf)


def test_wall_time_uses_the_actors_that_fit():
    samples = [_sample("a", 10, 4.0, 10.0, 6.0)]
    exact = Figure(1000.0, 1000.0, 1000.0, "scenes", "all")
    kw = dict(cpus_per_worker=1, gpus_per_worker=1, num_workers=None, cube_tasks_in_flight=4)
    w = wall_time(samples, 100, exact, cluster_cpus=64, cluster_gpus=8, **kw)
    # 8 GPU actors: 100 x 16 s / 8 = 200 s; cubes 100 x 4 / 4 = 100 s; + one tile 20 s
    assert w.value == pytest.approx(220)
    assert actors_on(64, 8, 1, 1) == 8 and actors_on(64, 8, 1, 0, num_workers=3) == 3
    with pytest.raises(InvalidInputError, match="fits no tile actor"):
        wall_time(samples, 100, exact, cluster_cpus=8, cluster_gpus=0, **kw)


def test_figure_json_has_no_nan():
    d = Figure(1.0, math.nan, 2.0, "s", "x").to_dict()
    assert d["low"] is None and d["value"] == 1.0
