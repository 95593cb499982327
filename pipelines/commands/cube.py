"""``geoxai cube``: build and commit the raw Sentinel-2 cube of one tile (STAC -> Zarr)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("cube")
    def cube(
        stac: str = typer.Option(
            ...,
            "--stac",
            help="STAC API root URL, or local item files / ndjson / a static catalog.",
        ),
        collection: str = typer.Option(
            "sentinel-2-l2a", "--collection", help="STAC collection id."
        ),
        tile_id: str = typer.Option(
            ..., "--tile", help="Tile id like 32631_E0096_N0938 (list them with `geoxai tiles`)."
        ),
        start: str = typer.Option(..., "--start", help="First day, ISO date (inclusive)."),
        end: str = typer.Option(..., "--end", help="Last day, ISO date (inclusive)."),
        out: str = typer.Option(
            ..., "--out", help="Store URL: a local path or s3://bucket/prefix (Zarr v3)."
        ),
        halo: int | None = typer.Option(
            None,
            "--halo",
            min=0,
            help="Halo width in 10 m pixels (default: the run config's default "
            "processing.halo_px, 64, which fits the demo bundles; with --no-scl at least the "
            "halo smoothing needs without SCL, 125).",
        ),
        tile_size: int = typer.Option(
            6000,
            "--tile-size",
            min=20,
            help="Tile edge in metres (6000 = the standard grid; smaller for tests and demos).",
        ),
        max_cloud: float | None = typer.Option(
            None, "--max-cloud", min=0, max=100, help="Keep items with eo:cloud_cover <= PCT."
        ),
        bands: str | None = typer.Option(
            None,
            "--bands",
            help="Comma-separated bands (default: B02..B12, B8A and SCL; aliases like red ok).",
        ),
        no_scl: bool = typer.Option(
            False,
            "--no-scl",
            help="Inputs without SCL (e.g. L1C or other processors): read no SCL; smooth "
            "such cubes with `--clouds spectral` (run config: processing.cloud_mask: spectral).",
        ),
        resampling: str = typer.Option(
            "bilinear",
            "--resampling",
            help="Resampling of 20 m / other-zone reflectance: bilinear, nearest, cubic, "
            "average (SCL is always nearest).",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a committed cube at --out."
        ),
    ) -> None:
        """Search STAC for one tile, stack it on the tile's 10 m UTM grid and commit it as Zarr.

        The cube is float32 reflectance (DN * scale + offset) with SCL (none with --no-scl),
        and the items' sun angles along time, NaN = nodata; it is
        committed with a marker written last, so an interrupted run leaves nothing that reads
        as complete. Credentials for s3:// come from AWS_* variables.
        """
        import time

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Table

        from geoxai.errors import ConfigError
        from geoxai.geo.bands import CUBE_BANDS, S2_BANDS, SCL, canonical_band_name
        from geoxai.geo.grid import tile_from_id
        from geoxai.io.tile_cube import build_tile_cube

        chosen = tuple(b.strip() for b in bands.split(",") if b.strip()) if bands else CUBE_BANDS
        if no_scl:
            if bands and any(canonical_band_name(b) == SCL for b in chosen):
                raise ConfigError("--no-scl and --bands with SCL contradict each other; drop one.")
            chosen = chosen if bands else S2_BANDS
        tile = tile_from_id(
            tile_id, default_halo(no_scl) if halo is None else halo, tile_size_m=tile_size
        )
        console = Console(stderr=True)
        t0 = time.perf_counter()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(f"cube {tile.id}: searching + reading", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=max(total, 1))

            record = build_tile_cube(
                stac,
                tile,
                out,
                collection=collection,
                start=start,
                end=end,
                max_cloud=max_cloud,
                bands=chosen,
                resampling=resampling,
                overwrite=overwrite,
                progress=progress,
            )
        table = Table(title=f"cube {tile.id}", show_header=False)
        table.add_row("store", record.url)
        table.add_row("items", f"{record.n_items} ({record.item_ids[0]} .. {record.item_ids[-1]})")
        table.add_row("shape (time, band, y, x)", " x ".join(map(str, record.shape)))
        table.add_row("stored", f"{record.nbytes / 2**20:.1f} MiB")
        how = record.build_path + (f" ({record.fallback})" if record.fallback else "")
        table.add_row("built by", how)
        table.add_row("wall time", f"{time.perf_counter() - t0:.1f} s")
        Console().print(table)


def default_halo(no_scl: bool) -> int:
    """``geoxai cube``'s default halo: the run config's default ``processing.halo_px`` (which
    the demo bundles fit), raised to what smoothing needs for cubes without SCL (the spectral
    mask's reach + the pooling of the per-pixel lambda choice)."""
    from geoxai.config import ProcessingConfig
    from geoxai.temporal.clouds import CloudMaskParams
    from geoxai.temporal.smoothing import PreprocessParams, required_halo_px

    halo = int(ProcessingConfig.model_fields["halo_px"].default)
    if no_scl:
        params = PreprocessParams(clouds=CloudMaskParams(method="spectral"))
        halo = max(halo, required_halo_px(params, 10.0))
    return halo
