"""Rerun planning on S3 costs requests per prefix, not per tile (issue 17): ``resume_plan`` of
a run stopped halfway, over 48 and over 192 tiles in two UTM zones, makes the same GETs, HEADs
and LIST pages at both sizes, counted by the local S3 server itself (moto_server's request
log), and still plans right: done and empty tiles skipped, unfinished, failed and half-written
ones redone.

What it may cost, per zone: the zone group's metadata, one listing of its arrays and each
array's metadata, the two coordinate arrays' values; then one listing per prefix (records, each
layer's chunks, each COG folder), one HEAD and one GET of the record index and one GET per
record written after the index. Nothing per tile: no record in the index is read, no chunk, no
COG, and no object is asked for its size before it is read.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from geoxai.config import load_run_config
from geoxai.geo.grid import TileSpec
from geoxai.io.cog import write_tile_cogs
from geoxai.io.zonestore import ZoneStore, default_layers
from geoxai.mapping.plan import resume_plan
from geoxai.mapping.record_index import write_record_index
from geoxai.mapping.records import delete_record, write_status, write_tile
from geoxai.mapping.settings import run_layout

pytestmark = pytest.mark.s3

ZONES = (32631, 32632)
LAYERS = [s for s in default_layers() if s.name in ("prediction", "quality")]


ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""The colours of the server's log lines (werkzeug's, by status)."""


class ServerLog:
    """The S3 requests of one bucket, read from the server's request log between two marks."""

    def __init__(self, server: dict[str, Any], bucket: str) -> None:
        self.path, self.bucket = Path(server["log"]), bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=server["endpoint_url"],
            aws_access_key_id=server["key"],
            aws_secret_access_key=server["secret"],
            region_name=server["region"],
        )

    def mark(self) -> int:
        return self._settled()

    def _settled(self) -> int:
        """The log's size once every request made so far is in it: a request of its own for
        a key no one writes, waited for (the server logs a request after answering it)."""
        key = f"sentinel-{uuid.uuid4().hex}"
        with pytest.raises(self.client.exceptions.ClientError):
            self.client.head_object(Bucket=self.bucket, Key=key)
        for _ in range(200):
            text = self.path.read_bytes()
            at = text.rfind(key.encode())
            if at >= 0:
                return text.index(b"\n", at) + 1
            time.sleep(0.05)
        raise AssertionError(f"the sentinel request never reached {self.path}")

    def since(self, mark: int) -> Counter[str]:
        """``list`` (pages), ``get``, ``head``, ``put``, ``delete`` requests after ``mark``."""
        end = self._settled()
        lines = self.path.read_bytes()[mark:end].decode("utf-8", "replace").splitlines()
        out: Counter[str] = Counter()
        for line in lines[:-1]:  # the last is the sentinel
            parts = ANSI.sub("", line).split('"')
            if len(parts) < 2 or " " not in parts[1]:
                continue
            method, target = parts[1].split()[:2]
            if not target.startswith((f"/{self.bucket}/", f"/{self.bucket}?")):
                continue
            if method == "GET" and "list-type=" in target:
                out["list"] += 1
            else:
                out[method.lower()] += 1
        return out


def _item_elsewhere() -> dict[str, Any]:
    """One STAC item far from the AOI (a server needs one to serve the collection)."""
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "elsewhere",
        "geometry": {"type": "Point", "coordinates": [-150.0, -60.0]},
        "bbox": [-150.0, -60.0, -150.0, -60.0],
        "properties": {"datetime": "2024-06-01T00:00:00Z", "eo:cloud_cover": 0},
        "assets": {},
        "links": [],
    }


def _config(root: str, stac_url: str) -> Any:
    return load_run_config(
        {
            "name": "resume",
            "year": 2024,
            "aoi": "11.0,46.3,11.2,46.5",
            "stac": {"url": stac_url},
            "store": {"root": root},
            "models": {"prediction": "noop"},
        }
    )


def _tiles(n: int) -> list[TileSpec]:
    """``n`` tiles, half in each of two zones, 8 columns wide."""
    half = n // 2
    return [TileSpec(e, 100 + i % 8, 5000 + i // 8) for e in ZONES for i in range(half)]


def _stopped_run(config: Any, tiles: list[TileSpec]) -> set[str]:
    """A first run over ``tiles`` stopped halfway, its record index written by a checkpoint and
    one more tile finished after it; the ids of the tiles a rerun must redo."""
    first = resume_plan(config, tiles, LAYERS)  # creates the zone stores, plans every tile
    assert len(first.todo) == len(tiles)
    layout = run_layout(config)
    n = tiles[0].core_px
    finished = [t for i, t in enumerate(tiles) if i % (len(tiles) // 2) < len(tiles) // 4]
    for t in finished[:1] + finished[-1:]:  # one done tile with real outputs in each zone
        zone = ZoneStore.open(layout, t.epsg)
        layers = {"prediction": np.full((n, n), 0.5, "float32"), "quality": np.ones((n, n), "u1")}
        cogs = write_tile_cogs(layout, zone, t, layers)
        write_tile(zone, t, layers, {"config_hash": config.output_hash(), "cogs": cogs})
    for t in finished[1:-1]:
        write_status(layout, t, "empty", "no data", {"config_hash": config.output_hash()})
    failed, half_written = finished[2], finished[3]
    write_status(
        layout, failed, "failed", "StacError: timeout", {"config_hash": config.output_hash()}
    )
    delete_record(layout, half_written.id)  # in flight when the driver died
    write_record_index(layout)  # the driver's last checkpoint
    late = tiles[-1]  # finished after it: one GET, at any size
    write_status(layout, late, "empty", "no data", {"config_hash": config.output_hash()})
    done = {t.id for t in finished} - {failed.id, half_written.id} | {late.id}
    return {t.id for t in tiles} - done


def test_rerun_planning_makes_the_same_requests_at_48_and_192_tiles(s3_env, s3_bucket, rustac_api):
    stac = rustac_api([_item_elsewhere()], "sentinel-2-l2a")  # pre-flight: no item, a warning
    log = ServerLog(s3_env, s3_bucket)
    counts = {}
    for n in (48, 192):
        config = _config(f"s3://{s3_bucket}/n{n}", stac)
        tiles = _tiles(n)
        redo = _stopped_run(config, tiles)
        mark = log.mark()
        plan = resume_plan(config, tiles, LAYERS)
        counts[n] = log.since(mark)
        # the plan: what the stopped run finished is skipped, the rest redone, in order
        assert [t.id for t in plan.todo] == [t.id for t in tiles if t.id in redo]
        assert len(plan.done) == n - len(redo) and plan.invalidated == {}
    small, large = counts[48], counts[192]
    # O(prefixes): not one request more for four times the tiles
    assert small == large, counts
    # and what it is: per zone, its metadata (group, 4 arrays: y, x, prediction, quality) and
    # the coordinate values; the index (HEAD + GET) and the one record written after it
    zones = len(ZONES)
    assert large["head"] == 1, large
    assert large["get"] <= zones * (1 + 4 + 2) + 2, large
    # LIST pages: each zone's arrays, the records, each zone's layers, the COG folders (+ a
    # few by the zarr group and config writes), all one page at these sizes
    assert large["list"] <= zones + 1 + zones * len(LAYERS) + len(LAYERS) + 4, large
    # written: the config again, nothing else (no zone metadata, no record)
    assert large["put"] <= 1 and not large["delete"], large
