"""A synthetic Sentinel-2 L2A world: land cover with phenology, clouds, shadows, COGs and STAC.

The world is a rectangular *block* of the geoxai tile lattice (by default the 2 x 2 tiles
``32631_E0096_N0938``..``32631_E0097_N0939`` in UTM zone 31N, around 50.8 N 4.1 E in Belgium)
plus a margin of ``margin_px`` 10 m pixels on every side, so that tile halos up to that width
have data. Everything is a deterministic function of :class:`WorldParams` (the seed included):
the same parameters give the same bytes.

Surface model (per 10 m pixel ``p``, date ``t``, band ``b``; reflectance 0..1)::

    tree(t)    = gt(t) * CANOPY[b] + (1 - gt(t)) * LITTER[b]          (deciduous-ish canopy)
    other(p,t) = g(p,t) * GREEN[b] + (1 - g(p,t)) * BACKGROUND[class(p)][b]
    surface    = texture(p) * (tc(p) * tree(t) + (1 - tc(p)) * other(p,t))

``tc`` is the tree-cover fraction (a truth layer), ``g`` a per-pixel green-vegetation fraction
following a Gaussian phenology per class and crop group (crops peak between May and August,
grass is green most of the year, water/built-up/bare barely change). 20 m bands are the 2 x 2
mean of the 10 m field. The clean truth (:meth:`SyntheticWorld.clean_reflectance`) is exactly
this surface, before clouds, shadows, noise and DN quantisation.

Land-cover codes (``truth/landcover.tif``, uint8; :data:`LANDCOVER_CLASSES`)::

    1 forest   2 cropland   3 grassland   4 water   5 built-up   6 bare

Natural/anthropogenic rule (``truth/natural.tif``, uint8): ``natural = 1`` exactly where the
class is forest, grassland (semi-natural pasture) or water, ``0`` where it is cropland, built-up
or bare (quarries, building sites). The label is *caused* by the class, so an explanation
method can be checked against it.

Atmosphere per date (on the 20 m grid): thick and medium clouds from a thresholded multi-scale
smooth random field (cover drawn per date between 0 and 100 %, clearer in summer than in
winter), thin cirrus on some dates,
cloud shadows = the cloud field displaced away from the sun by ``height / tan(elevation)``
(sun position from the date and place), a no-data swath edge on some dates, sensor noise.
Like the real SCL, the synthetic one misses a thin haze rim around clouds (opacity <= 0.1)
and the faint shadow of that rim: cloud masks need a buffer, as on real data.
SCL: 0 no data, 3 shadow, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified (rare),
8/9 medium/high probability cloud, 10 cirrus. ``eo:cloud_cover`` is the share of 8/9/10 among
valid pixels of the block.

The archive writer (COGs, STAC items, truth files) lives in :mod:`geoxai.synthetic.archive`;
:meth:`SyntheticWorld.write` calls it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from pyproj import Transformer

from geoxai.errors import InvalidInputError
from geoxai.geo.bands import BANDS, S2_BANDS
from geoxai.geo.grid import RESOLUTION_M, TileSpec
from geoxai.synthetic.archive import write_archive

if TYPE_CHECKING:
    from geoxai.synthetic.archive import Archive
from geoxai.synthetic.fields import (
    block_tiles,
    mean2,
    mgrs_square,
    octave_noise,
    smooth_noise,
    sun_position,
    threshold,
    up2,
)
from geoxai.synthetic.params import Atmosphere, WorldParams
from geoxai.synthetic.spectra import (
    BARE,
    BG_TABLE,
    BUILT,
    CANOPY,
    CIRRUS,
    CLOUD,
    CLOUD_FLAG,
    CROP_GROUPS,
    CROPLAND,
    FOREST,
    GRASSLAND,
    GREEN,
    LITTER,
    MAX_SHADOW_M,
    NATURAL_CLASSES,
    NOISE,
    OFFSET,
    PHENOLOGY,
    SCALE,
    SHADOW_FLAG,
    UTC_TIME,
    WATER,
)

__all__ = [
    "SyntheticWorld",
    "make_world",
    "load_world",
]


class SyntheticWorld:
    """A deterministic synthetic Sentinel-2 L2A world over a block of tiles (see module doc).

    Grids: the *block* is ``shape`` (H, W) 10 m pixels with ``transform``; 20 m products are
    (H/2, W/2) on the same origin. Acquisition ``i`` is ``dates[i]``.
    """

    def __init__(self, params: WorldParams | None = None, **kwargs: Any) -> None:
        params = params or WorldParams()
        self.params = replace(params, **kwargs) if kwargs else params
        p = self.params
        self.epsg = p.tiles[0].epsg
        m = p.margin_px * RESOLUTION_M
        self.bounds = (
            min(t.core_bounds[0] for t in p.tiles) - m,
            min(t.core_bounds[1] for t in p.tiles) - m,
            max(t.core_bounds[2] for t in p.tiles) + m,
            max(t.core_bounds[3] for t in p.tiles) + m,
        )
        x0, y0, x1, y1 = self.bounds
        self.shape = (int(y1 - y0) // RESOLUTION_M, int(x1 - x0) // RESOLUTION_M)
        self.transform = Affine(RESOLUTION_M, 0.0, x0, 0.0, -RESOLUTION_M, y1)
        first = p.start or date(p.year, 1, 1) - timedelta(days=p.pad_days)
        last = p.end or date(p.year, 12, 31) + timedelta(days=p.pad_days)
        n = max(0, (last - first).days // p.revisit_days + 1)
        self.dates: tuple[date, ...] = tuple(
            first + timedelta(days=i * p.revisit_days) for i in range(n)
        )

    # ---- identity -----------------------------------------------------------------------
    @property
    def tiles(self) -> tuple[TileSpec, ...]:
        """The tiles the world was made for (halo 0)."""
        return self.params.tiles

    @property
    def year(self) -> int:
        """Target year."""
        return self.params.year

    @property
    def crs(self) -> str:
        """``"EPSG:326zz"``."""
        return f"EPSG:{self.epsg}"

    @cached_property
    def _lonlat(self) -> Any:

        return Transformer.from_crs(self.epsg, 4326, always_xy=True)

    @cached_property
    def bbox(self) -> tuple[float, float, float, float]:
        """Lon/lat bbox of the whole data block (margin included)."""
        x0, y0, x1, y1 = self.bounds
        xs, ys = np.meshgrid(np.linspace(x0, x1, 9), np.linspace(y0, y1, 9))
        lon, lat = self._lonlat.transform(xs.ravel(), ys.ravel())
        return (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))

    @cached_property
    def aoi(self) -> tuple[float, float, float, float]:
        """Lon/lat bbox *inside* the tiles' bounding rectangle.

        For a rectangular block ``cover_aoi(world.aoi)`` gives exactly ``world.tiles``.
        """
        shrink = min(300.0, self.tiles[0].tile_size_m / 10)  # UTM grid vs lon/lat skew
        m = self.params.margin_px * RESOLUTION_M + shrink
        x0, y0, x1, y1 = self.bounds
        lon, lat = self._lonlat.transform(
            [x0 + m, x1 - m, x0 + m, x1 - m], [y0 + m, y0 + m, y1 - m, y1 - m]
        )
        return (max(lon[0], lon[2]), max(lat[0], lat[1]), min(lon[1], lon[3]), min(lat[2], lat[3]))

    def outside_tile(self, halo_px: int = 0) -> TileSpec:
        """A tile of the same zone that no acquisition covers (zero scenes)."""
        t = max(self.tiles)
        return t.neighbour(20, 20).with_halo(halo_px)

    def acquisition_time(self, i: int) -> datetime:
        """Acquisition time (UTC) of date ``i``."""
        d = self.dates[i]
        return datetime(d.year, d.month, d.day, *UTC_TIME, tzinfo=UTC)

    def platform(self, i: int) -> str:
        """``sentinel-2a`` or ``sentinel-2b`` (they alternate, each on a 10-day cycle)."""
        odd = self.dates[i].toordinal() // self.params.revisit_days % 2
        return "sentinel-2a" if odd else "sentinel-2b"

    def to_lonlat(self, x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
        """Project world-CRS metres to lon/lat degrees."""
        lon, lat = self._lonlat.transform(np.asarray(x, float), np.asarray(y, float))
        return [float(v) for v in np.ravel(lon)], [float(v) for v in np.ravel(lat)]

    @cached_property
    def mgrs(self) -> tuple[str, str]:
        """(latitude band, 100 km square) of the block centre, e.g. ``("U", "ES")``."""
        x0, y0, x1, y1 = self.bounds
        lon, lat = self._lonlat.transform((x0 + x1) / 2, (y0 + y1) / 2)
        return mgrs_square(self.epsg % 100, lat, (x0 + x1) / 2, (y0 + y1) / 2)

    def item_id(self, i: int) -> str:
        """Earth Search style id, e.g. ``S2A_31UES_20230105_0_L2A``."""
        band, square = self.mgrs
        sat = "S2A" if self.platform(i) == "sentinel-2a" else "S2B"
        return f"{sat}_{self.epsg % 100}{band}{square}_{self.dates[i]:%Y%m%d}_0_L2A"

    # ---- static layers ------------------------------------------------------------------
    @cached_property
    def _static(self) -> dict[str, np.ndarray]:
        """Land cover, tree cover, texture and phenology parameters on the 10 m block grid."""
        rng = np.random.default_rng((self.params.seed, 0))
        h, w = self.shape
        shp = (h, w)
        forest_f = octave_noise(rng, shp, [(120, 0.8), (30, 0.35), (8, 0.1)])
        urban_f = octave_noise(rng, shp, [(80, 0.8), (15, 0.4)])
        lake_f = octave_noise(rng, shp, [(100, 1.0), (20, 0.3)])
        lc = np.full(shp, CROPLAND, np.uint8)
        # fields: rectangular parcels with wavy borders
        sy, sx = rng.uniform(18, 26), rng.uniform(28, 40)
        wy, wx = 8 * smooth_noise(rng, shp, 40), 8 * smooth_noise(rng, shp, 40)
        rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)
        iy = np.floor((rr + wy + 40) / sy).astype(np.int64)
        ix = np.floor((cc + wx + 40) / sx).astype(np.int64)
        npy, npx = int(iy.max()) + 1, int(ix.max()) + 1
        pid = iy * npx + ix
        u_class = rng.uniform(size=npy * npx)[pid]
        group = rng.integers(0, len(CROP_GROUPS), npy * npx)[pid]
        jitter = rng.normal(0.0, 8.0, npy * npx).astype(np.float32)[pid]
        bright = rng.normal(0.0, 0.04, npy * npx).astype(np.float32)[pid]
        lc[u_class > 0.70] = GRASSLAND
        lc[u_class > 0.95] = BARE
        lc[forest_f > threshold(forest_f, 0.25)] = FOREST
        lc[urban_f > threshold(urban_f, 0.08)] = BUILT
        lc[lake_f > threshold(lake_f, 0.025)] = WATER
        # a meandering river from north to south
        centre = w * rng.uniform(0.3, 0.7) + w * 0.08 * smooth_noise(rng, (h, 1), 90)[:, 0]
        half_width = 2.0 + 1.0 * rng.uniform()
        lc[np.abs(cc - centre[:, None]) < half_width] = WATER
        del rr, cc, wy, wx
        tex = smooth_noise(rng, shp, 4)
        tc_noise = smooth_noise(rng, shp, 10)
        tc = np.zeros(shp, np.float32)
        tc = np.where(lc == FOREST, np.clip(0.78 + 0.15 * tc_noise, 0.45, 1.0), tc)
        tc = np.where(lc == GRASSLAND, np.clip(0.05 + 0.12 * tc_noise, 0.0, 0.4), tc)
        tc = np.where(lc == BUILT, np.clip(0.08 + 0.08 * tc_noise, 0.0, 0.3), tc)
        tc = tc.astype(np.float32)
        table = np.array([PHENOLOGY.get(k, (0, 0, 180, 60)) for k in range(7)], np.float32)
        gbase, gamp, peak, width = (table[lc, j] for j in range(4))
        crop_peaks = np.array([v[0] for v in CROP_GROUPS.values()], np.float32)[group]
        crop_widths = np.array([v[1] for v in CROP_GROUPS.values()], np.float32)[group]
        crop = lc == CROPLAND
        peak = np.where(crop, crop_peaks + jitter, peak + 0.5 * jitter)
        width = np.where(crop, crop_widths, width)
        texture = 1.0 + 0.05 * tex + np.where(lc == WATER, 0.0, bright)
        texture = np.clip(texture, 0.7, 1.3).astype(np.float32)
        # few distinct phenologies (one per class x parcel): evaluate per key, gather by index
        key = (lc.astype(np.int64) * (npy * npx) + pid).ravel()
        _, first, pheno_id = np.unique(key, return_index=True, return_inverse=True)
        params = np.stack([gbase, gamp, peak, width], axis=-1).astype(np.float32).reshape(-1, 4)
        pheno = params[first]
        p_static = texture * tc
        return {
            "landcover": lc,
            "tree_cover": tc,
            "texture": texture,
            "pheno": pheno,
            "pheno_id": pheno_id.reshape(shp).astype(np.int32),
            "p": p_static,
            "q0": texture - p_static,
            "crop_group": np.where(crop, group + 1, 0).astype(np.uint8),
        }

    def landcover(self) -> np.ndarray:
        """(H, W) uint8 class codes of :data:`LANDCOVER_CLASSES` on the 10 m block grid."""
        return self._static["landcover"]

    def tree_cover(self) -> np.ndarray:
        """(H, W) float32 tree-cover fraction 0..1 on the 10 m block grid."""
        return self._static["tree_cover"]

    def natural(self) -> np.ndarray:
        """(H, W) uint8: 1 where the class is in :data:`NATURAL_CLASSES`, else 0."""
        return np.isin(self.landcover(), NATURAL_CLASSES).astype(np.uint8)

    def crop_group(self) -> np.ndarray:
        """(H, W) uint8: 0 not cropland, else 1 + index into :data:`CROP_GROUPS`."""
        return self._static["crop_group"]

    # ---- the clean surface --------------------------------------------------------------
    def _doy(self, d: date) -> float:
        return float((d - date(self.params.year, 1, 1)).days + 1)

    def _terms(self, d: date, win: tuple[slice, slice]) -> tuple[np.ndarray, ...]:
        """Per-date mixing weights on a window: surface_b = P*tree_b + Q*GREEN_b + R*BG_b[class].

        P = texture*tc, Q = texture*(1-tc)*g, R = texture*(1-tc)*(1-g); also the class window.
        """
        s = self._static
        gbase, gamp, peak, width = s["pheno"].T
        dist = ((self._doy(d) - peak + 182.625) % 365.25 - 182.625) / width
        g = np.take(
            (gbase + gamp * np.exp(-0.5 * dist * dist)).astype(np.float32), s["pheno_id"][win]
        )
        q = s["q0"][win] * g
        r = s["q0"][win] - q
        return s["p"][win], q, r, s["landcover"][win]

    def _canopy_green(self, d: date) -> float:
        """Greenness 0..1 of the tree canopy (deciduous-ish, evergreen share) on date ``d``."""
        dt = (self._doy(d) - 195.0 + 182.625) % 365.25 - 182.625
        return 0.55 + 0.40 * math.exp(-0.5 * (dt / 70.0) ** 2)

    def _surface_band(self, k: int, terms: tuple[np.ndarray, ...], gt: float) -> np.ndarray:
        """Clean reflectance (float32, window of ``terms``) of band index ``k``."""
        p, q, r, lc = terms
        out = np.take(BG_TABLE[k], lc)
        out *= r
        out += q * np.float32(GREEN[k])
        out += p * np.float32(gt * CANOPY[k] + (1 - gt) * LITTER[k])
        return out

    def _block_window(self, bounds: tuple[float, float, float, float], what: str):
        x0, _, _, y1 = self.bounds
        r0 = round((y1 - bounds[3]) / RESOLUTION_M)
        c0 = round((bounds[0] - x0) / RESOLUTION_M)
        r1 = r0 + round((bounds[3] - bounds[1]) / RESOLUTION_M)
        c1 = c0 + round((bounds[2] - bounds[0]) / RESOLUTION_M)
        h, w = self.shape
        if r0 < 0 or c0 < 0 or r1 > h or c1 > w or r1 <= r0 or c1 <= c0:
            raise InvalidInputError(
                f"{what} with bounds {bounds} is not inside the synthetic world's block "
                f"{self.bounds} ({self.crs}); make the world with these tiles or a larger "
                "margin_px (WorldParams)."
            )
        return r0, r1, c0, c1

    def block_slices(self, tile: TileSpec) -> tuple[slice, slice]:
        """(rows, cols) that cut ``tile``'s haloed grid out of a (..., H, W) block array.

        E.g. ``world.tree_cover()[world.block_slices(tile)]`` is the truth on the tile's grid.

        Raises:
            InvalidInputError: the haloed tile is not inside the block (margin too small).
        """
        r0, r1, c0, c1 = self._block_window(tile.bounds, f"tile {tile.id}")
        return slice(r0, r1), slice(c0, c1)

    def clean_reflectance(
        self,
        when: date | datetime | np.datetime64 | str,
        *,
        tile: TileSpec | None = None,
        bounds: tuple[float, float, float, float] | None = None,
        bands: Sequence[str] = S2_BANDS,
    ) -> np.ndarray:
        """Cloud-free, noise-free surface reflectance of any date on a 10 m pixel window.

        Args:
            when: any date (not only acquisition dates).
            tile: return the tile's haloed grid (``tile.shape``, ``tile.coords()``).
            bounds: or a window ``(minx, miny, maxx, maxy)`` in metres of the world CRS,
                multiples of 10 m; default: the whole block.
            bands: canonical band names among ``S2_BANDS``.

        Returns:
            (band, y, x) float32 reflectance. 20 m bands are given at 10 m with the value of
            the 20 m pixel that holds each pixel centre (what a nearest-neighbour cube sees);
            the archive's DN equal ``round((value + 0.1) / 1e-4)`` where no cloud, shadow or
            noise touches them.
        """
        d = _as_date(when)
        what = f"tile {tile.id}" if tile is not None else "window"
        box = tile.bounds if tile is not None else bounds or self.bounds
        r0, r1, c0, c1 = self._block_window(box, what)
        # enlarge to the 20 m grid so 2x2 means are those of the archive
        er0, ec0 = r0 - r0 % 2, c0 - c0 % 2
        er1, ec1 = r1 + r1 % 2, c1 + c1 % 2
        terms = self._terms(d, (slice(er0, er1), slice(ec0, ec1)))
        gt = self._canopy_green(d)
        out = np.empty((len(bands), r1 - r0, c1 - c0), np.float32)
        for j, name in enumerate(bands):
            if name not in S2_BANDS:
                raise InvalidInputError(f"Band {name!r} has no reflectance; use {S2_BANDS}.")
            k = S2_BANDS.index(name)
            surf = self._surface_band(k, terms, gt)
            if BANDS[name].resolution_m == 20:
                surf = up2(mean2(surf))
            out[j] = surf[r0 - er0 : r1 - er0, c0 - ec0 : c1 - ec0]
        return out

    # ---- per-date atmosphere and rendering ----------------------------------------------
    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng((self.params.seed, 1, self.dates[i].toordinal()))

    def atmosphere(self, i: int) -> Atmosphere:
        """Clouds, cirrus, shadows and swath no-data of acquisition ``i`` (20 m grid)."""
        rng = self._rng(i)
        h2, w2 = self.shape[0] // 2, self.shape[1] // 2
        x0, y0, x1, y1 = self.bounds
        lon, lat = self._lonlat.transform((x0 + x1) / 2, (y0 + y1) / 2)
        az, elev = sun_position(lon, lat, self.acquisition_time(i))
        height = float(rng.uniform(500.0, 1500.0))
        dist = min(height / math.tan(math.radians(max(elev, 5.0))), MAX_SHADOW_M) / 20.0
        # shadows fall away from the sun: east = -sin(az), north = -cos(az); rows grow south
        dcol = int(round(-math.sin(math.radians(az)) * dist))
        drow = int(round(math.cos(math.radians(az)) * dist))
        pad = int(math.ceil(MAX_SHADOW_M / 20.0)) + 1
        cloud = np.zeros((h2, w2), np.float32)
        cirrus = np.zeros((h2, w2), np.float32)
        shadow = np.zeros((h2, w2), np.float32)
        # cover classes clear / broken / cloudy / overcast; summers clearer than winters
        summer = 0.5 + 0.5 * math.cos(2 * math.pi * (self._doy(self.dates[i]) - 190) / 365.25)
        edges = np.array([0.2 + 0.15 * summer, 0.5 + 0.15 * summer, 0.8 + 0.1 * summer])
        lo, hi = ((0.0, 0.03), (0.03, 0.4), (0.4, 0.9), (0.9, 1.0))[
            int(np.searchsorted(edges, rng.uniform()))
        ]
        cover = rng.uniform(lo, hi)
        has_cirrus = rng.uniform() < 0.3
        cirrus_cover = rng.uniform(0.1, 0.6)
        big = (h2 + 2 * pad, w2 + 2 * pad)
        inner = (slice(pad, pad + h2), slice(pad, pad + w2))
        if self.params.clouds and cover > 0.005:
            f = octave_noise(rng, big, [(50, 0.7), (12, 0.5), (3, 0.25)])
            thr = threshold(f[inner], cover)
            # flagged cloud: opacity 0.35..1; a thin unflagged haze rim (<= 0.1) around it
            rim = np.clip((f - thr + 0.15) / 0.15, 0.0, 1.0) * np.float32(0.1)
            opac = np.where(f > thr, np.clip(CLOUD_FLAG + (f - thr) / 0.8, 0.0, 1.0), rim)
            opac = opac.astype(np.float32)
            cloud = opac[inner].copy()
            src = (slice(pad - drow, pad - drow + h2), slice(pad - dcol, pad - dcol + w2))
            shadow = np.float32(0.7) * opac[src] * (cloud < CLOUD_FLAG)
        if self.params.clouds and has_cirrus:
            fc = octave_noise(rng, (h2, w2), [(60, 0.8), (20, 0.4)])
            thr = threshold(fc, cirrus_cover)
            cirrus = np.where(fc > thr, 0.02 + 0.08 * np.clip(fc - thr, 0, 1), 0).astype(np.float32)
        if self.params.clouds and self.params.overcast_tiles:
            cloud = self._overcast(i, cloud)
        nodata = np.zeros((h2, w2), bool)
        if rng.uniform() < self.params.swath_edge_prob:
            angle = math.radians(rng.uniform(-12, 12))
            rr, cc = np.mgrid[0:h2, 0:w2]
            proj = (cc * math.cos(angle) + rr * math.sin(angle)) / max(w2, 1)
            nodata = proj > rng.uniform(0.5, 0.9)
        return Atmosphere(cloud, cirrus, shadow, nodata, (drow, dcol), az, elev, height)

    def _overcast(self, i: int, cloud: np.ndarray) -> np.ndarray:
        """Thick cloud (opacity 0.95) over the overcast tiles drawn for date ``i`` (20 m grid)."""
        orng = np.random.default_rng((self.params.seed, 3, self.dates[i].toordinal()))
        byid = {t.id: t for t in self.tiles}
        for tid in self.params.overcast_tiles:
            if orng.uniform() >= self.params.overcast_prob:
                continue
            t = byid[tid].with_halo(16)
            x0, _, _, y1 = self.bounds
            r0 = max(0, round((y1 - t.bounds[3]) / RESOLUTION_M) // 2)
            c0 = max(0, round((t.bounds[0] - x0) / RESOLUTION_M) // 2)
            n = t.shape[0] // 2
            win = cloud[r0 : r0 + n, c0 : c0 + n]
            np.maximum(win, np.float32(0.95), out=win)
        return cloud

    def render(self, i: int, atm: Atmosphere | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(band, DN array)`` of acquisition ``i``, one band at a time, SCL last.

        Reflectance bands are uint16 DN (0 = no data) at their native resolution (B02 B03 B04
        B08: (H, W); the others: (H/2, W/2)); SCL is uint8 at (H/2, W/2).
        """
        atm = atm or self.atmosphere(i)
        rng = self._rng(i)
        rng.uniform(size=16)  # keep the noise stream apart from the atmosphere's draws
        d = self.dates[i]
        terms = self._terms(d, (slice(0, self.shape[0]), slice(0, self.shape[1])))
        gt = self._canopy_green(d)
        # transmitted surface share and added cloud/cirrus, at 20 m and (lazily) at 10 m
        cloudy = bool(atm.cloud.any() or atm.shadow.any() or atm.cirrus.any())
        keep20 = (1 - atm.shadow) * (1 - atm.cloud)
        grids: dict[int, tuple[np.ndarray, ...]] = {20: (keep20, atm.cloud, atm.cirrus, atm.nodata)}
        if cloudy or atm.nodata.any():
            grids[10] = tuple(up2(a) for a in grids[20])
        bank = self._noise_bank
        red = nir = np.zeros((0, 0), np.float32)
        for k, name in enumerate(S2_BANDS):
            res = BANDS[name].resolution_m
            surf = self._surface_band(k, terms, gt)
            if res == 20 or name in ("B04", "B08"):
                s20 = mean2(surf)
                red = s20 if name == "B04" else red
                nir = s20 if name == "B08" else nir
                surf = s20 if res == 20 else surf
            if cloudy:
                keep, cloud, cirrus, _ = grids[res]
                surf *= keep
                surf += cloud * np.float32(CLOUD[k])
                surf += cirrus * np.float32(CIRRUS[k])
            sigma = np.float32(NOISE[k] * self.params.noise)
            if sigma > 0:
                start = int(rng.integers(0, bank.size - surf.size + 1))
                surf += sigma * bank[start : start + surf.size].reshape(surf.shape)
            surf *= np.float32(1 / SCALE)
            surf += np.float32(-OFFSET / SCALE + 0.5)
            np.clip(surf, 1, 65535, out=surf)
            dn = surf.astype(np.uint16)
            if res in grids and grids[res][3].any():
                dn[grids[res][3]] = 0
            yield name, dn
        yield "SCL", self._scl(red, nir, atm, rng)

    @cached_property
    def _noise_bank(self) -> np.ndarray:
        """Standard normals reused at random offsets (fresh draws would dominate the run time)."""
        rng = np.random.default_rng((self.params.seed, 2))
        return rng.standard_normal(self.shape[0] * self.shape[1] + 65536, dtype=np.float32)

    def _scl(self, red: np.ndarray, nir: np.ndarray, atm: Atmosphere, rng: np.random.Generator):
        ndvi = (nir - red) / (nir + red + 1e-6)
        water = mean2((self.landcover() == WATER).astype(np.float32)) >= 0.5
        scl = np.where(ndvi > 0.4, 4, 5).astype(np.uint8)
        scl[water] = 6
        scl[rng.uniform(size=scl.shape) < 0.002] = 7
        scl[atm.shadow > SHADOW_FLAG] = 3
        scl[atm.cirrus > 0] = 10
        scl[atm.cloud >= CLOUD_FLAG] = 8
        scl[atm.cloud >= 0.75] = 9
        scl[atm.nodata] = 0
        return scl

    # ---- writing ------------------------------------------------------------------------
    def write(
        self,
        out: str | Path,
        *,
        workers: int = 2,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> Archive:
        """Write the archive (COGs, STAC, truth) under ``out``, streaming one date at a time.

        See :mod:`geoxai.synthetic.archive` for the layout.

        Args:
            out: output folder (created; existing files of the same names are replaced).
            workers: threads compressing COGs (GDAL releases the GIL).
            progress: called as ``progress(done, total, item_id)`` after each acquisition.
        """

        return write_archive(self, out, workers=workers, progress=progress)


def _as_date(when: date | datetime | np.datetime64 | str) -> date:
    """A calendar date from a date, datetime, numpy datetime64 or ISO string."""
    if isinstance(when, datetime):
        return when.date()
    if isinstance(when, date):
        return when
    try:
        return date.fromisoformat(str(np.datetime64(str(when), "D")))
    except ValueError as exc:
        raise InvalidInputError(
            f"Cannot read {when!r} as a date; give a datetime.date or an ISO 'YYYY-MM-DD'."
        ) from exc


def load_world(path: str | Path) -> SyntheticWorld:
    """Rebuild the world of an archive from its ``world.json`` (folder or file path)."""
    path = Path(path)
    path = path / "world.json" if path.is_dir() else path
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"Cannot read synthetic world parameters {path}: {exc}. Point at a folder written "
            "by `geoxai demo-data`."
        ) from exc
    return SyntheticWorld(WorldParams.from_json(d))


def make_world(
    out: str | Path,
    *,
    tiles: int | Sequence[TileSpec] = 4,
    year: int = 2023,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    **params: Any,
) -> tuple[SyntheticWorld, Archive]:
    """Build and write a world: ``tiles`` is a count (a block from the default origin) or tiles."""
    chosen = block_tiles(tiles) if isinstance(tiles, int) else tuple(tiles)
    world = SyntheticWorld(WorldParams(tiles=chosen, year=year, seed=seed, **params))
    return world, world.write(out, progress=progress)
