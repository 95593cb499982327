"""What a run will cost, from samples: the arithmetic of ``geoxai plan`` (no I/O here).

Every figure is a :class:`Figure`: a value, a low-high range and one line saying how it was
derived. Per-tile quantities measured on a sample of tiles (scenes, bytes to read, stage seconds,
stored bytes) are extrapolated to all tiles by :func:`extrapolate`: the total is ``N x mean``,
its range a 90 % confidence interval of the mean (Student t, with the finite-population
correction, so sampling every tile gives an exact figure). Quantities measured on fewer than
:data:`MIN_SPREAD_SAMPLES` tiles have no measurable spread: their range is the assumed factor
:data:`ASSUMED_FACTOR` (timings on shared machines vary that much) and the line says so.

Run model (what ``pipelines.run`` does): one cube task per tile (``cube_s``, one CPU, I/O bound),
then the tile on an actor holding ``resources.cpus_per_worker`` CPUs and
``resources.gpus_per_worker`` GPUs for the other stages (``read_s``, ``smooth_s``,
``predict_s``, ``asos_s``, ``spacex_s``, ``cog_s``). CPU-hours and GPU-hours are the reserved
resources times those wall seconds (what a cluster bills). Stages that read the time series
(:data:`SCENE_STAGES`) scale with the tile's scene count, the others are per tile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pyproj import Transformer
from scipy import stats

from geoxai.errors import InvalidInputError
from geoxai.geo.grid import TileSpec

__all__ = [
    "ASSUMED_FACTOR",
    "CONFIDENCE",
    "CUBE_STAGES",
    "SCENE_STAGES",
    "Figure",
    "Prices",
    "TileSample",
    "spread_sample",
    "extrapolate",
    "scaled_total",
    "compute_hours",
    "storage_figures",
    "bill",
    "wall_time",
    "actors_on",
    "PlanEstimate",
]

CONFIDENCE = 0.90
"""Level of every interval (a 90 % confidence interval of the extrapolated total)."""

MIN_SPREAD_SAMPLES = 3
"""Fewest sampled tiles from which a spread is measured rather than assumed."""

ASSUMED_FACTOR = 3.0
"""Range (value / f .. value x f) of a figure measured on fewer than 3 tiles. Measured: two
one-tile calibrations of the same config 10 minutes apart on a shared 2-core machine gave CPU
seconds 2.7x apart (85 s and 232 s for a run that took 84 s and 100 s)."""

CUBE_STAGES = ("cube_s",)
"""Stages of the cube task (one CPU, no GPU)."""

SCENE_STAGES = ("cube_s", "read_s", "smooth_s")
"""Stages whose seconds grow with the tile's scene count."""

SECONDS_PER_HOUR = 3600.0
BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class Figure:
    """One estimate: ``value`` within ``low``..``high`` (NaN: unknown), in ``unit``; ``how``
    says where it comes from and how its range was derived."""

    value: float
    low: float
    high: float
    unit: str
    how: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN becomes None)."""
        d = asdict(self)
        for k in ("value", "low", "high"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d

    def scaled(self, factor: float, unit: str, how: str | None = None) -> Figure:
        """The same figure times ``factor`` (a unit change or a price)."""
        return Figure(
            self.value * factor, self.low * factor, self.high * factor, unit, how or self.how
        )

    def contains(self, x: float) -> bool:
        """True when ``x`` lies within ``low``..``high``."""
        return self.low <= x <= self.high


@dataclass(frozen=True)
class Prices:
    """Prices of a run's resources; None = not priced (the bill leaves that line out).

    Attributes:
        cpu_hour: per CPU-hour reserved. gpu_hour: per GPU-hour reserved.
        gb_month: per GB (1e9 bytes) stored for a month. requests_1k: per 1,000 requests.
        currency: printed after the amounts.
    """

    cpu_hour: float | None = None
    gpu_hour: float | None = None
    gb_month: float | None = None
    requests_1k: float | None = None
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("cpu_hour", "gpu_hour", "gb_month", "requests_1k"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise InvalidInputError(
                    f"price {name} = {v} must be a finite number >= 0; give e.g. "
                    f"--price-{name.replace('_', '-')} 0.05 or leave it out."
                )

    @property
    def any(self) -> bool:
        """True when at least one price is given."""
        return any(
            v is not None for v in (self.cpu_hour, self.gpu_hour, self.gb_month, self.requests_1k)
        )


@dataclass(frozen=True)
class TileSample:
    """What one tile cost, as its record and the store say (a calibrated or earlier tile).

    Attributes:
        tile_id: the tile.
        scenes: Sentinel-2 items read (the record's input items).
        seconds: stage -> wall seconds (the record's ``timings``).
        cube_bytes, cube_objects: the committed cube (and S1/DEM layers) under ``cubes/``.
        output_bytes: the zone-store chunks of the tile (the record's ``chunk_bytes``).
        cog_bytes: the tile's COGs. record_bytes: its record. objects: objects written.
    """

    tile_id: str
    scenes: int
    seconds: Mapping[str, float]
    cube_bytes: int = 0
    cube_objects: int = 0
    output_bytes: int = 0
    cog_bytes: int = 0
    record_bytes: int = 0
    objects: int = 0

    def stage_seconds(self, stages: Sequence[str] | None = None, *, exclude: Sequence[str] = ()):
        """Sum of the named stages (default all), without ``exclude``."""
        names = self.seconds if stages is None else stages
        return float(sum(self.seconds.get(s, 0.0) for s in names if s not in exclude))


# ---- sampling and extrapolation -----------------------------------------------------------


def tile_centres_lonlat(tiles: Sequence[TileSpec]) -> np.ndarray:
    """``(N, 2)`` lon/lat of the tile cores' centres, degrees (one transform per zone)."""
    out = np.zeros((len(tiles), 2))
    by_zone: dict[int, list[int]] = {}
    for i, t in enumerate(tiles):
        by_zone.setdefault(t.epsg, []).append(i)
    for epsg, idx in by_zone.items():
        s = np.array([tiles[i].tile_size_m for i in idx], float)
        x = (np.array([tiles[i].col for i in idx]) + 0.5) * s
        y = (np.array([tiles[i].row for i in idx]) + 0.5) * s
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        out[idx, 0], out[idx, 1] = lon, lat
    return out


def spread_sample(tiles: Sequence[TileSpec], n: int) -> list[TileSpec]:
    """``n`` tiles spread over the AOI (deterministic farthest-point sampling).

    The first is the tile nearest the centroid of all tile centres; each next one is the tile
    farthest (great-circle) from those already chosen, ties broken by order. O(N n).

    Raises:
        InvalidInputError: ``n`` < 1.
    """
    if n < 1:
        raise InvalidInputError(f"--sample {n}: sample at least 1 tile (e.g. --sample 20).")
    if n >= len(tiles):
        return list(tiles)
    ll = np.radians(tile_centres_lonlat(tiles))
    xyz = np.stack(
        [
            np.cos(ll[:, 1]) * np.cos(ll[:, 0]),
            np.cos(ll[:, 1]) * np.sin(ll[:, 0]),
            np.sin(ll[:, 1]),
        ],
        axis=1,
    )
    centre = xyz.mean(axis=0)
    first = int(np.argmin(((xyz - centre) ** 2).sum(axis=1)))
    chosen = [first]
    dist = ((xyz - xyz[first]) ** 2).sum(axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((xyz - xyz[nxt]) ** 2).sum(axis=1))
    return [tiles[i] for i in chosen]


def _t(n: int) -> float:
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def extrapolate(values: Sequence[float], n_total: int, unit: str, what: str) -> Figure:
    """Total over ``n_total`` tiles of a per-tile quantity measured on a sample.

    ``N x mean``; range: the 90 % interval of the mean (t, finite-population corrected: a
    sample of every tile is exact), with the sample's p10/p90 per tile in the line. One or two
    samples: the assumed factor :data:`ASSUMED_FACTOR`.

    Raises:
        InvalidInputError: no sample, or ``n_total`` < the sample size.
    """
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        raise InvalidInputError(f"{what}: no sampled tile to extrapolate from.")
    if n_total < n:
        raise InvalidInputError(f"{what}: {n} samples but only {n_total} tiles.")
    mean = float(v.mean())
    total = n_total * mean
    p10, p90 = np.percentile(v, [10, 90])
    per = f"per tile mean {_num(mean)}, p10 {_num(p10)}, p90 {_num(p90)} {unit}"
    if n == n_total:
        return Figure(total, total, total, unit, f"{what}: every tile measured ({per})")
    if n < MIN_SPREAD_SAMPLES:
        f = ASSUMED_FACTOR
        return Figure(
            total,
            total / f,
            total * f,
            unit,
            f"{what}: {n} of {n_total} tiles x {_num(mean)}; spread not measurable from {n} "
            f"tile(s): range /{f:g}..x{f:g} assumed (sample more tiles to measure it)",
        )
    fpc = math.sqrt((n_total - n) / max(n_total - 1, 1))
    half = _t(n) * float(v.std(ddof=1)) / math.sqrt(n) * fpc * n_total
    return Figure(
        total,
        max(total - half, 0.0),
        total + half,
        unit,
        f"{what}: {n} of {n_total} tiles sampled, {per}; {CONFIDENCE:.0%} CI of the mean x N",
    )


def scaled_total(
    samples: Sequence[TileSample],
    n_total: int,
    scenes: Figure,
    per_tile: Any,
    scene_part: Any,
    unit: str,
    what: str,
) -> Figure:
    """Total over ``n_total`` tiles of a per-tile quantity measured on ``samples`` (calibrated or
    earlier tiles), whose ``scene_part(sample)`` share grows with the scene count.

    Per tile: ``fixed + scene_part x (mean scenes per tile / sample's scenes)``, with the mean
    scenes per tile of the AOI from ``scenes`` (the STAC sample). Range: the spread of the
    per-tile values (t interval, :func:`extrapolate`) combined with the scene total's range.
    """
    if not samples:
        raise InvalidInputError(f"{what}: no calibrated or recorded tile to take rates from.")
    mean_scenes = scenes.value / n_total if n_total else 0.0
    vals = []
    for s in samples:
        part = float(scene_part(s))
        ratio = mean_scenes / s.scenes if s.scenes else 1.0
        vals.append(float(per_tile(s)) - part + part * ratio)
    base = extrapolate(vals, max(n_total, len(vals)), unit, what)
    if base.value == 0:
        return Figure(0.0, 0.0, 0.0, unit, base.how)
    share = _scene_share(samples, scene_part, per_tile)
    lo_s = scenes.low / scenes.value if scenes.value and math.isfinite(scenes.low) else 1.0
    hi_s = scenes.high / scenes.value if scenes.value and math.isfinite(scenes.high) else 1.0
    total = n_total * float(np.mean(vals))
    lo = base.low / base.value * (1 - share + share * lo_s)
    hi = base.high / base.value * (1 - share + share * hi_s)
    how = (
        f"{base.how}; scene-bound share {share:.0%} scaled to {_num(mean_scenes)} scenes/tile "
        f"(its range from the scene estimate)"
    )
    return Figure(total, total * lo, total * hi, unit, how)


def _scene_share(samples: Sequence[TileSample], scene_part: Any, per_tile: Any) -> float:
    tot = sum(float(per_tile(s)) for s in samples)
    return sum(float(scene_part(s)) for s in samples) / tot if tot else 0.0


# ---- hours, storage, bill, wall time -------------------------------------------------------


def compute_hours(
    samples: Sequence[TileSample],
    n_tiles: int,
    scenes: Figure,
    *,
    cpus_per_worker: float,
    gpus_per_worker: float,
    source: str,
    warmup: Mapping[str, float] | None = None,
    actors: int = 1,
    cube_processes: int = 1,
) -> dict[str, Figure]:
    """CPU-hours and GPU-hours of mapping ``n_tiles`` tiles (reserved resources x seconds).

    CPU: ``cube_s`` x 1 + the other stages x ``cpus_per_worker``; GPU: the other stages x
    ``gpus_per_worker`` (zero without GPUs). ``source`` names where the rates come from.
    ``warmup`` (stage -> seconds a fresh process spends once: imports, device set-up) is added
    once per tile actor (``actors``) and per cube process (``cube_processes``).
    """
    warm = dict(warmup or {})
    warm_cube = sum(v for k, v in warm.items() if k in CUBE_STAGES) * min(cube_processes, n_tiles)
    warm_map = sum(v for k, v in warm.items() if k not in CUBE_STAGES) * min(actors, n_tiles)

    def cpu(s: TileSample) -> float:
        return s.stage_seconds(CUBE_STAGES) + cpus_per_worker * s.stage_seconds(exclude=CUBE_STAGES)

    def cpu_scene(s: TileSample) -> float:
        act = [st for st in SCENE_STAGES if st not in CUBE_STAGES]
        return s.stage_seconds(CUBE_STAGES) + cpus_per_worker * s.stage_seconds(act)

    c = scaled_total(samples, n_tiles, scenes, cpu, cpu_scene, "s", f"CPU seconds ({source})")
    if warm:
        extra = warm_cube + cpus_per_worker * warm_map
        c = _plus(
            c,
            extra,
            f"; + {_num(extra)} s warm-up ({actors} actor(s), {cube_processes} cube process(es))",
        )
    out = {"cpu_seconds": c, "cpu_hours": c.scaled(1 / SECONDS_PER_HOUR, "CPU-h")}
    if gpus_per_worker > 0:

        def gpu(s: TileSample) -> float:
            return gpus_per_worker * s.stage_seconds(exclude=CUBE_STAGES)

        def gpu_scene(s: TileSample) -> float:
            act = [st for st in SCENE_STAGES if st not in CUBE_STAGES]
            return gpus_per_worker * s.stage_seconds(act)

        g = scaled_total(samples, n_tiles, scenes, gpu, gpu_scene, "s", f"GPU seconds ({source})")
        if warm:
            g = _plus(g, gpus_per_worker * warm_map, "; + warm-up per actor")
        out["gpu_seconds"] = g
        out["gpu_hours"] = g.scaled(1 / SECONDS_PER_HOUR, "GPU-h")
    else:
        out["gpu_hours"] = Figure(
            0.0, 0.0, 0.0, "GPU-h", "resources.gpus_per_worker is 0: no GPU reserved"
        )
    return out


def _plus(f: Figure, extra: float, how: str) -> Figure:
    return Figure(f.value + extra, f.low + extra, f.high + extra, f.unit, f.how + how)


def storage_figures(
    samples: Sequence[TileSample], n_tiles: int, scenes: Figure, *, source: str
) -> dict[str, Figure]:
    """Bytes the run writes: cubes (scale with scenes), zone outputs, COGs, records; their sum."""
    parts = {
        "cubes": (lambda s: s.cube_bytes, lambda s: s.cube_bytes),
        "outputs": (lambda s: s.output_bytes, lambda s: 0),
        "cogs": (lambda s: s.cog_bytes, lambda s: 0),
        "records": (lambda s: s.record_bytes, lambda s: 0),
    }
    out = {
        k: scaled_total(samples, n_tiles, scenes, f, g, "B", f"{k} bytes ({source})")
        for k, (f, g) in parts.items()
    }
    out["total"] = Figure(
        sum(f.value for f in out.values()),
        sum(f.low for f in out.values()),
        sum(f.high for f in out.values()),
        "B",
        "sum of cubes, outputs, COGs and records (ranges added: conservative)",
    )
    return out


def bill(
    figures: Mapping[str, Figure], prices: Prices, *, months: float = 1.0
) -> dict[str, Figure]:
    """Cost lines of the priced resources (an unpriced resource has no line) and their total.

    ``figures`` holds ``cpu_hours``, ``gpu_hours``, ``storage_bytes`` and ``requests`` (any may
    be missing: its line is left out). Storage is billed for ``months`` months.
    """
    cur = prices.currency
    lines: dict[str, Figure] = {}
    for key, price, factor, what in (
        ("cpu", prices.cpu_hour, 1.0, "CPU-hours x price per CPU-hour"),
        ("gpu", prices.gpu_hour, 1.0, "GPU-hours x price per GPU-hour"),
        ("storage", prices.gb_month, months / BYTES_PER_GB, f"GB x {months:g} month(s) x price"),
        ("requests", prices.requests_1k, 1 / 1000, "requests / 1,000 x price"),
    ):
        fig = figures.get({"cpu": "cpu_hours", "gpu": "gpu_hours"}.get(key, key + "_bytes"))
        if key == "requests":
            fig = figures.get("requests")
        if price is None or fig is None:
            continue
        lines[key] = fig.scaled(price * factor, cur, f"{what} ({fig.how})")
    if lines:
        lines["total"] = Figure(
            sum(f.value for f in lines.values()),
            sum(f.low for f in lines.values()),
            sum(f.high for f in lines.values()),
            cur,
            f"sum of {', '.join(lines)} (ranges added: conservative)",
        )
    return lines


def actors_on(
    cluster_cpus: float,
    cluster_gpus: float,
    cpus_per_worker: float,
    gpus_per_worker: float,
    num_workers: int | None = None,
) -> int:
    """Tile actors that fit a cluster (at most ``num_workers`` when set), as the driver starts.

    Raises:
        InvalidInputError: no actor fits the cluster.
    """
    fit = int(cluster_cpus // cpus_per_worker)
    if gpus_per_worker > 0:
        fit = min(fit, int(cluster_gpus // gpus_per_worker))
    if num_workers:
        fit = min(fit, num_workers)
    if fit < 1:
        raise InvalidInputError(
            f"a cluster of {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs fits no tile actor "
            f"of {cpus_per_worker:g} CPUs and {gpus_per_worker:g} GPUs; give a larger "
            "--cluster-cpus/--cluster-gpus."
        )
    return fit


def wall_time(
    samples: Sequence[TileSample],
    n_tiles: int,
    scenes: Figure,
    *,
    cluster_cpus: float,
    cluster_gpus: float,
    cpus_per_worker: float,
    gpus_per_worker: float,
    num_workers: int | None,
    cube_tasks_in_flight: int,
    warmup: Mapping[str, float] | None = None,
) -> Figure:
    """Wall time of the run on a cluster: the slower of the pipelined cube and actor phases.

    Actors: as many as fit (``cluster_cpus // cpus_per_worker``, and
    ``cluster_gpus // gpus_per_worker`` with GPUs; at most ``num_workers`` when set); cube
    tasks: ``cube_tasks_in_flight`` at a time. Plus one tile's latency (the pipeline's fill).

    Raises:
        InvalidInputError: no actor fits the cluster.
    """
    fit = actors_on(cluster_cpus, cluster_gpus, cpus_per_worker, gpus_per_worker, num_workers)

    def map_s(s: TileSample) -> float:
        return s.stage_seconds(exclude=CUBE_STAGES)

    def map_scene(s: TileSample) -> float:
        return s.stage_seconds([st for st in SCENE_STAGES if st not in CUBE_STAGES])

    def cube_s(s: TileSample) -> float:
        return s.stage_seconds(CUBE_STAGES)

    maps = scaled_total(samples, n_tiles, scenes, map_s, map_scene, "s", "actor seconds")
    cubes = scaled_total(samples, n_tiles, scenes, cube_s, cube_s, "s", "cube seconds")
    lanes = max(1, min(cube_tasks_in_flight, int(cluster_cpus)))
    one = (maps.value + cubes.value) / max(n_tiles, 1) + sum((warmup or {}).values())
    phases = [(maps, fit), (cubes, lanes)]
    value = max(f.value / k for f, k in phases) + one
    low = max(f.low / k for f, k in phases) + one
    high = max(f.high / k for f, k in phases) + one
    return Figure(
        value,
        low,
        high,
        "s",
        f"{fit} tile actors and {lanes} cube tasks at a time on {cluster_cpus:g} CPUs / "
        f"{cluster_gpus:g} GPUs: max(actor seconds / actors, cube seconds / cube tasks) + one "
        "tile; ranges from the seconds' ranges",
    )


def _num(x: float) -> str:
    x = float(x)
    if x == 0 or 0.01 <= abs(x) < 1e6:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:.3g}"


@dataclass
class PlanEstimate:
    """Everything ``geoxai plan`` found (:func:`geoxai.mapping.estimate_run.estimate_run`)."""

    config_name: str
    run_root: str
    tiles: int
    tiles_per_zone: dict[int, int]
    done: int | None
    todo: int
    figures: dict[str, Figure] = field(default_factory=dict)
    bill: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sample: list[str] = field(default_factory=list)
    calibrated: list[str] = field(default_factory=list)
    rates_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``geoxai plan --json`` writes."""
        return {
            "format": "geoxai-plan/1",
            "config_name": self.config_name,
            "run_root": self.run_root,
            "tiles": self.tiles,
            "tiles_per_zone": {str(k): v for k, v in sorted(self.tiles_per_zone.items())},
            "done": self.done,
            "todo": self.todo,
            "sample": self.sample,
            "calibrated": self.calibrated,
            "rates_from": self.rates_from,
            "figures": {k: f.to_dict() for k, f in self.figures.items()},
            "bill": {k: f.to_dict() for k, f in self.bill.items()},
            "notes": self.notes,
        }
