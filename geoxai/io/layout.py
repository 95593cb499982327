"""The layout of one run under its root: every path a run writes (cubes, S1/DEM layers, zone
stores, records, COGs, mosaics, catalog, report). Nothing else builds a path of a run by hand.

Layout of one run and year (``<root>`` = ``<store.root>/<name>/<year>``)::

    <root>/
        config.json                     the run config
        _driver_lease.json              the driver's lease (one driver per run root)
        cubes/<tile>.zarr               a tile's raw cube (committed, reused by reruns)
        cubes/<tile>.<layer>.zarr       its Sentinel-1 steps (``s1``) and terrain (``dem``)
        zone=<epsg>/outputs.zarr/       the zone store of the outputs
        records/<tile>.json             per-tile records (written last)
        _records_index.parquet          the records compacted (:mod:`geoxai.io.json_index`)
        cogs/<layer>/<tile>.tif         per-tile COGs
        mosaics/zone=<epsg>/<layer>.vrt per-zone mosaics
        mosaics/zone=<epsg>/<layer>.overview.tif  the zone at 1/8 resolution (COG + overviews)
        catalog/                        the STAC catalog (collection.json, items)
        report.html                     the run report
        assessment.json                 the accuracy assessment (``geoxai assess``)
        assessment.html                 its report section
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geoxai.errors import InvalidInputError, look_up_option
from geoxai.io.location import StoreLocation, resolve

__all__ = [
    "ACCURACY_SECTION_FILE",
    "ASSESSMENT_FILE",
    "CUBE_LAYERS",
    "LEASE_NAME",
    "RECORD_INDEX_NAME",
    "RunLayout",
]

CUBE_LAYERS = ("s1", "dem")
"""Layers committed beside a tile's cube: Sentinel-1 steps and terrain."""

RECORD_INDEX_NAME = "_records_index.parquet"
"""Name of the compacted index of the records under the run root."""

LEASE_NAME = "_driver_lease.json"
"""Name of the driver lease under the run root."""

ASSESSMENT_FILE = "assessment.json"
"""Name of the accuracy assessment under the run root."""

ACCURACY_SECTION_FILE = "assessment.html"
"""Name of the report's accuracy section (an HTML fragment) under the run root."""


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

    def at(self, url: str) -> StoreLocation:
        """Resolved location of a URL under the root (one of the ``*_url`` methods' answers)."""
        return resolve(url, self.storage_options)

    # -- raw cubes --
    def cube_url(self, tile_id: str) -> str:
        """``<root>/cubes/<tile_id>.zarr``: the tile's committed raw cube."""
        return self.url("cubes", f"{tile_id}.zarr")

    def cube_layer_url(self, tile_id: str, layer: str) -> str:
        """``<root>/cubes/<tile_id>.<layer>.zarr`` for ``layer`` in :data:`CUBE_LAYERS`.

        Raises:
            InvalidInputError: ``layer`` is not one of :data:`CUBE_LAYERS`.
        """
        look_up_option(layer, CUBE_LAYERS, what="cube layer", error=InvalidInputError)
        return self.url("cubes", f"{tile_id}.{layer}.zarr")

    # -- outputs --
    def zone_url(self, epsg: int) -> str:
        """``<root>/zone=<epsg>/outputs.zarr``."""
        return self.url(f"zone={epsg}", "outputs.zarr")

    def records_url(self) -> str:
        """``<root>/records`` (the folder of per-tile records)."""
        return self.url("records")

    def record_url(self, tile_id: str) -> str:
        """``<root>/records/<tile_id>.json``."""
        return self.url("records", f"{tile_id}.json")

    def record_index_url(self) -> str:
        """``<root>/_records_index.parquet`` (:data:`RECORD_INDEX_NAME`): the records compacted
        into one file (:mod:`geoxai.mapping.record_index`)."""
        return self.url(RECORD_INDEX_NAME)

    def cog_url(self, layer: str, tile_id: str) -> str:
        """``<root>/cogs/<layer>/<tile_id>.tif``."""
        return self.url("cogs", layer, f"{tile_id}.tif")

    def mosaics_url(self) -> str:
        """``<root>/mosaics`` (the folder of per-zone mosaics)."""
        return self.url("mosaics")

    def mosaic_url(self, layer: str, epsg: int) -> str:
        """``<root>/mosaics/zone=<epsg>/<layer>.vrt``."""
        return self.url("mosaics", f"zone={epsg}", f"{layer}.vrt")

    def overview_url(self, layer: str, epsg: int) -> str:
        """``<root>/mosaics/zone=<epsg>/<layer>.overview.tif`` (the zone's overview COG)."""
        return self.url("mosaics", f"zone={epsg}", f"{layer}.overview.tif")

    def tile_index_url(self, layer: str, epsg: int) -> str:
        """``<root>/mosaics/zone=<epsg>/<layer>.gti.gpkg`` (the zone's GDAL tile index)."""
        return self.url("mosaics", f"zone={epsg}", f"{layer}.gti.gpkg")

    def catalog_url(self, *parts: str) -> str:
        """``<root>/catalog`` (the STAC catalog folder), or ``parts`` inside it."""
        return self.url("catalog", *parts)

    def report_url(self) -> str:
        """``<root>/report.html``."""
        return self.url("report.html")

    def config_url(self) -> str:
        """``<root>/config.json``."""
        return self.url("config.json")

    def lease_url(self) -> str:
        """``<root>/_driver_lease.json`` (:data:`LEASE_NAME`)."""
        return self.url(LEASE_NAME)

    def assessment_url(self) -> str:
        """``<root>/assessment.json`` (:data:`ASSESSMENT_FILE`)."""
        return self.url(ASSESSMENT_FILE)

    def accuracy_section_url(self) -> str:
        """``<root>/assessment.html`` (:data:`ACCURACY_SECTION_FILE`)."""
        return self.url(ACCURACY_SECTION_FILE)

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
