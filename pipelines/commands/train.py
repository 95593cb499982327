"""``geoxai train NAME CONFIG``: every training workflow through one command.

The sub-commands come from :func:`geoxai.train.workflows.workflow_names` (added on first use of
``geoxai train``: reading the registry imports every workflow module, and torch); this module
holds no per-workflow code. ``geoxai train example NAME`` prints a commented config to start from.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import typer
from typer.core import TyperGroup


class _WorkflowGroup(TyperGroup):
    """``geoxai train``: one sub-command per registered workflow, added when the group is first
    listed or resolved (so ``geoxai --help`` and the other commands do not import them)."""

    _workflows_added = False

    def _add_workflows(self) -> None:
        if self._workflows_added:
            return
        from geoxai.train.workflows import workflow_names  # lazy: torch, every workflow module

        example = self.commands.pop("example", None)
        for name in workflow_names():
            one = typer.Typer(add_completion=False)
            one.command(name)(_make_command(name))
            self.commands[name] = typer.main.get_command(one)
        if example is not None:
            self.commands["example"] = example
        self._workflows_added = True

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_workflows()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_workflows()
        return super().get_command(ctx, cmd_name)


train_app = typer.Typer(
    cls=_WorkflowGroup,
    help="Train a model from a YAML/JSON config (checkpoints, resume, metrics, bundle).",
    no_args_is_help=True,
)


def _summary(bundle: Path, out_dir: str | None) -> str:
    metrics = Path(out_dir) / "metrics.json" if out_dir else None
    if metrics is None or not metrics.is_file():
        return f"bundle: {bundle}"
    hist = json.loads(metrics.read_text())
    last = hist[-1] if hist else {}
    shown = ", ".join(
        f"{k} {v:.4g}" for k, v in last.items() if k not in ("epoch", "seconds", "lr")
        and isinstance(v, float)
    )  # fmt: skip
    return f"bundle: {bundle}\n{len(hist)} epochs; last: {shown}\nmetrics: {metrics}"


def _make_command(name: str):
    def command(
        config: Path = typer.Argument(..., help="YAML or JSON config file."),
        resume: bool = typer.Option(
            True, "--resume/--no-resume", help="Continue from out_dir/checkpoints/last.pt."
        ),
        workers: int = typer.Option(
            1, "--workers", min=1, help="Ray Train workers (data-parallel); 1 = this process."
        ),
        ray_address: str = typer.Option(
            "", "--ray-address", help="Existing Ray cluster; default a local one on loopback."
        ),
    ) -> None:
        from geoxai.train.workflows import load_workflow_config, run_workflow

        if workers > 1:
            from pipelines.train_ray import run_distributed

            bundle = run_distributed(
                name, config, workers=workers, resume=resume, address=ray_address or None
            )
            cfg = load_workflow_config(name, config)
        else:
            cfg = load_workflow_config(name, config)
            bundle = run_workflow(name, cfg, resume=resume)
        typer.echo(_summary(bundle, getattr(cfg, "out_dir", None)))

    command.__doc__ = (
        f"Train the {name!r} workflow from CONFIG (start from `geoxai train example {name}`)."
    )
    return command


def _example(
    name: str = typer.Argument(..., help="Workflow name."),
) -> None:
    """Print a commented example config of a workflow (every field, default and meaning)."""
    from geoxai.train.workflows import example_config

    typer.echo(example_config(name), nl=False)


def register(app: typer.Typer) -> None:
    train_app.command("example")(_example)
    app.add_typer(train_app, name="train")
