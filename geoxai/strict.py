"""The one strict pydantic base of geoxai's configs and specs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A frozen pydantic model that rejects unknown fields (``extra="forbid"``), so a misspelt
    key in a config file is an error naming it rather than a silently ignored value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
