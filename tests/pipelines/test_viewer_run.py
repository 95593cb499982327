"""``geoxai view`` on the demo run: ``geoxai demo --tiles 1`` as a user types it (synthetic
world, local STAC API, demo models trained, the run on local Ray on loopback, report), then the
viewer's API and the page in headless Chromium on its outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.test_ui import _chrome
from tests.pipelines.test_viewer import _get, _png, _tile_of, click_map

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]

HOST = "127.0.0.13"
DEMO_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``geoxai demo --tiles 1 --out DIR`` in a subprocess; returns the run's config.

    One tile keeps it to ~2-3 min (training the demo models is most of it); the run config is
    the ``run.yaml`` the demo writes for reruns by hand (its STAC API is gone by then: the viewer
    reads the run root only). ``GEOXAI_VIEW_DEMO_OUT=DIR`` keeps the demo's folder there: a
    second run of the test reuses its world, models and done tile (the demo's own rerun).
    """
    from geoxai.config import load_run_config

    kept = os.environ.get("GEOXAI_VIEW_DEMO_OUT")
    out = Path(kept) if kept else tmp_path_factory.mktemp("viewer-demo") / "demo-output"
    exe = shutil.which("geoxai", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "pipelines.cli"]
    env = {**os.environ, "GEOXAI_RAY_TMPDIR": f"/tmp/gxv-{os.getpid()}"}
    proc = subprocess.run(
        [*cmd, "demo", "--tiles", "1", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 failed" in proc.stdout, proc.stdout[-3000:]
    return load_run_config(out / "run.yaml")


def _zarr(cfg, epsg: int, layer: str, lon: float, lat: float) -> np.ndarray:
    from pyproj import Transformer

    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore

    zone = ZoneStore.open(RunLayout(cfg.run_root()), epsg)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    a, _, c, _, e, f = zone.grid.transform
    return np.asarray(zone.array(layer)[..., int((y - f) // e), int((x - c) // a)]).reshape(-1)


def test_the_viewer_shows_the_demo_run(demo_run, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from geoxai import mapping
    from geoxai.io import store
    from geoxai.temporal.smoothing import preprocess
    from pipelines.viewer import make_server

    cfg = demo_run
    server = make_server(cfg.run_root(), HOST, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run = json.loads(_get(server, "/api/run")[2])
        assert run["problems"] == [] and run["counts"]["done"] == 1
        names = [la["layer"] for la in run["layers"]]
        assert names[:3] == ["prediction", "asos_sensitivity", "quality"]
        assert all(la["has_tiles"] for la in run["layers"])
        w, s, e, n = run["bounds"]
        lon, lat = w + 0.3 * (e - w), s + 0.6 * (n - s)
        z = run["native_zoom"]
        x, y = _tile_of(lon, lat, z)
        for layer in names:
            status, _, body = _get(server, f"/tiles/{layer}/{z}/{x}/{y}.png")
            assert status == 200 and (_png(body)[..., 3] > 0).mean() > 0.3, layer

        d = _chrome()
        try:
            d.set_window_size(1400, 900)
            wait = WebDriverWait(d, 60)
            d.get(server.url)
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            d.find_element(By.ID, "layer-asos_sensitivity").click()
            wait.until(lambda d: d.execute_script(
                "return document.querySelector('.layer[data-layer=asos_sensitivity]')"
                ".dataset.loaded"
            ))  # fmt: skip
            click_map(d, lon, lat)
            wait.until(
                lambda d: d.find_element(By.ID, "pixel").get_attribute("data-ready") == "done"
            )
            box = d.find_element(By.ID, "pixel")
            epsg = int(box.get_attribute("data-epsg"))
            plon, plat = float(box.get_attribute("data-lon")), float(box.get_attribute("data-lat"))
            shown: dict[str, list[float]] = {}
            for c in d.find_elements(By.CSS_SELECTOR, "#pixel-values td[data-layer]"):
                v = c.get_attribute("data-value")
                shown.setdefault(c.get_attribute("data-layer"), []).append(
                    float(v) if v else float("nan")
                )
            for layer, vals in shown.items():
                want = _zarr(cfg, epsg, layer, plon, plat)
                np.testing.assert_allclose(vals, want, rtol=1e-6, err_msg=layer)
            nobs = d.find_element(By.ID, "series-status").get_attribute("data-nobs")
            rec = d.find_element(By.ID, "record-json").get_attribute("textContent")
            assert cfg.output_hash() in rec
            shot = os.environ.get("GEOXAI_VIEW_DEMO_SCREENSHOT")
            if shot:  # README figure: GEOXAI_VIEW_DEMO_SCREENSHOT=examples/viewer-demo.png
                d.save_screenshot(shot)
        finally:
            d.quit()
        # the clear-observation count shown = the library's over the whole kept cube
        px = json.loads(_get(server, f"/api/pixel?lon={plon}&lat={plat}")[2])
        cube = mapping.run_layout(cfg).cube_url(px["tile_id"])
        raw = store.read_cube(cube).load()
        ds = preprocess(raw, mapping.preprocess_params(cfg))
        r = int(np.abs(raw["y"].values - px["y"]).argmin())
        c = int(np.abs(raw["x"].values - px["x"]).argmin())
        assert nobs == str(int(ds["n_obs"].values[r, c]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
