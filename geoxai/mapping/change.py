"""The change layers of a tile against the previous year's run of the same AOI: ``change``
(this year's prediction minus last year's) and ``change_flag`` (nodata / stable / up / down).
"""

from __future__ import annotations

import math

import numpy as np

from geoxai.errors import InvalidInputError, NoDataError, StoreError
from geoxai.geo.grid import TileSpec
from geoxai.io.layout import RunLayout
from geoxai.io.zonestore import ZoneStore
from geoxai.mapping.records import read_record, tile_state

__all__ = ["change_layers"]

_CHANGE_NODATA, _CHANGE_STABLE, _CHANGE_UP, _CHANGE_DOWN = 0, 1, 2, 3


def change_layers(
    previous: RunLayout,
    tile: TileSpec,
    prediction: np.ndarray,
    *,
    threshold: float,
    layer: str = "prediction",
) -> dict[str, np.ndarray]:
    """``change`` = prediction - previous year's, and ``change_flag``, for one tile core.

    The previous tile must be ``done`` in ``previous`` with verified chunks (any config hash:
    the years' configs differ by definition). Add the result to ``write_tile``'s layers after
    ``zone.ensure_layer`` of :func:`change_layer_specs`.

    Args:
        previous: layout of the previous year's run.
        tile: the tile.
        prediction: this year's core, ``(n, n)`` or ``(K, n, n)``, float.
        threshold: ``|change|`` above which a pixel is flagged (units of the prediction).
        layer: the layer compared.

    Returns:
        ``{"change": float32, "change_flag": uint8}`` shaped like ``prediction``; flags:
        0 nodata (NaN in either year), 1 stable, 2 increase, 3 decrease.

    Raises:
        NoDataError: the previous run has no verified ``done`` record for the tile.
        InvalidInputError: shapes differ, or the threshold is negative or not finite.
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise InvalidInputError(f"change threshold must be finite and >= 0, got {threshold}.")
    rec = None
    try:
        rec = read_record(previous, tile.id)
    except StoreError:
        rec = None
    if rec is None or rec.get("status") != "done":
        raise NoDataError(
            f"Tile {tile.id} has no done record in the previous run {previous.root} "
            f"(found {rec.get('status') if rec else 'none'}); the change layer needs both "
            "years. Run the previous year for this tile, or drop the baseline."
        )
    st = tile_state(previous, tile, str(rec.get("config_hash")))
    if st.state != "done":
        raise NoDataError(
            f"Tile {tile.id} in the previous run {previous.root} is {st.state} ({st.reason}); "
            "rerun the previous year for this tile."
        )
    prev = ZoneStore.open(previous, tile.epsg).read_tile(tile, layer).astype("float32")
    now = np.asarray(prediction, dtype="float32")
    if prev.shape != now.shape:
        raise InvalidInputError(
            f"Tile {tile.id}: prediction {now.shape} vs previous year {prev.shape}; the change "
            "layer needs the same model outputs in both years."
        )
    diff = now - prev
    flag = np.full(diff.shape, _CHANGE_NODATA, dtype="uint8")
    ok = np.isfinite(diff)
    flag[ok] = _CHANGE_STABLE
    flag[ok & (diff > threshold)] = _CHANGE_UP
    flag[ok & (diff < -threshold)] = _CHANGE_DOWN
    return {"change": diff, "change_flag": flag}
