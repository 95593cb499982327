"""geoxai.io.stac.search against REAL local STAC APIs: rustac serve (in memory) and
stac-fastapi-pgstac (PostgreSQL 15 + PostGIS), both loaded with items made from real STAC JSON
(tests/fixtures/stac.py), plus a tiny flaky HTTP server for retry behaviour."""

from __future__ import annotations

import copy
import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from geoxai.errors import NoDataError, StacError
from geoxai.io.stac import search
from geoxai.io.stac_items import sensor
from pipelines.services import local_stac_api
from tests.fixtures.stac import (
    PC_COLLECTION,
    S1_COLLECTION,
    S2_CLOUDS,
    S2_COLLECTION,
    TEST_BBOX,
    s2_in_bbox,
)

pytestmark = [pytest.mark.stac, pytest.mark.realdata]

FLAKY_HOST = "127.0.0.7"


def _expected(months: range | None = None, max_cloud: float | None = None) -> list[str]:
    return [
        f"ES_S2_{i:02d}"
        for i in range(len(S2_CLOUDS))
        if s2_in_bbox(i)
        and (months is None or i in months)
        and (max_cloud is None or S2_CLOUDS[i] <= max_cloud)
    ]


def test_bbox_datetime_collection_filters(stac_api):
    items = search(
        stac_api, collections=S2_COLLECTION, bbox=TEST_BBOX, datetime="2023-02-01/2023-09-30"
    )
    # items 1..8 fall in Feb..Sep (every 30 days from 2023-01-05); 3 and 7 are elsewhere
    assert [it.id for it in items] == _expected(range(1, 9))
    assert all(it.collection_id == S2_COLLECTION for it in items)
    assert all(it.properties["proj:epsg"] == 32632 for it in items)
    assert all(set(it.assets) >= {"B04", "B8A", "SCL", "red"} for it in items)


def test_paging_with_small_pages(stac_api):
    items = search(stac_api, collections=S2_COLLECTION, bbox=TEST_BBOX, limit=2)
    assert [it.id for it in items] == _expected()  # 9 items over 5 pages, sorted by time
    first = search(stac_api, collections=S2_COLLECTION, bbox=TEST_BBOX, limit=2, max_items=3)
    assert len(first) == 3 and {it.id for it in first} <= set(_expected())


def test_cloud_filter_is_applied_on_the_client(stac_api):
    items = search(stac_api, collections=S2_COLLECTION, bbox=TEST_BBOX, max_cloud=30, limit=4)
    assert [it.id for it in items] == _expected(max_cloud=30)
    assert all(it.properties["eo:cloud_cover"] <= 30 for it in items)


def test_collections_are_kept_apart(stac_api):
    s1 = search(stac_api, collections=S1_COLLECTION)
    assert len(s1) == 3 and {sensor(it) for it in s1} == {"sentinel-1"}
    assert all("hh" in it.assets and "B04" not in it.assets for it in s1)
    pc = search(stac_api, collections=[PC_COLLECTION], limit=4)
    assert len(pc) == 9
    assert [it.id for it in pc] == sorted(it.id for it in pc)  # one date: sorted by id
    assert {it.properties["proj:epsg"] for it in pc} == {32735}
    both = search(stac_api, collections=[S1_COLLECTION, PC_COLLECTION])
    assert len(both) == 12
    assert [it.datetime for it in both] == sorted(it.datetime for it in both)


def test_zero_items_is_no_data_error(stac_api):
    with pytest.raises(NoDataError, match=r"collections=\['es-s2-l2a'\].*bbox=.*datetime="):
        search(stac_api, collections=S2_COLLECTION, bbox=TEST_BBOX, datetime="2021-01/2021-06")
    # February has only ES_S2_01 (80 % cloud); pgstac filters it already on the server
    with pytest.raises(NoDataError, match=r"max_cloud=50"):
        search(
            stac_api, collections=S2_COLLECTION, bbox=TEST_BBOX, datetime="2023-02", max_cloud=50
        )
    with pytest.raises((NoDataError, StacError), match="no-such-collection"):
        search(stac_api, collections="no-such-collection")


def _closed_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]  # closed again when this block ends


def test_unreachable_api_is_stac_error():
    url = f"http://127.0.0.7:{_closed_port('127.0.0.7')}"
    with pytest.raises(StacError, match=rf"{url}.*after 2 retries \(no connection\)"):
        search(url, collections=S2_COLLECTION, retries=2, backoff=0.01)


class _Flaky(BaseHTTPRequestHandler):
    """A minimal STAC API that answers HTTP 500 to the first ``fail`` requests."""

    fail = 0
    seen: list[str] = []
    item: dict = {}

    def _reply(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if len(type(self).seen) <= type(self).fail:
            self._reply(500, {"code": "ServerError", "description": "flaky"})
            return
        root = f"http://{self.headers['Host']}"
        if self.path.startswith("/search"):
            self._reply(200, {"type": "FeatureCollection", "features": [self.item], "links": []})
        else:
            self._reply(
                200,
                {
                    "type": "Catalog",
                    "stac_version": "1.0.0",
                    "id": "flaky",
                    "description": "flaky test API",
                    "conformsTo": [
                        "https://api.stacspec.org/v1.0.0/core",
                        "https://api.stacspec.org/v1.0.0/item-search",
                    ],
                    "links": [
                        {"rel": "self", "href": root + "/"},
                        {"rel": "root", "href": root + "/"},
                        {
                            "rel": "search",
                            "type": "application/geo+json",
                            "href": root + "/search",
                            "method": "POST",
                        },
                    ],
                },
            )

    do_GET = do_POST = _handle

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def flaky_api(stac_test_items):
    def start(fail: int) -> tuple[str, list[str]]:
        handler = type("Flaky", (_Flaky,), {"fail": fail, "seen": [], "item": None})
        handler.item = copy.deepcopy(stac_test_items[0])
        server = ThreadingHTTPServer((FLAKY_HOST, 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return f"http://{FLAKY_HOST}:{server.server_address[1]}", handler.seen

    servers: list[ThreadingHTTPServer] = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_http_500_is_retried_then_reported(flaky_api):
    url, seen = flaky_api(fail=10**6)
    with pytest.raises(StacError, match=rf"{url}.*after 2 retries \(HTTP 500\)"):
        search(url, collections=S2_COLLECTION, retries=2, backoff=0.01)
    assert len(seen) == 3  # the first try and 2 retries


def test_transient_http_500_recovers(flaky_api):
    url, seen = flaky_api(fail=2)
    items = search(url, collections=S2_COLLECTION, retries=3, backoff=0.01)
    assert [it.id for it in items] == ["ES_S2_00"]
    assert seen[:3] == ["GET /", "GET /", "GET /"] and seen[-1] == "POST /search"


def test_local_stac_api_serves_hundreds_of_items_and_stops(stac_test_items):
    items = []
    for i in range(300):
        it = copy.deepcopy(stac_test_items[0])
        it["id"] = f"MANY_{i:03d}"
        it["properties"]["datetime"] = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:{i % 60:02d}Z"
        items.append(it)
    with local_stac_api(items, "many") as url:
        found = search(url, collections="many", bbox=TEST_BBOX, limit=100)
        assert len(found) == 300
        assert [it.datetime for it in found] == sorted(it.datetime for it in found)
    with pytest.raises(OSError):  # the server is gone
        urllib.request.urlopen(url, timeout=2)


def test_local_stac_api_stops_on_error(stac_test_items):
    with pytest.raises(RuntimeError, match="boom"):
        with local_stac_api(stac_test_items[:2], "boom") as url:
            assert len(search(url, collections="boom")) == 2
            raise RuntimeError("boom")
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
