"""What the stages of a run return: small frozen value objects that travel between Ray processes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CubeStage"]


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
    s1_url: str | None = None
    s1_item_ids: tuple[str, ...] = ()
    dem_url: str | None = None
    dem_item_ids: tuple[str, ...] = ()

    @property
    def input_items(self) -> tuple[str, ...]:
        """Every STAC item the tile's outputs derive from (S2, then S1, then DEM)."""
        return (*self.item_ids, *self.s1_item_ids, *self.dem_item_ids)
