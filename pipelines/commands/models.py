"""``geoxai models``: model bundles from other frameworks (a frozen TensorFlow graph)."""

from __future__ import annotations

import json

import typer

models_app = typer.Typer(
    help="Create model bundles from other frameworks' files.",
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


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
