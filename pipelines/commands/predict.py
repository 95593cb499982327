"""``geoxai predict``: Gaussian-blended window inference of one tile's model-ready cube."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        bundle: str = typer.Option(
            ..., "--bundle", help="Model bundle: a directory (or .zip) with model.json + weights."
        ),
        cube: str = typer.Option(
            ...,
            "--cube",
            help="Store URL (path or s3://bucket/prefix) of a committed model-ready cube "
            "('features' (time, band, y, x), optional 'valid'/'quality' (y, x) layer).",
        ),
        out: str = typer.Option(
            ..., "--out", help="Store URL to write 'prediction' (output, y, x) and 'weight'."
        ),
        device: str = typer.Option("cpu", "--device", help="Torch device: cpu, cuda, cuda:1 ..."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per model call."),
        autocast: str = typer.Option(
            "none", "--autocast", help="Mixed precision on GPU: none, bf16 or fp16."
        ),
        variable: str = typer.Option(
            "features", "--variable", help="Name of the cube array inside the store."
        ),
        valid_layer: str = typer.Option(
            None,
            "--valid-layer",
            help="Name of the (y, x) validity layer; default the first of valid/validity/quality.",
        ),
        method: str = typer.Option(
            "forward", "--method", help="Network method to blend (e.g. 'activations' for ASOS)."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a committed output."),
        runtime: str = typer.Option(
            "auto",
            "--runtime",
            help="Forward pass on: auto (onnxruntime on CPU when it agrees with torch), torch, "
            "onnxruntime. ONNX bundles always run on onnxruntime.",
        ),
    ) -> None:
        """Predict one tile: lattice windows, Gaussian blending, written with a commit marker.

        The bundle is checked against the cube (features, time steps, size, halo) before any
        compute; windows sit on the UTM-zone lattice so adjacent tiles agree in their overlap.
        """
        import time

        from rich.console import Console

        from geoxai.errors import look_up_option
        from geoxai.io.store import read_dataset
        from geoxai.models.bundle import load_bundle
        from geoxai.models.bundle_spec import validity_mask
        from geoxai.provenance import code_version
        from pipelines.commands._common import check_out_is_not_input, stage_bar, write_and_report

        check_out_is_not_input(out, {"--cube": cube})
        ac = look_up_option(autocast, ["none", "bf16", "fp16"], what="autocast mode")
        console = Console(stderr=True)
        t0 = time.perf_counter()
        rt = look_up_option(runtime, ["auto", "torch", "onnxruntime"], what="runtime")
        b = load_bundle(bundle, device, runtime=rt)
        ds = read_dataset(cube, chunks=None)
        if variable not in ds.data_vars:
            from geoxai.errors import InvalidInputError

            raise InvalidInputError(
                f"Store {cube} has no array {variable!r}; it has {sorted(map(str, ds.data_vars))}. "
                "Pass --variable."
            )
        da = ds[variable]
        da.attrs = {**ds.attrs, **da.attrs}
        b.check_cube(da)  # fail before reading pixels
        valid = validity_mask(ds, valid_layer)
        with stage_bar(
            console, "predict", "windows", str(da.attrs.get("tile_id", cube)), None
        ) as cb:
            result = b.predict_dataset(
                da.load(),
                valid,
                batch_size=batch_size,
                autocast=None if ac == "none" else ac,
                method=method,
                progress=cb,
            )
        seconds = time.perf_counter() - t0
        w = result["weight"].values
        write_and_report(
            result,
            out,
            attrs={"code_version": code_version(), "bundle_spec": b.spec.model_dump(mode="json")},
            overwrite=overwrite,
            extra={
                "seconds": round(seconds, 3),
                "cube": cube,
                "device": str(b.device),
                "runtime": b.runtime,
            },
            summary={
                "tile_id": result.attrs.get("tile_id"),
                "outputs": [str(n) for n in result["output"].values],
                "shape": list(result["prediction"].shape),
                "valid_fraction": float((w > 0).mean()),
                "seconds": round(seconds, 2),
            },
        )
