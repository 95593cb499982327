"""Figures of the run report: PNG helpers and the per-zone quicklooks of a layer.

Quicklooks read the per-zone VRT mosaics at reduced resolution when they exist (GDAL then reads
the zone's overview COG when the quicklook is 1/8 of full resolution or coarser, else the tile
COGs' overviews); otherwise, or when the mosaic cannot be decoded (a COG damaged after it
was checked), they read the zone Zarr store chunk by chunk (done tiles only) and average blocks,
so memory stays at one chunk plus the quicklook. Matplotlib runs with the Agg backend.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geoxai.errors import StoreError
from geoxai.geo.grid import TileSpec
from geoxai.io.cog import gdal_path
from geoxai.io.layout import RunLayout
from geoxai.io.zonestore import ZoneStore
from geoxai.mapping.styles import layer_cmap, value_range

__all__ = ["QUICKLOOK_PX", "figure_png", "new_figure", "quicklook"]

QUICKLOOK_PX = 900
"""Longest edge of a quicklook, pixels."""


def figure_png(fig: Any) -> str:
    import matplotlib.pyplot as plt  # lazy: matplotlib only for figures (~0.5 s import)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def new_figure(w: float, h: float) -> tuple[Any, Any]:
    import matplotlib  # lazy: matplotlib only for figures (~0.5 s import)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # lazy: matplotlib only for figures (~0.5 s import)

    return plt.subplots(figsize=(w, h))


def _quicklook_from_vrt(url: str, shape: tuple[int, int], band: int) -> np.ndarray:
    import rasterio  # lazy: rasterio (GDAL) only on this path
    from rasterio.enums import Resampling  # lazy: rasterio (GDAL) only on this path

    with rasterio.open(gdal_path(url)) as src:
        a = src.read(band + 1, out_shape=shape, resampling=Resampling.average, masked=True)
    return np.ma.filled(a.astype("float32"), np.nan)


def _quicklook_from_zarr(
    zone: ZoneStore, layer: str, band: int, tiles: Sequence[TileSpec], factor: int
) -> np.ndarray:
    """Block means (``factor`` px) of the done tiles' chunks, NaN elsewhere."""
    n = zone.grid.core_px
    m = max(1, n // factor)
    ny, nx = zone.grid.nrows * m, zone.grid.ncols * m
    out = np.full((ny, nx), np.nan, dtype="float32")
    spec = zone.layers[layer]
    for t in tiles:
        core = zone.read_tile(t, layer)
        a = (core[band] if spec.bands else core).astype("float32")
        if spec.fill is not None and not (isinstance(spec.fill, float) and math.isnan(spec.fill)):
            a[a == spec.fill] = np.nan
        a = a[: m * factor, : m * factor].reshape(m, factor, m, factor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
            block = np.nanmean(a, axis=(1, 3))
        i, j = zone.grid.chunk_index(t)
        out[i * m : (i + 1) * m, j * m : (j + 1) * m] = block
    return out


def _vrt_or_none(url: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The quicklook read through the mosaic, or None and why it could not be decoded."""
    from rasterio._err import CPLE_BaseError  # lazy: rasterio (GDAL) only on this path
    from rasterio.errors import RasterioError  # lazy: rasterio (GDAL) only on this path

    try:
        return _quicklook_from_vrt(url, shape, 0), ""
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return None, f"{type(exc).__name__}: {first}"


def quicklook(
    layout: RunLayout,
    epsg: int,
    layer: str,
    done: Sequence[TileSpec],
    mosaics: Mapping[int, Mapping[str, str]],
) -> tuple[str, str] | None:
    """(base64 PNG, caption) of the first band of ``layer`` in zone ``epsg``; None if absent.

    Read from the zone's VRT mosaic in ``mosaics`` (epsg -> layer -> URL) when there is one;
    from the zone store's chunks of the ``done`` tiles otherwise, or when GDAL cannot decode
    the mosaic (the caption then says why).
    """
    import matplotlib as mpl  # lazy: matplotlib only for figures (~0.5 s import)

    try:
        zone = ZoneStore.open(layout, epsg)
    except StoreError:
        return None
    if layer not in zone.layers:
        return None
    spec = zone.layers[layer]
    grid = zone.grid
    ny, nx = grid.shape
    factor = max(1, math.ceil(max(ny, nx) / QUICKLOOK_PX))
    while grid.core_px % factor:
        factor += 1
    url = dict(mosaics.get(epsg, {})).get(layer)
    a, failure = _vrt_or_none(url, (ny // factor, nx // factor)) if url else (None, "")
    source = "VRT mosaic (its overviews)"
    if a is None:
        a = _quicklook_from_zarr(zone, layer, 0, [t for t in done if t.epsg == epsg], factor)
        source = "zone Zarr store"
        if failure:
            source += f" (the VRT mosaic could not be decoded: {failure})"
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
    vmin, vmax = value_range(layer, spec.units, lo, hi)
    cmap = mpl.colormaps[layer_cmap(layer)].with_extremes(bad="#e4e7eb")
    x0, y0, x1, y1 = grid.bounds
    fig, ax = new_figure(7.5, 7.5 * ny / nx + 0.6 if nx else 6)
    im = ax.imshow(
        np.ma.masked_invalid(a),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        extent=(x0 / 1000, x1 / 1000, y0 / 1000, y1 / 1000),
        interpolation="nearest",
    )
    band = spec.bands[0] if spec.bands else layer
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    cb.set_label(f"{band}" + (f" [{spec.units}]" if spec.units and spec.units != "1" else ""))
    ax.set_xlabel(f"easting, km (EPSG:{epsg})")
    ax.set_ylabel("northing, km")
    ax.set_title(f"{layer} — {band}")
    caption = (
        f"{layer} ({band}), zone EPSG:{epsg}, {factor * grid.resolution_m} m pixels "
        f"(1:{factor} of full resolution), from the {source}; grey = no data."
    )
    return figure_png(fig), caption
