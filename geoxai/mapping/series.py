"""The smoothed time series of one pixel, recomputed from the tile's committed raw cube.

A run keeps each tile's raw cube (``<run_root>/cubes/<tile_id>.zarr``, :func:`stage_cube`) but
not the smoothed features, so the viewer smooths the clicked pixel again with the run's own
parameters (:func:`geoxai.mapping.preprocess_params` of ``config.json``). Preprocessing is per
pixel except the cloud buffer, so a window of the pixel plus the buffer's reach gives exactly
the values the run computed for it (Principle 1: no per-tile decision).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from geoxai.config import load_run_config
from geoxai.errors import GeoXAIError
from geoxai.io import store
from geoxai.io.layout import RunLayout
from geoxai.mapping.settings import preprocess_params
from geoxai.temporal.smoothing import preprocess, required_halo_px

__all__ = ["pixel_series"]


def pixel_series(
    layout: RunLayout, config: Mapping[str, Any], tile_id: str, x: float, y: float
) -> dict[str, Any]:
    """The pixel's smoothed series on the run's time axis, and its clear-observation count.

    Args:
        layout: the run's layout.
        config: the run's ``config.json``.
        tile_id: the tile whose core holds the pixel.
        x, y: the pixel's coordinates in the tile's UTM CRS, metres.

    Returns:
        ``{"kept": True, "times": [ISO dates], "series": {feature: [values]}, "n_obs": int,
        "valid": bool, "max_gap_days": float, "source": ...}`` (spectral indices only:
        ``NDVI`` ... dimensionless), or ``{"kept": False, "message": why}``.
    """
    url = layout.cube_url(tile_id)
    so = layout.storage_options
    if not store.is_committed(url, storage_options=so):
        return {
            "kept": False,
            "message": f"The raw cube of tile {tile_id} is not kept ({url} is absent), so the "
            "pixel's time series cannot be shown; rerunning the tile's cube stage rebuilds it.",
        }
    try:
        params = preprocess_params(load_run_config(dict(config)))
    except GeoXAIError as exc:
        return {"kept": False, "message": f"config.json of the run cannot be read: {exc}"}
    raw = store.read_cube(url, storage_options=so)
    res = float(raw.attrs.get("resolution_m", 10.0))
    halo = required_halo_px(params, res) + 1
    iy = int(np.abs(np.asarray(raw["y"].values) - y).argmin())
    ix = int(np.abs(np.asarray(raw["x"].values) - x).argmin())
    y0, x0 = max(0, iy - halo), max(0, ix - halo)
    window = raw.isel(y=slice(y0, iy + halo + 1), x=slice(x0, ix + halo + 1)).load()
    ds = preprocess(window, params)
    cy, cx = iy - y0, ix - x0
    feats = [str(b) for b in ds["features"]["band"].values]
    nb = len(params.bands)
    values = np.asarray(ds["features"].values[:, :, cy, cx], dtype=float)
    times = [str(t)[:10] for t in np.asarray(ds["features"]["time"].values)]
    return {
        "kept": True,
        "source": f"raw cube {url}, smoothed with the run's parameters",
        "times": times,
        "series": {f: [float(v) for v in values[:, i]] for i, f in enumerate(feats) if i >= nb},
        "n_obs": int(ds["n_obs"].values[cy, cx]),
        "valid": bool(ds["valid"].values[cy, cx]),
        "max_gap_days": float(ds["max_gap_days"].values[cy, cx]),
    }
