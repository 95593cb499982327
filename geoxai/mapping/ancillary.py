"""Ancillary layers in a run (Sentinel-1 radar, DEM terrain): which bundles need them, the
checks, the per-tile layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geoxai.config import RunConfig
from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.grid import TileSpec
from geoxai.io import store
from geoxai.io.signing import resolve_signing
from geoxai.mapping.ancillary_dem import terrain
from geoxai.mapping.ancillary_s1 import s1_steps
from geoxai.mapping.outcomes import CubeStage
from geoxai.mapping.settings import preprocess_params, run_layout
from geoxai.temporal.s1 import FLAG_NO_COVERAGE
from geoxai.temporal.terrain import FLAG_NO_DEM, FLAG_VOID

__all__ = [
    "S1_FEATURES",
    "TERRAIN_FEATURES",
    "ancillary_needs",
    "ancillary_layers",
    "committed_ancillary_layers",
]

S1_FEATURES = ("VV", "VH", "HH", "HV")
"""Bundle features served by the ``sentinel1`` config section (dB or [0, 1], see its scale)."""


TERRAIN_FEATURES = ("slope", "DEM")
"""Bundle features served by the ``dem`` config section (degrees, metres)."""


def ancillary_needs(features: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(s1, terrain)``: the model features that need Sentinel-1 / the DEM, in bundle order."""
    names = [str(f) for f in features]
    return (
        tuple(f for f in names if f in S1_FEATURES),
        tuple(f for f in names if f in TERRAIN_FEATURES),
    )


def check_ancillary(config: RunConfig, features: Any, where: str) -> None:
    """The sentinel1/dem sections must be there exactly when the bundle reads those features."""
    s1, terr = ancillary_needs(features)
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


def ancillary_layers(tile: TileSpec, config: RunConfig) -> tuple[Any, Any]:
    """The tile's S1 steps and terrain as the config asks (None for an absent section).

    Returns:
        ``(s1, terrain)``: :func:`geoxai.mapping.ancillary_s1.s1_steps` dataset
        (``backscatter`` ``(24, P, y, x)`` dB on the optical time axis,
        ``s1_valid``/``s1_n_obs``/``s1_flags``; the flagged nodata layer when no S1 item covers the
        tile) and :func:`geoxai.mapping.ancillary_dem.terrain` dataset (``DEM`` m, ``slope``
        degrees, ``dem_flags``), both on ``tile``'s haloed grid, loaded.
    """
    s1 = terr = None
    if config.sentinel1 is not None:
        url = config.sentinel1.url or config.stac.url
        s1 = s1_steps(
            url,
            tile,
            preprocess_params(config).smoothing,
            config.sentinel1.params(),
            signing=resolve_signing(config.stac.signing, str(url)),
        )
    if config.dem is not None:
        url = config.dem.url or config.stac.url
        terr = terrain(
            url,
            tile,
            config.dem.params(),
            signing=resolve_signing(config.stac.signing, str(url)),
        )
    return s1, terr


def committed_ancillary_layers(
    tile: TileSpec, config: RunConfig, *, s1: bool, dem: bool
) -> tuple[Any, Any]:
    """The S1 steps / terrain that the cube stage committed beside the tile's cube, loaded.

    Only the cube stage (:func:`geoxai.mapping.cube_stage.stage_cube`) searches and reads S1 and
    the DEM; tile workers read what it committed (no STAC search on a tile worker).

    Args:
        tile: the tile with its halo.
        config: the run config (its layout and storage options).
        s1: read the S1 layer (``<root>/cubes/<tile>.s1.zarr``).
        dem: read the terrain layer (``<root>/cubes/<tile>.dem.zarr``).

    Returns:
        ``(s1, terrain)`` datasets as :func:`ancillary_layers` returns them (None where not asked).

    Raises:
        InvalidInputError: an asked layer is not committed (the cube stage has not run).
    """
    layout = run_layout(config)
    so = config.store.storage_options or None
    out: list[Any] = []
    for key, wanted in (("s1", s1), ("dem", dem)):
        if not wanted:
            out.append(None)
            continue
        url = layout.cube_layer_url(tile.id, key)
        if not store.is_committed(url, storage_options=so):
            raise InvalidInputError(
                f"Tile {tile.id}: the model reads {key} features but no committed {key} layer "
                f"is at {url}; run the tile's cube stage (stage_cube) first, it commits the "
                "layer beside the cube, or pass the layer in."
            )
        out.append(store.read_layer(url, storage_options=so))
    return out[0], out[1]


def ancillary_info(mds: Any, rs: slice, cs: slice) -> dict[str, Any]:
    """Coverage of the fused S1/terrain layers over the tile core, for the tile record."""

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


def ancillary_ids(cube: CubeStage) -> dict[str, list[str]]:
    """``s1_items`` / ``dem_items`` of a tile record (present when the run reads them)."""
    out = {}
    if cube.s1_url:
        out["s1_items"] = list(cube.s1_item_ids)
    if cube.dem_url:
        out["dem_items"] = list(cube.dem_item_ids)
    return out
