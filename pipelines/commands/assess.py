"""``geoxai assess``: draw a stratified sample over a run, then estimate accuracy and area.

``geoxai assess sample RUN --n N --strata LAYER[:THRESHOLDS] --out points.gpkg [--seed S]``
writes points for interpreters (an empty ``reference`` column); ``geoxai assess RUN
--reference points.gpkg [--label-column C]`` reads them back labelled and writes
``<run>/assessment.json`` and the ``accuracy`` section of ``<run>/report.html``.
RUN is a run root (``<store.root>/<name>/<year>``) or the run's config file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup


class _DefaultToEstimate(TyperGroup):
    """``geoxai assess RUN ...`` runs the ``estimate`` command; ``geoxai assess sample ...``
    the sampler (a group cannot otherwise take an argument before its subcommand)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["estimate", *args]
        return super().parse_args(ctx, args)


assess_app = typer.Typer(
    name="assess",
    cls=_DefaultToEstimate,
    help="Accuracy and area with confidence intervals from a reference sample (Olofsson 2014).",
    no_args_is_help=True,
)


def _run_root(run: str) -> str:
    p = Path(run)
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml", ".json") and p.name != "config.json":
        from geoxai.config import load_run_config

        return load_run_config(p).run_root()
    return str(p.parent) if p.name == "config.json" else run


def _strata(values: list[str] | None) -> list[Any]:
    from geoxai.mapping.assess import StrataSpec

    return [StrataSpec.parse(v) for v in values or []]


@assess_app.command("sample")
def sample_cmd(
    run: str = typer.Argument(..., help="Run root (<store.root>/<name>/<year>) or run config."),
    n: int = typer.Option(..., "--n", help="Number of points."),
    strata: list[str] = typer.Option(
        ..., "--strata", help="LAYER[:THRESHOLDS], e.g. prediction:0.5; repeat to cross strata."
    ),
    out: Path = typer.Option(..., "--out", help="points.gpkg, .geojson or .csv"),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same points)."),
    min_per_stratum: int = typer.Option(
        None, "--min-per-stratum", help="Points at least per stratum (default min(50, n/2H))."
    ),
    simple: bool = typer.Option(
        False, "--simple", help="Simple random sample (one stratum); --strata gives the classes."
    ),
) -> None:
    """Stratified (or simple) random sample of the run's valid pixels, for interpreters."""
    import numpy as np

    from geoxai.io.points import LABEL_COLUMN, write_points
    from geoxai.mapping.assess import SIMPLE_STRATUM, RunMap, census, draw_sample

    specs = _strata(strata)
    rm = RunMap.open(_run_root(run))
    cen = census(rm, specs)
    cols = draw_sample(rm, cen, n, seed=seed, min_per_stratum=min_per_stratum, simple=simple)
    cols["strata_spec"] = np.full(len(cols["x"]), ";".join(str(s) for s in specs), dtype=object)
    path = write_points(out, cols)
    per = (
        {SIMPLE_STRATUM: sum(cen.strata.values())}
        if simple
        else {cen.stratum_name(k): int(v) for k, v in cen.strata.items()}
    )
    drawn = {s: int((cols["stratum"] == s).sum()) for s in per}
    typer.echo(
        json.dumps(
            {
                "out": path,
                "n": len(cols["x"]),
                "seed": seed,
                "label_column": LABEL_COLUMN,
                "stratum_px": per,
                "stratum_n": drawn,
            }  # fmt: skip
        )
    )


@assess_app.command("estimate")
def estimate_cmd(
    run: str = typer.Argument(..., help="Run root (<store.root>/<name>/<year>) or run config."),
    reference: Path = typer.Option(..., "--reference", help="Labelled points (any CRS)."),
    label_column: str = typer.Option("reference", "--label-column", help="Label column."),
    strata: list[str] = typer.Option(
        None, "--strata", help="Map classes (LAYER[:THRESHOLDS]); default: the sample's own."
    ),
    reference_kind: str = typer.Option(
        "class", "--reference-kind", help="class (codes/names) or value (e.g. fractions)."
    ),
    crs: str = typer.Option(None, "--crs", help="CRS of CSV x/y columns, e.g. EPSG:32631."),
    out: Path = typer.Option(None, "--out", help="Also write the JSON here."),
) -> None:
    """Error matrix, overall/user's/producer's accuracy, class areas with 95 % CIs."""
    from rich.console import Console

    from geoxai.io.points import read_points
    from geoxai.mapping.assess import RunMap
    from geoxai.mapping.assess_report import assess_run, write_assessment

    rm = RunMap.open(_run_root(run))
    pts = read_points(reference, crs=crs)
    doc = assess_run(
        rm, pts, strata=_strata(strata) or None, label_column=label_column,
        reference_kind=reference_kind,
    )  # fmt: skip
    json_url, report_url = write_assessment(rm, doc)
    if out is not None:
        out.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    _print(doc, Console())
    Console().print(f"assessment: [bold]{json_url}[/]  report: [bold]{report_url}[/]")


def _print(doc: dict, console: Any) -> None:
    from rich.table import Table

    ov = doc["overall"]

    def pct(d: dict) -> str:
        if d.get("value") is None:
            return "n/a"
        se = d.get("se")
        return f"{100 * d['value']:.1f} ± {196 * se:.1f}" if se is not None else "undefined"

    t = Table(title=f"overall accuracy {pct(ov['overall_accuracy'])} % ({ov['n']} points)")
    for col in ("class", "user's %", "producer's %", "area ha (95 % CI)", "mapped ha"):
        t.add_column(col)
    for c in ov["per_class"]:
        a = c["area_ha"]
        ci = a["ci95"]
        area = f"{a['value']:,.1f}" + (f" ({ci[0]:,.1f} – {ci[1]:,.1f})" if ci[0] is not None
                                       else " (CI undefined)")  # fmt: skip
        t.add_row(c["name"], pct(c["users_accuracy"]), pct(c["producers_accuracy"]), area,
                  f"{c['mapped_ha']:,.1f}")  # fmt: skip
    console.print(t)
    for w in doc["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")


def register(app: typer.Typer) -> None:
    app.add_typer(assess_app, name="assess")
