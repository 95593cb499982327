"""The training workflows behind ``geoxai train NAME CONFIG``: a registry, config loading, dispatch.

Each workflow is a pydantic config class (``extra="forbid"``, with an ``out_dir: str`` and a
``training:`` :class:`~geoxai.train.trainer.FitParams` section) and a function
``train_x(config, *, resume=True) -> Path`` that runs :func:`geoxai.train.trainer.fit` and writes
a model bundle (with the config saved as ``train_config.yaml``, see :func:`save_config`). The
command line knows nothing about any workflow: it looks the name up in :data:`WORKFLOWS`, loads
the config with :func:`load_workflow_config` and calls :func:`run_workflow`.

The ``training:`` section every config has (all optional)::

    training:
      epochs: 30            # passes over the training data
      lr: 0.001             # learning rate
      batch_size: 16
      seed: 0               # everything random is seeded from it
      patience: 5           # early stopping after 5 epochs without improvement (null: never)
      monitor: val_loss     # metric selecting the best epoch
      mode: min             # min | max
      lr_schedule: constant # constant | cosine | linear_decay
"""

from __future__ import annotations

import importlib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geoxai.config import did_you_mean, read_config_file
from geoxai.errors import ConfigError, look_up_option

__all__ = [
    "WORKFLOWS",
    "workflow_names",
    "workflow_config_class",
    "load_workflow_config",
    "run_workflow",
    "save_config",
    "example_config",
]

WORKFLOWS: dict[str, str] = {
    "segment": "geoxai.train.segment:SegmentConfig:train_segment",
    "classify": "geoxai.train.classify:ClassifyConfig:train_classifier",
    "temporal": "geoxai.train.temporal_workflow:TemporalConfig:train_temporal_workflow",
    "asos": "geoxai.train.asos:AsosConfig:train_asos_workflow",
    "spacex": "geoxai.train.spacex:SpacexConfig:train_spacex",
}
"""Workflow name -> ``"module:ConfigClass:train_function"``."""


CONFIG_FILE = "train_config.yaml"
"""Name of the saved config inside a bundle directory."""


def workflow_names() -> list[str]:
    """Names accepted by ``geoxai train``."""
    return list(WORKFLOWS)


def _entry(name: str) -> tuple[str, str, str]:
    look_up_option(name, WORKFLOWS, what="training workflow")
    module, cls, fn = WORKFLOWS[name].split(":")
    return module, cls, fn


def _import(name: str) -> types.ModuleType:
    module = _entry(name)[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            raise ConfigError(
                f"training workflow {name!r} is not available: its module {module!r} is not "
                "installed in this geoxai; update geoxai or pick one of "
                f"{', '.join(WORKFLOWS)}."
            ) from exc
        raise ConfigError(
            f"training workflow {name!r} needs the Python package {exc.name!r}, which is not "
            f"installed; install it (pip install {exc.name}) and retry."
        ) from exc


def workflow_config_class(name: str) -> type[BaseModel]:
    """The pydantic config class of workflow ``name``."""
    return getattr(_import(name), _entry(name)[1])


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
    module = _import(name)
    _, cls_name, fn_name = _entry(name)
    cls = getattr(module, cls_name)
    if not isinstance(config, cls):
        raise ConfigError(
            f"workflow {name!r} takes a {cls_name}, got a {type(config).__name__}; load it "
            f"with load_workflow_config({name!r}, path)."
        )
    return Path(getattr(module, fn_name)(config, resume=resume))


def save_config(config: BaseModel, directory: str | Path) -> Path:
    """Write ``config`` as ``directory/train_config.yaml`` (what the bundle was trained with)."""
    path = Path(directory) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleOptions(_Strict):
    """How the written bundle is described and run (inference windows)."""

    name: str | None = Field(None, description="Bundle name (default from out_dir).")
    description: str = Field("", description="Free text stored in model.json.")
    window: int = Field(128, ge=8, description="Inference window kept per model call, px.")
    stride: int = Field(64, ge=1, description="Step between inference windows, px.")
    context: int = Field(16, ge=0, description="Extra input px around each window.")

    @model_validator(mode="after")
    def _stride(self) -> BundleOptions:
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} must be <= window {self.window}.")
        return self
