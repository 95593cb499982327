"""Pieces the single-tile commands (``smooth``, ``predict``) share: a transient progress bar
and the store write + JSON summary at the end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer


@contextmanager
def stage_bar(
    console: Any, stage: str, unit: str, description: str, total: int | None
) -> Iterator[Callable[[int, int], None]]:
    """A transient rich bar on ``console``; yields ``progress(done, total)`` for the library."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"[bold]{stage}[/] {{task.description}}"),
        BarColumn(),
        TextColumn(f"{{task.completed}}/{{task.total}} {unit}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done, n: bar.update(task, completed=done, total=n)


def check_out_is_not_input(out: str, inputs: dict[str, str]) -> None:
    """Refuse ``--out`` naming one of the command's inputs (``{"--cube": url}``): with
    ``--overwrite`` the write would delete the input it reads. Checked before any compute."""
    from geoxai.errors import InvalidInputError
    from geoxai.io.location import same_location

    for option, url in inputs.items():
        if url and same_location(out, url):
            raise InvalidInputError(
                f"--out {out!r} is the {option} input {url!r}: writing it would replace the "
                "input. Give another --out."
            )


def write_and_report(
    ds: Any,
    out: str,
    *,
    attrs: dict[str, Any],
    overwrite: bool,
    extra: dict[str, Any],
    summary: dict[str, Any],
) -> None:
    """Write ``ds`` with its commit marker (:func:`geoxai.io.store.write_dataset`) and print one
    JSON line: ``{"out": <url>, **summary}``."""
    from geoxai.io.store import write_dataset

    record = write_dataset(ds, out, attrs=attrs, overwrite=overwrite, extra=extra)
    typer.echo(json.dumps({"out": record["url"], **summary}))
