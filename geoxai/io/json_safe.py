"""JSON-ready copies of attribute values (Zarr attrs, commit markers, JSON records)."""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from affine import Affine

__all__ = ["json_safe"]


_DROP = object()


def json_safe(value: Any) -> Any:
    """A JSON-ready copy of an attribute value, or a private sentinel when it has none.

    Numpy scalars and arrays become Python numbers and lists, ``Affine`` a list of 6 floats,
    datetimes ISO strings, non-finite floats ``None``. Objects with no JSON form (e.g.
    stackstac's ``RasterSpec``) are dropped by :func:`_clean_attrs`.
    """

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Affine):
        return [float(v) for v in list(value)[:6]]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            sv = json_safe(v)
            if sv is not _DROP:
                out[str(k)] = sv
        return out
    if isinstance(value, list | tuple):
        items = [json_safe(v) for v in value]
        return _DROP if any(v is _DROP for v in items) else items
    return _DROP


def _clean_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json_safe(attrs)  # a mapping is never dropped, only its members
    return out
