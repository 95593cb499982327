"""The run configuration: one validated document that says what a mapping run makes.

A run config is a YAML or JSON file read into :class:`RunConfig` (pydantic, ``extra="forbid"``:
a misspelt key is an error with a did-you-mean hint). It is saved beside the run's outputs, and
its :meth:`RunConfig.output_hash` (everything that changes pixels, nothing that only changes
where or how fast they are computed) is recorded in every per-tile record; a rerun skips tiles
whose record carries the same hash.

Example (``demo-output/run.yaml``, written by ``geoxai demo``, is a complete one)::

    name: belgium-2024
    aoi: BEL                 # bbox "minlon,minlat,maxlon,maxlat", GeoJSON file or ISO 3166 code
    year: 2024
    stac: {url: https://earth-search.aws.element84.com/v1, max_cloud: 80}
    store: {root: s3://my-bucket/geoxai}
    models: {prediction: s3://my-bucket/models/treecover, asos: s3://my-bucket/models/asos}
    resources: {num_workers: 8, gpus_per_worker: 1}

Radar and terrain are off unless the config has their sections; a prediction bundle whose
features include ``VV``/``VH`` needs ``sentinel1``, one with ``slope``/``DEM`` needs ``dem``
(:func:`geoxai.mapping.plan_run` refuses the run otherwise, before any download)::

    sentinel1: {collection: sentinel-1-rtc, orbit: auto, scale: db}
    dem: {collection: cop-dem-glo-30}
"""

from __future__ import annotations

import difflib
import json
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from geoxai.errors import ConfigError
from geoxai.provenance import PIXEL_VERSION, config_hash
from geoxai.secrets import check_no_secrets
from geoxai.strict import StrictModel
from geoxai.temporal.s1 import S1Params
from geoxai.temporal.terrain import DemParams

if TYPE_CHECKING:
    from geoxai.temporal.s1 import S1Params
    from geoxai.temporal.terrain import DemParams

__all__ = [
    "StacConfig",
    "StoreConfig",
    "ModelsConfig",
    "ProcessingConfig",
    "SuperResolutionConfig",
    "ResourcesConfig",
    "Sentinel1Config",
    "DemConfig",
    "PricesConfig",
    "RunConfig",
    "load_run_config",
]


class StacConfig(StrictModel):
    """Where the Sentinel-2 scenes come from."""

    url: str = Field(description="STAC API root URL (or a local .json/.ndjson item file).")
    collection: str = Field("sentinel-2-l2a", description="Collection id of the L2A scenes.")
    max_cloud: float | None = Field(
        None, ge=0, le=100, description="Drop scenes with eo:cloud_cover above this (percent)."
    )
    margin_days: int = Field(
        30, ge=0, le=120, description="Days of data read before and after the year (edges)."
    )
    signing: Literal["auto", "planetary-computer", "none"] = Field(
        "auto",
        description="Sign asset hrefs when reading (SAS tokens, geoxai.signing): 'auto' = for "
        "Planetary Computer's STAC URL only. Never enters the output hash.",
    )


class StoreConfig(StrictModel):
    """Where everything is written (local path or ``s3://bucket/prefix``)."""

    root: str = Field(description="Run root URL; outputs go under <root>/<name>/<year>/.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options (e.g. endpoint_url). Keys/secrets only from the environment.",
    )

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_no_secrets(v, "store.storage_options")  # at any depth (client_kwargs ...)
        return v


class ModelsConfig(StrictModel):
    """Model bundles (directories or zips) used by the tile workers."""

    prediction: str = Field(description="Bundle of the per-pixel model (e.g. tree cover).")
    asos: str | None = Field(None, description="ASOS bundle with a fitted table; None = no ASOS.")
    spacex: str | None = Field(
        None,
        description="SpacEX generators bundle (`geoxai train spacex`); adds the "
        "'spacex_attribution' layer (mean over bands of |G_max - G_min|, reflectance) computed "
        "on the same annual composite as ASOS; None = no SpacEX layer.",
    )


class SuperResolutionConfig(StrictModel):
    """Super-resolution of B05 B06 B07 B8A B11 B12 to 10 m per date (geoxai.superres).

    Replaces the bilinear 20 m -> 10 m resampling with WRI's DSen2-lite network, before cloud
    weights and smoothing; the cube then reads the 20 m bands as they are (nearest).
    """

    bundle: str = Field(
        description="A wri-dsen2-lite bundle (`geoxai models import-tf superresolve_graph.pb`)."
    )


class ProcessingConfig(StrictModel):
    """Per-tile processing parameters (they change pixels, so they enter the output hash)."""

    halo_px: int = Field(64, ge=0, le=300, description="Context pixels around each tile core.")
    tile_size_m: int = Field(
        6000,
        ge=200,
        le=60000,
        multiple_of=20,
        description="Tile core edge, metres (6,000 = the standard grid; smaller for tests).",
    )
    cloud_mask: Literal["scl", "spectral", "none"] = Field(
        "scl",
        description="Observation weights: 'scl' (the L2A scene classification; cubes read "
        "SCL), 'spectral' (inputs without SCL: cubes read no SCL, clouds/shadows/snow from "
        "the reflectances and the items' sun angles; needs halo_px >= 124 at 10 m for the "
        "shadow projection) or 'none'.",
    )
    smoothing: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of geoxai.temporal parameters."
    )
    inference: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of inference parameters (stride, sigma...)."
    )
    super_resolution: SuperResolutionConfig | None = Field(
        None, description="Network super-resolution of the 20 m bands; None = bilinear (off)."
    )
    write_cogs: bool = Field(True, description="Write per-tile COGs and a mosaic per zone.")
    change_threshold: float = Field(
        0.2, ge=0, description="|prediction change| above which the change flag is set."
    )


class Sentinel1Config(StrictModel):
    """Sentinel-1 backscatter for the features ``VV``/``VH`` (:mod:`geoxai.io.s1`; changes pixels).

    Per tile: items searched over the tile's super-block, one orbit direction chosen by the
    rule of :func:`geoxai.io.s1.choose_orbit`, linear power -> dB floored at ``db_floor``, median
    per step of the optical time axis. A tile without S1 items gets a flagged nodata layer.
    """

    url: str | None = Field(
        None, description="STAC API (or local item file) of the S1 items; None = stac.url."
    )
    collection: str = Field(
        "sentinel-1-rtc",
        description="S1 collection: 'sentinel-1-rtc' (Planetary Computer, calibrated gamma0) "
        "or 'sentinel-1-grd' (Earth Search, amplitude DN: needs grd_calibration).",
    )
    polarizations: tuple[Literal["VV", "VH", "HH", "HV"], ...] = Field(
        ("VV", "VH"), min_length=1, description="Polarisations read (canonical upper case)."
    )
    orbit: Literal["auto", "ascending", "descending", "both"] = Field(
        "auto",
        description="auto: preferred_orbit if it has min_acquisitions days over the "
        "super-block, else the other direction, else both (flagged); a direction: that one "
        "first, same fallback; both: every item.",
    )
    preferred_orbit: Literal["ascending", "descending"] = Field(
        "ascending", description="Direction 'auto' tries first."
    )
    min_acquisitions: int = Field(
        12, ge=1, description="Distinct acquisition days a direction needs over the super-block."
    )
    superblock_tiles: int = Field(
        10, ge=1, description="Edge of the super-block the orbit is chosen on, in tiles."
    )
    on_missing_polarization: Literal["drop", "nan", "raise"] = Field(
        "drop", description="An item lacking a polarisation: drop it, keep it as NaN, or fail."
    )
    db_floor: float = Field(-22.0, lt=0, description="Lowest backscatter kept, dB (reference -22).")
    window_days: float | None = Field(
        None, gt=0, description="Median window per step, days; None = the step (15 days)."
    )
    fill_gaps: bool = Field(True, description="Fill steps without an acquisition in time.")
    resampling: Literal["bilinear", "average", "nearest", "cubic"] = Field(
        "bilinear", description="GDAL resampling onto the tile grid (on linear power)."
    )
    grd_calibration: float | None = Field(
        None, gt=0, description="GRD amplitude calibration constant A (power = DN^2 / A^2)."
    )
    scale: Literal["db", "unit"] = Field(
        "db",
        description="How VV/VH reach the model: dB, or the reference's (clip(dB, floor, 0) - "
        "floor) / -floor in [0, 1]. Must match what the bundle was trained on.",
    )

    @field_validator("polarizations")
    @classmethod
    def _unique_pols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"polarizations {list(v)} name one more than once")
        return v

    def params(self) -> S1Params:
        """The :class:`geoxai.temporal.s1.S1Params` of this section."""

        return S1Params(**self.model_dump(exclude={"url", "scale"}))


class DemConfig(StrictModel):
    """Terrain for the features ``slope``/``DEM`` (:mod:`geoxai.io.dem`; changes pixels).

    Per tile: DEM items mosaicked and warped onto the tile grid (with its halo), voids filled,
    Horn slope in degrees. A tile without DEM items gets a flagged nodata layer (slope 0).
    """

    url: str | None = Field(
        None, description="STAC API (or local item file) of the DEM items; None = stac.url."
    )
    collection: str = Field("cop-dem-glo-30", description="DEM collection (Copernicus GLO-30).")
    asset: str = Field("data", description="Asset key of the elevation raster.")
    resampling: Literal["bilinear", "cubic", "nearest"] = Field(
        "bilinear", description="GDAL resampling onto the 10 m tile grid."
    )
    void_values: tuple[float, ...] = Field(
        (-32767.0, -32768.0, -9999.0),
        description="Elevations meaning 'void' besides the asset's nodata.",
    )
    void_fill_px: int = Field(
        8, ge=0, le=64, description="Voids within this many 10 m px of valid data are filled."
    )

    def params(self) -> DemParams:
        """The :class:`geoxai.temporal.terrain.DemParams` of this section."""

        return DemParams(**self.model_dump(exclude={"url"}))


class ResourcesConfig(StrictModel):
    """How the run is scheduled (never enters the output hash)."""

    address: str | None = Field(
        None, description="Ray address ('auto', 'ray://host:10001'); None starts a local Ray."
    )
    num_workers: int | None = Field(
        None, ge=1, description="Tile actors; default one per GPU, else one per 2 CPUs."
    )
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per tile actor (1 on GPU nodes).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs per tile actor.")
    cube_tasks_in_flight: int = Field(2, ge=1, description="Concurrent cube downloads.")
    tiles_per_worker_in_flight: int = Field(
        1, ge=1, description="Queued tiles per actor beyond the running one (backpressure)."
    )
    max_retries: int = Field(3, ge=0, description="Retries of a tile on transient errors.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="What runs the prediction model's forward pass: 'auto' = onnxruntime on CPU "
        "when it agrees with torch to 1e-4 (faster, benchmarks/bench_onnx.py), torch on GPU; "
        "ONNX bundles always run on onnxruntime.",
    )


class PricesConfig(StrictModel):
    """Prices ``geoxai plan`` turns hours, bytes and requests into a bill with (never in the
    output hash). A price left out leaves its line out of the bill."""

    cpu_hour: float | None = Field(None, ge=0, description="Per CPU-hour reserved.")
    gpu_hour: float | None = Field(None, ge=0, description="Per GPU-hour reserved.")
    gb_month: float | None = Field(None, ge=0, description="Per GB (1e9 bytes) stored a month.")
    requests_1k: float | None = Field(None, ge=0, description="Per 1,000 storage/API requests.")
    currency: str = Field("USD", description="Printed after the amounts.")


class CatalogConfig(StrictModel):
    """The run's STAC catalog (:mod:`geoxai.mapping.catalog`; never in the output hash). Every
    Item is always in ``catalog/items.parquet`` (stac-geoparquet)."""

    items_json: Literal["auto"] | bool = Field(
        "auto",
        description="Also one JSON Item per tile, linked from collection.json: true, false, or "
        "auto = up to 10,000 done tiles (at country scale the Parquet file is the catalog).",
    )

    def items_json_flag(self) -> bool | None:
        """``items_json`` for :func:`geoxai.mapping.catalog.write_catalog` (None = auto)."""
        return None if self.items_json == "auto" else bool(self.items_json)


class RunConfig(StrictModel):
    """A whole mapping run. See the module docstring for an example."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name (path-safe).")
    aoi: str = Field(description="bbox 'minlon,minlat,maxlon,maxlat', GeoJSON file or ISO code.")
    year: int = Field(ge=2015, le=2100, description="Target year.")
    stac: StacConfig
    store: StoreConfig
    models: ModelsConfig
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    sentinel1: Sentinel1Config | None = Field(
        None, description="Sentinel-1 VV/VH features; None = off (see Sentinel1Config)."
    )
    dem: DemConfig | None = Field(
        None, description="Terrain slope/DEM features; None = off (see DemConfig)."
    )
    baseline: str | None = Field(
        None, description="Root of a previous year's run (<root>/<name>/<year>) for a change layer."
    )
    tiles: list[str] | None = Field(
        None, description="Restrict the run to these tile ids (default: all tiles of the AOI)."
    )
    prices: PricesConfig | None = Field(
        None, description="Prices for `geoxai plan`'s bill (not in the output hash)."
    )
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)

    @field_validator("tiles")
    @classmethod
    def _some_tiles(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:  # [] must not fall back to "every tile of the AOI"
            raise ValueError(
                "tiles: [] selects no tile; omit the key (or set it to null) to map every "
                "tile of the AOI, or list tile ids (`geoxai tiles --aoi ...`)"
            )
        return v

    def output_hash(self) -> str:
        """Hash of what changes pixels: inputs, models, processing, year (not resources).

        The radar/terrain sections enter only when set, so an optical-only run keeps its hash;
        ``processing.cloud_mask`` only when it is not the default "scl" (what runs did before
        the switch existed), ``processing.super_resolution`` only when set. It also holds
        :data:`geoxai.provenance.PIXEL_VERSION`, so code that makes other pixels from the
        same config gets another hash.
        """
        same = set()  # settings at their former behaviour stay out, so old runs keep their hash
        if self.processing.cloud_mask == "scl":
            same.add("cloud_mask")
        if self.processing.super_resolution is None:
            same.add("super_resolution")
        doc: dict[str, Any] = {
            "pixels": PIXEL_VERSION,
            "year": self.year,
            "stac": self.stac.model_dump(mode="json", exclude={"signing"}),
            "models": self.models.model_dump(mode="json"),
            "processing": self.processing.model_dump(mode="json", exclude=same),
        }
        for key in ("sentinel1", "dem"):
            section = getattr(self, key)
            if section is not None:
                doc[key] = section.model_dump(mode="json")
        return config_hash(doc)

    def run_root(self) -> str:
        """``<store.root>/<name>/<year>``: the year-partitioned output root of this run."""
        return f"{self.store.root.rstrip('/')}/{self.name}/{self.year}"

    def with_year(self, year: int) -> RunConfig:
        """The same run for another year (annual reprocessing)."""
        return self.model_copy(update={"year": year})


def did_you_mean(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """`` Did you mean 'x'?`` for the unknown key at ``loc`` of ``model`` (nested sections,
    optional sections included), or ``""`` when no field name is close."""
    fields = model.model_fields
    sub: type[BaseModel] | None = model
    for part in loc[:-1]:
        f = fields.get(str(part)) if sub else None
        ann = f.annotation if f else None
        options = typing.get_args(ann) or (ann,)  # an optional section: Model | None
        sub = next((a for a in options if isinstance(a, type) and issubclass(a, BaseModel)), None)
        fields = sub.model_fields if sub else {}
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def read_config_file(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a ``.json`` file (JSON) or any other file (YAML).

    Raises:
        ConfigError: ``what`` at ``path`` is missing, unreadable, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist; pass a YAML or JSON file.")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what} {str(path)!r} is not readable YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} must be a mapping of keys to values.")
    return data


def load_run_config(source: str | Path | dict[str, Any], **overrides: Any) -> RunConfig:
    """Read and validate a run config from a YAML/JSON file or a dict.

    Args:
        source: path to a ``.yaml``/``.yml``/``.json`` file, or an already parsed dict.
        overrides: top-level fields to replace (e.g. ``year=2025``).

    Raises:
        ConfigError: unreadable file, unknown key (with a did-you-mean hint) or bad value.
    """
    where = "config"
    if isinstance(source, dict):
        data = dict(source)
    else:
        where = str(source)
        data = read_config_file(source, "Run config")
    data.update({k: v for k, v in overrides.items() if v is not None})
    store = data.get("store")
    if isinstance(store, dict):  # typed error naming the key, before pydantic wraps it
        check_no_secrets(store.get("storage_options") or {}, "store.storage_options")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            hint = did_you_mean(err["loc"], RunConfig) if err["type"] == "extra_forbidden" else ""
            lines.append(f"  {loc}: {err['msg']}.{hint}")
        raise ConfigError(f"Run config {where!r} is invalid:\n" + "\n".join(lines)) from None
