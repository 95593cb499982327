"""Reference points against a finished run: strata from its layers, sampling, map values at points.

A run (see :mod:`geoxai.mapping.records`) is read through its done tile records and its zone Zarr
stores, one UTM zone at a time, one tile core (one chunk per layer) at a time, so memory stays
at one tile whatever the size of the country.

Strata come from ``LAYER[:THRESHOLDS]`` specs (:class:`StrataSpec`): ``prediction:0.5`` cuts a
continuous layer into classes ``prediction<0.5`` / ``prediction>=0.5``; ``prediction[tree]:0.5``
picks a band; an integer layer (``change_flag``, ``quality``, a class map) gives one class per
value; a multi-band float layer without thresholds gives the arg-max band. The first spec makes
the map classes; further specs split the strata (e.g. class x change flag). A pixel is in the
population when every strata layer has data there and ``quality`` (when present) is not 0.

Points (:mod:`geoxai.io.points`, any CRS) are read at their pixel across UTM zones; points
outside the run's done tiles or on nodata are returned with a status, never dropped silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer

from geoxai.assess.estimators import SampleDesignError
from geoxai.assess.sampling import allocate
from geoxai.errors import InvalidInputError, StoreError, look_up_option
from geoxai.geo.grid import TileSpec, tile_from_id
from geoxai.io.layout import RunLayout
from geoxai.io.points import PointTable
from geoxai.io.zonestore import LayerSpec, ZoneStore
from geoxai.mapping.records import read_records

__all__ = [
    "SIMPLE_STRATUM",
    "StrataSpec",
    "RunMap",
    "Census",
    "census",
    "draw_sample",
    "map_at_points",
]

_CATEGORY_NAMES = {
    "quality": {1: "good", 2: "sparse"},  # geoxai.mapping.QUALITY_CODES without nodata
    "change_flag": {1: "stable", 2: "increase", 3: "decrease"},
}
_BASE = 1 << 16
_ALL = -2  # the one stratum of a simple random sample
SIMPLE_STRATUM = "all"
"""Stratum name of every point of a simple random sample (``draw_sample(simple=True)``)."""
_SPEC_RE = re.compile(r"^(?P<layer>\w+)(\[(?P<band>[^\]]+)\])?(:(?P<thr>[-+0-9.eE, ]+))?$")


# ---- strata -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrataSpec:
    """How one layer of the run becomes classes.

    Attributes:
        layer: zone-store layer name (``prediction``, ``change_flag``, ``quality`` ...).
        band: band name of a multi-band layer; None = the 2-D layer, or the arg-max of bands.
        thresholds: increasing cut points (units of the layer); empty = categorical.
    """

    layer: str
    band: str | None = None
    thresholds: tuple[float, ...] = ()

    @classmethod
    def parse(cls, text: str) -> StrataSpec:
        """``prediction:0.5``, ``prediction[tree]:0.3,0.6``, ``change_flag``.

        Raises:
            InvalidInputError: the text is not of that form, or thresholds do not increase.
        """
        m = _SPEC_RE.match(str(text).strip())
        if not m:
            raise InvalidInputError(
                f"Strata {text!r} is not LAYER[:THRESHOLDS] (e.g. 'prediction:0.5', "
                "'prediction[tree]:0.3,0.6', 'change_flag')."
            )
        thr: tuple[float, ...] = ()
        if m.group("thr"):
            try:
                thr = tuple(float(v) for v in m.group("thr").split(",") if v.strip())
            except ValueError as exc:
                raise InvalidInputError(f"Strata {text!r}: thresholds must be numbers.") from exc
            if any(b <= a for a, b in zip(thr, thr[1:], strict=False)) or not all(
                math.isfinite(t) for t in thr
            ):
                raise InvalidInputError(f"Strata {text!r}: thresholds must be finite, increasing.")
        return cls(m.group("layer"), m.group("band"), thr)

    @property
    def label(self) -> str:
        """``layer`` or ``layer[band]``."""
        return f"{self.layer}[{self.band}]" if self.band else self.layer

    def __str__(self) -> str:
        thr = ",".join(f"{t:g}" for t in self.thresholds)
        return self.label + (f":{thr}" if thr else "")

    def class_name(self, code: int, spec: LayerSpec | None = None) -> str:
        """Human name of class ``code``."""
        t = self.thresholds
        if t:
            if len(t) == 1:
                return f"{self.label}{'<' if code == 0 else '>='}{t[0]:g}"
            lo = "-inf" if code == 0 else f"{t[code - 1]:g}"
            hi = "inf" if code == len(t) else f"{t[code]:g}"
            return f"{self.label}[{lo},{hi})"
        if spec is not None and spec.bands and self.band is None:
            return str(spec.bands[code])
        return _CATEGORY_NAMES.get(self.layer, {}).get(int(code), f"{self.layer}={code}")

    def values(self, spec: LayerSpec, core: np.ndarray) -> np.ndarray:
        """The 2-D values this spec reads from a tile core of ``spec`` (float64, NaN = nodata)."""
        a = np.asarray(core)
        if spec.bands:
            if self.band is not None:
                if self.band not in spec.bands:
                    look_up_option(self.band, list(spec.bands), what=f"band of {spec.name!r}")
                a = a[list(spec.bands).index(self.band)]
            elif self.thresholds:
                if len(spec.bands) != 1:
                    raise InvalidInputError(
                        f"Layer {spec.name!r} has bands {list(spec.bands)}: name one to "
                        f"threshold, e.g. '{spec.name}[{spec.bands[0]}]:0.5'."
                    )
                a = a[0]
            else:
                ok = np.isfinite(a).all(axis=0)
                out = np.where(ok, np.argmax(np.nan_to_num(a, nan=-np.inf), axis=0), np.nan)
                return out.astype(np.float64)
        v = a.astype(np.float64)
        fill = spec.fill
        if not (isinstance(fill, float) and math.isnan(fill)):
            v[a == fill] = np.nan
        return v

    def classify(self, values: np.ndarray, spec: LayerSpec) -> np.ndarray:
        """Class codes (int64, -1 = nodata) of ``values`` from :meth:`values`.

        Raises:
            InvalidInputError: a float layer without thresholds (it has no classes).
        """
        ok = np.isfinite(values)
        if self.thresholds:
            codes = np.searchsorted(np.asarray(self.thresholds), values, side="right")
        else:
            categorical = (spec.bands and self.band is None) or np.dtype(spec.dtype).kind in "iub"
            if not categorical:
                raise InvalidInputError(
                    f"Layer {spec.name!r} is continuous ({spec.dtype}); give thresholds to make "
                    f"classes, e.g. '{self.label}:0.5'."
                )
            codes = np.where(ok, values, 0)
            if ok.any() and (codes[ok].min() < 0 or codes[ok].max() >= _BASE):
                raise InvalidInputError(f"Layer {spec.name!r}: class codes must be 0..65535.")
        return np.where(ok, codes, -1).astype(np.int64)


def _stratum_keys(codes: Sequence[np.ndarray]) -> np.ndarray:
    """One int64 key per pixel from the class codes of every spec (-1 where any is nodata)."""
    key = np.zeros(codes[0].shape, dtype=np.int64)
    bad = np.zeros(codes[0].shape, dtype=bool)
    for k, c in enumerate(codes):
        key += c * _BASE**k
        bad |= c < 0
    key[bad] = -1
    return key


def _key_codes(key: int, n_specs: int) -> tuple[int, ...]:
    return tuple((int(key) // _BASE**k) % _BASE for k in range(n_specs))


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class RunMap:
    """The done tiles of a run, zone by zone, and their layers.

    Attributes:
        layout: the run root.
        tiles: EPSG -> done tiles (sorted by id).
        zones: EPSG -> open zone store.
    """

    layout: RunLayout
    tiles: dict[int, list[TileSpec]]
    zones: dict[int, ZoneStore] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path, storage_options: Mapping[str, Any] | None = None) -> RunMap:
        """Open the run at ``root`` (``<store.root>/<name>/<year>``).

        Raises:
            StoreError: the folder has no done tile records or no zone store.
        """
        layout = RunLayout(str(root), storage_options)
        recs = [r for r in read_records(layout) if r.get("status") == "done"]
        if not recs:
            raise StoreError(
                f"No done tile records under {layout.root}/records: is it a finished run root "
                "(<store.root>/<name>/<year>)? Run `geoxai run` first, or check the year."
            )
        tiles: dict[int, list[TileSpec]] = {}
        for r in recs:
            t = tile_from_id(str(r["tile_id"]), tile_size_m=int(r.get("tile_size_m", 6000)))
            tiles.setdefault(t.epsg, []).append(t)
        out = cls(layout, {e: sorted(ts, key=lambda t: t.id) for e, ts in sorted(tiles.items())})
        for epsg in out.tiles:
            out.zones[epsg] = ZoneStore.open(layout, epsg)
        return out

    def layer(self, name: str) -> LayerSpec:
        """The spec of layer ``name`` (the same in every zone).

        Raises:
            InvalidInputError: no zone has the layer (did-you-mean on the names).
        """
        names = sorted({n for z in self.zones.values() for n in z.layers})
        look_up_option(name, names, what="run layer", error=InvalidInputError)
        return next(z.layers[name] for z in self.zones.values() if name in z.layers)

    @property
    def pixel_area_m2(self) -> float:
        """Area of one pixel, square metres."""
        z = next(iter(self.zones.values()))
        return float(z.grid.resolution_m) ** 2

    def iter_tiles(self) -> Iterator[tuple[ZoneStore, TileSpec]]:
        """Every done tile, in a fixed order (zone, tile id)."""
        for epsg, ts in self.tiles.items():
            for t in ts:
                yield self.zones[epsg], t

    def tile_keys(
        self, zone: ZoneStore, tile: TileSpec, specs: Sequence[StrataSpec]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(keys, first-layer values, quality)`` of a tile core (2-D each; key -1 = nodata)."""
        codes, values = [], []
        for s in _check_specs(specs):
            spec = zone.layers.get(s.layer) or self.layer(s.layer)
            vals = s.values(spec, zone.read_tile(tile, s.layer))
            codes.append(s.classify(vals, spec))
            values.append(vals)
        keys = _stratum_keys(codes)
        q = zone.read_tile(tile, "quality") if "quality" in zone.layers else None
        if q is not None:
            keys[q == 0] = -1
        return keys, values[0], q


def _check_specs(specs: Sequence[StrataSpec]) -> list[StrataSpec]:
    specs = list(specs)
    if not specs:
        raise InvalidInputError("Give at least one strata spec, e.g. --strata prediction:0.5.")
    return specs


# ---- census and sampling ------------------------------------------------------------------------


@dataclass(frozen=True)
class Census:
    """Pixels of the run per stratum and per map class.

    Attributes:
        specs: the strata specs (the first makes the map classes).
        per_tile: tile id -> stratum key -> pixels.
        strata: stratum key -> pixels (``N_h``).
        classes: map class code -> pixels.
        class_names: map class code -> name.
        pixel_area_m2: area of a pixel.
    """

    specs: tuple[StrataSpec, ...]
    per_tile: dict[str, dict[int, int]]
    strata: dict[int, int]
    classes: dict[int, int]
    class_names: dict[int, str]
    pixel_area_m2: float

    def stratum_name(self, key: int) -> str:
        """``prediction>=0.5`` or ``prediction>=0.5|change_flag=2`` ..."""
        codes = _key_codes(key, len(self.specs))
        return "|".join(
            self.class_names[c] if k == 0 else s.class_name(c)
            for k, (s, c) in enumerate(zip(self.specs, codes, strict=True))
        )


def census(run: RunMap, specs: Sequence[StrataSpec]) -> Census:
    """Count the pixels of every stratum and map class (reads every done tile once).

    Raises:
        NoDataError-like :class:`SampleDesignError`: no valid pixel in the run.
    """
    specs = _check_specs(specs)
    first_spec = run.layer(specs[0].layer)
    per_tile: dict[str, dict[int, int]] = {}
    strata: dict[int, int] = {}
    for zone, tile in run.iter_tiles():
        keys, _, _ = run.tile_keys(zone, tile, specs)
        u, cnt = np.unique(keys[keys >= 0], return_counts=True)
        per_tile[tile.id] = {int(k): int(v) for k, v in zip(u, cnt, strict=True)}
        for k, v in per_tile[tile.id].items():
            strata[k] = strata.get(k, 0) + v
    if not strata:
        raise SampleDesignError(
            f"The run {run.layout.root} has no valid pixel for strata "
            f"{[str(s) for s in specs]} (all nodata or quality 0)."
        )
    classes: dict[int, int] = {}
    for k, v in strata.items():
        c = _key_codes(k, len(specs))[0]
        classes[c] = classes.get(c, 0) + v
    if specs[0].thresholds:  # every threshold class exists, mapped or not
        for c in range(len(specs[0].thresholds) + 1):
            classes.setdefault(c, 0)
    names = {c: specs[0].class_name(c, first_spec) for c in sorted(classes)}
    return Census(
        tuple(specs),
        per_tile,
        dict(sorted(strata.items())),
        dict(sorted(classes.items())),
        names,
        run.pixel_area_m2,
    )


def draw_sample(
    run: RunMap,
    cen: Census,
    n: int,
    *,
    seed: int = 0,
    min_per_stratum: int | None = None,
    simple: bool = False,
) -> dict[str, np.ndarray]:
    """A stratified random sample of pixels (without replacement), reproducible by ``seed``.

    Per stratum ``h``, ``n_h`` (:func:`geoxai.assess.sampling.allocate`) distinct ranks are
    drawn among its ``N_h`` pixels, counted in a fixed order (zone, tile id, row-major in the
    tile); a second pass over the tiles that hold drawn ranks turns them into pixel centres.
    ``simple=True`` draws a simple random sample of all valid pixels instead (one stratum,
    named :data:`SIMPLE_STRATUM`); the census still gives each point its map class.

    Returns:
        Columns (``(n,)`` each): ``point_id``, ``stratum``, ``stratum_px``, ``map_class``,
        ``map_class_name``, ``map_value``, ``quality``, ``tile``, ``epsg``, ``x``, ``y``
        (pixel centre, metres of the zone CRS).
    """
    strata = {_ALL: sum(cen.strata.values())} if simple else cen.strata
    alloc = allocate(strata, n, min_per_stratum=n if simple else min_per_stratum)
    rng = np.random.default_rng(seed)
    ranks = {
        h: np.sort(rng.choice(strata[h], size=k, replace=False))
        for h, k in sorted(alloc.items())
        if k > 0
    }
    seen = {h: 0 for h in strata}
    rows: list[tuple[Any, ...]] = []
    specs = list(cen.specs)
    for zone, tile in run.iter_tiles():
        counts = cen.per_tile.get(tile.id, {})
        if simple:
            counts = {_ALL: sum(counts.values())}
        want = {}
        for h, c in counts.items():
            r = ranks.get(h)
            if r is not None:
                sel = r[(r >= seen[h]) & (r < seen[h] + c)] - seen[h]
                if sel.size:
                    want[h] = sel
            seen[h] += c
        if not want:
            continue
        keys, first, q = run.tile_keys(zone, tile, specs)
        flat = keys.ravel()
        size, res = tile.tile_size_m, zone.grid.resolution_m
        npx = size // res
        for h, sel in want.items():
            idx = np.flatnonzero(flat >= 0 if h == _ALL else flat == h)
            if idx.size != counts[h]:
                raise StoreError(
                    f"Tile {tile.id} changed between the census and the draw ({idx.size} != "
                    f"{counts[h]} px in stratum {cen.stratum_name(h)}); rerun the sampling."
                )
            for p in idx[sel]:
                i, j = divmod(int(p), npx)
                rows.append(
                    (
                        h,
                        float(first.ravel()[p]),
                        int(q.ravel()[p]) if q is not None else -1,
                        tile.id,
                        tile.epsg,
                        tile.col * size + (j + 0.5) * res,
                        (tile.row + 1) * size - (i + 0.5) * res,
                        int(flat[p]),
                    )
                )
    order = sorted(range(len(rows)), key=lambda k: (rows[k][0], rows[k][3], rows[k][6], rows[k][5]))
    rows = [rows[k] for k in order]
    keys_arr = np.array([r[0] for r in rows], dtype=np.int64)
    cls = np.array([_key_codes(r[7], len(specs))[0] for r in rows], dtype=np.int64)
    return {
        "point_id": np.arange(len(rows), dtype=np.int64),
        "stratum": np.array(
            [SIMPLE_STRATUM if k == _ALL else cen.stratum_name(int(k)) for k in keys_arr],
            dtype=object,
        ),
        "stratum_px": np.array([strata[int(k)] for k in keys_arr], dtype=np.int64),
        "map_class": cls,
        "map_class_name": np.array([cen.class_names[int(c)] for c in cls], dtype=object),
        "map_value": np.array([r[1] for r in rows], dtype=np.float64),
        "quality": np.array([r[2] for r in rows], dtype=np.int64),
        "tile": np.array([r[3] for r in rows], dtype=object),
        "epsg": np.array([r[4] for r in rows], dtype=np.int64),
        "x": np.array([r[5] for r in rows], dtype=np.float64),
        "y": np.array([r[6] for r in rows], dtype=np.float64),
    }


# ---- the map at points --------------------------------------------------------------------------


def _utm_epsg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    zone = np.clip(np.floor((lon + 180.0) / 6.0).astype(int) + 1, 1, 60)
    return np.where(lat >= 0, 32600, 32700) + zone


def map_at_points(
    run: RunMap, specs: Sequence[StrataSpec], points: PointTable
) -> dict[str, np.ndarray]:
    """Read the run at every point (across UTM zones).

    A point belongs to the zone of a done tile that contains it, preferring its own UTM zone
    when two zones' tiles overlap. Values are those of the pixel that contains the point.

    Returns:
        Columns (``(n,)`` each): ``status`` ("ok", "outside" = in no done tile, "nodata" = no
        valid value in a strata layer or quality 0), ``epsg``, ``tile``, ``row``/``col`` (pixel
        in the tile core), ``key`` (stratum key, -1 unless ok), ``map_class`` (-1 unless ok),
        ``map_value`` (first strata layer, NaN unless ok) and ``quality`` (-1 where absent).
    """
    specs = _check_specs(specs)
    n = points.n
    to_ll = np.empty((2, n))
    for c in np.unique(points.crs.astype(str)):
        sel = points.crs.astype(str) == c
        tr = Transformer.from_crs(str(c), "EPSG:4326", always_xy=True)
        to_ll[0, sel], to_ll[1, sel] = tr.transform(points.x[sel], points.y[sel])
    own = _utm_epsg(to_ll[0], to_ll[1])
    epsg = np.zeros(n, dtype=np.int64)
    tile_ids = np.full(n, "", dtype=object)
    rc = np.full((2, n), -1, dtype=np.int64)
    for e in run.tiles:
        done = {t.id: t for t in run.tiles[e]}
        tr = Transformer.from_crs("EPSG:4326", f"EPSG:{e}", always_xy=True)
        zx, zy = tr.transform(to_ll[0], to_ll[1])
        size = run.tiles[e][0].tile_size_m
        res = run.zones[e].grid.resolution_m
        for k in range(n):
            if not (math.isfinite(zx[k]) and math.isfinite(zy[k])):
                continue
            col, row = int(math.floor(zx[k] / size)), int(math.floor(zy[k] / size))
            tid = f"{e}_E{col:04d}_N{row:04d}"
            if tid not in done or (epsg[k] and own[k] != e):
                continue
            epsg[k], tile_ids[k] = e, tid
            rc[0, k] = int(math.floor(((row + 1) * size - zy[k]) / res))
            rc[1, k] = int(math.floor((zx[k] - col * size) / res))
    status = np.where(epsg > 0, "ok", "outside").astype(object)
    key = np.full(n, -1, dtype=np.int64)
    value = np.full(n, np.nan)
    quality = np.full(n, -1, dtype=np.int64)
    for tid in sorted({t for t in tile_ids if t}):
        sel = np.flatnonzero(tile_ids == tid)
        e = int(epsg[sel[0]])
        tile = next(t for t in run.tiles[e] if t.id == tid)
        keys, first, q = run.tile_keys(run.zones[e], tile, specs)
        i, j = rc[0, sel], rc[1, sel]
        key[sel] = keys[i, j]
        value[sel] = first[i, j]
        if q is not None:
            quality[sel] = q[i, j]
    status[(status == "ok") & (key < 0)] = "nodata"
    value[status != "ok"] = np.nan
    cls = np.where(key >= 0, key % _BASE, -1)
    return {
        "status": status,
        "epsg": epsg,
        "tile": tile_ids,
        "row": rc[0],
        "col": rc[1],
        "key": key,
        "map_class": cls,
        "map_value": value,
        "quality": quality,
    }
