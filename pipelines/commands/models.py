"""``geoxai models``: model bundles from and to other frameworks (a frozen TensorFlow graph in,
ONNX out) and a bundle's description."""

from __future__ import annotations

import json

import typer

models_app = typer.Typer(
    help="Model bundles from and to other frameworks: import a TensorFlow graph, export to "
    "ONNX, show what a bundle (or .onnx file) reads and returns.",
    no_args_is_help=True,
)


@models_app.command("import-tf")
def import_tf(
    graph: str = typer.Argument(
        ..., help="Frozen TensorFlow GraphDef (.pb), e.g. WRI's superresolve_graph.pb."
    ),
    out: str = typer.Option(..., "--out", help="Bundle directory to create."),
    architecture: str = typer.Option(
        "wri-dsen2-lite",
        "--architecture",
        help="wri-dsen2-lite (WRI's super-resolution: checks its 10 + 6 band inputs) or tf-graph "
        "(any graph of the supported ops, one input; --features names its channels).",
    ),
    features: str = typer.Option(
        None, "--features", help="tf-graph: comma-separated input channel names, in order."
    ),
    outputs: str = typer.Option(
        None, "--outputs", help="tf-graph: comma-separated output names (one per channel)."
    ),
    url: str = typer.Option(None, "--url", help="Where the graph comes from (model.json)."),
    licence: str = typer.Option(None, "--licence", help="tf-graph: licence of the weights."),
) -> None:
    """Import a frozen TensorFlow graph into a geoxai bundle (safetensors + model.json), with
    no TensorFlow: weights from its Const nodes, ops mapped to torch, the graph's SHA-256,
    source and licence recorded. The bundle holds weights derived from the graph: keep it
    under the graph's licence (GPL-3.0 for WRI's)."""
    from geoxai.errors import look_up_option

    look_up_option(architecture, ("wri-dsen2-lite", "tf-graph"), what="architecture")
    if architecture == "wri-dsen2-lite":
        from geoxai.models.dsen2 import GRAPH_URL, import_dsen2_lite

        path = import_dsen2_lite(graph, out, url=url or GRAPH_URL)
    else:
        from geoxai.models.tf_graph_torch import import_tf_bundle

        path = import_tf_bundle(
            graph,
            out,
            features=features.split(",") if features else None,
            outputs=outputs.split(",") if outputs else None,
            url=url,
            licence=licence,
        )
    spec = json.loads((path / "model.json").read_text())
    typer.echo(
        f"bundle {path}: {spec['architecture']}, inputs {','.join(spec['inputs']['features'])} "
        f"-> {','.join(spec['output']['names'])}; graph sha256 {spec['source']['sha256'][:16]}..."
    )


@models_app.command("export-onnx")
def export_onnx_cmd(
    bundle: str = typer.Argument(..., help="Torch bundle: directory or .zip with model.json."),
    out: str = typer.Argument(..., help="The .onnx file to write."),
    opset: int = typer.Option(17, "--opset", min=7, help="ai.onnx opset of the graph."),
    atol: float = typer.Option(
        1e-4, "--atol", min=0, help="Largest allowed |onnxruntime - torch| on the check batch."
    ),
) -> None:
    """Export a TemporalUNet, ASOS, U-Net or scene-classifier bundle to ONNX.

    The graph carries the bundle's model.json (bands, normalization, window, output) as
    metadata 'geoxai.model_json', passes onnx.checker, and is compared with torch through
    onnxruntime before it is written; the .onnx file itself is a bundle for `geoxai run`.
    Prints one JSON line (path, size, SHA-256, opset, outputs, max |onnx - torch|).
    """
    from geoxai.models.onnx_export import export_onnx

    typer.echo(json.dumps(export_onnx(bundle, out, opset=opset, atol=atol)))


@models_app.command("show")
def show_cmd(
    bundle: str = typer.Argument(..., help="Bundle directory, .zip or .onnx file."),
    runtime: str = typer.Option("torch", "--runtime", help="torch, auto or onnxruntime."),
) -> None:
    """Load a bundle (all checks run) and print its model.json and the runtime that runs it."""
    from geoxai.models.bundle import load_bundle

    b = load_bundle(bundle, "cpu", runtime=runtime)
    doc = {"path": str(b.path), "runtime": b.runtime, "model_json": b.spec.model_dump(mode="json")}
    typer.echo(json.dumps(doc, indent=1))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
