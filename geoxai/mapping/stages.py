"""One mapping run, stage by stage, as plain functions (the Ray driver only chains these).

Stages of a tile (``pipelines/run.py`` runs them on Ray; tests call them directly):

1. :func:`stage_cube` (CPU, I/O bound): STAC search over the tile's haloed footprint for the
   year plus margins, stackstac cube on the tile grid, committed Zarr under
   ``<run_root>/cubes/<tile_id>.zarr``. With a ``sentinel1`` / ``dem`` config section (the
   bundle reads ``VV``/``VH`` / ``slope``/``DEM``) also the tile's S1 layer
   (:func:`geoxai.mapping.ancillary_s1.s1_steps`: per-step median dB on the optical time axis) and
   terrain (:func:`geoxai.mapping.ancillary_dem.terrain`, computed with the halo), committed beside
   it as ``<tile_id>.s1.zarr`` / ``<tile_id>.dem.zarr``. A committed cube of the same query is
   reused, so a rerun after a crash does not download again.
2. :func:`map_tile` (GPU or CPU): raw cube -> :func:`geoxai.temporal.preprocess` (cloud
   weights, Whittaker, 24 x 15-day axis, indices) -> (:func:`geoxai.temporal.fuse` with the S1
   and terrain layers, in the bundle's feature order) -> Gaussian-blended inference of the
   prediction bundle -> ASOS map of the yearly median composite -> core-sized layers. A tile
   without S1 items maps with the flagged nodata S1 layer (its record says so), not a failure.
3. :func:`map_and_write`: layers (+ change against a baseline year) -> per-tile COGs ->
   zone Zarr chunks verified, then the tile record (exactly once,
   :func:`geoxai.mapping.records.write_tile`).
4. :func:`finish_run`: per-zone mosaics, STAC catalog of the outputs, ``report.html``.

Everything a tile needs travels as frozen values (:class:`~geoxai.config.RunConfig`,
:class:`~geoxai.geo.grid.TileSpec`, :class:`CubeStage`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import xarray as xr

from geoxai.config import RunConfig
from geoxai.errors import (
    ConfigError,
    CorruptDataError,
    DataAccessError,
    InvalidInputError,
    ModelBundleError,
    NoDataError,
    StacError,
    StoreError,
)
from geoxai.geo.grid import GRID_ATTRS, TileSpec
from geoxai.io import store
from geoxai.io.cog import write_tile_cogs
from geoxai.io.cube_rows import lazy_array
from geoxai.io.layout import RunLayout
from geoxai.io.mosaic import build_mosaics
from geoxai.io.zonestore import ZoneStore
from geoxai.mapping.ancillary import (
    ancillary_ids,
    ancillary_info,
    ancillary_needs,
    check_ancillary,
    committed_ancillary_layers,
)
from geoxai.mapping.catalog import write_catalog
from geoxai.mapping.change import change_layers
from geoxai.mapping.cube_stage import _one_line
from geoxai.mapping.outcomes import CubeStage, TileOutcome
from geoxai.mapping.plan import RunPlan
from geoxai.mapping.record_index import write_record_index
from geoxai.mapping.records import (
    delete_record,
    read_records,
    verify_cogs,
    write_status,
    write_tile,
)
from geoxai.mapping.report import write_report
from geoxai.mapping.report_digest import RecordDigest
from geoxai.mapping.settings import preprocess_params, run_layout
from geoxai.models.asos_net import ASOSNet
from geoxai.models.bundle import LoadedBundle, load_bundle
from geoxai.models.dsen2 import load_superres_bundle
from geoxai.temporal.fuse import fuse
from geoxai.temporal.heldout import TileHeldout
from geoxai.temporal.smoothing import preprocess
from geoxai.temporal.superres import SuperresolvedRows
from geoxai.xai.asos import ASOSTable, asos_map, load_asos_bundle
from geoxai.xai.spacex import load_spacex_bundle, spacex_attribution

log = logging.getLogger(__name__)

__all__ = [
    "TileModels",
    "QUALITY_CODES",
    "SMOOTH_ROWS",
    "SPARSE_MAX_EDGE_GAP_DAYS",
    "quality_layer",
    "tile_features",
    "superresolved",
    "load_models",
    "annual_composite",
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


SMOOTH_ROWS = 64
"""Rows of one block of the smoothing stage, read from the lazy raw cube as one row slice
(:func:`geoxai.io.store.read_cube`: the read holds only those rows, decoded from the stored
chunks of 128 rows), so peak memory follows ``SMOOTH_ROWS`` x width x dates, not the whole
cube."""


SPARSE_MAX_EDGE_GAP_DAYS = 60.0
"""A leading or trailing stretch of the axis without clear observations (margins count) longer
than this -> quality 2: there the series holds its first/last values (no extrapolation)."""


def quality_layer(ds: Any, valid: np.ndarray | None = None) -> np.ndarray:
    """``(Y, X)`` uint8 :data:`QUALITY_CODES` of :func:`geoxai.temporal.smoothing.preprocess`'s
    dataset.

    0 where not ``valid`` (default ``ds["valid"]``); 2 (sparse) where fewer than
    :data:`SPARSE_MIN_OBS` clear observations, a gap over :data:`SPARSE_MAX_GAP_DAYS`, or a
    leading/trailing gap over :data:`SPARSE_MAX_EDGE_GAP_DAYS` (held values, not data); else 1.
    """
    valid = np.asarray(ds["valid"].values if valid is None else valid, dtype=bool)
    n_obs = np.asarray(ds["n_obs"].values)
    gap = np.asarray(ds["max_gap_days"].values)
    edge = np.asarray(ds["edge_gap_days"].values)
    q = np.where(valid, 1, 0).astype(np.uint8)
    sparse = (n_obs < SPARSE_MIN_OBS) | (gap > SPARSE_MAX_GAP_DAYS)
    q[(q == 1) & (sparse | (edge > SPARSE_MAX_EDGE_GAP_DAYS))] = 2
    return q


@dataclass
class TileModels:
    """The models a tile worker holds (loaded once per actor).

    Attributes:
        device: torch device name (``"cpu"``, ``"cuda"``).
        prediction: the prediction bundle.
        asos: the ASOS bundle (None: no ASOS layer). asos_table: its fitted table.
        asos_min_evidence: fewest table entries behind a sensitivity value.
        spacex: the SpacEX bundle (None: no attribution layer).
        superres: the wri-dsen2-lite bundle (None: 20 m bands resampled as read).
    """

    device: str
    prediction: LoadedBundle
    asos: LoadedBundle | None = None
    asos_table: ASOSTable | None = None
    asos_min_evidence: int = 1
    spacex: LoadedBundle | None = None
    superres: LoadedBundle | None = None


def _device(name: str) -> str:
    import torch  # lazy: torch (~1 s import) only on this path

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("resources.device is 'cuda' but no CUDA device is visible; use 'auto'.")
    return name


def load_models(config: RunConfig) -> TileModels:
    """Load the prediction bundle (and the ASOS bundle with its table) on the worker's device."""

    device = _device(config.resources.device)
    runtime = config.resources.runtime
    models = TileModels(device, load_bundle(config.models.prediction, device, runtime=runtime))
    if config.models.asos:
        models.asos, models.asos_table = load_asos_bundle(config.models.asos, device=device)
    if config.models.spacex:
        models.spacex, _ = load_spacex_bundle(config.models.spacex, device=device)
    if config.processing.super_resolution is not None:
        models.superres = load_superres_bundle(config.processing.super_resolution.bundle, device)
    return models


def features_with_grid(ds: Any) -> Any:
    """``ds["features"]`` of :func:`geoxai.temporal.preprocess` carrying the tile grid attrs
    (``crs``, ``transform`` ...) that the inference lattice needs."""
    features = ds["features"]
    features.attrs.update({k: ds.attrs[k] for k in GRID_ATTRS if k in ds.attrs})
    return features


def annual_composite(features: Any, bands: tuple[str, ...]) -> np.ndarray:
    """The ASOS and SpacEX input for a tile: per-pixel median over the year of the smoothed
    reflectance of ``bands``; ``(len(bands), H, W)`` float32, NaN on nodata pixels."""
    x = features.sel(band=list(bands)).values  # (T, C, H, W)
    comp = np.median(x, axis=0).astype(np.float32)
    return comp


def superresolved(raw: Any, bundle: Any) -> Any:
    """``raw`` with B05..B12 super-resolved, lazily: a row slice's ``.values`` runs the network
    on those rows (+ its halo) only (:class:`geoxai.temporal.superres.SuperresolvedRows`), so
    the smoothing stage's memory follows its row blocks with super-resolution on too. Same
    values as :func:`geoxai.temporal.superres.superresolve_cube` (the whole cube at once)."""
    rows = SuperresolvedRows(raw, bundle)
    attrs = {**raw.attrs, "super_resolution": dict(rows.provenance)}
    return xr.DataArray(
        lazy_array(rows), dims=raw.dims, coords=raw.coords, attrs=attrs, name=raw.name
    )


def tile_features(
    raw: Any,
    tile: TileSpec,
    config: RunConfig,
    features: Any,
    *,
    s1: Any = None,
    terrain: Any = None,
    device: str | None = None,
    superres: Any = None,
) -> tuple[Any, Any]:
    """Raw haloed cube (+ S1/terrain layers) -> the optical and the model-ready datasets.

    Args:
        raw: the tile's raw cube (:func:`stage_cube`), loaded or lazy (dask-backed: preprocess
            reads it row block by row block).
        tile: the tile with its halo.
        config: the run config (smoothing, sentinel1.scale / db_floor).
        features: the prediction bundle's feature names, in model order.
        s1: the tile's :func:`geoxai.mapping.ancillary_s1.s1_steps` dataset; None: the layer
            the cube stage committed is read when ``features`` need it
            (:func:`committed_ancillary_layers`; no STAC search here).
        terrain: the tile's :func:`geoxai.mapping.ancillary_dem.terrain` dataset; None: the
            committed one, if needed.
        device: smoothing device (None = numpy, ``"cuda"``).
        superres: a loaded wri-dsen2-lite bundle: B05..B12 super-resolved per date first
            (:func:`superresolved`: row block by row block, as the smoothing stage reads them);
            None = the cube's bands as they are.

    Returns:
        ``(optical, model)``: :func:`geoxai.temporal.preprocess`'s dataset and the dataset the
        model reads. Without S1/terrain features both are the same object; otherwise ``model`` is
        :func:`geoxai.temporal.fuse`'s: ``features`` ``(24, len(features), y, x)`` in
        ``features`` order (VV/VH dB or [0, 1] per ``sentinel1.scale``, slope degrees, DEM
        m), ``valid`` = optical valid | S1 valid, plus ``valid_optical``, ``s1_valid``,
        ``s1_flags``, ``dem_flags``, and attrs ``s1_items``/``s1_orbit``/``dem_items``.
    """

    if superres is not None:
        raw = superresolved(raw, superres)
    params = preprocess_params(config)
    heldout = TileHeldout(raw, params.smoothing, device=device)
    ds = preprocess(raw, params, device=device, rows_per_block=SMOOTH_ROWS, block_hook=heldout.add)
    if heldout.to_dict() is not None:
        ds.attrs["heldout"] = json.dumps(heldout.to_dict())
    ds = ds.compute() if hasattr(ds, "compute") else ds
    need_s1, need_dem = ancillary_needs(features)
    if not (need_s1 or need_dem):
        return ds, ds
    check_ancillary(config, features, "of this run")
    if (need_s1 and s1 is None) or (need_dem and terrain is None):
        got_s1, got_dem = committed_ancillary_layers(
            tile, config, s1=bool(need_s1) and s1 is None, dem=bool(need_dem) and terrain is None
        )
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

    ``s1`` / ``terrain``: the tile's committed layers (:func:`stage_cube`); None reads the
    committed ones when the bundle reads VV/VH / slope/DEM (see :func:`tile_features`).

    Returns:
        ``(layers, timings, info)``: layers ``prediction`` ``(K, 600, 600)`` or ``(600, 600)``
        float32 (NaN nodata), ``asos_sensitivity`` float32 (NaN masked), ``quality`` uint8
        (:data:`QUALITY_CODES`; pixels seen by radar only are 2, sparse); stage timings in
        seconds; info (valid fraction, and with ancillary layers ``s1``/``dem`` coverage summaries).
    """
    timings: dict[str, float] = {}
    t = time.monotonic()
    feats_in = list(models.prediction.spec.inputs.features)
    ds, mds = tile_features(
        raw,
        tile,
        config,
        feats_in,
        s1=s1,
        terrain=terrain,
        device=_smooth_device(models.device),
        superres=models.superres,
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
            image = annual_composite(features_with_grid(ds), key)
            image[:, ~valid_optical] = np.nan
            composites[key] = image
        return composites[key]

    if models.asos is not None:
        if models.asos_table is None:
            raise ModelBundleError(
                "TileModels.asos has no fitted ASOS table; load the bundle with "
                "load_asos_bundle(path) (it needs the table), as load_models does."
            )
        t = time.monotonic()
        sens, _ = asos_map(
            cast(ASOSNet, models.asos.net),  # load_asos_bundle checked the architecture
            models.asos_table,
            composite(models.asos.spec.inputs.features),
            min_evidence=models.asos_min_evidence,
            window=models.asos.window_params(pad_edges=False),
            transform=raw.attrs["transform"],
        )
        layers["asos_sensitivity"] = sens[rs, cs].astype(np.float32)
        timings["asos_s"] = time.monotonic() - t

    if models.spacex is not None:
        t = time.monotonic()
        attr = spacex_attribution(
            models.spacex,
            composite(models.spacex.spec.inputs.features),
            window=models.spacex.window_params(pad_edges=False),
            transform=raw.attrs["transform"],
        )
        layers["spacex_attribution"] = attr[rs, cs].astype(np.float32)
        timings["spacex_s"] = time.monotonic() - t

    q = quality_layer(ds, valid)[rs, cs]
    layers["quality"] = q
    info: dict[str, Any] = {
        "valid_fraction": float((q > 0).mean()),
        "n_acquisitions": int(raw.sizes["time"]),
        "prediction_runtime": models.prediction.runtime,
    }
    info.update(ancillary_info(mds, rs, cs))
    if "heldout" in ds.attrs:
        info["heldout"] = json.loads(ds.attrs["heldout"])
    return layers, timings, info


def _smooth_device(device: str) -> str | None:
    return "cuda" if device.startswith("cuda") else None


def map_and_write(
    tile: TileSpec, cube: CubeStage, models: TileModels, config: RunConfig
) -> TileOutcome:
    """Map one tile from its committed cube and write its outputs exactly once; its outcome
    (the record written: :meth:`TileOutcome.to_dict`)."""

    if cube.url is None:
        raise ValueError(
            f"tile {tile.id}: map_and_write needs a committed cube (status {cube.status})."
        )
    t0 = time.monotonic()
    layout = run_layout(config)
    # the old record goes first (before the COGs are overwritten): whatever fails below, the
    # tile no longer reads as done
    delete_record(layout, tile.id)
    so = config.store.storage_options or None
    timings = {"cube_s": cube.seconds}
    try:
        # the raw cube stays lazy: preprocess reads it row block by row block, so memory
        # follows block rows x width x dates, not the whole cube. A cube or layer that went bad
        # after the cube stage verified it: a typed CorruptDataError (the codec's checksum),
        # raised here or by the block read inside map_tile, so the tile is recorded failed with
        # the reason, and the next run's cube stage rebuilds it
        raw = store.read_cube(cube.url, storage_options=so)
        s1 = store.read_layer(cube.s1_url, storage_options=so) if cube.s1_url else None
        terr = store.read_layer(cube.dem_url, storage_options=so) if cube.dem_url else None
        timings["read_s"] = time.monotonic() - t0
        layers, t_map, info = map_tile(raw, tile, models, config, s1=s1, terrain=terr)
    except CorruptDataError as exc:
        return _status(layout, tile, "failed", exc, cube, config, timings)
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
        **ancillary_ids(cube),
    }
    if config.processing.write_cogs:
        t = time.monotonic()
        record["cogs"] = write_tile_cogs(layout, zone, tile, layers)
        timings["cog_s"] = time.monotonic() - t
    t = time.monotonic()
    record["timings"] = timings
    out = write_tile(zone, tile, layers, record)
    out.setdefault("timings", {})["write_s"] = time.monotonic() - t
    return TileOutcome.from_dict(out)


def _status(
    layout: Any,
    tile: TileSpec,
    status: str,
    exc: BaseException,
    cube: CubeStage,
    config: RunConfig,
    timings: dict[str, float],
) -> TileOutcome:

    rec = write_status(
        layout,
        tile,
        status,
        _one_line(exc),
        {
            "config_hash": config.output_hash(),
            "input_items": list(cube.input_items),
            "timings": timings,
            **ancillary_ids(cube),
        },
    )
    return TileOutcome.from_dict(rec)


def record_empty_or_failed(tile: TileSpec, cube: CubeStage, config: RunConfig) -> TileOutcome:
    """Write the record of a tile whose cube stage found no data or failed; its outcome."""

    rec = write_status(
        run_layout(config),
        tile,
        cube.status,
        cube.reason,
        {
            "config_hash": config.output_hash(),
            "input_items": list(cube.input_items),
            "timings": {"cube_s": cube.seconds},
            **ancillary_ids(cube),
        },
    )
    return TileOutcome.from_dict(rec)


def finish_run(
    config: RunConfig, plan: RunPlan, outcomes: Mapping[str, TileOutcome], *, wall_s: float
) -> str:
    """Mosaics per zone, the STAC catalog of the outputs and ``report.html``; the report URL.

    The COGs of every ``done`` record are checked first (:func:`verify_cogs`, one listing per
    COG layer folder): a tile whose COG is missing or truncated has its record deleted, stays
    out of the mosaics and the catalog, and the report names it (a rerun redoes it).

    The record index is rewritten first (:func:`write_record_index`: the records written by
    this run read once), so reading the records here, and planning the next rerun, costs one
    listing and one index read instead of one GET per tile.

    The records are streamed, never held: a first pass over :func:`read_records` keeps what the
    mosaics and the report need (a :class:`RecordDigest`: status, reason, timings per tile; the
    layers every done tile has a COG of), then the catalog reads them twice more (the Item
    shapes, then the Items batch by batch).
    """

    layout = run_layout(config)
    try:
        idx = write_record_index(layout)
        log.info("record index %s: %d records (%d read)", idx.url, idx.rows, idx.fetched)
    except StoreError as exc:  # the index is a cache: records are read one by one without it
        log.warning("the record index was not written (%s); reruns read every record", exc)
    broken: dict[str, str] = {}
    digest = RecordDigest()
    common: frozenset[str] | None = None  # layers every done tile wrote a COG of
    for rec in verify_cogs(layout, read_records(layout), broken):
        digest.add(rec)
        if rec.get("status") == "done":
            cogs = frozenset(rec.get("cogs") or ())
            common = cogs if common is None else common & cogs
    for tile_id, reason in broken.items():
        log.warning("tile %s: %s; its record is deleted, a rerun redoes it", tile_id, reason)
    done_tiles = [t for t in plan.tiles if digest.by_id.get(t.id, ("",))[0] == "done"]
    mosaics: dict[int, dict[str, str]] = {}
    if config.processing.write_cogs and done_tiles:
        zones = {t.epsg for t in done_tiles}
        specs = list(ZoneStore.open(layout, next(iter(zones))).layers.values())
        # only layers every done tile wrote a COG of (no ASOS bundle: no asos_sensitivity COGs)
        mosaics = build_mosaics(layout, done_tiles, [s for s in specs if s.name in (common or ())])
    report = write_report(
        layout,
        config,
        digest,
        plan=plan,
        this_run={k: {"status": o.status, "reason": o.reason} for k, o in outcomes.items()},
        wall_s=wall_s,
        mosaics=mosaics,
        invalidated=plan.invalidated,
        invalidated_late=broken,
    )

    def kept() -> Iterator[Mapping[str, Any]]:
        return (r for r in read_records(layout) if str(r.get("tile_id")) not in broken)

    write_catalog(  # links report.html: write it first
        layout, config, kept, mosaics=mosaics, items_json=config.catalog.items_json_flag()
    )
    return report
