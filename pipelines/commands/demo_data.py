"""``geoxai demo-data``: write a synthetic Sentinel-2 L2A archive (COGs + STAC + truth)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo-data")
    def demo_data(
        out: str = typer.Option(..., "--out", help="Output folder (created)."),
        tiles: int = typer.Option(
            4, "--tiles", min=1, help="Number of 6 km tiles, as a near-square block (4 = 2x2)."
        ),
        year: int = typer.Option(2023, "--year", help="Target year (plus 30 days each side)."),
        seed: int = typer.Option(0, "--seed", help="Random seed; same seed -> same archive."),
        origin: str = typer.Option(
            "32631_E0096_N0938", "--origin", help="South-west tile id of the block."
        ),
        margin: int = typer.Option(
            64, "--margin", min=0, help="Data margin around the tiles, 10 m pixels (even)."
        ),
        clouds: bool = typer.Option(True, "--clouds/--no-clouds", help="Clouds and shadows."),
        noise: float = typer.Option(
            1.0, "--noise", min=0.0, help="Sensor noise multiplier (0 = none; smaller files)."
        ),
        start: str = typer.Option(
            "", "--start", help="First date YYYY-MM-DD (default: 30 days before the year)."
        ),
        end: str = typer.Option(
            "", "--end", help="Last date YYYY-MM-DD (default: 30 days after the year)."
        ),
        workers: int = typer.Option(2, "--workers", min=1, help="COG writer threads."),
    ) -> None:
        """Write a realistic synthetic Sentinel-2 L2A archive for the demo, tests and training.

        A block of tiles in UTM zone 31N (Belgium) with forest, crops, grass, water, built-up
        and bare land following their seasons, clouds and shadows, a 5-day revisit through the
        year +- 30 days: per-acquisition COGs, Earth Search v1 style STAC items
        (items/*.json, items.ndjson, item_collection.json, collection.json) and truth layers
        (truth/tree_cover.tif, landcover.tif, natural.tif).
        """
        from datetime import date

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        from geoxai.errors import ConfigError
        from geoxai.synthetic.fields import block_tiles
        from geoxai.synthetic.params import WorldParams
        from geoxai.synthetic.world import SyntheticWorld

        try:
            first = date.fromisoformat(start) if start else None
            last = date.fromisoformat(end) if end else None
        except ValueError as exc:
            raise ConfigError(f"--start/--end must be dates YYYY-MM-DD: {exc}.") from exc
        world = SyntheticWorld(
            WorldParams(
                tiles=block_tiles(tiles, origin),
                year=year,
                seed=seed,
                margin_px=margin,
                clouds=clouds,
                noise=noise,
                start=first,
                end=last,
            )
        )
        console = Console()
        h, w = world.shape
        console.print(
            f"synthetic world: {len(world.tiles)} tiles, block {w}x{h} px of 10 m "
            f"({world.crs}), {len(world.dates)} acquisitions "
            f"{world.dates[0]}..{world.dates[-1]}"
            if world.dates
            else "no acquisitions",
            highlight=False,
        )
        with Progress(
            TextColumn("[bold]writing[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("", total=len(world.dates))

            def step(done: int, total: int, item_id: str) -> None:
                bar.update(task, completed=done, description=item_id)

            archive = world.write(out, workers=workers, progress=step)
        mb = archive.bytes_written / 1e6
        console.print(f"tiles       {', '.join(t.id for t in world.tiles)}", highlight=False)
        console.print(f"aoi (lon/lat) {', '.join(f'{v:.5f}' for v in world.aoi)}")
        revisit = world.params.revisit_days
        console.print(f"dates       {len(archive.item_ids)} ({revisit}-day revisit)")
        console.print(f"written     {archive.n_files} files, {mb:.1f} MB, {archive.seconds:.1f} s")
        console.print(f"collection  {archive.collection}", highlight=False)
        console.print(f"items       {archive.items_dir} (+ {archive.ndjson.name})", highlight=False)
        console.print(f"truth       {archive.root / 'truth'}", highlight=False)
