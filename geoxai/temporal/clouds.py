"""Per-pixel observation weights from the scene classification (SCL) or a spectral rule.

Everything here is *per pixel* (plus a fixed neighbourhood for the buffer), or *per item*
(scene-level metadata), never per tile, so two overlapping tiles compute the same weights in
their overlap (DESIGN.md principle 1):

* :func:`scl_weights`: classes of the L2A scene classification become weight 0 (masked),
  a reduced weight, or 1; clouds and shadows are buffered by ``buffer_m`` metres (a disk).
  The buffer reaches ``ceil(buffer_m / resolution_m)`` pixels, so the cube needs at least
  :func:`required_halo_px` halo pixels for the tile core to be exact.
* :func:`spectral_weights`: for inputs without SCL, the classes of
  :func:`geoxai.temporal.masks.spectral_classes` (clouds by brightness, shadows by projecting
  each date's clouds along its sun direction and, where a series exists, by a drop below the
  pixel's temporal median; snow, water) become weights (:func:`class_weights`), clouds and
  shadows buffered like SCL. The projection reaches ``max_shadow_distance_m``, which
  :func:`required_halo_px` adds to the buffer for the spectral (and "auto") method.
* :func:`item_screen`: optional date screening from each item's own ``eo:cloud_cover``, the
  same answer for every tile that sees the item.

Weights are float32 in ``[0, 1]``, shape ``(time, y, x)``; NaN reflectance always gives 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.bands import SCL_CLASSES
from geoxai.temporal.masks import (
    CLOUD,
    NODATA,
    SHADOW,
    SNOW,
    SpectralMaskParams,
    shadow_reach_px,
    spectral_classes,
)
from geoxai.temporal.whittaker import HAVE_NUMBA

if HAVE_NUMBA:
    from numba import njit as _njit
    from numba import prange as _prange
else:  # pragma: no cover
    _prange = range  # type: ignore[misc]

__all__ = [
    "CloudMaskParams",
    "SpectralMaskParams",
    "required_halo_px",
    "buffer_mask",
    "disk_rectangles",
    "scl_tables",
    "scl_codes",
    "scl_weights",
    "spectral_weights",
    "class_weights",
    "item_screen",
]


@dataclass(frozen=True)
class CloudMaskParams:
    """How observations become per-pixel weights.

    Attributes:
        method: "auto" (SCL when the cube has it, else spectral), "scl", "spectral" or "none"
            (only NaN reflectance is masked).
        masked_classes: SCL classes with weight 0 (default: no data, saturated, cloud shadow,
            cloud medium/high probability, thin cirrus, snow).
        buffered_classes: SCL classes whose masks are grown by ``buffer_m`` (clouds, shadows).
        reduced_classes: SCL classes kept with ``reduced_weight`` (dark area, unclassified).
        reduced_weight: weight of ``reduced_classes``, in [0, 1].
        buffer_m: buffer around clouds and shadows, metres (disk); 0 disables it.
        max_item_cloud_cover: drop whole acquisitions whose item ``eo:cloud_cover`` (percent)
            exceeds this; None keeps all (the weights handle clouds per pixel).
        spectral: thresholds of the spectral rule.
    """

    method: str = "auto"
    masked_classes: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
    buffered_classes: tuple[int, ...] = (3, 8, 9, 10)
    reduced_classes: tuple[int, ...] = (2, 7)
    reduced_weight: float = 0.5
    buffer_m: float = 40.0
    max_item_cloud_cover: float | None = None
    spectral: SpectralMaskParams = SpectralMaskParams()

    def __post_init__(self) -> None:
        if self.method not in ("auto", "scl", "spectral", "none"):
            raise ConfigError(
                f"CloudMaskParams.method={self.method!r} is unknown; use 'auto', 'scl', "
                "'spectral' or 'none'."
            )
        for name in ("masked_classes", "buffered_classes", "reduced_classes"):
            bad = [c for c in getattr(self, name) if c not in SCL_CLASSES]
            if bad:
                raise ConfigError(
                    f"CloudMaskParams.{name} has {bad}, which are not SCL classes; valid "
                    f"classes are 0..11 ({', '.join(f'{k}={v}' for k, v in SCL_CLASSES.items())})."
                )
        if not 0.0 <= self.reduced_weight <= 1.0:
            raise ConfigError(
                f"CloudMaskParams.reduced_weight={self.reduced_weight} must lie in [0, 1]."
            )
        if not (math.isfinite(self.buffer_m) and self.buffer_m >= 0):
            raise ConfigError(f"CloudMaskParams.buffer_m={self.buffer_m} must be >= 0 metres.")
        mcc = self.max_item_cloud_cover
        if mcc is not None and not 0.0 <= mcc <= 100.0:
            raise ConfigError(
                f"CloudMaskParams.max_item_cloud_cover={mcc} must be a percentage 0..100 or None."
            )


def required_halo_px(
    params: CloudMaskParams, resolution_m: float, bands: Sequence[str] | None = None
) -> int:
    """Halo (pixels) a tile needs so that buffering near its core edge sees its neighbours.

    The buffer's reach, plus for the spectral mask ("spectral", and "auto", which falls back to
    it when the cube has no SCL) the reach of the shadow projection
    (:func:`geoxai.temporal.masks.shadow_reach_px`): a shadow pixel's cloud lies up to that far
    away, and its buffer reaches on from there. ``bands``, the cube's bands, resolves "auto".
    """
    buf = int(math.ceil(params.buffer_m / resolution_m)) if params.buffer_m > 0 else 0
    method = params.method
    if method == "auto" and bands is not None:
        method = "scl" if "SCL" in [str(b) for b in bands] else "spectral"
    if method in ("spectral", "auto"):
        return buf + shadow_reach_px(params.spectral, resolution_m)
    return buf


def disk_rectangles(radius_px: float) -> list[tuple[int, int]]:
    """The disk ``{(dy, dx): dy^2 + dx^2 <= radius_px^2}`` as a union of centred rectangles.

    Returns ``[(half_height, half_width), ...]``: the disk is the union of the rectangles
    ``|dy| <= half_height, |dx| <= half_width`` (one per distinct row half-width), so a
    dilation by the disk is the union of separable rectangle dilations.
    """
    r = int(math.floor(radius_px))
    widths = [int(math.floor(math.sqrt(max(radius_px**2 - dy * dy, 0.0)))) for dy in range(r + 1)]
    return [(dy, widths[dy]) for dy in range(r + 1) if dy == r or widths[dy + 1] < widths[dy]]


def buffer_mask(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Grow a ``(time, y, x)`` bool mask by a disk of ``radius_px`` pixels in every frame.

    A pixel is set when a set pixel of the same frame lies within Euclidean distance
    ``radius_px`` (the same set as ``distance_transform_edt(~frame) <= radius_px``): the disk
    is a union of centred rectangles (:func:`disk_rectangles`), each a separable running
    maximum along x then y over all frames at once (frames never mix): ``~2 r`` passes over
    the mask for ``r = floor(radius_px)``, each date once. Pixels within ``radius_px`` of the
    array edge are exact only if the array carries that much halo.
    """
    if radius_px <= 0 or mask.size == 0:
        return mask
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    out = np.zeros_like(m)
    along_x: dict[int, np.ndarray] = {}
    for hh, hw in disk_rectangles(radius_px):
        if hw not in along_x:
            along_x[hw] = ndimage.maximum_filter1d(m, 2 * hw + 1, axis=2, mode="constant")
        grown = ndimage.maximum_filter1d(along_x[hw], 2 * hh + 1, axis=1, mode="constant")
        np.bitwise_or(out, grown, out=out)
    return out.view(bool)


SCL_NODATA_CODE = 255
"""Table index of a missing SCL value (NaN in a float SCL layer): weight 0, never buffered."""


def scl_tables(params: CloudMaskParams) -> tuple[np.ndarray, np.ndarray]:
    """256-entry look-up tables indexed by the SCL class code (uint8).

    Returns:
        ``(weight, buffered)``: float32 weight of each class before buffering (0 masked,
        ``reduced_weight`` reduced, 1 otherwise; :data:`SCL_NODATA_CODE` 0) and bool
        "grows a buffer" per class.
    """
    weight = np.ones(256, dtype=np.float32)
    weight[list(params.reduced_classes)] = np.float32(params.reduced_weight)
    weight[list(params.masked_classes)] = 0.0
    weight[SCL_NODATA_CODE] = 0.0
    buffered = np.zeros(256, dtype=bool)
    buffered[list(params.buffered_classes)] = True
    return weight, buffered


def scl_codes(scl: np.ndarray) -> np.ndarray:
    """SCL classes as uint8 table indices: integer layers as they are (values above 254 go to
    254, a class no list names), float layers truncated, NaN/inf -> :data:`SCL_NODATA_CODE`."""
    if scl.dtype == np.uint8:
        return scl
    if np.issubdtype(scl.dtype, np.integer):
        return np.clip(scl, 0, 254).astype(np.uint8)
    codes = np.full(scl.shape, SCL_NODATA_CODE, dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        np.copyto(codes, np.clip(scl, 0, 254), where=np.isfinite(scl), casting="unsafe")
    return codes


def _scl_kernel(scl, is_float, weight, buffered, widths, out):  # type: ignore[no-untyped-def]
    """Per frame: class code -> weight; each row's distance to its nearest buffered pixel
    (two sweeps); a pixel is in the disk buffer when a row ``dy`` away has a buffered pixel
    within ``widths[|dy|]`` along x (the disk as rows of half-widths, as :func:`buffer_mask`)."""
    t, ny, nx = scl.shape
    r = widths.shape[0] - 1
    far = nx + 1
    for i in _prange(t):
        d = np.empty((ny, nx), dtype=np.int32)
        hit = np.empty(nx, dtype=np.bool_)
        for y in range(ny):
            for x in range(nx):
                v = scl[i, y, x]
                if is_float:
                    code = int(min(max(v, 0.0), 254.0)) if np.isfinite(v) else 255
                else:
                    code = int(v)
                out[i, y, x] = weight[code]
                d[y, x] = 0 if buffered[code] else far
            for x in range(1, nx):
                d[y, x] = min(d[y, x], d[y, x - 1] + 1)
            for x in range(nx - 2, -1, -1):
                d[y, x] = min(d[y, x], d[y, x + 1] + 1)
        if r < 0:
            continue
        for y in range(ny):
            for x in range(nx):
                hit[x] = False
            for dy in range(max(-r, -y), min(r, ny - 1 - y) + 1):
                wd = widths[abs(dy)]
                for x in range(nx):
                    hit[x] |= d[y + dy, x] <= wd
            for x in range(nx):
                if hit[x]:
                    out[i, y, x] = 0.0


if HAVE_NUMBA:
    _scl_kernel = _njit(parallel=True, cache=True, nogil=True)(_scl_kernel)


def scl_weights(scl: np.ndarray, params: CloudMaskParams, resolution_m: float) -> np.ndarray:
    """Weights from the SCL layer.

    Args:
        scl: ``(T, Y, X)`` SCL class values: uint8 (or another integer type), or float with
            NaN where missing (-> weight 0).
        params: the class lists and buffer.
        resolution_m: pixel size, metres (converts ``buffer_m`` to pixels).

    Returns:
        ``(T, Y, X)`` float32 weights in [0, 1] (classes by the tables of :func:`scl_tables`,
        the buffer by :func:`buffer_mask`). NaN reflectance is not looked at here: the caller
        multiplies by its finiteness (see :func:`geoxai.temporal.preprocess`).
    """
    if scl.ndim != 3:
        raise InvalidInputError(f"SCL must be (time, y, x); got shape {scl.shape}.")
    weight, buffered = scl_tables(params)
    scl = np.asarray(scl)
    radius = params.buffer_m / resolution_m
    if HAVE_NUMBA:  # one compiled pass: codes, table, disk buffer (same values as below)
        is_float = bool(np.issubdtype(scl.dtype, np.floating))
        if not is_float:
            scl = scl_codes(scl)
        r = int(math.floor(radius)) if radius > 0 else -1
        widths = np.array(
            [int(math.floor(math.sqrt(max(radius**2 - dy * dy, 0.0)))) for dy in range(r + 1)],
            dtype=np.int32,
        )
        out = np.empty(scl.shape, dtype=np.float32)
        _scl_kernel(scl, is_float, weight, buffered, widths, out)
        return out
    codes = scl_codes(scl)  # pragma: no cover - numba is a dependency
    w = weight[codes]
    if params.buffer_m > 0:
        w[buffer_mask(buffered[codes], radius)] = 0.0
    return w


def spectral_weights(
    refl: np.ndarray,
    bands: tuple[str, ...],
    params: CloudMaskParams,
    resolution_m: float,
    *,
    sun: tuple[np.ndarray, np.ndarray] | None = None,
    y_ascending: bool = False,
) -> np.ndarray:
    """Weights from the spectral classes (for cubes without SCL).

    Args:
        refl: ``(T, C, Y, X)`` reflectance, NaN = nodata.
        bands: the ``C`` canonical band names; needs B02 (or B01), B04 and B08; B03 and B11
            add snow and sharpen shadows (see :func:`geoxai.temporal.masks.spectral_classes`).
        params: thresholds (``params.spectral``) and buffer.
        resolution_m: pixel size, metres (buffer and projection distance to pixels).
        sun: ``(T,)`` solar azimuth and elevation per date, degrees; None or NaN: no projected
            shadows on those dates (a warning says so; the temporal test still applies).
        y_ascending: rows run south to north.

    Returns:
        ``(T, Y, X)`` float32 weights in {0, 1}.
    """
    classes = spectral_classes(
        refl, bands, params.spectral, resolution_m, sun=sun, y_ascending=y_ascending
    )
    return class_weights(classes, params, resolution_m)


def class_weights(classes: np.ndarray, params: CloudMaskParams, resolution_m: float) -> np.ndarray:
    """``(T, Y, X)`` float32 weights from mask classes: cloud and shadow (grown by
    ``buffer_m``), snow and nodata get 0; clear and water 1."""
    grown = buffer_mask((classes == CLOUD) | (classes == SHADOW), params.buffer_m / resolution_m)
    w = np.ones(classes.shape, dtype=np.float32)
    w[grown | (classes == SNOW) | (classes == NODATA)] = 0.0
    return w


def item_screen(cloud_cover: np.ndarray | None, params: CloudMaskParams) -> np.ndarray | None:
    """Per-acquisition keep flags from each item's ``eo:cloud_cover`` (percent), or None.

    Depends on item metadata only, so every tile that sees an item decides the same.
    Returns None when no screening is configured.
    """
    if params.max_item_cloud_cover is None:
        return None
    if cloud_cover is None:
        raise InvalidInputError(
            "CloudMaskParams.max_item_cloud_cover is set but the cube has no 'eo:cloud_cover' "
            "coordinate along time; build the cube with item properties or set it to None."
        )
    cc = np.asarray(cloud_cover, dtype=np.float64)
    return ~(cc > params.max_item_cloud_cover)  # NaN cover is kept (weights still apply)
