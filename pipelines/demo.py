"""The embedded default: a whole run on this machine, with nothing but what geoxai installs.

``geoxai demo --out DIR``:

1. writes a synthetic Sentinel-2 L2A world (``DIR/world``: COGs, STAC items, truth layers);
2. serves its items through a local STAC API (``rustac serve`` on 127.0.0.5);
3. trains the two demo models on the world's first tile, if ``DIR/models`` has none yet: a
   TemporalUNet on the tree-cover truth (``DIR/models/treecover``) and an ASOS network on the
   natural/anthropogenic label with its fitted sensitivity table (``DIR/models/asos``);
4. runs the main job (``geoxai run DIR/run.yaml``) on a local Ray instance pinned to loopback:
   cubes to a local Zarr store, smoothing, blended inference, ASOS, COGs, STAC, report;
5. prints the report's path and the accuracy of the map against the truth, per tile.

Every step is resumable: a second invocation reuses the world, the models and every finished
tile.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from geoxai import mapping
from geoxai.config import RunConfig, load_run_config

__all__ = ["run_demo", "demo_config"]

HALO_PX = 64
WINDOW = dict(window=64, stride=32, context=8)


def _console():
    from rich.console import Console

    return Console()


def demo_config(out: Path, stac_url: str, world: Any) -> RunConfig:
    """The demo's run config (also written to ``out/run.yaml`` for reruns by hand)."""
    doc = {
        "name": "demo",
        "aoi": ",".join(f"{v:.6f}" for v in world.aoi),
        "year": world.year,
        "stac": {"url": stac_url, "collection": "sentinel-2-l2a", "margin_days": 30},
        "store": {"root": str((out / "store").resolve())},
        "models": {
            "prediction": str((out / "models" / "treecover").resolve()),
            "asos": str((out / "models" / "asos").resolve()),
        },
        "processing": {"halo_px": HALO_PX},
        "resources": {"num_workers": 1, "cube_tasks_in_flight": 1},
        "tiles": [t.id for t in world.tiles],
    }
    return load_run_config(doc)


def _features(tile: Any, cfg: RunConfig) -> Any:
    from geoxai.io import store
    from geoxai.mapping.stages import SMOOTH_ROWS
    from geoxai.temporal.smoothing import preprocess

    cube = mapping.stage_cube(tile, cfg)
    if cube.status != "ok":
        raise RuntimeError(f"demo training tile {tile.id}: {cube.status}: {cube.reason}")
    # the cube stays lazy: preprocess reads it row block by row block, as a tile actor does
    # (same values as the loaded cube: tests/mapping/test_streamed_tile.py)
    raw = store.read_cube(cube.url)
    return preprocess(raw, mapping.preprocess_params(cfg), rows_per_block=SMOOTH_ROWS)


def _train_models(cfg: RunConfig, world: Any, console) -> None:
    import torch

    from geoxai.geo.bands import S2_BANDS
    from geoxai.models.asos_net import ASOSNet, to_network_input
    from geoxai.train.asos import train_asos
    from geoxai.train.temporal import TemporalTrainParams, save_temporal_bundle, train_temporal
    from geoxai.train.trainer import FitParams
    from geoxai.xai.asos import ASOSParams, bundle_spec, fit_partial, save_asos_bundle

    torch.manual_seed(0)
    tile = world.tiles[0].with_halo(HALO_PX)
    console.print(f"[bold]training demo models[/] on tile {tile.id} (cube, smoothing...)")
    ds = _features(tile, cfg)
    feats = np.asarray(ds["features"].values, np.float32)
    valid = np.asarray(ds["valid"].values, bool)
    tree = world.tree_cover()[world.block_slices(tile)].astype(np.float32)
    natural = world.natural()[world.block_slices(tile)].astype(np.float32)

    t0 = time.monotonic()
    net, hist = train_temporal(
        [feats], [tree], [valid], TemporalTrainParams(steps=100, batch_size=4, embed=8, base=8)
    )
    from geoxai.train.temporal import fit_normalization

    norm = fit_normalization([feats], [valid])
    save_temporal_bundle(
        cfg.models.prediction,
        net,
        [str(b) for b in ds["band"].values],
        norm,
        name="demo-treecover",
        output="tree_cover",
        description="Demo TemporalUNet trained on one synthetic tile's tree-cover truth.",
        **WINDOW,
    )
    console.print(
        f"  tree-cover model: {len(hist) * 10} steps, final loss {hist[-1]['loss']:.3f} "
        f"({time.monotonic() - t0:.0f} s)"
    )

    t0 = time.monotonic()
    comp = mapping.annual_composite(ds["features"], S2_BANDS)
    x, ok = to_network_input(comp, "reflectance", nan="mask")
    x = np.asarray(x, np.float32)
    images, labels, masks = [], [], []
    size, step = 64, 32
    for r in range(0, x.shape[1] - size + 1, step):
        for c in range(0, x.shape[2] - size + 1, step):
            m = np.asarray(ok)[r : r + size, c : c + size]
            if m.mean() < 0.95:
                continue
            images.append(x[:, r : r + size, c : c + size])
            masks.append(m)
            labels.append(float(natural[r : r + size, c : c + size].mean() > 0.5))
    imgs = np.nan_to_num(np.stack(images)).astype(np.float32)
    labs = np.asarray(labels, np.float32)
    anet = ASOSNet(in_bands=len(S2_BANDS), k=3, width=8, head_width=8)
    ahist = train_asos(anet, imgs, labs, FitParams(epochs=4, batch_size=16, seed=0, lr=2e-3))
    table = fit_partial(anet, imgs, ASOSParams(), valid=np.stack(masks))
    save_asos_bundle(
        cfg.models.asos,
        anet,
        bundle_spec(anet, name="demo-asos", bands=list(S2_BANDS), **WINDOW),
        table,
    )
    console.print(
        f"  ASOS model: {len(imgs)} images ({labs.mean():.0%} natural), accuracy "
        f"{ahist[-1]['accuracy']:.2f}, table of {int((table.count > 0).sum())} cubes "
        f"({time.monotonic() - t0:.0f} s)"
    )


def _accuracy(cfg: RunConfig, world: Any) -> list[dict[str, Any]]:
    """Per tile: MAE and IoU (> 0.5) of the mapped tree cover against the world's truth."""
    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore
    from geoxai.train.temporal import evaluate_map

    layout = RunLayout(cfg.run_root())
    rows = []
    for t in world.tiles:
        zone = ZoneStore.open(layout, t.epsg)
        try:
            pred = zone.read_tile(t, "prediction")
        except Exception:  # noqa: BLE001 - a tile that did not finish has no accuracy
            continue
        truth = world.tree_cover()[world.block_slices(t.with_halo(0))]
        m = evaluate_map(pred, truth)
        rows.append({"tile": t.id, "trained_on": t == world.tiles[0], **m})
    return rows


def run_demo(out: Path, *, tiles: int = 4, year: int = 2024, seed: int = 0) -> dict[str, Any]:
    """Run the whole embedded default; returns the run summary and accuracy rows."""
    from geoxai.synthetic.world import load_world, make_world
    from pipelines.run import run
    from pipelines.services import local_stac_api

    console = _console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wdir = out / "world"
    t0 = time.monotonic()
    if (wdir / "world.json").exists():
        world = load_world(wdir)
        console.print(f"[bold]world[/] reused: {wdir}")
    else:
        console.print(f"[bold]writing synthetic world[/] ({tiles} tiles, {year}) to {wdir}")
        world, _ = make_world(wdir, tiles=tiles, year=year, seed=seed, margin_px=HALO_PX)
    items = wdir / "items.ndjson"
    with local_stac_api(items) as stac_url:
        console.print(f"[bold]local STAC API[/] at {stac_url}")
        cfg = demo_config(out, stac_url, world)
        (out / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        if not (Path(cfg.models.asos) / "model.json").exists():
            _train_models(cfg, world, console)
        console.print("[bold]mapping run[/] on local Ray (127.0.0.1, token auth)")
        summary = run(cfg)
    rows = _accuracy(cfg, world)
    from rich.table import Table

    table = Table(title="tree cover vs synthetic truth")
    for col in ("tile", "MAE", "IoU (>0.5)", "note"):
        table.add_column(col)
    for r in rows:
        note = "training tile" if r["trained_on"] else "held out"
        table.add_row(r["tile"], f"{r['mae']:.3f}", f"{r['iou']:.3f}", note)
    console.print(table)
    (out / "accuracy.json").write_text(json.dumps(rows, indent=1))
    console.print(
        f"done in {time.monotonic() - t0:.0f} s: {summary.count('done')} tiles mapped, "
        f"{summary.count('failed')} failed"
    )
    console.print(f"[bold green]report:[/] {summary.report}")
    return {"summary": summary, "accuracy": rows}
