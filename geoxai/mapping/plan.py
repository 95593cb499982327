"""Planning a run: the tiles, what is already done, the layers and the checks before any tile
starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from geoxai.config import RunConfig
from geoxai.errors import (
    AOIError,
    ConfigError,
    NoDataError,
    StacError,
)
from geoxai.geo.aoi import cover_aoi, parse_aoi
from geoxai.geo.grid import TileSpec, tile_from_id
from geoxai.io.config_file import save_config
from geoxai.io.stac import search
from geoxai.io.zonestore import LayerSpec, ZoneGrid, ZoneStore, change_layer_specs, default_layers
from geoxai.mapping.ancillary import check_ancillary
from geoxai.mapping.records import check_tiles
from geoxai.mapping.settings import date_range, preprocess_params, run_layout
from geoxai.models.bundle import load_bundle
from geoxai.models.dsen2 import load_superres_bundle
from geoxai.temporal.smoothing import required_halo_px
from geoxai.temporal.superres import required_halo_px as superres_halo_px
from geoxai.xai.asos import load_asos_bundle
from geoxai.xai.spacex import load_spacex_bundle

__all__ = [
    "RunPlan",
    "plan_run",
    "resume_plan",
    "check_run",
    "check_stac",
]

log = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_S = 10.0
"""Seconds the pre-flight STAC search waits per request (one retry)."""


@dataclass(frozen=True)
class RunPlan:
    """What a run will do: every tile of the AOI, split into to-do and already done.

    ``invalidated``: tile id -> why, for tiles whose ``done`` record did not check out
    (missing or resized chunks or COGs, an unreadable record): planning deleted the record and
    the tile is in ``todo`` (the report lists them).
    """

    run_root: str
    config_hash: str
    tiles: tuple[TileSpec, ...]
    todo: list[TileSpec] = field(default_factory=list)
    done: list[TileSpec] = field(default_factory=list)
    invalidated: dict[str, str] = field(default_factory=dict)


def _tiles(config: RunConfig) -> list[TileSpec]:
    halo, size = config.processing.halo_px, config.processing.tile_size_m
    tiles = cover_aoi(config.aoi, halo, tile_size_m=size)
    if config.tiles:
        wanted = {tile_from_id(t, tile_size_m=size).id for t in config.tiles}
        unknown = wanted - {t.id for t in tiles}
        if unknown:
            raise ConfigError(
                f"tiles {sorted(unknown)} are not in the AOI {config.aoi!r}; list the AOI's "
                "tiles with `geoxai tiles --aoi ...`."
            )
        tiles = [t for t in tiles if t.id in wanted]
    return tiles


def _layer_specs(config: RunConfig, output_names: list[str]) -> list[Any]:

    if config.models.spacex:
        spacex_layer = LayerSpec(
            "spacex_attribution",
            "float32",
            (),
            description="SpacEX attribution: mean over bands of |G_max(x) - G_min(x)|",
            units="reflectance",
        )

    layers = list(default_layers(output_names if len(output_names) > 1 else ()))
    if config.models.spacex:
        layers.append(spacex_layer)
    if config.baseline:
        layers += list(change_layer_specs(layers[0]))
    return layers


def _check_halo(config: RunConfig, bundle_halo: int) -> None:

    mask = required_halo_px(preprocess_params(config))
    need = max(bundle_halo, mask)
    sr = superres_halo_px() if config.processing.super_resolution is not None else 0
    need = max(need, sr)
    if config.processing.halo_px < need:
        raise ConfigError(
            f"processing.halo_px = {config.processing.halo_px} is too small: the model's "
            f"windows need {bundle_halo} px, the cloud mask "
            f"(processing.cloud_mask: {config.processing.cloud_mask}) and smoothing {mask} px"
            f"{f' and super-resolution {sr} px' if sr else ''} of context for seamless tiles; "
            f"set processing.halo_px: {need} (or more)."
        )


def check_run(config: RunConfig) -> tuple[list[TileSpec], list[LayerSpec]]:
    """The run's tiles and output layers, after every check that needs no store (writes nothing).

    A tile counts as done when its record is ``done`` and the chunks and COGs it lists exist
    with their recorded sizes (:func:`geoxai.mapping.records.check_tiles`; checksums are
    ``geoxai verify``'s); a ``done`` record over missing or resized outputs is deleted by
    :func:`plan_run` and the tile redone (``RunPlan.invalidated`` says which and why).

    Raises:
        AOIError: the AOI is covered by no tile.
        ConfigError: halo too small for the model, unknown tile ids, bad smoothing keys, a
            bundle reading VV/VH/slope/DEM without the ``sentinel1``/``dem`` section (or a
            section no bundle feature uses).
        ModelBundleError: the prediction bundle cannot be read.
    """

    tiles = _tiles(config)
    if not tiles:
        raise AOIError(
            f"The AOI {config.aoi!r} (tiles: {config.tiles}) yields no tile; check the AOI "
            "with `geoxai tiles --aoi ...`."
        )
    bundle = load_bundle(config.models.prediction, device="cpu")
    check_ancillary(config, bundle.spec.inputs.features, repr(config.models.prediction))
    halo = bundle.required_halo(tiles[0].core_px)
    if config.models.asos:
        asos, _ = load_asos_bundle(config.models.asos, device="cpu")  # fails early: fit first
        halo = max(halo, asos.required_halo(tiles[0].core_px))
    if config.models.spacex:
        spacex, _ = load_spacex_bundle(config.models.spacex, device="cpu")
        halo = max(halo, spacex.required_halo(tiles[0].core_px))
    if config.processing.super_resolution is not None:
        load_superres_bundle(config.processing.super_resolution.bundle)  # fails before downloads
    _check_halo(config, halo)
    return tiles, _layer_specs(config, list(bundle.spec.output.names))


def plan_run(config: RunConfig, *, force: bool = False) -> RunPlan:
    """Tiles of the AOI, zone stores created (idempotent), config saved, done tiles found.

    Raises:
        the errors of :func:`check_run`, and StacError (the pre-flight search failed).
    """

    tiles, layers = check_run(config)
    return resume_plan(config, tiles, layers, force=force)


def resume_plan(
    config: RunConfig,
    tiles: Sequence[TileSpec],
    layers: Sequence[LayerSpec],
    *,
    force: bool = False,
) -> RunPlan:
    """The store part of :func:`plan_run` for checked ``tiles`` and ``layers``: config saved,
    zone stores created (idempotent; an existing one is opened, its metadata read once), done
    tiles found and stale ``done`` records deleted (:func:`~geoxai.mapping.records.check_tiles`
    over the zone stores just opened: one listing per prefix, one read of the record index, one
    GET per record not in it; time and memory linear in tiles), and the pre-flight STAC search
    when there is work.

    Raises:
        StoreError: the store cannot be reached or listed. StacError: the pre-flight failed.
    """
    layout = run_layout(config)
    save_config(config.model_dump(mode="json"), layout.at(layout.config_url()))
    zones = {
        epsg: ZoneStore.create(layout, grid, list(layers))
        for epsg, grid in ZoneGrid.from_tiles(list(tiles)).items()
    }
    h = config.output_hash()
    found = check_tiles(layout, tiles, h, force=force, repair=True, zones=zones)
    for tile_id, reason in found.invalidated.items():
        log.warning("tile %s: its outputs do not check out (%s); it is redone", tile_id, reason)
    if found.todo:
        check_stac(config)
    return RunPlan(layout.root, h, tuple(tiles), found.todo, found.done, found.invalidated)


def check_stac(config: RunConfig) -> None:
    """Pre-flight: the run's STAC source answers a search over the AOI and the run's dates.

    One search for one item (``PREFLIGHT_TIMEOUT_S`` per request, one retry), so a wrong URL
    or a server that is down stops the run within seconds, before any tile starts, instead of
    every cube task spending its retries. An AOI with no item at all is only a warning: its
    tiles are then recorded ``empty``.

    Raises:
        StacError: the STAC API is unreachable, answers with an error or not with STAC JSON.
    """
    start, end = date_range(config)
    try:
        search(
            config.stac.url,
            collections=config.stac.collection,
            bbox=parse_aoi(config.aoi).bounds,
            datetime=(start, end),
            max_cloud=config.stac.max_cloud,
            limit=1,
            max_items=1,
            retries=1,
            timeout=PREFLIGHT_TIMEOUT_S,
        )
    except NoDataError as exc:
        log.warning("pre-flight: %s Every tile will be recorded empty.", exc)
    except StacError as exc:
        raise StacError(f"Pre-flight check before any tile: {exc}") from None
