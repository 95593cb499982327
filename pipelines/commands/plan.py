"""``geoxai plan``: what a run will take (tiles, scenes, bytes, hours, bill) before it starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        config: Path = typer.Argument(..., help="Run config (YAML/JSON), as for `geoxai run`."),
        sample: int = typer.Option(20, "--sample", help="Tiles searched on STAC (spread)."),
        calibrate: int = typer.Option(
            0,
            "--calibrate",
            help="Map K sample tiles for real into a scratch root (deleted after) to measure "
            "stage rates; 0: take them from an earlier run's records under the root.",
        ),
        price_cpu_hour: float = typer.Option(None, "--price-cpu-hour", help="Per CPU-hour."),
        price_gpu_hour: float = typer.Option(None, "--price-gpu-hour", help="Per GPU-hour."),
        price_gb_month: float = typer.Option(None, "--price-gb-month", help="Per GB-month."),
        price_1k_requests: float = typer.Option(
            None, "--price-1k-requests", help="Per 1,000 requests."
        ),
        months: float = typer.Option(1.0, "--months", help="Months the outputs are stored."),
        cluster_cpus: float = typer.Option(None, "--cluster-cpus", help="Cluster CPUs."),
        cluster_gpus: float = typer.Option(None, "--cluster-gpus", help="Cluster GPUs."),
        json_out: Path = typer.Option(
            None, "--json", help="Write the estimate here (default <name>-<year>.plan.json)."
        ),
        year: int = typer.Option(None, "--year", help="Override the config's year."),
    ) -> None:
        """Estimate a run without running it: tiles per zone, what is done, scenes per tile,
        bytes to read, storage written, CPU-/GPU-hours, wall time and bill, each with its range.

        Writes nothing under the run root (the calibration maps into a scratch root).
        """
        import logging

        from rich.console import Console

        from geoxai.config import load_run_config
        from geoxai.errors import InvalidInputError
        from geoxai.mapping.estimate import Prices
        from geoxai.mapping.estimate_run import estimate_run

        console = Console()
        cfg = load_run_config(config, year=year)
        out = json_out or Path(f"{cfg.name}-{cfg.year}.plan.json")
        root = cfg.run_root()
        if "://" not in root and out.resolve().is_relative_to(Path(root).resolve()):
            raise InvalidInputError(
                f"--json {str(out)!r} lies under the run root {root}; plan writes nothing "
                "there. Give another path."
            )
        given = {
            "cpu_hour": price_cpu_hour,
            "gpu_hour": price_gpu_hour,
            "gb_month": price_gb_month,
            "requests_1k": price_1k_requests,
        }
        prices = None
        if any(v is not None for v in given.values()):
            base = cfg.prices.model_dump() if cfg.prices is not None else {}
            prices = Prices(**{**base, **{k: v for k, v in given.items() if v is not None}})
        logging.getLogger("geoxai").setLevel(logging.WARNING)
        est = estimate_run(
            cfg,
            sample=sample,
            calibrate_tiles=calibrate,
            prices=prices,
            cluster_cpus=cluster_cpus,
            cluster_gpus=cluster_gpus,
            months=months,
            say=lambda line: console.print(f"[dim]{line}[/]", highlight=False),
        )
        print_estimate(console, est)
        out.write_text(json.dumps(est.to_dict(), indent=2) + "\n")
        console.print(f"estimate: [bold]{out}[/]", highlight=False)


def _fmt(x: float | None, unit: str) -> str:
    if x is None or not math.isfinite(x):
        return "?"
    if unit == "B":
        for u, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(x) >= f:
                return f"{x / f:.3g} {u}"
        return f"{x:.0f} B"
    if unit == "s":
        if abs(x) >= 3600:
            return f"{x / 3600:.3g} h"
        if abs(x) >= 60:
            return f"{x / 60:.3g} min"
        return f"{x:.3g} s"
    if abs(x) >= 1000:
        return f"{x:,.0f} {unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


_ROWS = (
    ("scenes", "scenes (all tiles)"),
    ("read_bytes", "bytes to read"),
    ("storage_cubes_bytes", "storage: cubes"),
    ("storage_outputs_bytes", "storage: zone outputs"),
    ("storage_cogs_bytes", "storage: COGs"),
    ("storage_records_bytes", "storage: records"),
    ("storage_bytes", "storage: total"),
    ("cpu_hours", "CPU-hours"),
    ("gpu_hours", "GPU-hours"),
    ("requests", "requests"),
    ("wall_seconds", "wall time"),
)


def print_estimate(console, est) -> None:
    """The estimate as rich tables: tiles per zone, then figures, then the bill and notes."""
    from rich.table import Table

    zones = Table(title=f"plan {est.config_name}: {est.run_root}")
    for col in ("zone (EPSG)", "tiles"):
        zones.add_column(col)
    for epsg, n in sorted(est.tiles_per_zone.items()):
        zones.add_row(str(epsg), f"{n:,}")
    zones.add_row("all", f"{est.tiles:,}")
    done = "unknown" if est.done is None else f"{est.done:,}"
    console.print(zones)
    console.print(f"already done: {done}; to do: {est.todo:,}", highlight=False)
    console.print(f"rates from: {est.rates_from}", highlight=False)
    figs = Table(title="estimate (ranges: 90% CI, or as stated below)")
    for col in ("figure", "value", "range"):
        figs.add_column(col)
    hows = []
    for key, label in _ROWS:
        f = est.figures.get(key)
        if f is None:
            continue
        figs.add_row(label, _fmt(f.value, f.unit), _rng(f))
        hows.append(f"  {label}: {f.how}")
    if est.bill:
        for key, f in est.bill.items():
            figs.add_row(f"bill: {key}", _fmt(f.value, f.unit), _rng(f))
            hows.append(f"  bill {key}: {f.how}")
    console.print(figs)
    console.print("how:", highlight=False)
    for line in hows:
        console.print(line, highlight=False, soft_wrap=True)
    for note in est.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def _rng(f) -> str:
    return f"{_fmt(f.low, f.unit)} .. {_fmt(f.high, f.unit)}"
