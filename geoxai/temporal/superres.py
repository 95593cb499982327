"""Super-resolution of the 20 m Sentinel-2 bands with WRI's DSen2-lite, per date, on tile cubes.

The network (:mod:`geoxai.models.dsen2`) expects the reference pipeline's input preparation
(``download_and_predict_job.py``, ``process_tile``):

* channels ``B02 B03 B04 B08 B05 B06 B07 B8A B11 B12`` (:data:`DSEN2_BANDS`), reflectance
  clipped to [0, 1];
* B02 B03 B04 B08 at 10 m as they are;
* B05 B06 B07 B8A bilinear from 20 m; B11 B12 first averaged 2x2 to 40 m, then bilinear;
  bilinear = pixel centres aligned (``scipy.ndimage.zoom(order=1, grid_mode=True)``), edge
  values held beyond the last coarse pixel centre;
* the graph's second input is the same six upsampled bands; its output (six bands, same units)
  replaces them.

WRI runs the graph on 110 px windows with 4 px reflect padding. Here the graph runs on windows
whose margins cover its reach (``GraphModule.reach``: 6 px), which is provably identical to one
pass over the whole array (:func:`apply_windows`), so results do not depend on where windows
fall; they equal WRI's at every pixel at least 6 px from WRI's window edges (nearer, WRI's
output depends on its reflect padding, so WRI's own windows are not seamless). On a tile cube
the 20 m / 40 m blocks sit on the UTM zone's 20 m / 40 m lattice (not the tile's), so two tiles
compute the same value for a pixel whenever both hold its neighbourhood:
:func:`required_halo_px` (14 px).

A tile cube must carry the 20 m bands as read (``resampling="nearest"`` onto the 10 m grid: each
20 m pixel is a 2x2 block, nothing interpolated yet); :func:`superresolve_cube` refuses a cube
already resampled bilinearly. A run does this with ``processing.super_resolution``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geoxai.errors import InvalidInputError
from geoxai.models.dsen2 import ARCHITECTURE, DSEN2_BANDS, DSEN2_OUTPUTS, Preparation

__all__ = [
    "block_mean",
    "upsample_bilinear",
    "prepare_reference",
    "prepare_tile",
    "lattice_phase",
    "apply_windows",
    "run_network",
    "superresolve_cube",
    "SuperresolvedRows",
    "required_halo_px",
    "wald_protocol",
]


# ---- resampling on a lattice --------------------------------------------------------------------


def block_mean(a: np.ndarray, factor: int, phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes, ignoring NaN.

    Args:
        a: ``(..., H, W)``.
        factor: block edge, px.
        phase: ``(py, px)``: the first block starts ``py``/``px`` px before pixel 0 (partial
            blocks at the edges average the pixels present).

    Returns:
        ``(..., h, w)`` float64, ``h = ceil((H + py) / factor)``; NaN where a block has no data.
    """
    py, px = phase
    h, w = a.shape[-2:]
    nh, nw = -(-(h + py) // factor), -(-(w + px) // factor)
    pad = [(0, 0)] * (a.ndim - 2) + [(py, nh * factor - h - py), (px, nw * factor - w - px)]
    full = np.pad(np.asarray(a, np.float64), pad, constant_values=np.nan)
    blocks = full.reshape(*a.shape[:-2], nh, factor, nw, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        return np.nanmean(blocks, axis=(-3, -1))


def _axis(n_out: int, n_in: int, factor: int, phase: int) -> tuple[np.ndarray, ...]:
    u = (np.arange(n_out) + phase + 0.5) / factor - 0.5  # fine centre in coarse pixel units
    u = np.clip(u, 0.0, n_in - 1)
    i0 = np.minimum(np.floor(u).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, u - i0


def upsample_bilinear(
    a: np.ndarray, factor: int, shape: tuple[int, int], phase: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Bilinear upsampling of the last two axes by ``factor``, pixel centres aligned.

    Equals ``scipy.ndimage.zoom(a, factor, order=1, grid_mode=True, mode="nearest")`` for
    ``phase = (0, 0)``; NaN coarse pixels are left out (weights renormalized over the valid
    ones), so nodata never spreads into valid pixels.

    Args:
        a: ``(..., h, w)`` coarse values.
        factor: fine pixels per coarse pixel.
        shape: ``(H, W)`` of the fine output.
        phase: see :func:`block_mean` (the same lattice).

    Returns:
        ``(..., H, W)`` float64.
    """
    a = np.asarray(a, np.float64)
    ok = np.isfinite(a)
    v = np.where(ok, a, 0.0)
    m = ok.astype(np.float64)
    y0, y1, wy = _axis(shape[0], a.shape[-2], factor, phase[0])
    x0, x1, wx = _axis(shape[1], a.shape[-1], factor, phase[1])
    wy, wx = wy[:, None], wx

    def interp(z: np.ndarray) -> np.ndarray:
        r = z[..., y0, :] * (1 - wy) + z[..., y1, :] * wy
        return r[..., x0] * (1 - wx) + r[..., x1] * wx

    num, den = interp(v), interp(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def prepare_reference(b10: np.ndarray, b20: np.ndarray) -> np.ndarray:
    """The reference preparation from arrays at native resolution.

    Args:
        b10: ``(T, 4, H, W)`` B02 B03 B04 B08 at 10 m.
        b20: ``(T, 6, H/2, W/2)`` B05 B06 B07 B8A B11 B12 at 20 m (same extent).

    Returns:
        ``(T, 10, H, W)`` float32 in :data:`DSEN2_BANDS` order (not clipped).
    """
    h, w = b10.shape[-2:]
    if b10.shape[-3] != 4 or b20.shape[-3] != 6 or b20.shape[-2:] != (h // 2, w // 2):
        raise InvalidInputError(
            f"prepare_reference needs (T, 4, H, W) 10 m and (T, 6, H/2, W/2) 20 m bands with "
            f"H, W even; got {b10.shape} and {b20.shape}."
        )
    up20 = upsample_bilinear(b20[:, :4], 2, (h, w))
    up40 = upsample_bilinear(block_mean(b20[:, 4:], 2), 4, (h, w))
    return np.concatenate([b10, up20, up40], axis=1).astype(np.float32)


def lattice_phase(transform: Any, resolution_m: float = 10.0) -> tuple[int, int]:
    """``(py, px)``: pixels from the last 40 m zone-lattice line to pixel 0 (row, column).

    Args:
        transform: the cube's affine ``(a, b, c, d, e, f)`` (north-up, ``a = -e = 10``).
    """
    t = [float(v) for v in list(transform)[:6]]
    if not (t[0] == resolution_m and t[4] == -resolution_m and t[1] == 0 and t[3] == 0):
        raise InvalidInputError(
            f"Super-resolution needs a north-up {resolution_m:g} m grid; the cube's transform "
            f"is {t}."
        )
    cx, ry = t[2] / resolution_m, -t[5] / resolution_m
    if cx != round(cx) or ry != round(ry):
        raise InvalidInputError(
            f"The cube's origin ({t[2]}, {t[5]}) is not on the {resolution_m:g} m lattice."
        )
    return int(round(ry)) % 4, int(round(cx)) % 4


def prepare_tile(x: np.ndarray, phase: tuple[int, int]) -> np.ndarray:
    """The reference preparation on a 10 m tile cube whose 20 m bands were read as 2x2 blocks.

    Args:
        x: ``(T, 10, H, W)`` in :data:`DSEN2_BANDS` order; B05..B12 nearest-resampled from 20 m.
        phase: :func:`lattice_phase` of the tile (40 m lattice; the 20 m one is ``phase % 2``).

    Returns:
        ``(T, 10, H, W)`` float32: 10 m bands as given, the others rebuilt from their 20 m
        blocks (4 x 4 blocks for B11 B12) on the zone lattice and upsampled bilinearly.
    """
    shape = x.shape[-2:]
    p2 = (phase[0] % 2, phase[1] % 2)
    up20 = upsample_bilinear(block_mean(x[:, 4:8], 2, p2), 2, shape, p2)
    up40 = upsample_bilinear(block_mean(x[:, 8:10], 4, phase), 4, shape, phase)
    return np.concatenate([x[:, :4], up20, up40], axis=1).astype(np.float32)


def required_halo_px(reach_px: int = 6) -> int:
    """Halo a tile needs for its core to match its neighbours: two 40 m blocks + the reach."""
    return 2 * 4 + int(reach_px)


# ---- running the network ------------------------------------------------------------------------


def apply_windows(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, margin: int, window: int
) -> torch.Tensor:
    """``fn`` on ``window``-px cores with ``margin`` px of context, stitched.

    For a fully convolutional ``fn`` whose outputs depend on inputs within ``margin`` px and
    that mirror-pads at its input's edge, this equals ``fn(x)`` exactly (a window edge inside
    the array is at least ``margin`` px from every kept pixel; one on the array edge is the
    array edge). ``x`` ``(N, C, H, W)`` -> ``(N, C', H, W)``.
    """
    h, w = x.shape[-2:]
    out: torch.Tensor | None = None
    for r0 in range(0, h, window):
        r1 = min(r0 + window, h)
        a0, a1 = max(0, r0 - margin), min(h, r1 + margin)
        for c0 in range(0, w, window):
            c1 = min(c0 + window, w)
            b0, b1 = max(0, c0 - margin), min(w, c1 + margin)
            y = fn(x[..., a0:a1, b0:b1])
            if out is None:
                out = x.new_empty((x.shape[0], y.shape[1], h, w))
            out[..., r0:r1, c0:c1] = y[..., r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
    if out is None:
        raise InvalidInputError(f"apply_windows got an empty array {tuple(x.shape)}.")
    return out


def run_network(
    net: torch.nn.Module,
    x: np.ndarray,
    *,
    margin: int,
    window: int = 256,
    clip: tuple[float, float] = (0.0, 1.0),
    device: str | torch.device = "cpu",
    batch: int = 4,
) -> np.ndarray:
    """Super-resolved bands of prepared inputs.

    Args:
        net: a :class:`DSen2Lite` (eval mode, on ``device``).
        x: ``(T, 10, H, W)`` prepared reflectance (NaN = nodata).
        margin: the network's reach, px.
        window: window core edge, px.
        clip: input reflectance range.
        device: where to run.
        batch: dates per call.

    Returns:
        ``(T, 6, H, W)`` float32 :data:`DSEN2_OUTPUTS`; NaN where any input band is NaN.
    """
    if x.ndim != 4 or x.shape[1] != len(DSEN2_BANDS) or min(x.shape[-2:]) < 2:
        raise InvalidInputError(
            f"run_network needs (T, {len(DSEN2_BANDS)}, H, W) inputs with H, W >= 2; got {x.shape}."
        )
    nodata = ~np.isfinite(x).all(axis=1)
    xin = np.clip(np.nan_to_num(x, nan=0.0), *clip).astype(np.float32)
    out = np.empty((x.shape[0], len(DSEN2_OUTPUTS), *x.shape[-2:]), np.float32)
    with torch.no_grad():
        for t0 in range(0, x.shape[0], batch):
            xt = torch.from_numpy(xin[t0 : t0 + batch]).to(device)
            y = apply_windows(net, xt, margin=margin, window=window)
            out[t0 : t0 + batch] = y.float().cpu().numpy()
    out[np.broadcast_to(nodata[:, None], out.shape)] = np.nan
    return out


class SuperresolvedRows:
    """A raw tile cube with B05 B06 B07 B8A B11 B12 super-resolved, read by row blocks.

    An array-like ``(time, band, y, x)`` float32 of ``raw``'s shape and band order. A read
    (basic indexing: integers and slices) of rows ``y0:y1`` reads rows
    ``y0 - halo : y1 + halo`` of ``raw`` (``halo`` = :func:`required_halo_px` of the network's
    reach: two 40 m blocks for the preparation + the reach), prepares them on the zone lattice
    (:func:`prepare_tile` with the block's own phase), runs the network on rows
    ``y0 - reach : y1 + reach`` and keeps ``y0:y1``. Every kept pixel is at least two 40 m
    blocks + the reach from a block edge that is not the cube's edge, so a block's rows hold
    the values one pass over the whole cube gives (``tests/temporal/test_superres.py`` checks
    bit equality); :func:`superresolve_cube` is this array read whole.

    Memory per read: the ``raw`` rows read (``y1 - y0 + 2 halo`` rows, every date and band,
    float32), the kept rows, and ~10x one batch of dates of those rows (float64 resampling):
    it follows the rows asked, not the cube. ``raw`` may be lazy (a stored cube read row block
    by row block, :func:`geoxai.io.store.read_cube`): then only those rows are read.

    Args:
        raw: ``(time, band, y, x)`` DataArray at 10 m with the ten :data:`DSEN2_BANDS` (+ SCL),
            attrs ``transform`` and ``resampling = "nearest"`` (the 20 m bands as read).
        bundle: a loaded ``wri-dsen2-lite`` :class:`~geoxai.models.bundle.LoadedBundle`.
        batch: dates per network call.

    Attributes:
        shape, dtype, ndim: of the array (``raw``'s shape, float32).
        halo: rows of context read above and below the rows asked.
        provenance: what ``attrs["super_resolution"]`` of the result records.

    Raises:
        InvalidInputError: missing bands, a cube resampled bilinearly, or a grid not on 10 m.
    """

    def __init__(self, raw: Any, bundle: Any, *, batch: int = 4) -> None:
        spec = bundle.spec
        if spec.architecture != ARCHITECTURE:
            raise InvalidInputError(
                f"Bundle {bundle.path} is a {spec.architecture!r} bundle; super-resolution needs "
                f"a {ARCHITECTURE!r} bundle (geoxai models import-tf superresolve_graph.pb)."
            )
        prep = Preparation.model_validate(spec.preparation)
        tile = raw.attrs.get("tile_id", "?")
        have = [str(b) for b in raw["band"].values]
        missing = [b for b in DSEN2_BANDS if b not in have]
        if missing:
            raise InvalidInputError(
                f"Raw cube of tile {tile} lacks {missing} that super-resolution reads; rebuild "
                f"it with all of {list(DSEN2_BANDS)}."
            )
        if raw.attrs.get("resampling") != "nearest":
            raise InvalidInputError(
                f"Raw cube of tile {tile} was read with resampling "
                f"{raw.attrs.get('resampling')!r}; super-resolution starts from the 20 m values: "
                "build the cube with resampling='nearest' (a run does when "
                "processing.super_resolution is set)."
            )
        if "transform" not in raw.attrs:
            raise InvalidInputError(f"Raw cube of tile {tile} has no 'transform' attribute.")
        res = float(raw.attrs.get("resolution_m", 10.0))
        self.phase = lattice_phase(raw.attrs["transform"], res)
        self.raw, self.bundle, self.batch = raw, bundle, max(1, int(batch))
        self.reach, self.window, self.clip = prep.reach_px, spec.window.window, prep.clip
        self.idx = [have.index(b) for b in DSEN2_BANDS]
        self.out_idx = [have.index(b) for b in DSEN2_OUTPUTS]
        self.halo = required_halo_px(self.reach)
        self.shape = tuple(int(n) for n in raw.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 4
        self.provenance = {
            "bundle": spec.name,
            "architecture": spec.architecture,
            "graph_sha256": spec.source.sha256 if spec.source else None,
            "weights_sha256": spec.weights_sha256,
        }

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        drop = tuple(i for i, k in enumerate(key) if isinstance(k, int | np.integer))
        key = tuple(slice(int(k), int(k) + 1) if i in drop else k for i, k in enumerate(key))
        if len(key) != 4 or not all(isinstance(k, slice) for k in key):
            raise TypeError("SuperresolvedRows takes integers and slices only (basic indexing).")
        ny = self.shape[2]
        y0, y1, step = key[2].indices(ny)
        if step < 1:  # xarray's basic indexing hands out increasing slices
            raise TypeError("SuperresolvedRows takes increasing row slices only.")
        rows = range(y0, y1, step)
        if not len(rows):
            nt = len(range(*key[0].indices(self.shape[0])))
            empty = np.empty((nt, self.shape[1], 0, self.shape[3]), np.float32)
            got = empty[:, key[1], :, key[3]]
            return got.squeeze(axis=drop) if drop else got
        r0, r1 = rows[0], rows[-1] + 1
        a0, a1 = max(0, r0 - self.halo), min(ny, r1 + self.halo)
        vals = np.asarray(self.raw.isel(time=key[0], y=slice(a0, a1)).values, np.float32)
        out = np.array(vals[:, :, r0 - a0 : r1 - a0], dtype=np.float32)  # a copy: raw stays
        out[:, self.out_idx] = self._network(vals, a0, r0 - a0, r1 - a0)
        del vals
        got = out[:, key[1], ::step, key[3]]
        return got.squeeze(axis=drop) if drop else got

    def _network(self, vals: np.ndarray, a0: int, k0: int, k1: int) -> np.ndarray:
        """``(T, 6, k1 - k0, X)`` network outputs of rows ``k0:k1`` of ``vals``
        ``(T, band, rows, X)``, the cube's rows from ``a0``."""
        phase = ((self.phase[0] + a0) % 4, self.phase[1])
        n0, n1 = max(k0 - self.reach, 0), min(k1 + self.reach, vals.shape[2])
        out = np.empty((vals.shape[0], len(DSEN2_OUTPUTS), k1 - k0, vals.shape[3]), np.float32)
        for t0 in range(0, vals.shape[0], self.batch):  # memory: one batch of dates at a time
            x = prepare_tile(vals[t0 : t0 + self.batch][:, self.idx], phase)[:, :, n0:n1]
            y = run_network(
                self.bundle.net,
                x,
                margin=self.reach,
                window=self.window,
                clip=self.clip,
                device=self.bundle.device,
                batch=self.batch,
            )
            out[t0 : t0 + self.batch] = y[:, :, k0 - n0 : k1 - n0]
        return out


def superresolve_cube(raw: Any, bundle: Any, *, batch: int = 4) -> Any:
    """Replace B05 B06 B07 B8A B11 B12 of a raw tile cube with the network's, per date, whole.

    :class:`SuperresolvedRows` read at once (a run reads it by row blocks instead, so its
    memory follows the block, not the cube: :func:`geoxai.mapping.stages.tile_features`).

    Args:
        raw: ``(time, band, y, x)`` DataArray at 10 m with the ten :data:`DSEN2_BANDS` (+ SCL),
            attrs ``transform`` and ``resampling = "nearest"`` (the 20 m bands as read).
        bundle: a loaded ``wri-dsen2-lite`` :class:`~geoxai.models.bundle.LoadedBundle`.
        batch: dates per network call.

    Returns:
        A copy of ``raw`` (numpy-backed) with the six bands super-resolved (NaN kept where
        any of the ten bands is NaN) and ``attrs["super_resolution"]`` naming the bundle.
        Memory: the copy plus ~10x one batch of dates (float64 resampling).

    Raises:
        InvalidInputError: missing bands, a cube resampled bilinearly, or a grid not on 10 m.
    """
    rows = SuperresolvedRows(raw, bundle, batch=batch)
    res = raw.copy(data=rows[:, :, :, :])
    res.attrs["super_resolution"] = dict(rows.provenance)
    return res


# ---- Wald's protocol ----------------------------------------------------------------------------


def wald_protocol(
    net: torch.nn.Module, b10: np.ndarray, b20: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Per-band RMSE of the network and of bilinear upsampling at half resolution.

    Every band is degraded 2x by block means (10 -> 20 m, 20 -> 40 m; B11 B12, whose network
    input is 40 m, 40 -> 80 m), the reference preparation and the network run on that, and the
    20 m results are compared with the real 20 m bands (Wald et al. 1997).

    Args:
        net: a :class:`DSen2Lite`.
        b10: ``(T, 4, H, W)`` B02 B03 B04 B08 at 10 m (H, W multiples of 8).
        b20: ``(T, 6, H/2, W/2)`` B05 B06 B07 B8A B11 B12 at 20 m: the truth.
        mask: optional ``(T, H/2, W/2)`` bool of pixels to score (e.g. clear sky).

    Returns:
        band -> ``{"network": rmse, "bilinear": rmse}`` (reflectance), plus ``"mean"``.
    """
    h, w = b10.shape[-2:]
    if h % 8 or w % 8 or b20.shape[-2:] != (h // 2, w // 2):
        raise InvalidInputError(
            f"wald_protocol needs 10 m bands of H, W multiples of 8 and 20 m bands of half "
            f"that; got {b10.shape} and {b20.shape}."
        )
    x = prepare_reference(block_mean(b10, 2), block_mean(b20, 2))  # the input, one octave down
    reach = getattr(net, "reach", None)
    if not callable(reach):
        raise InvalidInputError("wald_protocol needs a DSen2Lite network (with reach()).")
    lo, hi = reach()
    dev = next(net.parameters(), next(net.buffers())).device
    y = run_network(net, x, margin=max(-lo, hi), window=max(h, w), device=dev)
    base = x[:, 4:]
    keep = np.ones(b20[:, 0].shape, bool) if mask is None else np.asarray(mask, bool)
    res: dict[str, dict[str, float]] = {}
    for k, band in enumerate(DSEN2_OUTPUTS):
        truth = b20[:, k][keep]
        res[band] = {
            "network": float(np.sqrt(np.mean((y[:, k][keep] - truth) ** 2))),
            "bilinear": float(np.sqrt(np.mean((base[:, k][keep] - truth) ** 2))),
        }
    res["mean"] = {
        m: float(np.mean([res[b][m] for b in DSEN2_OUTPUTS])) for m in ("network", "bilinear")
    }
    return res
