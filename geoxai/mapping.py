"""One mapping run, stage by stage, as plain functions (the Ray driver only chains these).

Stages of a tile (``pipelines/run.py`` runs them on Ray; tests call them directly):

1. :func:`stage_cube` (CPU, I/O bound): STAC search over the tile's haloed footprint for the
   year plus margins, stackstac cube on the tile grid, committed Zarr under
   ``<run_root>/cubes/<tile_id>.zarr``. With a ``sentinel1`` / ``dem`` config section (the
   bundle reads ``VV``/``VH`` / ``slope``/``DEM``) also the tile's S1 layer
   (:func:`geoxai.s1.s1_steps`: per-step median dB on the optical time axis) and terrain
   (:func:`geoxai.dem.terrain`, computed with the halo), committed beside it as
   ``<tile_id>.s1.zarr`` / ``<tile_id>.dem.zarr``. A committed cube of the same query is
   reused, so a rerun after a crash does not download again.
2. :func:`map_tile` (GPU or CPU): raw cube -> :func:`geoxai.temporal.preprocess` (cloud
   weights, Whittaker, 24 x 15-day axis, indices) -> (:func:`geoxai.temporal.fuse` with the S1
   and terrain layers, in the bundle's feature order) -> Gaussian-blended inference of the
   prediction bundle -> ASOS map of the yearly median composite -> core-sized layers. A tile
   without S1 items maps with the flagged nodata S1 layer (its record says so), not a failure.
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
    "S1_FEATURES",
    "TERRAIN_FEATURES",
    "preprocess_params",
    "radar_needs",
    "radar_layers",
    "tile_features",
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
S1_FEATURES = ("VV", "VH", "HH", "HV")
"""Bundle features served by the ``sentinel1`` config section (dB or [0, 1], see its scale)."""
TERRAIN_FEATURES = ("slope", "DEM")
"""Bundle features served by the ``dem`` config section (degrees, metres)."""


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
        s1_url: committed S1 layer (:func:`geoxai.s1.s1_steps` dataset), when configured.
        s1_item_ids: STAC ids of the S1 acquisitions in it (empty: no coverage).
        dem_url: committed terrain layer (:func:`geoxai.dem.terrain` dataset), when configured.
        dem_item_ids: STAC ids of the DEM items in it.
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

    if config.models.spacex:
        from geoxai.outputs import LayerSpec

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
    from geoxai.temporal import required_halo_px

    need = max(bundle_halo, required_halo_px(preprocess_params(config)))
    if config.processing.halo_px < need:
        raise ConfigError(
            f"processing.halo_px = {config.processing.halo_px} is too small: the model's "
            f"windows and the cloud-mask buffer need {need} px of context for seamless tiles; "
            f"set processing.halo_px: {need} (or more)."
        )


def radar_needs(features: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(s1, terrain)``: the model features that need Sentinel-1 / the DEM, in bundle order."""
    names = [str(f) for f in features]
    return (
        tuple(f for f in names if f in S1_FEATURES),
        tuple(f for f in names if f in TERRAIN_FEATURES),
    )


def _check_radar(config: RunConfig, features: Any, where: str) -> None:
    """The radar/terrain sections must be there exactly when the bundle reads those features."""
    s1, terr = radar_needs(features)
    if s1 and config.sentinel1 is None:
        raise ConfigError(
            f"The prediction bundle {where} reads Sentinel-1 features {list(s1)} but the run "
            "config has no 'sentinel1' section; add e.g. `sentinel1: {collection: "
            "sentinel-1-rtc}` (see Sentinel1Config), with the scale the model was trained on."
        )
    if s1 and config.sentinel1 is not None:
        lacking = [p for p in s1 if p not in config.sentinel1.polarizations]
        if lacking:
            raise ConfigError(
                f"The prediction bundle {where} reads {lacking} but sentinel1.polarizations is "
                f"{list(config.sentinel1.polarizations)}; add {lacking} to it."
            )
    if terr and config.dem is None:
        raise ConfigError(
            f"The prediction bundle {where} reads terrain features {list(terr)} but the run "
            "config has no 'dem' section; add e.g. `dem: {collection: cop-dem-glo-30}` "
            "(see DemConfig)."
        )
    for key, used, what in (("sentinel1", s1, "VV/VH"), ("dem", terr, "slope/DEM")):
        if getattr(config, key) is not None and not used:
            raise ConfigError(
                f"The run config has a '{key}' section but the prediction bundle {where} reads "
                f"none of the {what} features (it reads {list(features)}); remove '{key}' "
                "(it would download data no model uses) or use a bundle trained with them."
            )


def plan_run(config: RunConfig, *, force: bool = False) -> RunPlan:
    """Tiles of the AOI, zone stores created (idempotent), config saved, done tiles found.

    Raises:
        ConfigError: halo too small for the model, unknown tile ids, bad smoothing keys, a
            bundle reading VV/VH/slope/DEM without the ``sentinel1``/``dem`` section (or a
            section no bundle feature uses).
        ModelBundleError: the prediction bundle cannot be read.
    """
    from geoxai.bundle import load_bundle
    from geoxai.outputs import ZoneGrid, ZoneStore, plan_tiles, save_config

    tiles = _tiles(config)
    bundle = load_bundle(config.models.prediction, device="cpu")
    _check_radar(config, bundle.spec.inputs.features, repr(config.models.prediction))
    halo = bundle.required_halo(tiles[0].core_px)
    if config.models.asos:
        from geoxai.asos import load_asos_bundle

        asos, _ = load_asos_bundle(config.models.asos, device="cpu")  # fails early: fit first
        halo = max(halo, asos.required_halo(tiles[0].core_px))
    if config.models.spacex:
        from geoxai.spacex import load_spacex_bundle

        spacex, _ = load_spacex_bundle(config.models.spacex, device="cpu")
        halo = max(halo, spacex.required_halo(tiles[0].core_px))
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
    sig: dict[str, Any] = {
        "stac": config.stac.url,
        "collection": config.stac.collection,
        "max_cloud": config.stac.max_cloud,
        "start": start,
        "end": end,
        "tile": tile.id,
        "halo_px": tile.halo_px,
    }
    if config.sentinel1 is not None or config.dem is not None:  # absent: optical sig unchanged
        sig["radar"] = {
            "smoothing": dict(config.processing.smoothing),  # the S1 steps' time axis
            "sentinel1": config.sentinel1.model_dump(mode="json") if config.sentinel1 else None,
            "dem": config.dem.model_dump(mode="json") if config.dem else None,
        }
    return sig


def radar_layers(tile: TileSpec, config: RunConfig) -> tuple[Any, Any]:
    """The tile's S1 steps and terrain as the config asks (None for an absent section).

    Returns:
        ``(s1, terrain)``: :func:`geoxai.s1.s1_steps` dataset (``backscatter`` ``(24, P, y, x)``
        dB on the optical time axis, ``s1_valid``/``s1_n_obs``/``s1_flags``; the flagged
        nodata layer when no S1 item covers the tile) and :func:`geoxai.dem.terrain` dataset
        (``DEM`` m, ``slope`` degrees, ``dem_flags``), both on ``tile``'s haloed grid, loaded.
    """
    s1 = terr = None
    if config.sentinel1 is not None:
        from geoxai.s1 import s1_steps

        s1 = s1_steps(
            config.sentinel1.url or config.stac.url,
            tile,
            preprocess_params(config).smoothing,
            config.sentinel1.params(),
        )
    if config.dem is not None:
        from geoxai.dem import terrain

        terr = terrain(config.dem.url or config.stac.url, tile, config.dem.params())
    return s1, terr


def stage_cube(tile: TileSpec, config: RunConfig) -> CubeStage:
    """Search, build and commit the raw cube of one tile (see the module docstring).

    With ``sentinel1`` / ``dem`` sections the tile's S1 steps and terrain
    (:func:`radar_layers`) are committed first, beside the cube; the cube's commit marker,
    written last, names their item ids.

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
    start, end = _date_range(config)
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
        cube = build_cube(items, tile, start=start, end=end)
        ids = tuple(str(i) for i in cube.attrs.get("item_ids") or cube["id"].values)
        for key, layer in zip(("s1", "dem"), radar_layers(tile, config), strict=True):
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
    from geoxai import store

    if not store.is_committed(url, storage_options=so):
        return False
    return bool(store.read_commit(url, storage_options=so).get("extra", {}).get("query") == sig)


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
    spacex: Any = None


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
    if config.models.spacex:
        from geoxai.spacex import load_spacex_bundle

        models.spacex, _ = load_spacex_bundle(config.models.spacex, device=device)
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


def tile_features(
    raw: Any,
    tile: TileSpec,
    config: RunConfig,
    features: Any,
    *,
    s1: Any = None,
    terrain: Any = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """Raw haloed cube (+ S1/terrain layers) -> the optical and the model-ready datasets.

    Args:
        raw: the tile's raw cube (:func:`stage_cube`), loaded.
        tile: the tile with its halo.
        config: the run config (smoothing, sentinel1.scale / db_floor).
        features: the prediction bundle's feature names, in model order.
        s1: the tile's :func:`geoxai.s1.s1_steps` dataset; None: computed here when
            ``features`` need it (:func:`radar_layers`).
        terrain: the tile's :func:`geoxai.dem.terrain` dataset; None: computed here if needed.
        device: smoothing device (None = numpy, ``"cuda"``).

    Returns:
        ``(optical, model)``: :func:`geoxai.temporal.preprocess`'s dataset and the dataset the
        model reads. Without radar features both are the same object; otherwise ``model`` is
        :func:`geoxai.temporal.fuse`'s: ``features`` ``(24, len(features), y, x)`` in
        ``features`` order (VV/VH dB or [0, 1] per ``sentinel1.scale``, slope degrees, DEM
        m), ``valid`` = optical valid | S1 valid, plus ``valid_optical``, ``s1_valid``,
        ``s1_flags``, ``dem_flags``, and attrs ``s1_items``/``s1_orbit``/``dem_items``.
    """
    from geoxai.temporal import fuse, preprocess

    ds = preprocess(raw, preprocess_params(config), device=device)
    ds = ds.compute() if hasattr(ds, "compute") else ds
    need_s1, need_dem = radar_needs(features)
    if not (need_s1 or need_dem):
        return ds, ds
    _check_radar(config, features, "of this run")
    if (need_s1 and s1 is None) or (need_dem and terrain is None):
        got_s1, got_dem = radar_layers(tile, config)
        s1 = s1 if s1 is not None else got_s1
        terrain = terrain if terrain is not None else got_dem
    kw: dict[str, Any] = {}
    if config.sentinel1 is not None:
        kw = {"s1_scale": config.sentinel1.scale, "db_floor": config.sentinel1.db_floor}
    fused = fuse(
        ds,
        s1 if need_s1 else None,
        terrain if need_dem else None,
        order=[str(f) for f in features],
        **kw,
    )
    return ds, fused


def map_tile(
    raw: Any,
    tile: TileSpec,
    models: TileModels,
    config: RunConfig,
    *,
    s1: Any = None,
    terrain: Any = None,
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, Any]]:
    """Raw haloed cube (+ the S1/terrain layers the bundle reads) -> core-sized output layers.

    ``s1`` / ``terrain``: the tile's committed layers (:func:`stage_cube`); None computes them
    here when the bundle reads VV/VH / slope/DEM (see :func:`tile_features`).

    Returns:
        ``(layers, timings, info)``: layers ``prediction`` ``(K, 600, 600)`` or ``(600, 600)``
        float32 (NaN nodata), ``asos_sensitivity`` float32 (NaN masked), ``quality`` uint8
        (:data:`QUALITY_CODES`; pixels seen by radar only are 2, sparse); stage timings in
        seconds; info (valid fraction, and with radar ``s1``/``dem`` coverage summaries).
    """
    timings: dict[str, float] = {}
    t = time.monotonic()
    feats_in = list(models.prediction.spec.inputs.features)
    ds, mds = tile_features(
        raw, tile, config, feats_in, s1=s1, terrain=terrain, device=_smooth_device(models.device)
    )
    timings["smooth_s"] = time.monotonic() - t
    valid = np.asarray(mds["valid"].values, dtype=bool)
    valid_optical = np.asarray(ds["valid"].values, dtype=bool)
    rs, cs = tile.core_slice

    features = features_with_grid(mds)
    t = time.monotonic()
    pred = models.prediction.predict_dataset(features, valid)
    timings["predict_s"] = time.monotonic() - t
    p = np.asarray(pred["prediction"].values, dtype=np.float32)[:, rs, cs]
    layers: dict[str, np.ndarray] = {"prediction": p[0] if p.shape[0] == 1 else p}

    composites: dict[tuple[str, ...], np.ndarray] = {}

    def composite(bands: Any) -> np.ndarray:
        """The explainers' annual composite of ``bands``, NaN off the optical valid mask; made
        once per band set (ASOS and SpacEX usually read the same one)."""
        key = tuple(str(b) for b in bands)
        if key not in composites:
            image = asos_composite(features_with_grid(ds), key)
            image[:, ~valid_optical] = np.nan
            composites[key] = image
        return composites[key]

    if models.asos is not None:
        from geoxai.asos import asos_map

        t = time.monotonic()
        sens, _ = asos_map(
            models.asos.net,
            models.asos_table,
            composite(models.asos.spec.inputs.features),
            min_evidence=models.asos_min_evidence,
            window=models.asos.window_params(pad_edges=False),
            transform=raw.attrs["transform"],
        )
        layers["asos_sensitivity"] = sens[rs, cs].astype(np.float32)
        timings["asos_s"] = time.monotonic() - t

    if models.spacex is not None:
        from geoxai.spacex import spacex_attribution

        t = time.monotonic()
        attr = spacex_attribution(
            models.spacex,
            composite(models.spacex.spec.inputs.features),
            window=models.spacex.window_params(pad_edges=False),
            transform=raw.attrs["transform"],
        )
        layers["spacex_attribution"] = attr[rs, cs].astype(np.float32)
        timings["spacex_s"] = time.monotonic() - t

    n_obs = np.asarray(ds["n_obs"].values)[rs, cs]
    gap = np.asarray(ds["max_gap_days"].values)[rs, cs]
    q = np.where(valid[rs, cs], 1, 0).astype(np.uint8)
    q[(q == 1) & ((n_obs < SPARSE_MIN_OBS) | (gap > SPARSE_MAX_GAP_DAYS))] = 2
    layers["quality"] = q
    info: dict[str, Any] = {
        "valid_fraction": float((q > 0).mean()),
        "n_acquisitions": int(raw.sizes["time"]),
    }
    info.update(_radar_info(mds, rs, cs))
    return layers, timings, info


def _radar_info(mds: Any, rs: slice, cs: slice) -> dict[str, Any]:
    """Coverage of the fused S1/terrain layers over the tile core, for the tile record."""
    from geoxai.dem import FLAG_NO_DEM, FLAG_VOID
    from geoxai.s1 import FLAG_NO_COVERAGE

    out: dict[str, Any] = {}
    if "s1_flags" in mds:
        flags = np.asarray(mds["s1_flags"].values)[rs, cs]
        no_cov = (flags & FLAG_NO_COVERAGE) > 0
        out["s1"] = {
            "items": len(mds.attrs.get("s1_items", [])),
            "orbit": str(mds.attrs.get("s1_orbit", "")),
            "valid_fraction": float((~no_cov).mean()),
            "no_coverage": bool(no_cov.all()),
            "flag_bits": int(np.bitwise_or.reduce(flags, axis=None)),
        }
    if "dem_flags" in mds:
        flags = np.asarray(mds["dem_flags"].values)[rs, cs]
        out["dem"] = {
            "items": len(mds.attrs.get("dem_items", [])),
            "valid_fraction": float(((flags & FLAG_VOID) == 0).mean()),
            "no_coverage": bool(((flags & FLAG_NO_DEM) > 0).all()),
            "flag_bits": int(np.bitwise_or.reduce(flags, axis=None)),
        }
    return out


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
    so = config.store.storage_options or None
    raw = store.read_cube(cube.url, storage_options=so)
    raw = raw.load()
    s1 = store.read_dataset(cube.s1_url, storage_options=so).load() if cube.s1_url else None
    terr = store.read_dataset(cube.dem_url, storage_options=so).load() if cube.dem_url else None
    timings = {"cube_s": cube.seconds, "read_s": time.monotonic() - t0}
    try:
        layers, t_map, info = map_tile(raw, tile, models, config, s1=s1, terrain=terr)
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
        "input_items": list(cube.input_items),
        "device": models.device,
        "info": info,
        **_radar_ids(cube),
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
            "input_items": list(cube.input_items),
            "timings": timings,
            **_radar_ids(cube),
        },
    )


def _radar_ids(cube: CubeStage) -> dict[str, list[str]]:
    """``s1_items`` / ``dem_items`` of a tile record (present when the run reads them)."""
    out = {}
    if cube.s1_url:
        out["s1_items"] = list(cube.s1_item_ids)
    if cube.dem_url:
        out["dem_items"] = list(cube.dem_item_ids)
    return out


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
            "input_items": list(cube.input_items),
            "timings": {"cube_s": cube.seconds},
            **_radar_ids(cube),
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
