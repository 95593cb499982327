"""The parameters of a synthetic world (:class:`WorldParams`, seed included) and the
atmosphere of one acquisition (:class:`Atmosphere`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from geoxai.errors import ConfigError
from geoxai.geo.bands import S2_BANDS
from geoxai.geo.grid import RESOLUTION_M, TileSpec, tile_from_id

if TYPE_CHECKING:
    pass
from geoxai.synthetic.fields import (
    block_tiles,
)

__all__ = ["WorldParams", "Atmosphere"]


@dataclass(frozen=True)
class WorldParams:
    """Everything that defines a synthetic world (the seed included).

    Attributes:
        tiles: the tiles the world must cover (one UTM zone); the data block is their bounding
            rectangle plus the margin.
        year: target year; acquisitions cover it plus ``pad_days`` on each side.
        seed: random seed; same params -> same world, byte for byte.
        margin_px: extra 10 m pixels of data around the tiles (>= the halo you will use; even).
        revisit_days: days between acquisitions (S2A + S2B: 5).
        pad_days: days of acquisitions before 1 January and after 31 December.
        start: first acquisition date override (tests: a short period), ``None`` = year - pad.
        end: last acquisition date override (inclusive), ``None`` = year end + pad.
        clouds: False gives a cloud-free, shadow-free archive (noise and swath edges remain).
        noise: multiplier of the per-band sensor noise (0 = none; 1 = 0.003..0.005 reflectance).
        swath_edge_prob: probability that a date has a no-data swath edge across the block.
        corrupt: ``(acquisition index, band)`` pairs whose COG is truncated after writing.
        collection_id: STAC collection id of the items.
        with_s1: also write Sentinel-1 VV/VH (:mod:`geoxai.synthetic.ancillary`, own collection).
        with_dem: also write a DEM (EPSG:4326 COG, own collection) and elevation/slope truth.
        s1_revisit_days: days between S1 acquisitions (directions alternate).
        overcast_tiles: ids of tiles whose cores (+16 px) are under thick cloud on a share
            ``overcast_prob`` of the dates (a persistently cloudy region, as in the tropics).
        overcast_prob: probability per date and overcast tile of the thick cloud.
    """

    tiles: tuple[TileSpec, ...] = field(default_factory=block_tiles)
    year: int = 2023
    seed: int = 0
    margin_px: int = 64
    revisit_days: int = 5
    pad_days: int = 30
    start: date | None = None
    end: date | None = None
    clouds: bool = True
    noise: float = 1.0
    swath_edge_prob: float = 0.1
    corrupt: tuple[tuple[int, str], ...] = ()
    collection_id: str = "sentinel-2-l2a"
    with_s1: bool = False
    with_dem: bool = False
    s1_revisit_days: int = 6
    overcast_tiles: tuple[str, ...] = ()
    overcast_prob: float = 0.9

    def __post_init__(self) -> None:
        tiles = tuple(t.with_halo(0) for t in self.tiles)
        object.__setattr__(self, "tiles", tiles)
        object.__setattr__(self, "overcast_tiles", tuple(str(t) for t in self.overcast_tiles))
        unknown = sorted(set(self.overcast_tiles) - {t.id for t in tiles})
        if unknown:
            raise ConfigError(
                f"overcast_tiles {unknown} are not tiles of the world ({[t.id for t in tiles]})."
            )
        if not 0.0 <= self.overcast_prob <= 1.0 or self.s1_revisit_days < 1:
            raise ConfigError("overcast_prob must be in [0, 1] and s1_revisit_days >= 1.")
        if not tiles:
            raise ConfigError("WorldParams.tiles is empty; give at least one TileSpec.")
        if len({t.epsg for t in tiles}) != 1:
            raise ConfigError(
                f"World tiles span several UTM zones {sorted({t.crs for t in tiles})}; a "
                "synthetic world lives in one zone: pass tiles of one EPSG code."
            )
        if any(t.resolution_m != RESOLUTION_M for t in tiles):
            raise ConfigError(f"World tiles must have resolution_m={RESOLUTION_M}.")
        if self.margin_px < 0 or self.margin_px % 2:
            raise ConfigError(
                f"margin_px must be an even number >= 0 (20 m bands), got {self.margin_px}."
            )
        if any((t.tile_size_m // RESOLUTION_M) % 2 for t in tiles):
            raise ConfigError("tile_size_m must be a multiple of 20 m so 20 m bands align.")
        if self.revisit_days < 1 or self.pad_days < 0:
            raise ConfigError(
                f"revisit_days must be >= 1 and pad_days >= 0, got {self.revisit_days}, "
                f"{self.pad_days}."
            )
        if not 0.0 <= self.swath_edge_prob <= 1.0 or self.noise < 0:
            raise ConfigError("swath_edge_prob must be in [0, 1] and noise >= 0.")
        for _, b in self.corrupt:
            if b not in (*S2_BANDS, "SCL"):
                raise ConfigError(f"corrupt band {b!r} is not one of {(*S2_BANDS, 'SCL')}.")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (tiles as ids); :meth:`from_json` inverts it."""
        d = asdict(self)
        d["tiles"] = [t.id for t in self.tiles]
        d["tile_size_m"] = self.tiles[0].tile_size_m
        d["start"] = self.start.isoformat() if self.start else None
        d["end"] = self.end.isoformat() if self.end else None
        d["corrupt"] = [list(c) for c in self.corrupt]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WorldParams:
        """Parameters from :meth:`to_json` output."""
        d = dict(d)
        size = d.pop("tile_size_m", 6000)
        d["tiles"] = tuple(tile_from_id(t, tile_size_m=size) for t in d["tiles"])
        d["start"] = date.fromisoformat(d["start"]) if d.get("start") else None
        d["end"] = date.fromisoformat(d["end"]) if d.get("end") else None
        d["corrupt"] = tuple((int(i), str(b)) for i, b in d.get("corrupt", ()))
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"Synthetic world parameters {sorted(d)} do not fit: {exc}.") from exc


@dataclass(frozen=True)
class Atmosphere:
    """Clouds, shadows and no-data of one acquisition on the block's 20 m grid.

    Attributes:
        cloud: (H/2, W/2) float32 cloud opacity 0..1; SCL flags >= ``CLOUD_FLAG`` (8, 9 from
            0.75); below it a thin haze rim (<= 0.1) around clouds that SCL misses, as real
            SCL misses cloud edges.
        cirrus: (H/2, W/2) float32 thin-cirrus thickness (reflectance added in blue), 0..~0.1.
        shadow: (H/2, W/2) float32 darkening by cloud shadow 0..0.7; SCL 3 above
            ``SHADOW_FLAG`` (faint rim shadows stay unflagged).
        nodata: (H/2, W/2) bool, outside the swath.
        shadow_offset_px: (rows, cols) displacement of shadows from clouds, 20 m pixels.
        sun_azimuth: degrees clockwise from north.
        sun_elevation: degrees above the horizon.
        cloud_height_m: cloud-base height used for the shadow displacement, metres.
    """

    cloud: np.ndarray
    cirrus: np.ndarray
    shadow: np.ndarray
    nodata: np.ndarray
    shadow_offset_px: tuple[int, int]
    sun_azimuth: float
    sun_elevation: float
    cloud_height_m: float
