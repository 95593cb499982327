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
from geoxai.io import store
from geoxai.io.cube import build_cube
from geoxai.io.signing import resolve_signing
from geoxai.io.stac import search
from geoxai.mapping.ancillary import ancillary_layers
from geoxai.mapping.outcomes import CubeStage
from geoxai.mapping.settings import cube_bands, date_range, run_layout

__all__ = [
    "stage_cube",
]


def _query_signature(config: RunConfig, tile: TileSpec) -> dict[str, Any]:
    start, end = date_range(config)
    sig: dict[str, Any] = {
        "stac": config.stac.url,
        "collection": config.stac.collection,
        "max_cloud": config.stac.max_cloud,
        "start": start,
        "end": end,
        "tile": tile.id,
        "halo_px": tile.halo_px,
    }
    if config.processing.super_resolution is not None:  # 20 m bands as read, not bilinear
        sig["resampling"] = "nearest"
    if config.processing.cloud_mask != "scl":  # cubes without SCL (absent: sig unchanged)
        sig["bands"] = list(cube_bands(config))
    if config.sentinel1 is not None or config.dem is not None:  # absent: optical sig unchanged
        sig["radar"] = {
            "smoothing": dict(config.processing.smoothing),  # the S1 steps' time axis
            "sentinel1": config.sentinel1.model_dump(mode="json") if config.sentinel1 else None,
            "dem": config.dem.model_dump(mode="json") if config.dem else None,
        }
    return sig


def stage_cube(tile: TileSpec, config: RunConfig) -> CubeStage:
    """Search, build and commit the raw cube of one tile (see the module docstring).

    With ``sentinel1`` / ``dem`` sections the tile's S1 steps and terrain
    (:func:`ancillary_layers`) are committed first, beside the cube; the cube's commit marker,
    written last, names their item ids.

    Data failures (no scenes, corrupt or missing asset) come back as a ``CubeStage`` with
    status ``"empty"``/``"failed"`` and a reason; transient errors (:class:`StacError`,
    :class:`StoreError`) are raised so the caller can retry.
    """

    t0 = time.monotonic()
    layout = run_layout(config)
    url = layout.url("cubes", f"{tile.id}.zarr")
    radar_urls = {
        key: layout.url("cubes", f"{tile.id}.{key}.zarr") if getattr(config, section) else None
        for key, section in (("s1", "sentinel1"), ("dem", "dem"))
    }
    sig = _query_signature(config, tile)
    so = config.store.storage_options or None
    if store.is_committed(url, storage_options=so):
        marker = store.read_commit(url, storage_options=so)
        extra = marker.get("extra", {})
        if extra.get("query") == sig and all(
            _committed_with(u, sig, so) for u in radar_urls.values() if u
        ):
            return CubeStage(
                tile.id,
                "ok",
                url,
                tuple(extra.get("item_ids", ())),
                seconds=time.monotonic() - t0,
                nbytes=int(marker.get("nbytes", 0)),
                reused=True,
                s1_url=radar_urls["s1"],
                s1_item_ids=tuple(extra.get("s1_item_ids", ())),
                dem_url=radar_urls["dem"],
                dem_item_ids=tuple(extra.get("dem_item_ids", ())),
            )
    start, end = date_range(config)
    radar_ids: dict[str, tuple[str, ...]] = {"s1": (), "dem": ()}
    nbytes = 0
    try:
        items = search(
            config.stac.url,
            collections=config.stac.collection,
            bbox=tile.footprint(halo=True).bounds,
            datetime=(start, end),
            max_cloud=config.stac.max_cloud,
        )
        resampling = "nearest" if config.processing.super_resolution else "bilinear"
        signing = resolve_signing(config.stac.signing, config.stac.url)
        cube = build_cube(
            items,
            tile,
            bands=cube_bands(config),
            start=start,
            end=end,
            resampling=resampling,
            signing=signing,
        )
        ids = tuple(str(i) for i in cube.attrs.get("item_ids") or cube["id"].values)
        for key, layer in zip(("s1", "dem"), ancillary_layers(tile, config), strict=True):
            target = radar_urls[key]
            if layer is None or target is None:
                continue
            radar_ids[key] = tuple(str(i) for i in layer.attrs.get("item_ids", ()))
            m = store.write_dataset(
                layer,
                target,
                storage_options=so,
                overwrite=True,
                extra={"query": sig, "item_ids": radar_ids[key]},
            )
            nbytes += int(m.get("nbytes", 0))
        marker = store.write_dataset(
            cube,
            url,
            storage_options=so,
            overwrite=True,
            extra={
                "query": sig,
                "item_ids": ids,
                "s1_item_ids": radar_ids["s1"],
                "dem_item_ids": radar_ids["dem"],
            },
        )
    except NoDataError as exc:
        return CubeStage(tile.id, "empty", reason=_one_line(exc), seconds=time.monotonic() - t0)
    except (StacError, StoreError):
        raise
    except (DataAccessError, InvalidInputError, ConfigError) as exc:
        # ConfigError here: e.g. GRD amplitude items without sentinel1.grd_calibration
        return CubeStage(tile.id, "failed", reason=_one_line(exc), seconds=time.monotonic() - t0)
    return CubeStage(
        tile.id,
        "ok",
        url,
        ids,
        seconds=time.monotonic() - t0,
        nbytes=nbytes + int(marker.get("nbytes", 0)),
        s1_url=radar_urls["s1"],
        s1_item_ids=radar_ids["s1"],
        dem_url=radar_urls["dem"],
        dem_item_ids=radar_ids["dem"],
    )


def _committed_with(url: str, sig: dict[str, Any], so: Any) -> bool:
    """A committed store at ``url`` written for the query ``sig``."""

    if not store.is_committed(url, storage_options=so):
        return False
    return bool(store.read_commit(url, storage_options=so).get("extra", {}).get("query") == sig)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000]
