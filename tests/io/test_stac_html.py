"""A URL that answers HTML with status 200 is diagnosed as "not a STAC API", not as a lost
connection (issue 21)."""

from __future__ import annotations

import http.server
import threading

import pytest

from geoxai.errors import StacError
from geoxai.io.stac import search
from tests.fixtures.net import free_port


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<!doctype html><html><body>Sign in</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def html_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.8", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.8:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_html_200_is_not_a_stac_api(html_server):
    with pytest.raises(StacError) as err:
        search(html_server, collections="sentinel-2-l2a", bbox=(4, 50, 4.1, 50.1), retries=0)
    msg = str(err.value)
    assert "not with JSON" in msg and "HTML" in msg and "no connection" not in msg


def test_a_closed_port_is_still_no_connection():
    url = f"http://127.0.0.8:{free_port('127.0.0.8')}/"
    with pytest.raises(StacError, match="no connection"):
        search(url, collections="s2", bbox=(4, 50, 4.1, 50.1), retries=0, timeout=2)
