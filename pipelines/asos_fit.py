"""Fit an ASOS table on Ray: one task per shard of the training set, then a tree of merges.

Each task loads the bundle and only its shard of the images (from the data source, not
through the object store), computes a partial table with :func:`geoxai.xai.asos.fit_partial` and
returns it (a few hundred kB). Partial tables are merged pairwise in remote tasks (a tree of
depth ``log2(n_shards)``). The tables hold fixed-point integer sums, so the result equals the
single-process fit (:func:`fit_local`) exactly, whatever the sharding and merge order.

Data sources (:class:`FitData`): a EuroSAT folder (``splits.csv`` + class folders, optionally
one split) or an ``.npz`` with ``images`` ``(N, C, H, W)`` (and optionally ``labels`` ``(N,)``,
``valid`` ``(N, H, W)``), in ``units`` reflectance or DN.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray

from geoxai.errors import DataAccessError, InvalidInputError
from geoxai.models.asos_net import to_network_input
from geoxai.xai.asos import (
    ASOSParams,
    ASOSTable,
    fit_partial,
    load_asos_bundle,
    save_asos_bundle,
)

__all__ = [
    "FitData",
    "FitReport",
    "load_images",
    "n_images",
    "shard_indices",
    "fit_local",
    "fit_sharded",
    "write_fitted_bundle",
    "init_local_ray",
]


@dataclass(frozen=True)
class FitData:
    """Where the fit images come from (a picklable value object sent to every task)."""

    path: str
    """EuroSAT folder or ``.npz`` file."""
    split: str | None = None
    """EuroSAT split to use (``"train"``, ``"validate"``, ``"test"``), None = all."""
    units: str = "reflectance"
    """Units of ``.npz`` images (``"reflectance"`` or ``"dn"``); EuroSAT is read as reflectance."""
    dn_offset: float = 0.0
    """Reflectance offset of DN inputs (-0.1 for processing baseline >= 04.00)."""

    @property
    def kind(self) -> str:
        """``"npz"`` or ``"eurosat"``."""
        p = Path(self.path)
        if p.suffix == ".npz" and p.is_file():
            return "npz"
        if p.is_dir():
            return "eurosat"
        raise DataAccessError(
            f"fit data {p} is neither an .npz file nor a EuroSAT folder (class sub-folders "
            "with 13-band GeoTIFFs); check the --data path."
        )


def _read(data: FitData) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    if data.kind == "npz":
        with np.load(data.path, allow_pickle=False) as z:
            if "images" not in z:
                raise InvalidInputError(
                    f"{data.path} has arrays {sorted(z.files)}; expected 'images' (N, C, H, W)."
                )
            imgs = z["images"]
            labels = z["labels"] if "labels" in z else None
            valid = z["valid"].astype(bool) if "valid" in z else None
        return imgs, labels, valid
    from geoxai.io.eurosat import read_eurosat

    ds = read_eurosat(data.path, split=data.split)
    return ds.images, ds.labels, None


def n_images(data: FitData) -> int:
    """Number of images in the source."""
    if data.kind == "npz":
        with np.load(data.path, allow_pickle=False) as z:
            return int(z["images"].shape[0]) if "images" in z else 0
    return len(_read(data)[0])


def load_images(
    data: FitData, indices: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Network input ``(n, C, H, W)``, labels ``(n,)`` or None, valid ``(n, H, W)`` or None.

    NaN pixels are filled with 0 and marked invalid (they are neither counted nor occluded).
    """
    imgs, labels, valid = _read(data)
    if imgs.ndim != 4:
        raise InvalidInputError(f"{data.path}: images have shape {imgs.shape}; need (N, C, H, W).")
    if indices is not None:
        imgs = imgs[indices]
        labels = labels[indices] if labels is not None else None
        valid = valid[indices] if valid is not None else None
    units = "reflectance" if data.kind == "eurosat" else data.units
    x, ok = to_network_input(imgs, units, dn_offset=data.dn_offset, nan="mask", what=data.path)
    if valid is not None:
        ok = ok & valid
    return x, labels, (None if ok.all() else ok)


def shard_indices(n: int, n_shards: int) -> list[np.ndarray]:
    """Contiguous, near-equal shards of ``range(n)`` (empty shards dropped)."""
    if n_shards < 1:
        raise InvalidInputError(f"n_shards={n_shards} must be >= 1.")
    return [s for s in np.array_split(np.arange(n), n_shards) if len(s)]


@dataclass(frozen=True)
class FitReport:
    """What a fit did."""

    table: ASOSTable
    """The merged table."""
    n_images: int
    """Images fitted."""
    n_shards: int
    """Partial tables merged."""
    wall_s: float
    """Wall time of the fit, seconds."""
    shard_s: tuple[float, ...] = ()
    """Compute time of each shard task, seconds."""


def fit_local(bundle: str | Path, data: FitData, params: ASOSParams = ASOSParams()) -> FitReport:
    """Single-process fit (the reference the sharded fit must equal)."""
    t0 = time.monotonic()
    b, _ = load_asos_bundle(bundle, need_table=False)
    x, _, valid = load_images(data)
    table = fit_partial(b.net, x, params, valid=valid, meta=_meta(bundle, data, params))
    return FitReport(table, len(x), 1, time.monotonic() - t0)


def _meta(bundle: str | Path, data: FitData, params: ASOSParams) -> dict[str, Any]:
    from geoxai.provenance import code_version

    return {
        "bundle": str(bundle),
        "data": data.path,
        "split": data.split,
        "params": {k: getattr(params, k) for k in ("edge", "fill", "min_pixels", "score")},
        "code_version": code_version(),
    }


@ray.remote(num_cpus=1, max_retries=2)
def _fit_shard(
    bundle: str, data: FitData, indices: np.ndarray, params: ASOSParams, meta: dict[str, Any]
) -> tuple[ASOSTable, float]:
    import torch

    torch.set_num_threads(1)
    t0 = time.monotonic()
    b, _ = load_asos_bundle(bundle, need_table=False)
    x, _, valid = load_images(data, indices)
    table = fit_partial(b.net, x, params, valid=valid, meta=meta)
    return table, time.monotonic() - t0


@ray.remote(num_cpus=0)
def _first(pair: tuple[ASOSTable, float]) -> ASOSTable:
    return pair[0]


@ray.remote(num_cpus=0)
def _merge(a: ASOSTable, b: ASOSTable) -> ASOSTable:
    return a.merge(b)


def init_local_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Connect to ``address``, or start a closed local Ray (loopback, token auth).

    The same set-up as the mapping run's (:func:`pipelines.run.init_ray`).
    """
    from pipelines.run import init_ray

    init_ray(address, num_cpus=num_cpus)


def fit_sharded(
    bundle: str | Path,
    data: FitData,
    params: ASOSParams = ASOSParams(),
    *,
    n_shards: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> FitReport:
    """Fit on Ray (already initialised, see :func:`init_local_ray`): shards, then merge tree.

    Args:
        bundle: ASOS bundle directory (on a path every Ray node can read).
        data: the images.
        params: fit settings (the same for every shard).
        n_shards: number of partial fits (tasks); more shards than CPUs balance better.
        progress: ``progress(done_shards, n_shards)`` as shard tasks finish.
    """
    if not ray.is_initialized():
        raise InvalidInputError("Ray is not initialised; call init_local_ray() first.")
    t0 = time.monotonic()
    bundle_s = str(Path(bundle).resolve()) if "://" not in str(bundle) else str(bundle)
    load_asos_bundle(bundle_s, need_table=False)  # fail early, in the driver
    data = replace(data, path=str(Path(data.path).resolve()))
    n = n_images(data)
    if n == 0:
        raise InvalidInputError(f"fit data {data.path} holds no images.")
    shards = shard_indices(n, n_shards)
    meta = _meta(bundle, data, params)
    pending = [_fit_shard.remote(bundle_s, data, idx, params, meta) for idx in shards]
    done: list[Any] = []
    timings: list[float] = []
    remaining = list(pending)
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1)
        done.extend(ready)
        timings.append(ray.get(ready[0])[1])
        if progress is not None:
            progress(len(done), len(shards))
    # merge tree over the shard order (the result does not depend on it: integer sums)
    level = [_first.remote(ref) for ref in pending]
    while len(level) > 1:
        nxt = [_merge.remote(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    table = ray.get(level[0])
    return FitReport(table, n, len(shards), time.monotonic() - t0, tuple(timings))


def write_fitted_bundle(bundle: str | Path, table: ASOSTable, out: str | Path) -> Path:
    """Copy ``bundle`` to ``out`` with ``table`` recorded in its ``model.json``."""
    b, _ = load_asos_bundle(bundle, need_table=False)
    return save_asos_bundle(out, b.net, b.spec, table=table)
