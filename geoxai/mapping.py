"""One mapping run, stage by stage, as plain functions (the Ray driver only chains these).

Stages of a tile (``pipelines/run.py`` runs them on Ray; tests call them directly):

1. :func:`stage_cube` (CPU, I/O bound): STAC search over the tile's haloed footprint for the
   year plus margins, stackstac cube on the tile grid, committed Zarr under
   ``<run_root>/cubes/<tile_id>.zarr``. A committed cube of the same query is reused, so a
   rerun after a crash does not download again.
2. :func:`map_tile` (GPU or CPU): raw cube -> :func:`geoxai.temporal.preprocess` (cloud
   weights, Whittaker, 24 x 15-day axis, indices) -> Gaussian-blended inference of the
   prediction bundle -> ASOS map of the yearly median composite -> core-sized layers.
3. :func:`map_and_write`: layers (+ change against a baseline year) -> per-tile COGs ->
   zone Zarr chunks verified, then the tile record (exactly once,
   :func:`geoxai.outputs.write_tile`).
4. :func:`finish_run`: per-zone mosaics, STAC catalog of the outputs, ``report.html``.

Everything a tile needs travels as frozen values (:class:`~geoxai.config.RunConfig`,
:class:`~geoxai.grid.TileSpec`, :class:`CubeStage`).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoxai.config import RunConfig
from geoxai.errors import (
    ConfigError,
    DataAccessError,
    InvalidInputError,
    ModelBundleError,
    NoDataError,
    StacError,
    StoreError,
)
from geoxai.grid import TileSpec, cover_aoi, tile_from_id

__all__ = [
    "CubeStage",
    "RunPlan",
    "TileModels",
    "QUALITY_CODES",
    "preprocess_params",
    "plan_run",
    "stage_cube",
    "load_models",
    "asos_composite",
    "features_with_grid",
    "map_tile",
    "map_and_write",
    "record_empty_or_failed",
    "finish_run",
]

QUALITY_CODES = {0: "nodata", 1: "good", 2: "sparse (few clear observations or long gaps)"}
"""Values of the ``quality`` layer."""
SPARSE_MIN_OBS = 6
"""Fewer clear observations than this (year + margins) -> quality 2."""
SPARSE_MAX_GAP_DAYS = 90.0
"""A gap without clear observations longer than this -> quality 2."""


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
        nbytes: stored bytes of the cube.
        reused: True when a committed cube of the same query was found and kept.
    """

    tile_id: str
    status: str
    url: str | None = None
    item_ids: tuple[str, ...] = ()
    reason: str = ""
    seconds: float = 0.0
    nbytes: int = 0
    reused: bool = False


@dataclass(frozen=True)
class RunPlan:
    """What a run will do: every tile of the AOI, split into to-do and already done."""

    run_root: str
    config_hash: str
    tiles: tuple[TileSpec, ...]
    todo: list[TileSpec] = field(default_factory=list)
    done: list[TileSpec] = field(default_factory=list)


def _layout(config: RunConfig):
    from geoxai.outputs import RunLayout

    return RunLayout(config.run_root(), config.store.storage_options or None)


def preprocess_params(config: RunConfig):
    """The :class:`geoxai.temporal.PreprocessParams` of a run (year from the config)."""
    from geoxai.temporal import PreprocessParams, SmoothingParams

    overrides = dict(config.processing.smoothing)
    try:
        smoothing = SmoothingParams(year=config.year, **overrides)
    except TypeError as exc:
        raise ConfigError(
            f"processing.smoothing has an unknown key ({exc}); see SmoothingParams in the "
            "README's config reference."
        ) from None
    return PreprocessParams(smoothing=smoothing)


def _date_range(config: RunConfig) -> tuple[str, str]:
    m = dt.timedelta(days=config.stac.margin_days)
    start = dt.date(config.year, 1, 1) - m
    end = dt.date(config.year, 12, 31) + m
    return start.isoformat(), end.isoformat()


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
    from geoxai.outputs import change_layer_specs, default_layers

    layers = list(default_layers(output_names if len(output_names) > 1 else ()))
    if config.baseline:
        layers += list(change_layer_specs(layers[0]))
    return layers


def _check_halo(config: RunConfig, bundle_halo: int) -> None:
    from geoxai.temporal import required_halo_px

    need = max(bundle_halo, required_halo_px(preprocess_params(config)))
    if config.processing.halo_px < need:
        raise ConfigError(
            f"processing.halo_px = {config.processing.halo_px} is too small: the model's "
            f"windows and the cloud-mask buffer need {need} px of context for seamless tiles; "
            f"set processing.halo_px: {need} (or more)."
        )


def plan_run(config: RunConfig, *, force: bool = False) -> RunPlan:
    """Tiles of the AOI, zone stores created (idempotent), config saved, done tiles found.

    Raises:
        ConfigError: halo too small for the model, unknown tile ids, bad smoothing keys.
        ModelBundleError: the prediction bundle cannot be read.
    """
    from geoxai.bundle import load_bundle
    from geoxai.outputs import ZoneGrid, ZoneStore, plan_tiles, save_config

    tiles = _tiles(config)
    bundle = load_bundle(config.models.prediction, device="cpu")
    halo = bundle.required_halo(tiles[0].core_px)
    if config.models.asos:
        from geoxai.asos import load_asos_bundle

        asos, _ = load_asos_bundle(config.models.asos, device="cpu")  # fails early: fit first
        halo = max(halo, asos.required_halo(tiles[0].core_px))
    _check_halo(config, halo)
    layout = _layout(config)
    save_config(layout, config.model_dump(mode="json"))
    layers = _layer_specs(config, list(bundle.spec.output.names))
    for grid in ZoneGrid.from_tiles(tiles).values():
        ZoneStore.create(layout, grid, layers)
    h = config.output_hash()
    todo, done = plan_tiles(layout, tiles, h, force=force)
    return RunPlan(layout.root, h, tuple(tiles), todo, done)


# ---- stage 1: cube -------------------------------------------------------------------------------


def _query_signature(config: RunConfig, tile: TileSpec) -> dict[str, Any]:
    start, end = _date_range(config)
    return {
        "stac": config.stac.url,
        "collection": config.stac.collection,
        "max_cloud": config.stac.max_cloud,
        "start": start,
        "end": end,
        "tile": tile.id,
        "halo_px": tile.halo_px,
    }


def stage_cube(tile: TileSpec, config: RunConfig) -> CubeStage:
    """Search, build and commit the raw cube of one tile (see the module docstring).

    Data failures (no scenes, corrupt or missing asset) come back as a ``CubeStage`` with
    status ``"empty"``/``"failed"`` and a reason; transient errors (:class:`StacError`,
    :class:`StoreError`) are raised so the caller can retry.
    """
    from geoxai import store
    from geoxai.cube import build_cube
    from geoxai.stac import search

    t0 = time.monotonic()
    layout = _layout(config)
    url = layout.url("cubes", f"{tile.id}.zarr")
    sig = _query_signature(config, tile)
    so = config.store.storage_options or None
    if store.is_committed(url, storage_options=so):
        marker = store.read_commit(url, storage_options=so)
        extra = marker.get("extra", {})
        if extra.get("query") == sig:
            return CubeStage(
                tile.id,
                "ok",
                url,
                tuple(extra.get("item_ids", ())),
                seconds=time.monotonic() - t0,
                nbytes=int(marker.get("nbytes", 0)),
                reused=True,
            )
    start, end = _date_range(config)
    try:
        items = search(
            config.stac.url,
            collections=config.stac.collection,
            bbox=tile.footprint(halo=True).bounds,
            datetime=(start, end),
            max_cloud=config.stac.max_cloud,
        )
        cube = build_cube(items, tile, start=start, end=end)
        ids = tuple(str(i) for i in cube.attrs.get("item_ids") or cube["id"].values)
        marker = store.write_dataset(
            cube, url, storage_options=so, overwrite=True, extra={"query": sig, "item_ids": ids}
        )
    except NoDataError as exc:
        return CubeStage(tile.id, "empty", reason=_one_line(exc), seconds=time.monotonic() - t0)
    except (StacError, StoreError):
        raise
    except (DataAccessError, InvalidInputError) as exc:
        return CubeStage(tile.id, "failed", reason=_one_line(exc), seconds=time.monotonic() - t0)
    return CubeStage(
        tile.id, "ok", url, ids, seconds=time.monotonic() - t0, nbytes=int(marker.get("nbytes", 0))
    )


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000]


# ---- stage 2: models and mapping -----------------------------------------------------------------


@dataclass
class TileModels:
    """The models a tile worker holds (loaded once per actor)."""

    device: str
    prediction: Any
    asos: Any = None
    asos_table: Any = None
    asos_min_evidence: int = 1


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("resources.device is 'cuda' but no CUDA device is visible; use 'auto'.")
    return name


def load_models(config: RunConfig) -> TileModels:
    """Load the prediction bundle (and the ASOS bundle with its table) on the worker's device."""
    from geoxai.bundle import load_bundle

    device = _device(config.resources.device)
    models = TileModels(device, load_bundle(config.models.prediction, device=device))
    if config.models.asos:
        from geoxai.asos import load_asos_bundle

        models.asos, models.asos_table = load_asos_bundle(config.models.asos, device=device)
    return models


GRID_ATTRS = ("crs", "transform", "tile_id", "halo_px", "resolution_m")


def features_with_grid(ds: Any) -> Any:
    """``ds["features"]`` of :func:`geoxai.temporal.preprocess` carrying the tile grid attrs
    (``crs``, ``transform`` ...) that the inference lattice needs."""
    features = ds["features"]
    features.attrs.update({k: ds.attrs[k] for k in GRID_ATTRS if k in ds.attrs})
    return features


def asos_composite(features: Any, bands: tuple[str, ...]) -> np.ndarray:
    """The ASOS network's input for a tile: per-pixel median over the year of the smoothed
    reflectance of ``bands``; ``(len(bands), H, W)`` float32, NaN on nodata pixels."""
    x = features.sel(band=list(bands)).values  # (T, C, H, W)
    comp = np.median(x, axis=0).astype(np.float32)
    return comp


def map_tile(
    raw: Any, tile: TileSpec, models: TileModels, config: RunConfig
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, Any]]:
    """Raw haloed cube -> core-sized output layers.

    Returns:
        ``(layers, timings, info)``: layers ``prediction`` ``(K, 600, 600)`` or ``(600, 600)``
        float32 (NaN nodata), ``asos_sensitivity`` float32 (NaN masked), ``quality`` uint8
        (:data:`QUALITY_CODES`); stage timings in seconds; info (valid fraction ...).
    """
    from geoxai.temporal import preprocess

    timings: dict[str, float] = {}
    t = time.monotonic()
    ds = preprocess(raw, preprocess_params(config), device=_smooth_device(models.device))
    ds = ds.compute() if hasattr(ds, "compute") else ds
    timings["smooth_s"] = time.monotonic() - t
    valid = np.asarray(ds["valid"].values, dtype=bool)
    rs, cs = tile.core_slice

    features = features_with_grid(ds)
    t = time.monotonic()
    pred = models.prediction.predict_dataset(features, valid)
    timings["predict_s"] = time.monotonic() - t
    p = np.asarray(pred["prediction"].values, dtype=np.float32)[:, rs, cs]
    layers: dict[str, np.ndarray] = {"prediction": p[0] if p.shape[0] == 1 else p}

    if models.asos is not None:
        from geoxai.asos import asos_map

        t = time.monotonic()
        image = asos_composite(features, tuple(models.asos.spec.inputs.features))
        image[:, ~valid] = np.nan
        sens, _ = asos_map(
            models.asos.net,
            models.asos_table,
            image,
            min_evidence=models.asos_min_evidence,
            window=models.asos.window_params(pad_edges=False),
            transform=raw.attrs["transform"],
        )
        layers["asos_sensitivity"] = sens[rs, cs].astype(np.float32)
        timings["asos_s"] = time.monotonic() - t

    n_obs = np.asarray(ds["n_obs"].values)[rs, cs]
    gap = np.asarray(ds["max_gap_days"].values)[rs, cs]
    q = np.where(valid[rs, cs], 1, 0).astype(np.uint8)
    q[(q == 1) & ((n_obs < SPARSE_MIN_OBS) | (gap > SPARSE_MAX_GAP_DAYS))] = 2
    layers["quality"] = q
    info = {"valid_fraction": float((q > 0).mean()), "n_acquisitions": int(raw.sizes["time"])}
    return layers, timings, info


def _smooth_device(device: str) -> str | None:
    return "cuda" if device.startswith("cuda") else None


def map_and_write(
    tile: TileSpec, cube: CubeStage, models: TileModels, config: RunConfig
) -> dict[str, Any]:
    """Map one tile from its committed cube and write its outputs exactly once; the record."""
    from geoxai import store
    from geoxai.outputs import RunLayout, ZoneStore, change_layers, write_tile

    if cube.url is None:
        raise ValueError(
            f"tile {tile.id}: map_and_write needs a committed cube (status {cube.status})."
        )
    t0 = time.monotonic()
    layout = _layout(config)
    raw = store.read_cube(cube.url, storage_options=config.store.storage_options or None)
    raw = raw.load()
    timings = {"cube_s": cube.seconds, "read_s": time.monotonic() - t0}
    try:
        layers, t_map, info = map_tile(raw, tile, models, config)
    except (StacError, StoreError):
        raise  # transient: the driver retries the tile
    except NoDataError as exc:  # e.g. no pixel with enough clear observations
        return _status(layout, tile, "empty", exc, cube, config, timings)
    except (DataAccessError, InvalidInputError, ModelBundleError) as exc:
        return _status(layout, tile, "failed", exc, cube, config, timings)
    timings.update(t_map)
    if config.baseline:
        try:
            layers.update(
                change_layers(
                    RunLayout(config.baseline, config.store.storage_options or None),
                    tile,
                    layers["prediction"],
                    threshold=config.processing.change_threshold,
                )
            )
        except NoDataError as exc:
            info["change"] = f"no baseline for this tile ({_one_line(exc)})"
    zone = ZoneStore.open(layout, tile.epsg)
    record: dict[str, Any] = {
        "config_hash": config.output_hash(),
        "input_items": list(cube.item_ids),
        "device": models.device,
        "info": info,
    }
    if config.processing.write_cogs:
        from geoxai.cog import write_tile_cogs

        t = time.monotonic()
        record["cogs"] = write_tile_cogs(layout, zone, tile, layers)
        timings["cog_s"] = time.monotonic() - t
    t = time.monotonic()
    record["timings"] = timings
    out = write_tile(zone, tile, layers, record)
    out.setdefault("timings", {})["write_s"] = time.monotonic() - t
    return out


def _status(
    layout: Any,
    tile: TileSpec,
    status: str,
    exc: BaseException,
    cube: CubeStage,
    config: RunConfig,
    timings: dict[str, float],
) -> dict[str, Any]:
    from geoxai.outputs import write_status

    return write_status(
        layout,
        tile,
        status,
        _one_line(exc),
        {
            "config_hash": config.output_hash(),
            "input_items": list(cube.item_ids),
            "timings": timings,
        },
    )


def record_empty_or_failed(tile: TileSpec, cube: CubeStage, config: RunConfig) -> dict[str, Any]:
    """Write the record of a tile whose cube stage found no data or failed; return it."""
    from geoxai.outputs import write_status

    return write_status(
        _layout(config),
        tile,
        cube.status,
        cube.reason,
        {
            "config_hash": config.output_hash(),
            "input_items": list(cube.item_ids),
            "timings": {"cube_s": cube.seconds},
        },
    )


# ---- stage 4: finish -----------------------------------------------------------------------------


def finish_run(
    config: RunConfig, plan: RunPlan, outcomes: dict[str, dict[str, Any]], *, wall_s: float
) -> str:
    """Mosaics per zone, the STAC catalog of the outputs and ``report.html``; the report URL."""
    from geoxai.catalog import write_catalog
    from geoxai.cog import build_mosaics
    from geoxai.outputs import ZoneStore, read_records
    from geoxai.report import write_report

    layout = _layout(config)
    records = read_records(layout)
    done_ids = {r["tile_id"] for r in records if r.get("status") == "done"}
    done_tiles = [t for t in plan.tiles if t.id in done_ids]
    mosaics: dict[int, dict[str, str]] = {}
    if config.processing.write_cogs and done_tiles:
        zones = {t.epsg for t in done_tiles}
        specs = list(ZoneStore.open(layout, next(iter(zones))).layers.values())
        mosaics = build_mosaics(layout, done_tiles, specs)
    report = write_report(
        layout, config, records, plan=plan, this_run=outcomes, wall_s=wall_s, mosaics=mosaics
    )
    write_catalog(layout, config, records, mosaics=mosaics)  # links report.html: write it first
    return report
