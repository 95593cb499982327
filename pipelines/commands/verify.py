"""``geoxai verify``: read every done tile's outputs against their checksums (on Ray), delete the
records of the tiles that fail, and with ``--repair`` run exactly those tiles again."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_cmd(
        config: Path = typer.Argument(..., help="Run config (YAML/JSON) of the run to verify."),
        year: int = typer.Option(None, "--year", help="Override the config's year."),
        address: str = typer.Option(
            None, "--address", help="Ray address ('auto' inside a cluster); default local Ray."
        ),
        repair: bool = typer.Option(
            False, "--repair", help="Re-run the tiles that fail (a resume of the run)."
        ),
    ) -> None:
        """Check every done tile's zone chunks and COGs byte for byte against the SHA-256 of its
        record (planning only checks that they exist with their sizes).

        A tile that fails has its record deleted, so the next `geoxai run` (or `--repair`,
        now) redoes it. Exit code 1 when a tile failed and was not repaired.
        """
        from rich.console import Console

        from geoxai.config import load_run_config
        from pipelines.verify import verify_run

        cfg = load_run_config(config, year=year)
        if address:
            cfg = cfg.model_copy(
                update={"resources": cfg.resources.model_copy(update={"address": address})}
            )
        s = verify_run(cfg, repair=repair)
        console = Console()
        r = s.result
        console.print(
            f"verified {r.checked} done tiles of {s.records} records under {s.run_root}: "
            f"{r.objects} objects, {r.nbytes / 1e9:.3f} GB in {s.wall_s:.1f} s; "
            f"{len(r.problems)} bad",
            highlight=False,
        )
        for tile_id, why in sorted(r.problems.items()):
            console.print(f"  [yellow]{tile_id}[/] {why} (record deleted)", highlight=False)
        if s.rerun is not None:
            ok = sorted(t for t, o in s.rerun.outcomes.items() if o.status == "done")
            console.print(
                f"repaired: {len(ok)} of {len(s.deleted)} tiles re-run done"
                + (f"; {s.redone_extra} other unfinished tiles ran too" if s.redone_extra else ""),
                highlight=False,
            )
            if s.rerun.error or s.rerun.count("failed"):
                raise typer.Exit(code=1)
        elif s.deleted:
            console.print("run `geoxai run` on the config (or verify --repair) to redo them")
            raise typer.Exit(code=1)
