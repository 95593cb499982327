"""``geoxai view`` on a real run: the Ray pipeline over the synthetic world (local STAC, local
Ray on loopback), then the viewer's API and the page in headless Chromium on its outputs."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tests.pipelines.test_ui import _chrome
from tests.pipelines.test_viewer import _get, _png, _tile_of, click_map

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stac]

HOST = "127.0.0.13"


@pytest.fixture(scope="module")
def real_run(run_world, tmp_path_factory):
    """The 2x2-tile run of the test world (prediction, ASOS, SpacEX), on a local Ray."""
    import os

    import ray

    os.environ.setdefault("GEOXAI_RAY_TMPDIR", f"/tmp/gxv-{os.getpid()}")
    from pipelines.run import init_ray, run

    init_ray(None, num_cpus=2)
    try:
        cfg = run_world.config(tmp_path_factory.mktemp("viewer-run") / "store")
        summary = run(cfg, progress=False)
    finally:
        ray.shutdown()
    assert summary.count("done") == 4, summary.outcomes
    return cfg


def _zarr(cfg, epsg: int, layer: str, lon: float, lat: float) -> np.ndarray:
    from pyproj import Transformer

    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore

    zone = ZoneStore.open(RunLayout(cfg.run_root()), epsg)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    a, _, c, _, e, f = zone.grid.transform
    return np.asarray(zone.array(layer)[..., int((y - f) // e), int((x - c) // a)]).reshape(-1)


def test_the_viewer_shows_a_real_run(real_run, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from geoxai import mapping
    from geoxai.io import store
    from geoxai.temporal.smoothing import preprocess
    from pipelines.viewer import make_server

    cfg = real_run
    server = make_server(cfg.run_root(), HOST, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run = json.loads(_get(server, "/api/run")[2])
        assert run["problems"] == [] and run["counts"]["done"] == 4
        names = [la["layer"] for la in run["layers"]]
        assert names[:4] == ["prediction", "asos_sensitivity", "spacex_attribution", "quality"]
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
