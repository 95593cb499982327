"""The ``geoxai`` command line.

Each module in :mod:`pipelines.commands` defines ``register(app)`` and adds its subcommands;
they are discovered here, so adding a command never touches this file. Heavy imports happen
inside the commands, so ``geoxai --help`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from geoxai.errors import GeoXAIError

app = typer.Typer(
    name="geoxai",
    help="Explained maps from Sentinel time series: STAC -> Zarr cubes -> Ray -> Zarr/COG/STAC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from geoxai.provenance import code_version

        typer.echo(code_version())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """geoxai: country-scale mapping runs with explanations."""


def _register_all() -> None:
    from pipelines import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"pipelines.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    """Console entry point: typed geoxai errors become one red line and exit code 2."""
    try:
        app()
    except GeoXAIError as exc:
        from rich.console import Console

        Console(stderr=True).print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False
        )
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
