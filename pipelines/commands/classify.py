"""``geoxai classify``: slide a scene classifier over a scene to a class map COG."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("classify")
    def classify(
        bundle: str = typer.Option(
            ..., "--bundle", help="Scene classifier bundle (from `geoxai train classify`)."
        ),
        scene: str = typer.Option(
            ...,
            "--scene",
            help="GeoTIFF with the training patches' band layout (EuroSAT: 13 bands, B8A last; "
            "or RGB), same units and resolution.",
        ),
        out: str = typer.Option(..., "--out", help="Class map COG to write (path or s3://)."),
        stride: int = typer.Option(
            None, "--stride", min=1, help="Window step, px (default: half the patch size)."
        ),
        probabilities: bool = typer.Option(
            False, "--probabilities", help="Add one band per class: probability in percent."
        ),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Windows per call."),
        device: str = typer.Option("cpu", "--device", help="Torch device: cpu, cuda ..."),
    ) -> None:
        """Class map of a scene: patch-sized windows, Gaussian-blended class probabilities.

        Band 1 of the COG is the class index (uint8, 255 = no data; the names are in the
        'classes' tag); --probabilities adds one band per class in percent.
        """
        from geoxai.mapping.scene import classify_scene

        res = classify_scene(
            bundle,
            scene,
            out,
            stride=stride,
            probabilities=probabilities,
            batch_size=batch_size,
            device=device,
        )
        h, w = res["shape"]
        top = sorted(res["class_counts"].items(), key=lambda kv: -kv[1])
        shares = ", ".join(f"{c} {n / (h * w):.0%}" for c, n in top if n)
        typer.echo(f"{res['href']}: {h}x{w} px, {res['windows']} windows; {shares}")
