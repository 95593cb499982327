"""Training tiles of a stacked scene: spatially separated train/validation split and band
statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoxai.errors import ConfigError, InvalidInputError

__all__ = [
    "TileSplit",
    "split_tiles",
    "band_statistics",
]


@dataclass(frozen=True)
class TileSplit:
    """Tile origins ``(row, col)`` (pixels) of each role; all tiles are ``tile_size`` px."""

    tile_size: int
    train: list[tuple[int, int]]
    val: list[tuple[int, int]]
    gap: list[tuple[int, int]]
    unused: list[tuple[int, int]]


def split_tiles(
    labelled: np.ndarray,
    tile_size: int,
    val_fraction: float,
    *,
    seed: int = 0,
    block_tiles: int = 2,
    min_labelled: float = 0.25,
) -> TileSplit:
    """Non-overlapping tiles split into train / validation with a one-tile gap between them.

    Validation = a compact region of ``block_tiles`` x ``block_tiles`` tile blocks grown from a
    random border block (seeded) until it holds ``val_fraction`` of the usable tiles; the tiles
    touching it (8-neighbourhood) are gap tiles; the remaining usable tiles train.

    Args:
        labelled: ``(H, W)`` bool pixels with a label and data.
        tile_size: tile edge, px.
        val_fraction: share of usable tiles held out (0 < f < 1).
        seed: seed of the region's start and growth.
        block_tiles: block edge in tiles (1 when the grid has fewer than 3 x 3 blocks).
        min_labelled: a tile is usable when at least this share of its pixels is labelled.

    Raises:
        ConfigError: too few usable tiles for a train/gap/val split (names the fix).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    h, w = labelled.shape
    ny, nx = h // tile_size, w // tile_size
    if ny == 0 or nx == 0:
        raise ConfigError(
            f"tile_size {tile_size} px is larger than the {h} x {w} px area; use a smaller one."
        )
    frac = (
        labelled[: ny * tile_size, : nx * tile_size]
        .reshape(ny, tile_size, nx, tile_size)
        .mean(axis=(1, 3))
    )
    usable = frac >= min_labelled
    n_use = int(usable.sum())
    b = block_tiles if min(ny, nx) >= 3 * block_tiles else 1
    by, bx = -(-ny // b), -(-nx // b)
    block_of = np.add.outer(np.arange(ny) // b * bx, np.arange(nx) // b)  # (ny, nx) block id
    has = np.bincount(block_of[usable], minlength=by * bx) > 0
    rng = np.random.default_rng(seed)
    border = [
        i for i in range(by * bx) if has[i] and (i // bx in (0, by - 1) or i % bx in (0, bx - 1))
    ]
    val = np.zeros((ny, nx), bool)
    if border:
        chosen = {int(rng.choice(border))}
        want = max(1, round(val_fraction * n_use))
        while True:
            val = np.isin(block_of, list(chosen)) & usable
            if val.sum() >= want:
                break
            front = sorted(
                {
                    j
                    for i in chosen
                    for j in (
                        i - bx,
                        i + bx,
                        i - 1 if i % bx else -1,
                        i + 1 if (i + 1) % bx else -1,
                    )
                    if 0 <= j < by * bx and has[j] and j not in chosen
                }
            )
            if not front:
                break
            chosen.add(int(rng.choice(front)))
    near = np.zeros((ny + 2, nx + 2), bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near[dy : dy + ny, dx : dx + nx] |= val
    gap = near[1:-1, 1:-1] & ~val & usable
    train = usable & ~val & ~gap
    if not val.any() or not train.any():
        raise ConfigError(
            f"{n_use} usable tiles of {tile_size} px ({ny} x {nx} tiles, >= {min_labelled:.0%} "
            f"labelled) are too few for spatially separated train and validation tiles with a "
            f"one-tile gap (val {int(val.sum())}, train {int(train.sum())}); use a smaller "
            "tile_size, a smaller val_fraction or a larger area."
        )

    def origins(m: np.ndarray) -> list[tuple[int, int]]:
        return [
            (int(r) * tile_size, int(c) * tile_size) for r, c in zip(*np.nonzero(m), strict=True)
        ]

    return TileSplit(tile_size, origins(train), origins(val), origins(gap), origins(~usable))


def band_statistics(
    data: np.ndarray, valid: np.ndarray, origins: list[tuple[int, int]], tile_size: int
) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over the valid pixels of the given tiles.

    Returns:
        ``(offset, scale)``: C means and C standard deviations (1 where a band is constant), the
        affine normalization ``(x - offset) / scale`` of the bundle.
    """
    c = data.shape[0]
    s = np.zeros(c)
    s2 = np.zeros(c)
    n = 0
    for r, q in origins:
        v = valid[r : r + tile_size, q : q + tile_size]
        x = data[:, r : r + tile_size, q : q + tile_size][:, v].astype(np.float64)
        s += x.sum(axis=1)
        s2 += (x * x).sum(axis=1)
        n += int(v.sum())
    if n == 0:
        raise InvalidInputError("The training tiles have no valid pixel; nothing to normalize.")
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]
