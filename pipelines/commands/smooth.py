"""``geoxai smooth``: raw tile cube -> model-ready cube (cloud weights, Whittaker, indices)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("smooth")
    def smooth(
        cube: str = typer.Option(
            ...,
            "--cube",
            help="Store URL (path or s3://bucket/prefix) of a committed raw tile cube "
            "('reflectance' (time, band, y, x) with SCL).",
        ),
        out: str = typer.Option(
            ...,
            "--out",
            help="Store URL for 'features' (time, band, y, x) + 'valid', 'n_obs', 'max_gap_days'.",
        ),
        year: int = typer.Option(None, "--year", help="Target year of the fixed time axis."),
        start: str = typer.Option(
            None, "--start", help="ISO start date of the axis instead of 1 January of --year."
        ),
        steps: int = typer.Option(24, "--steps", min=1, help="Number of output time steps."),
        step_days: float = typer.Option(15.0, "--step-days", help="Days per output step."),
        lambda_: float = typer.Option(
            None,
            "--lambda",
            help="Fixed Whittaker lambda on the 15-day scale (100 = the reference); default: "
            "(order, lambda) chosen per pixel by leave-one-out cross-validation.",
        ),
        order: int = typer.Option(2, "--order", help="Difference order of the penalty."),
        margin_days: float = typer.Option(
            45.0, "--margin-days", help="Days before/after the axis whose acquisitions are used."
        ),
        cloud_method: str = typer.Option(
            "auto", "--clouds", help="Cloud weights: auto, scl, spectral or none."
        ),
        buffer_m: float = typer.Option(
            40.0, "--buffer-m", help="Buffer around clouds and shadows, metres."
        ),
        max_cloud: float = typer.Option(
            None, "--max-item-cloud", help="Drop items whose eo:cloud_cover (%) exceeds this."
        ),
        normalization: str = typer.Option(
            None,
            "--normalization",
            help="JSON file {feature: [min, max]} (e.g. from a model bundle) to map to [-1, 1].",
        ),
        device: str = typer.Option(
            "numpy", "--device", help="numpy (CPU path), or a torch device: cpu, cuda, cuda:1."
        ),
        variable: str = typer.Option(
            "reflectance", "--variable", help="Name of the raw cube array in the store."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a committed output."),
    ) -> None:
        """Smooth one tile: per-pixel cloud weights, weighted Whittaker on a 5-day grid, sampled
        at the step centres, vegetation indices; NaN-free output with a validity layer."""
        import time
        from pathlib import Path

        from rich.console import Console

        from geoxai.errors import ConfigError
        from geoxai.io.store import read_cube
        from geoxai.provenance import code_version, config_hash
        from geoxai.temporal.clouds import CloudMaskParams
        from geoxai.temporal.indices import FeatureRanges
        from geoxai.temporal.smoothing import (
            PreprocessParams,
            SmoothingParams,
            preprocess,
            required_halo_px,
        )
        from pipelines.commands._common import (
            check_out_is_not_input,
            stage_bar,
            write_and_report,
        )

        check_out_is_not_input(out, {"--cube": cube})
        console = Console(stderr=True)
        t0 = time.perf_counter()
        if year is None and start is None:
            raise ConfigError("geoxai smooth needs --year (e.g. --year 2021) or --start.")
        norm = None
        if normalization is not None:
            try:
                ranges = json.loads(Path(normalization).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"--normalization {normalization!r} is not a readable JSON file "
                    f'{{"B02": [min, max], ...}}: {exc}'
                ) from exc
            norm = FeatureRanges.from_dict(ranges)
        params = PreprocessParams(
            clouds=CloudMaskParams(
                method=cloud_method, buffer_m=buffer_m, max_item_cloud_cover=max_cloud
            ),
            smoothing=SmoothingParams(
                year=year,
                start=start,
                n_steps=steps,
                step_days=step_days,
                lambda_=lambda_,
                order=order,
                margin_days=margin_days,
            ),
            normalization=norm,
        )
        raw = read_cube(cube, name=variable)
        res = float(raw.attrs.get("resolution_m", 10.0))
        need = required_halo_px(params, res, [str(b) for b in raw["band"].values])
        halo = raw.attrs.get("halo_px")
        if halo is not None and int(halo) < need:
            console.print(
                f"[yellow]warning:[/] cube halo {halo} px < {need} px reached by the cloud "
                f"mask ({buffer_m:g} m buffer, and the shadow projection of the spectral mask); "
                "the core edge may differ from its neighbours."
            )
        tile_name = str(raw.attrs.get("tile_id", cube))
        with stage_bar(console, "smooth", "rows", tile_name, raw.sizes["y"]) as cb:
            ds = preprocess(raw, params, device=None if device == "numpy" else device, progress=cb)
        seconds = time.perf_counter() - t0
        write_and_report(
            ds,
            out,
            attrs={"code_version": code_version(), "config_hash": config_hash(params)},
            overwrite=overwrite,
            extra={"seconds": round(seconds, 3), "cube": cube, "device": device},
            summary={
                "tile_id": ds.attrs.get("tile_id"),
                "shape": list(ds["features"].shape),
                "bands": [str(b) for b in ds["band"].values],
                "valid_fraction": float(ds["valid"].mean()),
                "seconds": round(seconds, 2),
            },
        )
