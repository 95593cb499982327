"""The registry of training workflows: :func:`register_workflow` and what every workflow module
shares (:class:`BundleOptions`, :data:`CONFIG_FILE`).

Each workflow is a pydantic config class (``extra="forbid"``, with an ``out_dir: str`` and a
``training:`` :class:`~geoxai.train.trainer.FitParams` section) and a function
``train_x(config, *, resume=True) -> Path`` that runs :func:`geoxai.train.trainer.fit` and writes
a model bundle (with the config saved as ``train_config.yaml`` by
:func:`geoxai.io.config_file.save_config`); the module registers it with
``@register_workflow("x", XConfig)``. :mod:`geoxai.train.workflows` imports every workflow
module and reads the registry (the command line goes through it).

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, Field, model_validator

from geoxai.errors import ConfigError
from geoxai.strict import StrictModel

__all__ = [
    "WORKFLOWS",
    "Workflow",
    "register_workflow",
    "BundleOptions",
]


@dataclass(frozen=True)
class Workflow:
    """One registered training workflow."""

    name: str
    """The name ``geoxai train NAME`` takes."""
    config: type[BaseModel]
    """Its pydantic config class."""
    train: Callable[..., Any]
    """``train(config, *, resume=True) -> Path`` (the bundle directory)."""


WORKFLOWS: dict[str, Workflow] = {}
"""Workflow name -> :class:`Workflow`, in registration (import) order."""

_Train = TypeVar("_Train", bound=Callable[..., Any])


def register_workflow(name: str, config: type[BaseModel]) -> Callable[[_Train], _Train]:
    """Decorator registering ``train_x`` as workflow ``name`` with config class ``config``.

    Raises:
        ConfigError: another function is already registered under ``name``.
    """

    def register(train: _Train) -> _Train:
        old = WORKFLOWS.get(name)
        if old is not None and old.train is not train:
            raise ConfigError(
                f"training workflow {name!r} is registered twice ({old.train.__module__} and "
                f"{train.__module__}); give one of them another name."
            )
        WORKFLOWS[name] = Workflow(name, config, train)
        return train

    return register


CONFIG_FILE = "train_config.yaml"
"""Name of the saved config inside a bundle directory."""


class BundleOptions(StrictModel):
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
