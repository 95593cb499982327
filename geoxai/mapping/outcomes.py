"""What the stages of a run return: small frozen value objects that travel between Ray processes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CubeStage", "TileOutcome"]


@dataclass(frozen=True)
class CubeStage:
    """Result of :func:`stage_cube` for one tile (small: travels between Ray processes).

    Attributes:
        tile_id: the tile.
        status: ``"ok"`` (cube committed at ``url``), ``"empty"`` (no scenes) or ``"failed"``.
        url: committed raw cube store, when ok.
        item_ids: STAC ids of the acquisitions in the cube.
        reason: why it is empty/failed (one line).
        seconds: wall time of the stage.
        nbytes: stored bytes of the cube (and of the S1/terrain layers).
        reused: True when a committed cube of the same query was found and kept.
        repaired: why a committed cube of the same query was rebuilt instead of reused (a
            stored chunk failed its checksum, or an old float32 cube); empty otherwise.
        s1_url: committed S1 layer (:func:`geoxai.mapping.ancillary_s1.s1_steps` dataset), when
        configured. s1_item_ids: STAC ids of the S1 acquisitions in it (empty: no coverage).
        dem_url: committed terrain layer (:func:`geoxai.mapping.ancillary_dem.terrain` dataset),
        when configured. dem_item_ids: STAC ids of the DEM items in it.
    """

    tile_id: str
    status: str
    url: str | None = None
    item_ids: tuple[str, ...] = ()
    reason: str = ""
    seconds: float = 0.0
    nbytes: int = 0
    reused: bool = False
    repaired: str = ""
    s1_url: str | None = None
    s1_item_ids: tuple[str, ...] = ()
    dem_url: str | None = None
    dem_item_ids: tuple[str, ...] = ()

    @property
    def input_items(self) -> tuple[str, ...]:
        """Every STAC item the tile's outputs derive from (S2, then S1, then DEM)."""
        return (*self.item_ids, *self.s1_item_ids, *self.dem_item_ids)


@dataclass(frozen=True)
class TileOutcome:
    """What one tile came to in this invocation of a run (small: travels between Ray processes).

    Either the tile's record as :func:`geoxai.mapping.records.write_tile` /
    :func:`~geoxai.mapping.records.write_status` wrote it (:meth:`from_dict`), or a failure the
    driver saw without a record (a worker that died): then only ``tile_id``, ``status`` and
    ``reason``.

    Attributes:
        tile_id: the tile.
        status: ``"done"``, ``"empty"`` or ``"failed"``.
        reason: why it is empty/failed (one line; empty when done).
        timings: stage timings in seconds (``cube_s``, ``smooth_s`` ...), when recorded.
        record: the whole record (its JSON form); :meth:`to_dict` gives it back unchanged.
    """

    tile_id: str
    status: str
    reason: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TileOutcome:
        """The outcome of a record dict (kept whole for :meth:`to_dict`)."""
        return cls(
            tile_id=str(d["tile_id"]),
            status=str(d["status"]),
            reason=str(d.get("reason", "") or ""),
            timings={
                str(k): float(v)
                for k, v in dict(d.get("timings") or {}).items()
                if isinstance(v, int | float)
            },
            record=dict(d),
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as written (identical JSON), or ``{tile_id, status, reason}`` (and
        ``timings`` when there are some)."""
        if self.record:
            return dict(self.record)
        out: dict[str, Any] = {"tile_id": self.tile_id, "status": self.status}
        out["reason"] = self.reason
        if self.timings:
            out["timings"] = dict(self.timings)
        return out

    def compact(self) -> TileOutcome:
        """The outcome without its record (what a driver keeps of each of 240,000 tiles)."""
        if not self.record:
            return self
        return TileOutcome(self.tile_id, self.status, self.reason, self.timings)
