"""The training workflows behind ``geoxai train NAME CONFIG``: every workflow module imported (each
registers itself, see :func:`geoxai.train.registry.register_workflow`), config loading, dispatch.

The command line knows nothing about any workflow: it looks the name up in :data:`WORKFLOWS`,
loads the config with :func:`load_workflow_config` and calls :func:`run_workflow`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

# isort: off
from geoxai.train import segment
from geoxai.train import classify
from geoxai.train import temporal_workflow
from geoxai.train import asos
from geoxai.train import spacex

# isort: on
from geoxai.config import did_you_mean, read_config_file
from geoxai.errors import ConfigError, look_up_option
from geoxai.train.registry import WORKFLOWS, Workflow

__all__ = [
    "WORKFLOWS",
    "MODULES",
    "workflow_names",
    "workflow_config_class",
    "load_workflow_config",
    "run_workflow",
    "example_config",
]


MODULES = (segment, classify, temporal_workflow, asos, spacex)
"""The workflow modules (importing one registers its workflow with
:func:`~geoxai.train.registry.register_workflow`), in the order of ``geoxai train --help`` and of
the "Valid choices" in errors."""


def _ordered() -> dict[str, Workflow]:
    """:data:`WORKFLOWS` in :data:`MODULES` order (whatever imported them first); others last."""
    rank = {m.__name__: i for i, m in enumerate(MODULES)}
    return dict(
        sorted(WORKFLOWS.items(), key=lambda kv: rank.get(kv[1].train.__module__, len(rank)))
    )


def workflow_names() -> list[str]:
    """Names accepted by ``geoxai train``."""
    return list(_ordered())


def _entry(name: str) -> Workflow:
    workflows = _ordered()
    look_up_option(name, workflows, what="training workflow")
    return workflows[name]


def workflow_config_class(name: str) -> type[BaseModel]:
    """The pydantic config class of workflow ``name``."""
    return _entry(name).config


def load_workflow_config(name: str, path: str | Path | dict[str, Any]) -> BaseModel:
    """Read and validate the config of workflow ``name`` from a YAML/JSON file (or a dict).

    Raises:
        ConfigError: unknown workflow, unreadable file, unknown key (with a did-you-mean
            hint) or bad value; every problem is listed with its location.
    """
    cls = workflow_config_class(name)
    what = f"{name} training config"
    data = dict(path) if isinstance(path, dict) else read_config_file(path, what)
    where = "given" if isinstance(path, dict) else repr(str(path))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            hint = ""
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(tuple(p for p in err["loc"] if not isinstance(p, int)), cls)
            lines.append(f"  {loc or '(top level)'}: {err['msg']}.{hint}")
        raise ConfigError(f"The {what} {where} is invalid:\n" + "\n".join(lines)) from None


def run_workflow(name: str, config: BaseModel, *, resume: bool = True) -> Path:
    """Train workflow ``name`` with a validated ``config``; returns the bundle directory."""
    wf = _entry(name)
    if not isinstance(config, wf.config):
        raise ConfigError(
            f"workflow {name!r} takes a {wf.config.__name__}, got a {type(config).__name__}; "
            f"load it with load_workflow_config({name!r}, path)."
        )
    return Path(wf.train(config, resume=resume))


def _model_of(ann: Any) -> tuple[type[BaseModel] | None, bool]:
    """(pydantic model inside ``ann``, whether it is a list of them)."""
    origin = typing.get_origin(ann)
    if origin in (list, tuple):
        inner = _model_of(typing.get_args(ann)[0])[0] if typing.get_args(ann) else None
        return inner, True
    for a in typing.get_args(ann) or (ann,):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a, False
    return None, False


def _template(
    model: type[BaseModel], indent: int, values: dict[str, Any] | None = None
) -> list[str]:
    """YAML lines of ``model``'s fields; ``values`` overrides the field defaults (the instance a
    parent's ``default_factory`` makes)."""
    pad = " " * indent
    lines: list[str] = []
    for name, f in model.model_fields.items():
        doc = (f.description or "").replace("\n", " ")
        sub, is_list = _model_of(f.annotation)
        required = f.is_required()
        given = values is not None and name in values
        default = values[name] if values is not None and given else None
        if not required and not given:
            default = f.get_default(call_default_factory=True, validated_data={})
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        if sub is not None and (required or isinstance(default, dict) or is_list):
            lines.append(f"{pad}{name}:{'  # ' + doc if doc else ''}")
            inner = default if isinstance(default, dict) else None
            body = _template(sub, indent + 4 if is_list else indent + 2, inner)
            if is_list and body:
                body[0] = " " * (indent + 2) + "- " + body[0].lstrip()
            lines += body
            continue
        if required and not given:
            value, note = "", f"REQUIRED. {doc}"
        else:
            value = yaml.safe_dump(default, default_flow_style=True, width=1000).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            note = doc
        lines.append(f"{pad}{name}: {value}".rstrip() + (f"  # {note}" if note else ""))
    return lines


def example_config(name: str) -> str:
    """A commented YAML config of workflow ``name``: every field with its default and its
    description; required fields are marked ``REQUIRED`` (fill them in)."""
    cls = workflow_config_class(name)
    head = [f"# geoxai train {name} CONFIG  ({cls.__name__})"]
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc:
        head.append(f"# {doc[0]}")
    return "\n".join(head + _template(cls, 0)) + "\n"
