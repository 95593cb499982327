"""How each output layer is coloured: one rule for the report's quicklooks and the viewer's tiles.

Continuous layers get a matplotlib colour map and a value range: ``prediction`` ``YlGn`` (0..1
for a fraction or probability), ``change`` ``RdBu`` centred on 0, every explanation layer
(``asos_sensitivity``, ``spacex_attribution`` ...) ``magma``. Class layers (``quality``,
``change_flag``) get one colour per code; their fill value (0) is transparent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "QUALITY_CLASSES",
    "CHANGE_FLAG_CLASSES",
    "LayerStyle",
    "layer_cmap",
    "value_range",
    "layer_style",
]

QUALITY_CLASSES = {1: ("clear (enough observations)", "#1b9e77"), 2: ("sparse", "#d95f02")}
"""``quality`` codes: label and colour (0 = nodata, transparent)."""

CHANGE_FLAG_CLASSES = {
    1: ("stable", "#bdbdbd"),
    2: ("increase", "#1a9850"),
    3: ("decrease", "#d73027"),
}
"""``change_flag`` codes: label and colour (0 = nodata, transparent)."""

_CLASSES = {"quality": QUALITY_CLASSES, "change_flag": CHANGE_FLAG_CLASSES}


def layer_cmap(layer: str) -> str:
    """Matplotlib colour map name of a continuous layer."""
    if layer == "prediction":
        return "YlGn"
    if layer == "change":
        return "RdBu"
    return "magma"


def value_range(layer: str, units: str, lo: float, hi: float) -> tuple[float, float]:
    """Colour scale ``(vmin, vmax)`` of a layer whose values span ``lo..hi`` (e.g. 2-98 %).

    A prediction in [0, 1] with units ``"1"`` keeps the fixed 0..1 scale; ``change`` is made
    symmetric around 0; an empty range is widened by 1e-6.
    """
    if layer == "prediction" and units == "1" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    if layer == "change":
        m = max(abs(lo), abs(hi), 1e-6)
        return -m, m
    return lo, hi if hi > lo else lo + 1e-6


_LUTS: dict[Any, np.ndarray] = {}


@dataclass(frozen=True)
class LayerStyle:
    """The colouring of one layer.

    Attributes:
        layer: layer name.
        kind: ``"continuous"`` or ``"classes"``.
        cmap: matplotlib colour map (continuous layers).
        vmin, vmax: value range of the colour scale (continuous layers), layer units.
        classes: code -> (label, hex colour) (class layers).
        units: the layer's units.
        bands: band names (empty for a 2-D layer).
    """

    layer: str
    kind: str
    cmap: str = ""
    vmin: float = 0.0
    vmax: float = 1.0
    classes: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    units: str = ""
    bands: tuple[str, ...] = ()

    def lut(self) -> np.ndarray:
        """RGBA look-up table ``(256, 4)`` uint8 (computed once per colour map): index 0..255
        spans vmin..vmax (continuous), or is the class code (classes; codes without a colour are
        transparent)."""
        key = (self.kind, self.cmap, tuple(sorted(self.classes.items())))
        cached = _LUTS.get(key)
        if cached is not None:
            return cached
        out = np.zeros((256, 4), dtype=np.uint8)
        if self.kind == "classes":
            for code, (_, colour) in self.classes.items():
                c = colour.lstrip("#")
                out[int(code)] = [int(c[i : i + 2], 16) for i in (0, 2, 4)] + [255]
        else:
            import matplotlib as mpl  # lazy: matplotlib only for colour maps (~0.5 s import)

            rgba = mpl.colormaps[self.cmap](np.linspace(0, 1, 256))
            out = np.round(rgba * 255).astype(np.uint8)
        _LUTS[key] = out
        return out

    def colourize(self, values: np.ma.MaskedArray) -> np.ndarray:
        """RGBA ``(H, W, 4)`` uint8 of a masked ``(H, W)`` array; masked pixels transparent."""
        mask = np.ma.getmaskarray(values)
        a = np.ma.filled(values.astype("float64"), np.nan)
        if self.kind == "classes":
            idx = np.where(np.isfinite(a), a, 0).clip(0, 255).astype(np.uint8)
        else:
            span = self.vmax - self.vmin
            scaled = (a - self.vmin) / (span if span else 1.0)
            idx = np.round(np.nan_to_num(scaled, nan=0.0).clip(0, 1) * 255).astype(np.uint8)
        rgba = self.lut()[idx]
        rgba[mask | ~np.isfinite(a)] = 0
        return rgba

    def legend(self) -> dict[str, Any]:
        """JSON-able legend: kind, units, bands, and colour stops or classes."""
        doc: dict[str, Any] = {"layer": self.layer, "kind": self.kind, "units": self.units}
        doc["bands"] = list(self.bands)
        if self.kind == "classes":
            doc["classes"] = [
                {"code": int(k), "label": v[0], "colour": v[1]} for k, v in self.classes.items()
            ]
        else:
            lut = self.lut()
            stops = [lut[int(i)] for i in np.linspace(0, 255, 9)]
            doc.update(
                cmap=self.cmap,
                vmin=self.vmin,
                vmax=self.vmax,
                stops=["#" + "".join(f"{int(c):02x}" for c in s[:3]) for s in stops],
            )
        return doc


def layer_style(
    layer: str,
    *,
    units: str = "",
    bands: Sequence[str] = (),
    stats: Sequence[Mapping[str, Any]] = (),
) -> LayerStyle:
    """The style of a layer, its value range from per-tile stats (``min``/``max`` of records).

    Args:
        layer: layer name.
        units: its units (``"1"`` = fraction).
        bands: its band names.
        stats: per-tile ``{"min", "max"}`` of the layer (``record["stats"][layer]``).
    """
    if layer in _CLASSES:
        return LayerStyle(
            layer, "classes", classes=_CLASSES[layer], units=units, bands=tuple(bands)
        )
    lows = [float(s["min"]) for s in stats if "min" in s and math.isfinite(float(s["min"]))]
    highs = [float(s["max"]) for s in stats if "max" in s and math.isfinite(float(s["max"]))]
    lo, hi = (min(lows), max(highs)) if lows and highs else (0.0, 1.0)
    vmin, vmax = value_range(layer, units, lo, hi)
    return LayerStyle(
        layer, "continuous", layer_cmap(layer), vmin, vmax, units=units, bands=tuple(bands)
    )
