"""HTTP server of ``geoxai ui``: static page + a small JSON API over one working directory.

Every path the page sends is relative to ``workdir`` (the folder the user started the UI in, on
the machine that holds the data) and is refused if it leaves it. Endpoints:

=========================  ==================================================================
``GET  /``                 the page (``static/index.html``, ``app.js``, ``style.css``)
``GET  /api/defaults``     default parameter values, read from ``SegmentConfig``
``GET  /api/ls?dir=``      folders and raster/vector files of one folder
``GET  /api/raster?path=`` CRS, resolution (CRS units), size (px), bands of a raster
``GET  /api/mask?path=``   feature count, CRS, attribute names of a polygon file (or raster)
``POST /api/validate``     form -> ``SegmentConfig`` + library pre-training checks -> errors
``POST /api/train``        validate, save ``<out_dir>/ui_config.yaml``, start training
``POST /api/predict``      predict the bundle of the last training over the chosen rasters
``POST /api/stop``         stop the running job
``GET  /api/job``          state, per-epoch history (``metrics.json``), log tail, results
``GET  /api/file?path=``   a PNG/YAML/JSON/TIF under workdir (metrics.png, config download)
``GET  /api/quicklook.png?path=``  band 1 of a raster as a PNG (<= 512 px, colour bar)
=========================  ==================================================================

POST bodies must be ``application/json`` and the ``Host`` header must name the server, so
another web page in the user's browser cannot drive it (no simple-form CSRF, no DNS rebinding).
"""

from __future__ import annotations

import io
import json
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from geoxai.errors import InvalidInputError
from pipelines.ui.forms import (
    UIPaths,
    defaults,
    list_dir,
    mask_info,
    raster_info,
    validate_form,
)
from pipelines.ui.jobs import JobManager

__all__ = ["UIServer", "make_server", "serve"]

_STATIC = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
_DOWNLOADABLE = {".png", ".yaml", ".yml", ".json", ".tif", ".tiff", ".log", ".txt"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def quicklook_png(path: Path, max_px: int = 512) -> bytes:
    """Band 1 of the raster at ``path`` as a PNG with a colour bar (<= ``max_px`` per side).

    Values in [0, 1] (probabilities) use a fixed 0..1 scale, others the 2-98 percentiles;
    nodata is grey. Reads an overview-sized array (COG overviews make this cheap).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling

    try:
        with rasterio.open(path) as src:
            scale = max(src.width, src.height) / max_px
            shape = (
                max(1, round(src.height / max(scale, 1))),
                max(1, round(src.width / max(scale, 1))),
            )
            a = src.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
            crs = src.crs.to_string() if src.crs else "no CRS"
            desc = src.descriptions[0] or "band 1"
    except rasterio.errors.RasterioIOError as exc:
        raise InvalidInputError(f"Cannot read raster {path}: {exc}") from exc
    values = np.ma.filled(a.astype("float32"), np.nan)
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        vmin, vmax = 0.0, 1.0
    elif finite.size:
        vmin, vmax = (float(v) for v in np.percentile(finite, [2, 98]))
        vmax = vmax if vmax > vmin else vmin + 1e-6
    else:
        vmin, vmax = 0.0, 1.0
    h, w = values.shape
    fig, ax = plt.subplots(figsize=(5.0, 5.0 * h / w + 0.5))
    cmap = matplotlib.colormaps["YlGn"].with_extremes(bad="#d0d4d9")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    ax.set_title(f"{path.name}: {desc} ({crs})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class UIServer(ThreadingHTTPServer):
    """The threading HTTP server plus the state the handlers share (paths, jobs)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], workdir: str | Path) -> None:
        self.paths = UIPaths(Path(workdir))
        self.jobs = JobManager(self.paths)
        self._ql_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def server_close(self) -> None:
        """Stop a running job (its child process) and close the socket."""
        self.jobs.stop()
        super().server_close()


class _Handler(BaseHTTPRequestHandler):
    server: UIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the page polls every second; access logs would drown the console

    # ---- plumbing ------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _host_ok(self) -> bool:
        """On loopback, only requests addressed to loopback names (no DNS rebinding)."""
        bound = str(self.server.server_address[0])
        if bound not in _LOOPBACK and not bound.startswith("127."):
            return True  # the user chose to expose it (geoxai ui warns)
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return host in {bound} | _LOOPBACK

    def _query(self) -> dict[str, str]:
        q = parse_qs(urlsplit(self.path).query)
        return {k: v[-1] for k, v in q.items()}

    def _body(self) -> dict[str, Any]:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise InvalidInputError("Content-Length must be a number of bytes") from None
        if n > 1_000_000:
            raise InvalidInputError("request body over 1 MB")
        try:
            data = json.loads(self.rfile.read(n) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInputError("request body must be a JSON object")
        return data

    # ---- routes ------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        route = urlsplit(self.path).path
        q = self._query()
        try:
            if route in _STATIC:
                name = _STATIC[route]
                body = resources.files("pipelines.ui").joinpath("static", name).read_bytes()
                ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
                return self._send(200, body, f"{ctype}; charset=utf-8")
            if route == "/api/defaults":
                return self._json(defaults())
            if route == "/api/ls":
                return self._json(list_dir(self.server.paths, q.get("dir", "")))
            if route == "/api/raster":
                return self._json(raster_info(self.server.paths, q.get("path", "")))
            if route == "/api/mask":
                return self._json(mask_info(self.server.paths, q.get("path", "")))
            if route == "/api/job":
                return self._json(self.server.jobs.status())
            if route == "/api/file":
                p = self.server.paths.resolve(q.get("path", ""), must_exist=True)
                if p.suffix.lower() not in _DOWNLOADABLE or not p.is_file():
                    return self._error(HTTPStatus.FORBIDDEN, f"{p.name}: not a result file")
                ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
                if p.suffix.lower() in {".yaml", ".yml", ".log", ".txt"}:
                    ctype = "text/plain; charset=utf-8"
                extra = {}
                if q.get("download"):
                    extra["Content-Disposition"] = f'attachment; filename="{p.name}"'
                return self._send(200, p.read_bytes(), ctype, extra)
            if route == "/api/quicklook.png":
                p = self.server.paths.resolve(q.get("path", ""), must_exist=True)
                with self.server._ql_lock:
                    png = quicklook_png(p)
                return self._send(200, png, "image/png")
            return self._error(HTTPStatus.NOT_FOUND, f"no such page {route}")
        except InvalidInputError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        route = urlsplit(self.path).path
        try:
            body = self._body()
            jobs = self.server.jobs
            if route == "/api/validate":
                _, result = validate_form(self.server.paths, body)
                return self._json(result)
            if route == "/api/train":
                config, result = validate_form(self.server.paths, body)
                if config is not None:
                    result["job"] = jobs.start_train(config, resume=bool(body.get("resume", False)))
                return self._json(result)
            if route == "/api/predict":
                return self._json(jobs.start_predict(body))
            if route == "/api/stop":
                jobs.stop()
                return self._json(jobs.status())
            return self._error(HTTPStatus.NOT_FOUND, f"no such action {route}")
        except (InvalidInputError, json.JSONDecodeError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))


def make_server(host: str = "127.0.0.1", port: int = 8765, workdir: str | Path = ".") -> UIServer:
    """Bind the UI server (``port=0``: any free port; see :attr:`UIServer.url`)."""
    wd = Path(workdir).expanduser().resolve()
    if not wd.is_dir():
        raise InvalidInputError(f"UI workdir {wd} is not a folder; pass --workdir DIR.")
    return UIServer((host, port), wd)


def serve(host: str = "127.0.0.1", port: int = 8765, workdir: str | Path = ".") -> None:
    """Serve until interrupted (Ctrl-C stops a running job too)."""
    server = make_server(host, port, workdir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
