"""Training history: ``metrics.json``, ``metrics.png`` and the live progress bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from geoxai.atomic import atomic_write_text

__all__ = ["plot_history", "progress_bar", "write_metrics"]


def write_metrics(out_dir: Path, history: list[dict]) -> None:
    """Write ``metrics.json`` (atomically) and ``metrics.png`` of the epochs so far."""
    atomic_write_text(out_dir / "metrics.json", json.dumps(history, indent=1))
    plot_history(history, out_dir / "metrics.png")


def plot_history(history: list[dict], path: str | Path) -> Path:
    """Loss curves (left) and other metric curves (right) of a history to a PNG (Agg canvas,
    no global matplotlib backend change)."""
    from matplotlib.backends.backend_agg import (
        FigureCanvasAgg,  # lazy: matplotlib only for figures (~0.5 s import)
    )
    from matplotlib.figure import Figure  # lazy: matplotlib only for figures (~0.5 s import)

    skip = {"epoch", "seconds"}
    keys = sorted(
        {
            k
            for r in history
            for k, v in r.items()
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if "loss" not in k and k != "lr"]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, ks, title in ((axes[0], losses, "loss"), (axes[1], others, "metrics")):
        for k in ks:
            pts = [(r["epoch"], r[k]) for r in history if k in r and r[k] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if ks:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def progress_bar(epochs: int, show: bool, rank: int, start: int):
    """A tqdm bar over epochs, shown on rank 0 only and only on a terminal."""
    from tqdm.auto import tqdm  # lazy: tqdm only when a bar is shown

    disable = not show or rank != 0 or not sys.stderr.isatty()
    return tqdm(total=epochs, initial=start, unit="epoch", disable=disable, dynamic_ncols=True)
