"""The cube stage of a run: a tile's raw cube (and S1/DEM layers) built once and committed."""

from __future__ import annotations

import time
from typing import Any

from geoxai.config import RunConfig
from geoxai.errors import (
    ConfigError,
    DataAccessError,
    InvalidInputError,
    NoDataError,
    StacError,
    StoreError,
)
from geoxai.geo.grid import TileSpec
from geoxai.io.signing import resolve_signing
from geoxai.io.tile_cube import build_tile_cube, tile_cube_query
from geoxai.mapping.ancillary import ancillary_layers
from geoxai.mapping.outcomes import CubeStage
from geoxai.mapping.settings import cube_bands, date_range, run_layout

__all__ = [
    "stage_cube",
]


def _query_signature(config: RunConfig, tile: TileSpec) -> dict[str, Any]:
    """The query of the tile's cube (:func:`geoxai.io.tile_cube.tile_cube_query`), with the
    S1/DEM settings when the run reads them."""
    return tile_cube_query(config.stac.url, tile, **_query_args(config)) | _ancillary_query(config)


def _query_args(config: RunConfig) -> dict[str, Any]:
    """The keyword arguments of a run's tile cube query (the same for the query and the build)."""
    start, end = date_range(config)
    return {
        "collection": config.stac.collection,
        "start": start,
        "end": end,
        "max_cloud": config.stac.max_cloud,
        "bands": cube_bands(config),
        "resampling": _resampling(config),
    }


def _resampling(config: RunConfig) -> str:
    """20 m bands as read (nearest) for super-resolution, bilinear otherwise."""
    return "nearest" if config.processing.super_resolution is not None else "bilinear"


def _ancillary_query(config: RunConfig) -> dict[str, Any]:
    """The S1/DEM settings that decide the layers beside the cube (empty without them: the
    optical query is unchanged)."""
    if config.sentinel1 is None and config.dem is None:
        return {}
    return {
        "radar": {
            "smoothing": dict(config.processing.smoothing),  # the S1 steps' time axis
            "sentinel1": config.sentinel1.model_dump(mode="json") if config.sentinel1 else None,
            "dem": config.dem.model_dump(mode="json") if config.dem else None,
        }
    }


def stage_cube(tile: TileSpec, config: RunConfig) -> CubeStage:
    """Search, build and commit the raw cube of one tile, or reuse a committed one of the same
    query, whoever built it (``geoxai cube`` included): :func:`geoxai.io.tile_cube.build_tile_cube`.

    With ``sentinel1`` / ``dem`` sections the tile's S1 steps and terrain
    (:func:`ancillary_layers`) are committed first, beside the cube; the cube's commit marker,
    written last, names their item ids.

    A committed cube of the same query is reused once its chunks (and its S1/DEM layers')
    match their checksums; a corrupt or old-format one is rebuilt, with a warning, and
    ``CubeStage.repaired`` says why.

    Data failures (no scenes, corrupt or missing asset) come back as a ``CubeStage`` with
    status ``"empty"``/``"failed"`` and a reason; transient errors (:class:`StacError`,
    :class:`StoreError`) are raised so the caller can retry.
    """

    t0 = time.monotonic()
    layout = run_layout(config)
    url = layout.cube_url(tile.id)
    ancillary_urls = {
        key: layout.cube_layer_url(tile.id, key) if getattr(config, section) else None
        for key, section in (("s1", "sentinel1"), ("dem", "dem"))
    }
    beside = {k: u for k, u in ancillary_urls.items() if u}

    def make_beside() -> dict[str, Any]:
        return dict(zip(("s1", "dem"), ancillary_layers(tile, config), strict=True))

    try:
        rec = build_tile_cube(
            config.stac.url,
            tile,
            url,
            **_query_args(config),
            signing=resolve_signing(config.stac.signing, config.stac.url),
            storage_options=config.store.storage_options or None,
            reuse=True,
            query_extra=_ancillary_query(config),
            beside=beside,
            make_beside=make_beside,
        )
    except NoDataError as exc:
        return CubeStage(tile.id, "empty", reason=_one_line(exc), seconds=time.monotonic() - t0)
    except (StacError, StoreError):
        raise
    except (DataAccessError, InvalidInputError, ConfigError) as exc:
        # ConfigError here: e.g. GRD amplitude items without sentinel1.grd_calibration
        return CubeStage(tile.id, "failed", reason=_one_line(exc), seconds=time.monotonic() - t0)
    ids = rec.beside_item_ids
    return CubeStage(
        tile.id,
        "ok",
        url,
        rec.item_ids,
        seconds=time.monotonic() - t0,
        nbytes=rec.nbytes,
        reused=rec.reused,
        repaired=rec.repaired,
        s1_url=ancillary_urls["s1"],
        s1_item_ids=tuple(ids.get("s1", ())),
        dem_url=ancillary_urls["dem"],
        dem_item_ids=tuple(ids.get("dem", ())),
    )


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000]
