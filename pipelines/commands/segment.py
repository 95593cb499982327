"""``geoxai segment predict``: run a rasters+mask U-Net bundle over rasters to a COG.

Training is ``geoxai train segment CONFIG`` (see geoxai.train.segment.SegmentConfig).
"""

from __future__ import annotations

import typer

segment_app = typer.Typer(
    help="U-Net from your own rasters and mask: prediction (train with `geoxai train segment`).",
    no_args_is_help=True,
)


@segment_app.command("predict")
def predict(
    bundle: str = typer.Option(
        ..., "--bundle", help="Bundle folder written by `geoxai train segment` (out_dir/bundle)."
    ),
    raster: list[str] = typer.Option(
        None,
        "--raster",
        help="A feature raster, repeated in the training order (same bands; the training "
        "config's band selection and nodata apply). None: the training rasters and area.",
    ),
    out: str = typer.Option(..., "--out", help="Output COG (.tif) of probabilities."),
) -> None:
    """Predict probabilities with Gaussian-blended windows and write a Cloud-Optimized GeoTIFF."""
    from geoxai.train.segment import predict_segment, training_rasters

    rasters = training_rasters(bundle, raster) if raster else None
    path = predict_segment(bundle, rasters, out)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(segment_app, name="segment")
