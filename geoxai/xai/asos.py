"""ASOS: activation space occlusion sensitivity (Stomberg et al. 2022, arXiv 2203.00379).

A U-Net maps the bands of an image to a small activation map ``A`` in ``[-1, 1]^k`` at full
resolution; a shallow head maps ``A`` to one score (``sigmoid(logit)``, e.g. 1 = natural, 0 =
anthropogenic). The activation space ``[-1, 1]^k`` is cut into cubes of edge ``edge``. Fitting
occludes, for every training image and every cube holding at least ``min_pixels`` of the
image's pixels, those pixels' activation vectors (set to ``fill``), re-runs only the head and
records the score change. Mapping any image then costs one U-Net pass plus a table look-up.

Input convention (one for every source): the network sees **surface reflectance clipped to
[0, 1]** (:func:`to_network_input`). The paper scales L1C/L2A digital numbers as ``DN / 10000``;
that is reflectance for data before processing baseline 04.00 (EuroSAT). Cubes from
:mod:`geoxai.io.cube` already hold reflectance (``DN * 1e-4 - 0.1`` for baselines >= 04.00), so
they pass with ``units="reflectance"``; raw DNs pass with ``units="dn"`` (and ``dn_offset=-0.1``
for baselines >= 04.00).

Sensitivity sign: ``score(original) - score(occluded)``, so a positive value means the region
pushes the score up.

The fitted :class:`ASOSTable` keeps per cube the sum and the sum of squares of the score
changes in **fixed point** (int64 multiples of ``2**-32``), the number of (image, cube)
records and the number of occluded pixels. Integer sums are associative and commutative, so
a fit over N shards merged in any order equals the single-process fit exactly (tolerance 0);
the price is a rounding of each score change by at most ``2**-33`` (1.2e-10).

Measured (tests/xai/test_asos_synthetic.py; scenes whose label is caused by forest cover): the
top-q IoU of the ASOS map with the forest mask is 0.44 (chance 0.18; 0.21-0.62 over five
training seeds), image-space occlusion (8 px, stride 4) 0.43, Grad-CAM 0.59. ASOS costs about
one forward pass per image, OSM thousands (benchmarks/bench_asos.py).
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoxai.atomic import atomic_write_bytes
from geoxai.errors import ConfigError, InvalidInputError, ModelBundleError, look_up_option
from geoxai.geo.bands import S2_BANDS
from geoxai.inference.predict import predict_windows
from geoxai.inference.windows import WindowParams
from geoxai.models.asos_net import ASOSNet, as_float32, check_image, occlude, to_network_input
from geoxai.models.bundle import load_bundle, save_bundle
from geoxai.models.bundle_spec import BundleSpec

__all__ = [
    "ASOSParams",
    "ASOSTable",
    "QUANTUM",
    "TABLE_SIZE_WARN",
    "TableSizeWarning",
    "cube_index",
    "n_cubes_per_axis",
    "fit_partial",
    "merge_tables",
    "lookup",
    "activation_map",
    "asos_map",
    "DEFAULT_TRANSFORM",
]
"""Accepted units of input images: surface reflectance (~0..1) or digital numbers (~0..10000)."""


QUANTUM: float = 2.0**-32
"""Fixed-point step of the table's sums (score change units); each record rounds by <= QUANTUM/2."""


TABLE_SIZE_WARN: int = 100_000
"""Number of activation-space cubes above which building a table warns (dense storage)."""


_TABLE_SIZE_MAX: int = 50_000_000
"""Number of cubes above which a dense table (32 bytes per cube) is refused."""


class TableSizeWarning(UserWarning):
    """The activation space is cut into very many cubes (large table, thin evidence per cube)."""


def n_cubes_per_axis(edge: float) -> int:
    """Cubes per activation axis: ``ceil(2 / edge)`` (the last one may be partial)."""
    if not (0 < edge <= 2) or not math.isfinite(edge):
        raise ConfigError(f"ASOS cube edge {edge} must be in (0, 2]; the reference is 0.2.")
    return max(1, math.ceil(2.0 / edge - 1e-9))


def cube_index(a: torch.Tensor, edge: float) -> torch.Tensor:
    """Flattened cube index of each pixel: ``(..., k, H, W)`` activations -> ``(..., H, W)`` int64.

    Axis ``i`` of the cube grid is ``floor((a_i + 1) / edge)`` clipped to ``[0, n - 1]``; the
    flat index is ``sum_i b_i * n ** (k - 1 - i)`` (channel 0 most significant).
    """
    n = n_cubes_per_axis(edge)
    k = a.shape[-3]
    b = torch.floor((a.double() + 1.0) / edge).clamp_(0, n - 1).long()
    weights = torch.tensor([n ** (k - 1 - i) for i in range(k)], dtype=torch.long, device=a.device)
    return (b * weights.view(k, 1, 1)).sum(dim=-3)


@dataclass(frozen=True)
class ASOSParams:
    """How to fit the ASOS table."""

    edge: float = 0.2
    """Edge of an activation-space cube (paper: 0.2, so 10 cubes per axis)."""
    fill: float = 0.0
    """Value occluded activation vectors are set to (paper: 0)."""
    min_pixels: int = 100
    """An image's pixels in a cube needed to occlude that cube in that image (paper: 100)."""
    head_batch: int = 64
    """Occluded variants per head forward pass (memory ~ head_batch * k * H * W * 4 bytes)."""
    score: str = "probability"
    """Score whose change is recorded: ``"probability"`` (sigmoid, the paper) or ``"logit"``."""


@dataclass(frozen=True, eq=False)
class ASOSTable:
    """Mergeable per-cube statistics of score changes under activation occlusion.

    All arrays have ``n_cubes = ceil(2 / edge) ** k`` entries, indexed by :func:`cube_index`.
    """

    k: int
    """Activation channels."""
    edge: float
    """Cube edge in activation units."""
    fill: float
    """Occlusion fill value used in the fit."""
    min_pixels: int
    """Minimum pixels of an image in a cube for that cube to be occluded."""
    sum_q: np.ndarray
    """``(n_cubes,)`` int64: sum of score changes in units of :data:`QUANTUM`."""
    sumsq_q: np.ndarray
    """``(n_cubes,)`` int64: sum of squared score changes in units of :data:`QUANTUM`."""
    count: np.ndarray
    """``(n_cubes,)`` int64: number of (image, cube) occlusions recorded."""
    pixel_count: np.ndarray
    """``(n_cubes,)`` int64: pixels occluded in those records."""
    n_images: int = 0
    """Images the table was fitted on."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (bundle, data, code version); merged tables keep the first's."""
    score: str = "probability"
    """Score whose change is recorded (``"probability"`` or ``"logit"``)."""

    @classmethod
    def empty(
        cls, k: int, params: ASOSParams = ASOSParams(), meta: dict[str, Any] | None = None
    ) -> ASOSTable:
        """A table with no records for ``k`` activation channels (warns when it is huge)."""
        n = n_cubes_per_axis(params.edge) ** int(k)
        if n > _TABLE_SIZE_MAX:
            raise ConfigError(
                f"k={k} activation channels with cube edge {params.edge} make {n:.3g} cubes "
                f"(> {_TABLE_SIZE_MAX:.0e}); use fewer channels or a larger edge."
            )
        if n > TABLE_SIZE_WARN:
            warnings.warn(
                f"ASOS table for k={k} channels and cube edge {params.edge} has {n:,} cubes "
                f"({n * 32 / 2**20:.0f} MiB); most cubes will lack evidence. Use k <= 4 or a "
                "larger edge.",
                TableSizeWarning,
                stacklevel=2,
            )
        if int(params.min_pixels) < 1:
            raise ConfigError(f"min_pixels={params.min_pixels} must be >= 1 (paper: 100).")
        look_up_option(params.score, ("probability", "logit"), what="ASOS score")
        z = np.zeros(n, dtype=np.int64)
        return cls(
            int(k), float(params.edge), float(params.fill), int(params.min_pixels),
            z.copy(), z.copy(), z.copy(), z.copy(), 0, dict(meta or {}), params.score,
        )  # fmt: skip

    @property
    def n_cubes(self) -> int:
        """Number of cubes (entries of every array)."""
        return int(self.count.shape[0])

    @property
    def sum(self) -> np.ndarray:
        """``(n_cubes,)`` float64 sum of score changes."""
        return self.sum_q.astype(np.float64) * QUANTUM

    @property
    def sumsq(self) -> np.ndarray:
        """``(n_cubes,)`` float64 sum of squared score changes."""
        return self.sumsq_q.astype(np.float64) * QUANTUM

    def mean(self, min_evidence: int = 1) -> np.ndarray:
        """``(n_cubes,)`` mean score change; NaN where ``count < min_evidence`` (or 0)."""
        ok = self.count >= max(int(min_evidence), 1)
        out = np.full(self.n_cubes, np.nan)
        out[ok] = self.sum[ok] / self.count[ok]
        return out

    def std(self, min_evidence: int = 2) -> np.ndarray:
        """``(n_cubes,)`` sample standard deviation of score changes; NaN with < 2 records."""
        ok = self.count >= max(int(min_evidence), 2)
        out = np.full(self.n_cubes, np.nan)
        c = self.count[ok].astype(np.float64)
        var = (self.sumsq[ok] - self.sum[ok] ** 2 / c) / (c - 1)
        out[ok] = np.sqrt(np.maximum(var, 0.0))
        return out

    def compatible(self, other: ASOSTable) -> None:
        """Raise :class:`ConfigError` unless ``other`` was fitted with the same settings."""
        mine = (self.k, self.edge, self.fill, self.min_pixels, self.score, self.n_cubes)
        theirs = (other.k, other.edge, other.fill, other.min_pixels, other.score, other.n_cubes)
        if mine != theirs:
            raise ConfigError(
                "cannot merge ASOS tables fitted with (k, edge, fill, min_pixels, score, "
                f"n_cubes) = {theirs} into {mine}; fit every shard with the same bundle and "
                "ASOSParams."
            )

    def merge(self, other: ASOSTable) -> ASOSTable:
        """Exact, associative and commutative sum of two partial tables."""
        self.compatible(other)
        return ASOSTable(
            self.k, self.edge, self.fill, self.min_pixels,
            self.sum_q + other.sum_q, self.sumsq_q + other.sumsq_q,
            self.count + other.count, self.pixel_count + other.pixel_count,
            self.n_images + other.n_images, dict(self.meta or other.meta), self.score,
        )  # fmt: skip

    def equals(self, other: ASOSTable) -> bool:
        """True when both tables hold identical settings and statistics."""
        try:
            self.compatible(other)
        except ConfigError:
            return False
        return self.n_images == other.n_images and all(
            np.array_equal(getattr(self, f), getattr(other, f))
            for f in ("sum_q", "sumsq_q", "count", "pixel_count")
        )

    def to_bytes(self) -> bytes:
        """Serialise as ``.npz`` (arrays + a JSON header); loads with :meth:`from_bytes`."""
        header = {
            "format": "geoxai.asos_table/1",
            "k": self.k,
            "edge": self.edge,
            "fill": self.fill,
            "min_pixels": self.min_pixels,
            "n_images": self.n_images,
            "score": self.score,
            "quantum": QUANTUM,
            "meta": self.meta,
        }
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
            sum_q=self.sum_q,
            sumsq_q=self.sumsq_q,
            count=self.count,
            pixel_count=self.pixel_count,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "ASOS table") -> ASOSTable:
        """Inverse of :meth:`to_bytes`; :class:`InvalidInputError` on anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                h = json.loads(bytes(z["header"]).decode())
                arrays = {
                    f: z[f].astype(np.int64) for f in ("sum_q", "sumsq_q", "count", "pixel_count")
                }
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInputError(
                f"{source} is not an ASOS table (.npz from ASOSTable.to_bytes): {exc}"
            ) from exc
        if h.get("format") != "geoxai.asos_table/1" or h.get("quantum") != QUANTUM:
            raise InvalidInputError(
                f"{source} has format {h.get('format')!r} / quantum {h.get('quantum')}; "
                "expected geoxai.asos_table/1 with quantum 2**-32: refit with this version."
            )
        return cls(
            int(h["k"]), float(h["edge"]), float(h["fill"]), int(h["min_pixels"]),
            n_images=int(h["n_images"]), meta=dict(h.get("meta") or {}),
            score=str(h.get("score", "probability")), **arrays,
        )  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_bytes` to ``path`` (atomically: temp file, then rename)."""
        return atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> ASOSTable:
        """Read a table written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise InvalidInputError(f"ASOS table {p} does not exist; run `geoxai asos fit` first.")
        return cls.from_bytes(p.read_bytes(), source=str(p))


def merge_tables(tables: Sequence[ASOSTable]) -> ASOSTable:
    """Merge partial tables (any order, any grouping: the result is the same)."""
    if not tables:
        raise InvalidInputError("no partial ASOS tables to merge (was the training set empty?).")
    out = tables[0]
    for t in tables[1:]:
        out = out.merge(t)
    return out


def _quantize(v: torch.Tensor) -> np.ndarray:
    return torch.round(v.double() / QUANTUM).long().cpu().numpy()


@torch.no_grad()
def fit_partial(
    net: ASOSNet,
    images: np.ndarray | torch.Tensor,
    params: ASOSParams = ASOSParams(),
    *,
    valid: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
) -> ASOSTable:
    """Partial ASOS table of a batch of images (pure: same images -> same table).

    Each image is handled on its own (its U-Net pass, then all its occluded variants through
    the head in ``ceil(m / (head_batch - 1))`` passes, each with the unoccluded activations as
    its first element), so the result does not depend on how images are grouped into shards.

    Args:
        net: the trained network (eval mode is set).
        images: ``(N, in_bands, H, W)`` network input (:func:`to_network_input`), NaN-free.
        params: cube edge, fill, minimum pixels, head batch.
        valid: optional ``(N, H, W)`` bool; invalid pixels are neither counted nor occluded.
        meta: provenance to keep in the table.

    Returns:
        The partial :class:`ASOSTable` (merge shards with :meth:`ASOSTable.merge`).
    """
    x = as_float32(images)
    check_image(x, net.in_bands, what="fit images")
    x = x if x.ndim == 4 else x[None]
    if torch.isnan(x).any():
        raise InvalidInputError(
            "fit images contain NaN; scale them with to_network_input(nan='mask') and pass "
            "the mask as `valid`."
        )
    if params.head_batch < 2:
        raise ConfigError(f"head_batch={params.head_batch} must be >= 2.")
    table = ASOSTable.empty(net.k, params, meta)
    net.eval()
    device = next(net.parameters()).device
    sum_q, sumsq_q, count, pix = table.sum_q, table.sumsq_q, table.count, table.pixel_count
    per = params.head_batch - 1
    for i in range(x.shape[0]):
        a = net.activations(x[i : i + 1].to(device))[0]
        idx = cube_index(a, params.edge)
        if valid is not None:
            idx = torch.where(torch.from_numpy(np.asarray(valid[i], bool)).to(device), idx, -1)
        cubes, counts = torch.unique(idx, return_counts=True)
        keep = (counts >= params.min_pixels) & (cubes >= 0)
        cubes, counts = cubes[keep], counts[keep]
        for s in range(0, len(cubes), per):
            chunk = cubes[s : s + per]
            masks = idx.unsqueeze(0) == chunk.view(-1, 1, 1)
            batch = torch.cat([a.unsqueeze(0), occlude(a, masks, params.fill)])
            score = net.head(batch)[:, 0].double()
            if params.score == "probability":
                score = torch.sigmoid(score)
            delta = score[0] - score[1:]
            c = chunk.cpu().numpy()
            sum_q[c] += _quantize(delta)
            sumsq_q[c] += _quantize(delta * delta)
            count[c] += 1
            pix[c] += counts[s : s + per].cpu().numpy()
    return ASOSTable(
        table.k, table.edge, table.fill, table.min_pixels,
        sum_q, sumsq_q, count, pix, int(x.shape[0]), table.meta, table.score,
    )  # fmt: skip


def lookup(table: ASOSTable, a: np.ndarray | torch.Tensor, *, min_evidence: int = 1) -> np.ndarray:
    """Per-pixel sensitivity of ``(k, H, W)`` activations -> ``(H, W)`` float32.

    NaN where the pixel's cube has fewer than ``min_evidence`` records or ``a`` is NaN.
    """
    t = as_float32(a)
    if t.ndim != 3 or t.shape[0] != table.k:
        raise InvalidInputError(
            f"activations of shape {tuple(t.shape)} do not fit a table of k={table.k} "
            "channels; use the network the table was fitted with."
        )
    nan = torch.isnan(t).any(dim=0).cpu().numpy()
    idx = cube_index(torch.nan_to_num(t), table.edge).cpu().numpy()
    out = table.mean(min_evidence).astype(np.float32)[idx]
    out[nan] = np.nan
    return out


DEFAULT_TRANSFORM: tuple[float, ...] = (10.0, 0.0, 0.0, 0.0, -10.0, 0.0)
"""Grid of a plain image without georeference: 10 m pixels, origin at zone pixel (0, 0)."""


@torch.no_grad()
def activation_map(
    net: ASOSNet,
    x: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    window: WindowParams | None = None,
    transform: Sequence[float] | None = None,
) -> np.ndarray:
    """``(k, H, W)`` float32 activations of ``(in_bands, H, W)`` network input.

    Without ``window`` the U-Net runs once on the whole image (fine up to a few thousand px
    on CPU). With ``window`` it runs in Gaussian-blended lattice windows
    (:func:`geoxai.inference.predict_windows`, the same lattice as the predictions, so tiles
    stay seamless); pixels no valid window covers are NaN.
    """
    net.eval()
    device = next(net.parameters()).device
    if window is None:
        return net.activations(torch.from_numpy(x)[None].to(device))[0].float().cpu().numpy()

    blended = predict_windows(
        net.activations,
        x,
        list(transform or DEFAULT_TRANSFORM),
        valid,
        window,
        device=device,
    )
    return blended.values


def asos_map(
    net: ASOSNet,
    table: ASOSTable,
    image: np.ndarray,
    *,
    units: str = "reflectance",
    dn_offset: float = 0.0,
    min_evidence: int = 1,
    window: WindowParams | None = None,
    transform: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ASOS map of one image: one U-Net pass (or blended windows) and a table look-up.

    Args:
        net: the network the table was fitted with.
        table: the fitted table.
        image: ``(in_bands, H, W)`` reflectance or DNs; NaN pixels come out NaN.
        units: ``"reflectance"`` or ``"dn"`` (see :func:`to_network_input`).
        dn_offset: reflectance offset of DN inputs.
        min_evidence: records a cube needs; pixels in thinner cubes are NaN.
        window: blend the U-Net over lattice windows (big scenes, tiles); None = one pass.
        transform: the image's grid (6 numbers, UTM metres) fixing the window lattice;
            default :data:`DEFAULT_TRANSFORM`.

    Returns:
        ``(sensitivity, activations)``: ``(H, W)`` float32 score change (positive = pushes the
        score up; NaN = masked) and the ``(k, H, W)`` float32 activations (NaN = nodata).
    """
    check_image(image, net.in_bands, what="image")
    if np.asarray(image).ndim != 3:
        raise InvalidInputError(f"asos_map takes one (bands, y, x) image, got {image.shape}.")
    if table.k != net.k:
        raise InvalidInputError(
            f"the ASOS table has k={table.k} channels but the network has k={net.k}; refit "
            "the table with this network (`geoxai asos fit`)."
        )
    x, valid = to_network_input(image, units, dn_offset=dn_offset, nan="mask")
    a = activation_map(net, x, valid=valid, window=window, transform=transform)
    a[:, ~valid] = np.nan
    sens = lookup(table, a, min_evidence=min_evidence)
    return sens, a


TABLE_KEY = "asos_table"
"""Key of the fitted table in ``model.json``'s ``extra_files``."""


TABLE_FILE = "asos_table.npz"
"""File name of the fitted table inside a bundle."""


def bundle_spec(
    net: ASOSNet,
    *,
    name: str = "asos",
    bands: Sequence[str] | None = None,
    window: int = 128,
    stride: int = 64,
    context: int = 16,
    description: str = "",
) -> Any:
    """The ``model.json`` (:class:`geoxai.models.bundle_spec.BundleSpec`) of an ASOS network.

    Input: ``bands`` (default the ten S2 bands) of one date as ``(C, H, W)`` reflectance
    (layout ``CHW``, one time step), clipped to [0, 1] by the bundle normalization (the input
    convention of :func:`to_network_input`). Output: the ``k`` activation maps (``method =
    "activations"``, kind ``activation``), which is what tiles blend; ``forward`` gives the
    image score logit.
    """

    feats = list(bands or S2_BANDS)
    if len(feats) != net.in_bands:
        raise ConfigError(f"{len(feats)} band names {feats} for a network of {net.in_bands} bands.")
    return BundleSpec.model_validate(
        {
            "name": name,
            "architecture": "asos",
            "arch_kwargs": dict(net.config),
            "weights": "weights.safetensors",
            "inputs": {"features": feats, "time_steps": 1, "layout": "CHW"},
            "normalization": {"kind": "none", "clip": [0.0, 1.0]},
            "window": {"window": window, "stride": stride, "context": context},
            "output": {
                "kind": "activation",
                "names": [f"asos_a{i}" for i in range(net.k)],
                "transform": "none",
            },
            "description": description
            or "ASOS network: U-Net to k tanh activations, head to a score (Stomberg 2022).",
        }
    )


def save_asos_bundle(
    path: str | Path, net: ASOSNet, spec: Any = None, table: ASOSTable | None = None
) -> Path:
    """Write an ASOS bundle (weights, ``model.json``, and the table when given)."""

    spec = spec if spec is not None else bundle_spec(net)
    extra = {TABLE_KEY: (TABLE_FILE, table.to_bytes())} if table is not None else None
    if table is not None and table.k != net.k:
        raise ConfigError(f"table of k={table.k} for a network of k={net.k}.")
    return save_bundle(path, net, spec, extra_files=extra)


def load_asos_bundle(
    path: str | Path, device: str | torch.device = "cpu", *, need_table: bool = True
) -> tuple[Any, ASOSTable | None]:
    """Load an ASOS bundle: ``(LoadedBundle, table)``.

    Raises:
        ModelBundleError: not an ASOS bundle, or (with ``need_table``) no fitted table: the
            message says to run ``geoxai asos fit`` first.
    """

    b = load_bundle(path, device)
    if not isinstance(b.net, ASOSNet):
        raise ModelBundleError(
            f"Bundle {path} holds a {b.spec.architecture!r} model, not an ASOS network "
            "(architecture 'asos'); train one with `geoxai asos train`."
        )
    if TABLE_KEY not in b.spec.extra_files:
        if need_table:
            raise ModelBundleError(
                f"Bundle {path} has no fitted ASOS table ({TABLE_KEY} in model.json "
                f"extra_files): fit first with `geoxai asos fit --bundle {path} --data ... "
                "--out DIR`."
            )
        return b, None
    table = ASOSTable.from_bytes(b.extra_file(TABLE_KEY), source=f"{path}/{TABLE_FILE}")
    if table.k != b.net.k:
        raise ModelBundleError(
            f"Bundle {path}: its ASOS table has k={table.k} channels, the network k={b.net.k}; "
            "refit the table."
        )
    return b, table
