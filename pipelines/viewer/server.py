"""HTTP server of ``geoxai view``: a Leaflet page, XYZ tiles and a small JSON API over one run.

The server binds a loopback address only (127.0.0.0/8 or ::1) and answers only requests whose
``Host`` names it (no DNS rebinding). No route takes a file path: layers are looked up by name
among the run's layers, pixels by lon/lat, and the browser library by name inside Leaflet's
installed ``dist`` folder (symlinks resolved and refused when they leave it), so nothing
outside RUN_ROOT (and the installed Leaflet) can be read. Endpoints:

=================================  ============================================================
``GET /``                          the page (``static/index.html``, ``app.js``, ``style.css``)
``GET /vendor/leaflet/<file>``     Leaflet from ``pipelines/viewer/web/node_modules`` (npm)
``GET /api/run``                   summary, layers with legends, problems (or ``{"error"}``)
``GET /api/grid``                  GeoJSON of the tile grid with each tile's status and colour
``GET /api/pixel?lon=&lat=``       the pixel's values in every layer, quality, tile record
``GET /api/series?lon=&lat=``      the pixel's smoothed series and clear-observation count
``GET /tiles/<layer>/<z>/<x>/<y>.png?band=``  a 256 px map tile (transparent outside the run)
=================================  ============================================================

A tile that cannot be read (a corrupted or missing COG) is a 500 with the reason as JSON,
printed once on the terminal; an unknown layer is a 404 with the run's layers.
"""

from __future__ import annotations

import ipaddress
import json
import math
import mimetypes
import os
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from geoxai.errors import DataAccessError, GeoXAIError, InvalidInputError
from geoxai.io.tiler import empty_png, encode_png
from geoxai.mapping.view import LayerError, RunView

__all__ = ["ViewerServer", "make_server", "LEAFLET_DIST"]

LEAFLET_DIST = Path(__file__).resolve().parent / "web" / "node_modules" / "leaflet" / "dist"
"""Where ``infra/setup.sh`` installs Leaflet (``npm ci --prefix pipelines/viewer/web``)."""

_STATIC = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
_TILE_RE = re.compile(r"^/tiles/([^/]+)/(\d{1,2})/(\d{1,8})/(\d{1,8})\.png$")
_VENDOR = "/vendor/leaflet/"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ViewerServer(ThreadingHTTPServer):
    """The threading HTTP server plus the opened run (or why it could not be opened)."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], view: RunView | None, error: str | None = None
    ) -> None:
        self.view = view
        self.error = error
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self.empty_tile = empty_png()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def server_close(self) -> None:
        """Close the socket and free the run's in-memory overview VRTs."""
        super().server_close()
        if self.view is not None:
            self.view.close()

    def report(self, message: str) -> None:
        """Print a problem on the terminal once."""
        with self._lock:
            if message in self._reported:
                return
            self._reported.add(message)
        print(f"geoxai view: {message}", file=sys.stderr, flush=True)


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # a map asks for dozens of tiles per pan

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str,
        cache: str = "no-store",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        view = self.server.view
        body = view.dumps(obj) if view is not None else json.dumps(obj).encode()
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):
            host = host[1 : host.find("]")]
        else:
            host = host.rsplit(":", 1)[0]
        return host in {str(self.server.server_address[0]), "localhost"} or is_loopback(host)

    def _lonlat(self, q: dict[str, str]) -> tuple[float, float]:
        try:
            lon, lat = float(q["lon"]), float(q["lat"])
        except (KeyError, ValueError):
            raise InvalidInputError("give lon and lat in degrees, e.g. ?lon=6.0&lat=50.8") from None
        if not (math.isfinite(lon) and math.isfinite(lat) and abs(lat) <= 90):
            raise InvalidInputError(f"lon={q.get('lon')} lat={q.get('lat')} is not a point")
        return ((lon + 180.0) % 360.0) - 180.0, lat

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        parts = urlsplit(self.path)
        route = parts.path
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            if route in _STATIC:
                name = _STATIC[route]
                body = resources.files("pipelines.viewer").joinpath("static", name).read_bytes()
                ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
                return self._send(200, body, f"{ctype}; charset=utf-8")
            if route.startswith(_VENDOR):
                return self._vendor(route[len(_VENDOR) :])
            if route.startswith("/tiles/"):
                return self._tile(route, q)
            if not route.startswith("/api/"):
                return self._error(HTTPStatus.NOT_FOUND, f"no such page {route}")
            view = self.server.view
            if view is None:
                return self._error(HTTPStatus.SERVICE_UNAVAILABLE, self.server.error or "no run")
            if route == "/api/run":
                return self._json(view.summary())
            if route == "/api/grid":
                return self._json(view.tile_grid())
            if route == "/api/pixel":
                return self._json(view.pixel(*self._lonlat(q)))
            if route == "/api/series":
                return self._json(self._series(view, *self._lonlat(q)))
            return self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {route}")
        except InvalidInputError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except GeoXAIError as exc:
            self.server.report(str(exc))
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))

    do_HEAD = do_GET

    def _series(self, view: RunView, lon: float, lat: float) -> dict[str, Any]:
        from geoxai.mapping.series import pixel_series

        px = view.pixel(lon, lat)
        if not px.get("inside"):
            return {"kept": False, "message": "no tile of the run at this point"}
        return pixel_series(view.layout, view.config, px["tile_id"], px["x"], px["y"])

    def _vendor(self, name: str) -> None:
        rel = unquote(name)
        if not LEAFLET_DIST.is_dir():
            return self._error(
                HTTPStatus.NOT_FOUND,
                f"Leaflet is not installed under {LEAFLET_DIST}: run `bash infra/setup.sh`.",
            )
        base = os.path.realpath(LEAFLET_DIST)
        target = os.path.realpath(os.path.join(base, rel))
        if (
            not rel
            or rel.startswith(("/", "\\"))
            or "\\" in rel
            or os.path.commonpath([target, base]) != base
            or not os.path.isfile(target)
        ):
            return self._error(HTTPStatus.NOT_FOUND, f"no such file in Leaflet's dist: {rel!r}")
        ctype = mimetypes.guess_type(target)[0] or "application/octet-stream"
        with open(target, "rb") as f:
            body = f.read()
        return self._send(200, body, ctype, cache="max-age=3600")

    def _tile(self, route: str, q: dict[str, str]) -> None:
        m = _TILE_RE.match(route)
        if not m:
            return self._error(
                HTTPStatus.NOT_FOUND, f"{route}: tiles are /tiles/<layer>/<z>/<x>/<y>.png"
            )
        layer = unquote(m.group(1))
        z, x, y = (int(v) for v in m.group(2, 3, 4))
        view = self.server.view
        if view is None:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, self.server.error or "no run")
        if layer not in view.layers:
            return self._error(
                HTTPStatus.NOT_FOUND,
                f"layer {layer!r} does not exist in this run; its layers: {', '.join(view.layers)}",
            )
        if z > 24 or x >= 2**z or y >= 2**z:
            return self._send(200, self.server.empty_tile, "image/png")
        try:
            band = int(q.get("band", "0"))
            rgba, info = view.tile(layer, x, y, z, band=band)
        except (ValueError, LayerError) as exc:
            return self._error(HTTPStatus.NOT_FOUND, str(exc))
        except DataAccessError as exc:
            self.server.report(str(exc))
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        # which zones and overview levels were read (0 = full resolution): benchmarks, debugging
        read = {"X-Geoxai-Overview": ",".join(f"{e}:{k}" for e, k in info["overview"].items())}
        if not rgba[..., 3].any():
            return self._send(200, self.server.empty_tile, "image/png", extra=read)
        return self._send(200, encode_png(rgba), "image/png", extra=read)


def make_server(
    root: str, host: str = "127.0.0.1", port: int = 8766, storage_options: Any = None
) -> ViewerServer:
    """Open the run and bind the viewer (``port=0``: any free port; see :attr:`ViewerServer.url`).

    A run that cannot be opened still gets a server: its page shows the reason (and the
    caller prints it). Raises :class:`InvalidInputError` for a non-loopback ``host``.
    """
    if not is_loopback(host):
        raise InvalidInputError(
            f"geoxai view binds loopback only (127.0.0.1, ::1), not {host!r}: the viewer reads "
            "the run's files for whoever connects. Use an SSH tunnel to view a remote run."
        )
    try:
        view: RunView | None = RunView.open(root, storage_options)
        error = None
    except GeoXAIError as exc:
        view, error = None, str(exc)
    return ViewerServer((host, port), view, error)
