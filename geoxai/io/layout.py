"""The layout of one run under its root: every path a run writes (cubes, S1/DEM layers, zone
stores, records, COGs, mosaics, catalog, report).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geoxai.io.location import StoreLocation, resolve

__all__ = [
    "RunLayout",
]


@dataclass(frozen=True)
class RunLayout:
    """Where the outputs of one run and year live (see the module docstring).

    Attributes:
        root: the year-partitioned run root, ``<store.root>/<name>/<year>`` (path or s3 URL).
        storage_options: s3fs options; None = from the AWS_* environment variables.
    """

    root: str
    storage_options: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", self.location.url)

    @property
    def location(self) -> StoreLocation:
        """The resolved root."""
        return resolve(self.root, self.storage_options)

    def url(self, *parts: str) -> str:
        """URL of ``parts`` joined under the root."""
        return "/".join([self.root.rstrip("/"), *parts])

    def loc(self, *parts: str) -> StoreLocation:
        """Resolved location of ``parts`` under the root."""
        return resolve(self.url(*parts), self.storage_options)

    def zone_url(self, epsg: int) -> str:
        """``<root>/zone=<epsg>/outputs.zarr``."""
        return self.url(f"zone={epsg}", "outputs.zarr")

    def record_url(self, tile_id: str) -> str:
        """``<root>/records/<tile_id>.json``."""
        return self.url("records", f"{tile_id}.json")

    def cog_url(self, layer: str, tile_id: str) -> str:
        """``<root>/cogs/<layer>/<tile_id>.tif``."""
        return self.url("cogs", layer, f"{tile_id}.tif")

    def mosaic_url(self, layer: str, epsg: int) -> str:
        """``<root>/mosaics/zone=<epsg>/<layer>.vrt``."""
        return self.url("mosaics", f"zone={epsg}", f"{layer}.vrt")

    def catalog_url(self) -> str:
        """``<root>/catalog`` (the STAC catalog folder)."""
        return self.url("catalog")

    def report_url(self) -> str:
        """``<root>/report.html``."""
        return self.url("report.html")

    def config_url(self) -> str:
        """``<root>/config.json``."""
        return self.url("config.json")

    def zones(self) -> list[int]:
        """EPSG codes of the zone stores present under the root."""
        loc = self.location
        fs = loc.filesystem()
        try:
            fs.invalidate_cache()
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(loc.path, detail=False)]
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if n.startswith("zone=") and n[5:].isdigit():
                out.append(int(n[5:]))
        return sorted(out)
