"""``geoxai view``: a run as a pannable web map in the browser, on the user's machine.

The server (:mod:`pipelines.viewer.server`, stdlib :mod:`http.server` on loopback) serves XYZ
tiles of every output layer from the run's COG mosaics (:mod:`geoxai.io.tiler`, rio-tiler), a
page built on Leaflet (installed from npm by ``infra/setup.sh`` into ``web/node_modules`` and
served by the server itself: the page loads nothing from the internet), and a JSON API for the
run summary, the tile grid and a clicked pixel (:mod:`geoxai.mapping.view`).
"""

from __future__ import annotations

from pipelines.viewer.server import ViewerServer, make_server

__all__ = ["ViewerServer", "make_server"]
