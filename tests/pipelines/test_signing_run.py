"""A `geoxai run` whose assets sit behind the Planetary Computer stand-ins (tests/fixtures/pc.py):
tokens expire every few seconds, the run completes, token requests stay bounded, and no token
string reaches any output or log.

The run world's synthetic archive (a year of scenes: a run needs pixels for every date, which
Planetary Computer's real items in ../shared/realdata do not ship) is served by the blob
stand-in: its items' hrefs are rewritten to ``http://127.0.0.8:<port>/<account>/<container>/..``
and served by a local rustac STAC API; ``stac.signing: planetary-computer``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]

ACCOUNT, CONTAINER = "synthacct", "sentinel2-l2"
TTL_S = 4.0


def _grep(root: Path, needles: list[str]) -> list[str]:
    """Files under ``root`` whose bytes contain any needle."""
    hits = []
    raw = [n.encode() for n in needles]
    for f in root.rglob("*"):
        if f.is_file() and not f.is_symlink():
            try:
                data = f.read_bytes()
            except OSError:
                continue
            if any(n in data for n in raw):
                hits.append(str(f))
    return hits


def test_run_with_expiring_tokens_completes_without_leaking_them(
    run_world, pc_standin, tmp_path, capfd, monkeypatch
):
    from geoxai.io.layout import RunLayout
    from geoxai.mapping.records import read_records
    from pipelines.run import init_ray, run
    from pipelines.services import local_stac_api

    world_dir = run_world.root / "world"
    ndjson = next(world_dir.rglob("items.ndjson"))
    base = ndjson.parent
    (pc_standin.root / ACCOUNT).mkdir()
    (pc_standin.root / ACCOUNT / CONTAINER).symlink_to(base, target_is_directory=True)
    prefix = f"{pc_standin.blob_url}/{ACCOUNT}/{CONTAINER}/"
    items = []
    for line in ndjson.read_text().splitlines():
        it = json.loads(line)
        for a in it["assets"].values():
            if a["href"].startswith(str(base)):
                a["href"] = prefix + str(Path(a["href"]).relative_to(base))
        items.append(it)
    pc_standin.tokens.ttl_s = TTL_S

    ray_tmp = f"/tmp/gxs-{os.getpid()}"
    monkeypatch.setenv("GEOXAI_RAY_TMPDIR", ray_tmp)
    import ray

    init_ray(None, num_cpus=2)  # after PC_SDK_SAS_URL is set: the workers inherit it
    try:
        with local_stac_api(items) as stac_url:
            cfg = run_world.config(
                tmp_path / "store",
                stac={"url": stac_url, "signing": "planetary-computer"},
                # ASOS kept: a run without it cannot finish yet (its mosaic lists ASOS COGs)
                models={**run_world.models, "spacex": None},
                tiles=[t.id for t in run_world.world.tiles[:2]],
            )
            t0 = time.monotonic()
            summary = run(cfg, progress=False)
            wall = time.monotonic() - t0
    finally:
        ray.shutdown()
    assert summary.count("done") == 2, summary.outcomes
    recs = list(read_records(RunLayout(cfg.run_root())))
    assert {r["status"] for r in recs} == {"done"}
    n_req = sum(pc_standin.tokens.requests.values())
    served = pc_standin.blob_stats["served"]
    # tokens expired during the run, and were renewed about once per lifetime per worker
    # process (cube tasks run in up to 2 processes, each with its own cache), plus one per
    # refusal of an expired token: far fewer than one per asset read
    assert wall > 2 * TTL_S and n_req >= 2
    bound = 2 * 2 * (wall / (0.75 * TTL_S) + 1)
    assert n_req <= bound, (n_req, bound, wall)
    assert served > 10 * n_req, (served, n_req)
    # no token anywhere: run outputs (records, config, STAC, report, Zarr attrs), Ray's
    # session logs, this process's output
    sigs = pc_standin.tokens.signatures()
    assert len(sigs) == n_req
    assert _grep(Path(cfg.run_root()), sigs) == []
    assert _grep(Path(ray_tmp), sigs) == []
    out, err = capfd.readouterr()
    assert not any(s in out or s in err for s in sigs)
    print(
        f"signing run: {wall:.0f} s, {n_req} token requests, {served} blob reads served, "
        f"{pc_standin.blob_stats['refused']} refused (expired) and retried"
    )
    assert "sig=" not in json.dumps(recs)


def test_run_on_real_planetary_computer_items_behind_expiring_tokens(
    run_world, realdata, pc_standin, tmp_path, capfd, monkeypatch
):
    """Planetary Computer's own items (``../shared/realdata/stac_items``: one date of a strip of
    9 granules, real band keys, EPSG 32735, processing baseline 02.12) rewritten to the blob
    stand-in, band files written where they point (the real rasters are not shipped): ``geoxai
    run`` over one tile signs every read (unsigned ones are refused), maps the tile and records
    the real item ids with hrefs unsigned: no token in any output or log."""
    from geoxai.geo.grid import TileSpec
    from geoxai.io.layout import RunLayout
    from geoxai.mapping.records import read_records
    from pipelines.run import init_ray, run
    from pipelines.services import local_stac_api
    from tests.fixtures.world import HALO
    from tests.io.test_signing import BANDS, PC_ITEMS, _write_band, rewrite

    tile = TileSpec(32735, 275, 4575, 0, 2000)  # inside granule 35MNM only, with its halo
    feats = json.loads((realdata / PC_ITEMS).read_text())["features"]
    items = [rewrite(f, pc_standin.blob_url) for f in feats]  # all 9: the search picks
    mine = next(i for i in items if "T35MNM" in i["id"])
    for k, band in enumerate(BANDS):
        href = mine["assets"][band]["href"]
        local = pc_standin.root / href[len(pc_standin.blob_url) + 1 :]
        _write_band(
            local,
            mine["assets"][band],
            tile.with_halo(HALO),
            0 if band == "SCL" else 1000 + 100 * k,
        )
    # one date is no series (every pixel would be "sparse" and the tile empty): the granule's
    # item is repeated every 30 days of 2020 with its own id, same metadata and band files
    import pandas as pd

    for k in range(1, 12):
        copy = json.loads(json.dumps(mine))
        copy["id"] = f"{mine['id']}-m{k:02d}"
        when = pd.Timestamp(mine["properties"]["datetime"]) + pd.Timedelta(days=30 * k - 150)
        copy["properties"]["datetime"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        items.append(copy)
    pc_standin.tokens.ttl_s = TTL_S
    lon0, lat0, lon1, lat1 = tile.footprint().bounds

    ray_tmp = f"/tmp/gxr-{os.getpid()}"
    monkeypatch.setenv("GEOXAI_RAY_TMPDIR", ray_tmp)
    import ray

    init_ray(None, num_cpus=2)
    try:
        with local_stac_api(items) as stac_url:
            cfg = run_world.config(
                tmp_path / "store",
                aoi=f"{lon0:.6f},{lat0:.6f},{lon1:.6f},{lat1:.6f}",
                year=2020,
                stac={"url": stac_url, "signing": "planetary-computer"},
                models={**run_world.models, "spacex": None},
                tiles=[tile.id],
            )
            summary = run(cfg, progress=False)
    finally:
        ray.shutdown()
    assert summary.count("done") == 1, summary.outcomes
    (rec,) = read_records(RunLayout(cfg.run_root()))
    assert rec["status"] == "done", rec
    assert sorted(rec["input_items"]) == sorted(i["id"] for i in items if mine["id"] in i["id"])
    assert sum(pc_standin.tokens.requests.values()) >= 1  # (expiry mid-run: the test above)
    assert pc_standin.blob_stats["served"] >= len(BANDS)
    sigs = pc_standin.tokens.signatures()
    assert _grep(Path(cfg.run_root()), sigs) == []
    assert _grep(Path(ray_tmp), sigs) == []
    out, err = capfd.readouterr()
    assert not any(s in out or s in err for s in sigs)
    assert "sig=" not in json.dumps(rec)
