"""``geoxai demo``: the main job on the embedded default (synthetic world, local STAC and Ray)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for everything."),
        tiles: int = typer.Option(4, "--tiles", min=1, help="Tiles of the synthetic world."),
        year: int = typer.Option(2024, "--year", help="Year of the synthetic world."),
        seed: int = typer.Option(0, "--seed", help="Seed of the synthetic world."),
    ) -> None:
        """Synthetic world -> local STAC API -> demo models -> `geoxai run` on local Ray -> report.

        Reruns reuse the world, the models and the finished tiles.
        """
        from pipelines.demo import run_demo

        result = run_demo(out, tiles=tiles, year=year, seed=seed)
        if result["summary"].count("failed"):
            raise typer.Exit(code=1)
