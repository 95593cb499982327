"""``geoxai asos``: train an ASOS network, fit its sensitivity table (Ray), map images/cubes."""

from __future__ import annotations

from pathlib import Path

import typer

asos_app = typer.Typer(
    name="asos",
    help="Activation space occlusion sensitivity: train, fit the table (on Ray), map.",
    no_args_is_help=True,
)


def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )  # fmt: skip


@asos_app.command("train")
def train(
    data: Path = typer.Option(
        ..., "--data", help="EuroSAT folder (natural vs anthropogenic) or .npz (images, labels)."
    ),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write."),
    split: str = typer.Option("train", "--split", help="EuroSAT split to train on ('' = all)."),
    units: str = typer.Option("reflectance", "--units", help=".npz units: reflectance or dn."),
    k: int = typer.Option(3, "--k", min=1, help="Activation channels (reference 3)."),
    width: int = typer.Option(16, "--width", min=1, help="U-Net width (first level)."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Training epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Train an ASOS network (Adam, BCE, activation occlusion p=0.2 in half the passes)."""
    import torch

    from geoxai.models.asos_net import ASOSNet
    from geoxai.train.asos import train_asos
    from geoxai.train.trainer import FitParams
    from geoxai.xai.asos import bundle_spec, save_asos_bundle
    from pipelines.asos_fit import FitData, load_images

    fd = FitData(str(data), split=split or None, units=units)
    x, labels, _ = load_images(fd)
    if labels is None:
        from geoxai.errors import InvalidInputError

        raise InvalidInputError(f"{data} has no labels; add a 'labels' (N,) array of 0/1.")
    torch.manual_seed(seed)
    net = ASOSNet(x.shape[1], k, width=width)
    with _progress() as prog:
        task = prog.add_task(f"training on {len(x)} images", total=epochs)
        hist = train_asos(
            net, x, labels, FitParams(epochs=epochs, lr=lr, seed=seed),
            on_epoch=lambda r: prog.update(task, advance=1, description=f"loss {r['loss']:.3f}"),
        )  # fmt: skip
    spec = bundle_spec(net, name=f"asos-{data.stem}", description=f"ASOS trained on {data}")
    save_asos_bundle(out, net, spec)
    typer.echo(
        f"bundle {out}: final loss {hist[-1]['loss']:.3f}, accuracy {hist[-1]['accuracy']:.2f}"
        f" on {len(x)} images; next: geoxai asos fit --bundle {out} --data {data} --out DIR"
    )


@asos_app.command("fit")
def fit(
    bundle: Path = typer.Option(..., "--bundle", help="ASOS bundle (from `geoxai asos train`)."),
    data: Path = typer.Option(..., "--data", help="EuroSAT folder or .npz with 'images'."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write, with the table."),
    split: str = typer.Option("train", "--split", help="EuroSAT split ('' = all)."),
    units: str = typer.Option("reflectance", "--units", help=".npz units: reflectance or dn."),
    edge: float = typer.Option(0.2, "--edge", help="Activation-space cube edge."),
    min_pixels: int = typer.Option(100, "--min-pixels", help="Pixels of an image to occlude."),
    fill: float = typer.Option(0.0, "--fill", help="Occlusion fill value."),
    shards: int = typer.Option(4, "--shards", min=1, help="Partial fits (Ray tasks)."),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Local Ray CPUs; 0 = fit in this process without Ray."
    ),
    address: str = typer.Option("", "--ray-address", help="Existing Ray cluster address."),
) -> None:
    """Fit the ASOS sensitivity table (sharded on Ray, merged exactly) into a new bundle."""
    from geoxai.xai.asos import ASOSParams
    from pipelines.asos_fit import (
        FitData,
        fit_local,
        fit_sharded,
        init_local_ray,
        write_fitted_bundle,
    )

    params = ASOSParams(edge=edge, fill=fill, min_pixels=min_pixels)
    fd = FitData(str(data), split=split or None, units=units)
    if workers == 0 and not address:
        rep = fit_local(bundle, fd, params)
    else:
        import ray

        init_local_ray(num_cpus=workers or None, address=address or None)
        try:
            with _progress() as prog:
                task = prog.add_task("fitting shards", total=shards)
                rep = fit_sharded(
                    bundle, fd, params, n_shards=shards,
                    progress=lambda d, n: prog.update(task, completed=d),
                )  # fmt: skip
        finally:
            ray.shutdown()
    write_fitted_bundle(bundle, rep.table, out)
    t = rep.table
    typer.echo(
        f"fitted {rep.n_images} images in {rep.n_shards} shard(s), {rep.wall_s:.1f} s: "
        f"{int((t.count > 0).sum())} of {t.n_cubes} cubes with evidence -> {out}"
    )


def _read_image(path: Path, index: int) -> tuple:
    """(C, H, W) array, units guess, rasterio profile or None, transform or None."""
    import numpy as np

    from geoxai.errors import InvalidInputError

    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            imgs = z["images"] if "images" in z else None
        if imgs is None:
            raise InvalidInputError(f"{path} has no 'images' array.")
        img = imgs[index] if imgs.ndim == 4 else imgs
        return img.astype(np.float32), "reflectance", None, None
    import rasterio

    from geoxai.geo.bands import S2_BANDS
    from geoxai.io.eurosat import EUROSAT_FILE_BANDS

    with rasterio.open(path) as src:
        arr = src.read()
        profile = src.profile
        tr = src.transform
    if arr.shape[0] == len(EUROSAT_FILE_BANDS):
        arr = arr[[EUROSAT_FILE_BANDS.index(b) for b in S2_BANDS]]
    units = "dn" if np.issubdtype(arr.dtype, np.integer) else "reflectance"
    transform = [tr.a, tr.b, tr.c, tr.d, tr.e, tr.f]
    return arr.astype(np.float32), units, profile, transform


def _read_cube(url: str, time_index: int | None) -> tuple:
    import warnings

    import numpy as np

    from geoxai.geo.bands import S2_BANDS
    from geoxai.io.store import read_cube

    da = read_cube(url)
    bands = [b for b in S2_BANDS if b in [str(v) for v in da["band"].values]]
    da = da.sel(band=bands)
    x = np.asarray(da.values, np.float32)
    if x.ndim == 4:
        if time_index is not None:
            x = x[time_index]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
                x = np.nanmedian(x, axis=0).astype(np.float32)
    return x, list(da.attrs.get("transform", []))[:6] or None


@asos_app.command("map")
def map_(
    bundle: Path = typer.Option(..., "--bundle", help="ASOS bundle with a fitted table."),
    image: Path = typer.Option(None, "--image", help="GeoTIFF (10 or 13 bands) or .npz."),
    cube: str = typer.Option("", "--cube", help="Cube store URL (local path or s3://)."),
    out: Path = typer.Option(..., "--out", help="Output: .tif (GeoTIFF) or .npz."),
    index: int = typer.Option(0, "--index", help="Image index inside an .npz."),
    time_index: int = typer.Option(
        -1, "--time-index", help="Cube date to map; -1 = per-pixel median over time."
    ),
    units: str = typer.Option("auto", "--units", help="auto, reflectance or dn."),
    dn_offset: float = typer.Option(0.0, "--dn-offset", help="Offset of DN inputs (-0.1 ...)."),
    min_evidence: int = typer.Option(1, "--min-evidence", help="Records a cube needs."),
    figure: Path = typer.Option(
        None, "--figure", help="Also write image | activations | ASOS | OSM | Grad-CAM (PNG)."
    ),
) -> None:
    """Map ASOS sensitivity of one image or cube (U-Net once, or blended windows, + lookup)."""
    import numpy as np

    from geoxai.errors import InvalidInputError
    from geoxai.models.asos_net import to_network_input
    from geoxai.xai.asos import asos_map, load_asos_bundle

    if (image is None) == (not cube):
        raise InvalidInputError("give exactly one of --image and --cube.")
    b, table = load_asos_bundle(bundle)
    profile = None
    if image is not None:
        x, guess, profile, transform = _read_image(image, index)
    else:
        x, transform = _read_cube(cube, None if time_index < 0 else time_index)
        guess = "reflectance"
    u = guess if units == "auto" else units
    big = max(x.shape[-2:]) > 512
    window = b.window_params() if big else None
    sens, act = asos_map(
        b.net, table, x, units=u, dn_offset=dn_offset, min_evidence=min_evidence,
        window=window, transform=transform if big else None,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in (".tif", ".tiff"):
        import rasterio

        prof = dict(profile or {"driver": "GTiff"})
        prof.update(count=1 + act.shape[0], dtype="float32", nodata=np.nan, height=sens.shape[0])
        prof.update(width=sens.shape[1], driver="GTiff")
        if profile is None and transform is not None:
            from affine import Affine

            prof["transform"] = Affine(*transform)
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(np.concatenate([sens[None], act]).astype(np.float32))
            dst.set_band_description(1, "asos_sensitivity")
            for i in range(act.shape[0]):
                dst.set_band_description(i + 2, f"asos_a{i}")
    else:
        np.savez_compressed(out, sensitivity=sens, activations=act)
    if figure is not None:
        from geoxai.xai.baselines import comparison_figure, gradcam_map, occlusion_map

        xin, _ = to_network_input(x, u, dn_offset=dn_offset, nan="mask")
        small = max(x.shape[-2:]) <= 512
        osm = occlusion_map(b.net, xin) if small else None
        cam = gradcam_map(b.net, xin) if small else None
        comparison_figure(figure, xin, act, sens, osm, cam, title=str(image or cube))
    ok = np.isfinite(sens)
    typer.echo(
        f"{out}: {sens.shape[0]}x{sens.shape[1]} px, {ok.mean():.0%} with evidence, "
        f"sensitivity {np.nanmin(sens) if ok.any() else float('nan'):.4f}.."
        f"{np.nanmax(sens) if ok.any() else float('nan'):.4f}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(asos_app, name="asos")
