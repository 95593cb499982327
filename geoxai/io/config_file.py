"""The one way a config is saved beside what it made: a run's ``config.json`` under the run root
and a training bundle's ``train_config.yaml`` both go through :func:`save_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from geoxai.errors import InvalidInputError
from geoxai.io.location import URL, _as_location
from geoxai.io.store import put_atomic, write_json
from geoxai.secrets import scrub

__all__ = ["save_config"]


def save_config(config: Any, url: URL, *, storage_options: Mapping[str, Any] | None = None) -> str:
    """Write a config (a pydantic model or a mapping) to ``url``, whole; return the URL written.

    The format follows the suffix: ``.json`` is :func:`geoxai.io.store.write_json` (keys
    sorted), ``.yaml``/``.yml`` keeps the field order (what ``geoxai train`` reads back). The
    value of any secret-named key, at any depth, is written as ``***``
    (:func:`geoxai.secrets.scrub`).

    Args:
        config: the config; pydantic models are dumped in JSON mode.
        url: the file to write (local path or ``s3://``), e.g. ``layout.at(layout.config_url())``.
        storage_options: s3fs options; default from the environment.

    Raises:
        InvalidInputError: ``url`` ends in neither ``.json`` nor ``.yaml``/``.yml``.
        StoreError: the file cannot be written.
    """
    loc = _as_location(url, storage_options)
    doc = scrub(config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config))
    suffix = loc.path.rsplit(".", 1)[-1].lower()
    if suffix == "json":
        write_json(doc, loc)
    elif suffix in ("yaml", "yml"):
        put_atomic(loc, yaml.safe_dump(doc, sort_keys=False).encode())
    else:
        raise InvalidInputError(
            f"save_config: {loc.describe()} ends in neither .json nor .yaml; name the config "
            "file config.json or train_config.yaml."
        )
    return loc.url
