"""``geoxai explain``: SpacEX attribution maps and the IoU comparison of explanation methods."""

from __future__ import annotations

from pathlib import Path

import typer

explain_app = typer.Typer(
    name="explain",
    help="Explanations of a frozen classifier: SpacEX maps and the method comparison table.",
    no_args_is_help=True,
)


@explain_app.command("spacex")
def spacex(
    bundle: Path = typer.Option(..., "--bundle", help="SpacEX bundle (`geoxai train spacex`)."),
    image: Path = typer.Option(..., "--image", help="GeoTIFF (10 or 13 bands) or .npz."),
    out: Path = typer.Option(..., "--out", help="Attribution COG (.tif); a PNG goes beside it."),
    index: int = typer.Option(0, "--index", help="Image index inside an .npz."),
    units: str = typer.Option("auto", "--units", help="auto, reflectance or dn."),
    dn_offset: float = typer.Option(0.0, "--dn-offset", help="Offset of DN inputs (-0.1 ...)."),
    png: Path = typer.Option(None, "--png", help="Figure path (default: OUT with .png)."),
) -> None:
    """Map |maximized - minimized| (mean over bands) of one image; write COG + PNG."""
    import numpy as np
    from affine import Affine

    from geoxai.io.cog import write_array_cog
    from geoxai.models.asos_net import to_network_input
    from geoxai.xai.asos import DEFAULT_TRANSFORM
    from geoxai.xai.spacex import load_spacex_bundle, spacex_attribution, spacex_figure
    from pipelines.commands.asos import _read_image

    b, _ = load_spacex_bundle(bundle)
    x, guess, profile, transform = _read_image(image, index)
    u = guess if units == "auto" else units
    big = max(x.shape[-2:]) > 512
    attr = spacex_attribution(
        b, x, units=u, dn_offset=dn_offset,
        window=b.window_params() if big else None, transform=transform if big else None,
    )  # fmt: skip
    crs = (profile or {}).get("crs")
    info = write_array_cog(
        attr, str(out), crs=crs, transform=Affine(*(transform or DEFAULT_TRANSFORM)),
        band_names=["spacex_attribution"], tags={"spacex_bundle": str(bundle)},
    )  # fmt: skip
    fig = png or out.with_suffix(".png")
    xin, _ = to_network_input(x, u, dn_offset=dn_offset, nan="mask")
    spacex_figure(fig, b.net, xin, attr, title=str(image))
    ok = np.isfinite(attr)
    typer.echo(
        f"{info['href']} + {fig}: {attr.shape[0]}x{attr.shape[1]} px, attribution "
        f"{np.nanmin(attr) if ok.any() else float('nan'):.4f}.."
        f"{np.nanmax(attr) if ok.any() else float('nan'):.4f} (reflectance)"
    )


@explain_app.command("evaluate")
def evaluate(
    asos_bundle: Path = typer.Option(..., "--asos-bundle", help="ASOS bundle with a table."),
    spacex_bundle: Path = typer.Option(None, "--spacex-bundle", help="SpacEX bundle."),
    images: Path = typer.Option(
        ..., "--images", help=".npz with images (N, C, H, W), masks (N, H, W), labels (N,)."
    ),
    q: float = typer.Option(10.0, "--q", help="Top fraction of pixels, percent."),
    methods: str = typer.Option(
        "spacex,asos,osm,gradcam,deeplift", "--methods", help="Comma-separated methods."
    ),
    label: int = typer.Option(
        -1, "--label", help="Only images with this label (needs 'labels'); -1 = all."
    ),
    units: str = typer.Option("reflectance", "--units", help="reflectance or dn."),
    out: Path = typer.Option(
        Path("xai_iou"), "--out", help="Writes OUT.json and OUT.md (default ./xai_iou.*)."
    ),
) -> None:
    """IoU of each method's top-q % pixels with the class mask, as a table (+ JSON/markdown)."""
    from geoxai.errors import InvalidInputError
    from geoxai.xai.evaluate import evaluate_attributions, load_eval_images, write_table

    imgs, masks, labels = load_eval_images(images)
    if label >= 0:
        if labels is None:
            raise InvalidInputError(f"--label {label} needs a 'labels' array in {images}.")
        keep = labels == label
        imgs, masks = imgs[keep], masks[keep]
    names = [m.strip() for m in methods.split(",") if m.strip()]
    table = evaluate_attributions(
        asos_bundle, spacex_bundle, imgs, masks, q=q, methods=names, units=units
    )
    js, md = write_table(table, out)
    typer.echo(table.to_markdown())
    typer.echo(f"written: {js}, {md}")


def register(app: typer.Typer) -> None:
    app.add_typer(explain_app, name="explain")
