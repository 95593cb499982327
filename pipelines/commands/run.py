"""``geoxai run`` (the main job) and ``geoxai submit`` (the same on a remote Ray cluster)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        config: Path = typer.Argument(..., help="Run config (YAML/JSON), see README 'Config'."),
        year: int = typer.Option(None, "--year", help="Override the config's year."),
        address: str = typer.Option(
            None, "--address", help="Ray address ('auto' inside a cluster); default local Ray."
        ),
        baseline_year: int = typer.Option(
            None, "--baseline-year", help="Emit a change layer against this year's run."
        ),
        force: bool = typer.Option(False, "--force", help="Redo tiles already done."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bar."),
        cloud_mask: str = typer.Option(
            None,
            "--cloud-mask",
            help="Override processing.cloud_mask: scl (default; inputs with SCL), spectral "
            "(inputs without SCL: clouds, shadows, snow from the reflectances and the items' "
            "sun angles; needs processing.halo_px >= 125) or none.",
        ),
    ) -> None:
        """Map an AOI for a year: cubes -> smoothing -> inference -> ASOS -> Zarr/COG/STAC/report.

        Resumable: a rerun with the same config skips tiles whose record is valid.
        """
        from geoxai.config import load_run_config
        from pipelines.run import run

        cfg = load_run_config(config, year=year)
        updates: dict = {}
        if address:
            updates["resources"] = cfg.resources.model_copy(update={"address": address})
        if baseline_year is not None:
            updates["baseline"] = f"{cfg.store.root.rstrip('/')}/{cfg.name}/{baseline_year}"
        if cloud_mask is not None:
            updates["processing"] = with_cloud_mask(cfg.processing, cloud_mask)
        if updates:
            cfg = cfg.model_copy(update=updates)
        summary = run(cfg, force=force, progress=not no_progress)
        _print_summary(summary)
        if summary.error:
            from rich.console import Console

            Console(stderr=True).print(f"[bold red]error:[/] {summary.error}", highlight=False)
        if summary.count("failed") or summary.error:
            raise typer.Exit(code=1)

    @app.command("submit")
    def submit_cmd(
        config: Path = typer.Argument(..., help="Run config (YAML/JSON)."),
        address: str = typer.Option(
            ..., "--address", help="Ray dashboard/jobs address, e.g. http://HEAD:8265."
        ),
        year: int = typer.Option(None, "--year", help="Override the config's year."),
        baseline_year: int = typer.Option(None, "--baseline-year", help="Change layer baseline."),
        wait: bool = typer.Option(False, "--wait", help="Follow the job's logs until it ends."),
    ) -> None:
        """Submit a run to a Ray cluster with `ray job submit` semantics (runtime env included)."""
        from pipelines.submit import submit

        job_id = submit(
            config,
            address,
            year=year,
            baseline_year=baseline_year,
            wait=wait,
        )
        typer.echo(f"submitted job {job_id} to {address}")


def with_cloud_mask(processing, method: str):
    """``processing`` with ``cloud_mask`` replaced, validated like the config file's value."""
    from geoxai.config import ProcessingConfig
    from geoxai.errors import look_up_option

    method = look_up_option(method, ("scl", "spectral", "none"), what="--cloud-mask")
    return ProcessingConfig.model_validate({**processing.model_dump(), "cloud_mask": method})


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {summary.run_root}")
    cols = ("tiles", "done", "empty", "failed", "not processed", "skipped (already done)", "wall s")
    for col in cols:
        table.add_column(col)
    table.add_row(
        str(summary.total),
        str(summary.count("done")),
        str(summary.count("empty")),
        str(summary.count("failed")),
        str(summary.total - summary.skipped - summary.processed),
        str(summary.skipped),
        f"{summary.wall_s:.1f}",
    )
    console = Console()
    console.print(table)
    for tile_id, o in sorted(summary.outcomes.items()):
        if o.status in ("failed", "empty"):
            console.print(f"  [yellow]{tile_id}[/] {o.status}: {o.reason}")
    if summary.report and summary.report_is_local:
        console.print(f"report (local copy, the store did not take it): [bold]{summary.report}[/]")
    elif summary.report:
        console.print(f"report: [bold]{summary.report}[/]")
    else:
        console.print("report: not written")
