"""A small local web page to train a U-Net from rasters + a mask without writing code.

``geoxai ui`` serves it (stdlib :mod:`http.server`, loopback by default). The page picks files
under one working directory, shows each raster's CRS, resolution and bands, explains every
parameter next to its control, validates server side with
:class:`geoxai.train.segment.SegmentConfig`
and the library's own pre-training checks, runs training and prediction in a child process
(``python -m pipelines.ui.worker``) and shows progress, ``metrics.png`` and a quicklook of the
prediction COG. The config it ran is saved as YAML and runs the same from the command line:
``geoxai train segment <out_dir>/ui_config.yaml``.
"""

from __future__ import annotations

from pipelines.ui.server import UIServer, make_server, serve

__all__ = ["UIServer", "make_server", "serve"]
