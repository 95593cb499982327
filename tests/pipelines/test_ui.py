"""``geoxai ui``: the server's API over a real socket, and the page driven by headless Chromium.

The scene is made here with rasterio: a 3-band 10 m image in UTM 31N and a 30 m "DEM" in
EPSG:4326 (different CRS and resolution), and a GeoJSON of the class polygons (in WGS84).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from geoxai.errors import InvalidInputError
from pipelines.ui import make_server
from pipelines.ui.forms import UIPaths, list_dir

HOST = "127.0.0.9"
X0, Y0, RES, N = 500_000.0, 5_600_000.0, 10.0, 192  # image grid, UTM 31N
CENTRES = [(250, 250, 190), (1650, 260, 170), (260, 1640, 180), (1640, 1650, 200), (960, 900, 220)]


def _truth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 inside the class discs (UTM metres relative to the image's top-left corner)."""
    out = np.zeros(np.broadcast(x, y).shape, dtype=bool)
    for cx, cy, r in CENTRES:
        out |= (x - (X0 + cx)) ** 2 + (y - (Y0 - cy)) ** 2 <= r * r
    return out


def make_scene(root: Path) -> dict[str, Path]:
    """image.tif (3 bands, EPSG:32631, 10 m), dem.tif (1 band, EPSG:4326), mask.geojson."""
    import rasterio
    import shapely
    from pyproj import Transformer
    from rasterio.transform import from_origin
    from shapely.geometry import Point, mapping

    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xs = X0 + (np.arange(N) + 0.5) * RES
    ys = Y0 - (np.arange(N) + 0.5) * RES
    t = _truth(xs[None, :], ys[:, None]).astype("float32")
    img = np.stack([0.3 + 0.4 * t, 0.6 - 0.3 * t, np.full_like(t, 0.2)]) + rng.normal(
        0, 0.05, (3, N, N)
    ).astype("float32")
    prof = dict(driver="GTiff", dtype="float32", width=N, height=N, nodata=-9999.0)
    with rasterio.open(
        data / "image.tif", "w", count=3, crs="EPSG:32631",
        transform=from_origin(X0, Y0, RES, RES), **prof,
    ) as dst:  # fmt: skip
        dst.write(img.astype("float32"))
        dst.descriptions = ("red", "nir", "flat")
    to_wgs = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)
    lon0, lat1 = to_wgs.transform(X0 - 200, Y0 + 200)
    lon1, lat0 = to_wgs.transform(X0 + N * RES + 200, Y0 - N * RES - 200)
    dres = 0.0003  # ~ 21 x 33 m
    w, h = int((lon1 - lon0) / dres) + 1, int((lat1 - lat0) / dres) + 1
    lon = lon0 + (np.arange(w) + 0.5) * dres
    lat = lat1 - (np.arange(h) + 0.5) * dres
    ux, uy = to_utm.transform(*np.meshgrid(lon, lat))
    dem = 100 + 20 * _truth(ux, uy) + rng.normal(0, 1, (h, w))
    with rasterio.open(
        data / "dem.tif", "w", driver="GTiff", dtype="float32", width=w, height=h, count=1,
        crs="EPSG:4326", transform=from_origin(lon0, lat1, dres, dres), nodata=-32768.0,
    ) as dst:  # fmt: skip
        dst.write(dem.astype("float32")[None])
        dst.descriptions = ("elevation",)
    feats = []
    for i, (cx, cy, r) in enumerate(CENTRES):
        disc = shapely.transform(
            Point(X0 + cx, Y0 - cy).buffer(r, 32), to_wgs.transform, interleaved=False
        )
        feats.append(
            {"type": "Feature", "properties": {"id": i, "cls": "tree"}, "geometry": mapping(disc)}
        )
    (data / "mask.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    (data / "notes.txt").write_text("not listed by the file picker")
    return {"image": data / "image.tif", "dem": data / "dem.tif", "mask": data / "mask.geojson"}


@pytest.fixture
def ui_server(tmp_path):
    """The UI server on 127.0.0.9 (free port) over tmp_path with the scene; stopped after."""
    make_scene(tmp_path)
    server = make_server(HOST, 0, tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _call(server, path: str, body: dict | None = None, headers: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(server.url.rstrip("/") + path, data=data, headers=hdrs)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---- without a browser ----------------------------------------------------------------------


def test_paths_stay_inside_workdir(tmp_path):
    make_scene(tmp_path)
    paths = UIPaths(tmp_path)
    listing = list_dir(paths, "data")
    assert {(e["name"], e["kind"]) for e in listing["entries"]} == {
        ("dem.tif", "raster"),
        ("image.tif", "raster"),
        ("mask.geojson", "vector"),
    }
    assert listing["parent"] == "."
    for bad in ("..", "../..", "/etc", "data/../../x"):
        with pytest.raises(InvalidInputError, match="outside the UI's working folder"):
            paths.resolve(bad)
    with pytest.raises(InvalidInputError, match="does not exist"):
        paths.resolve("data/none.tif", must_exist=True)


def _form(**kw):
    form = {
        "rasters": [{"path": "data/image.tif", "bands": [1, 2]}, {"path": "data/dem.tif"}],
        "mask": {"path": "data/mask.geojson"},
        "tile_size": "32",
        "loss": "focal",
        "val_fraction": "0.25",
        "training.epochs": "1",
        "training.lr": "0.01",
        "out_dir": "runs/api",
    }
    form.update(kw)
    return form


def test_api_metadata_validation_and_guards(ui_server):
    st, info = _call(ui_server, "/api/raster?path=data/dem.tif")
    assert st == 200 and info["crs"] == "EPSG:4326" and info["count"] == 1
    assert info["bands"][0]["description"] == "elevation" and info["units"] == "degree"
    st, info = _call(ui_server, "/api/raster?path=data/image.tif")
    assert info["crs"] == "EPSG:32631" and info["res"] == [10.0, 10.0] and info["units"] == "metre"
    assert [b["description"] for b in info["bands"]] == ["red", "nir", "flat"]
    st, info = _call(ui_server, "/api/mask?path=data/mask.geojson")
    assert st == 200 and info["features"] == len(CENTRES) and "cls" in info["fields"]
    st, d = _call(ui_server, "/api/defaults")
    assert st == 200 and "focal" in d["loss_choices"] and d["training.epochs"] >= 1

    # each bad value comes back keyed by the control it concerns, nothing is started
    for key, value in (
        ("val_fraction", "1.5"),
        ("training.epochs", "0"),
        ("training.lr", "fast"),
        ("loss", "focall"),
        ("tile_size", "4096"),
    ):
        st, res = _call(ui_server, "/api/train", _form(**{key: value}))
        assert st == 200 and not res["ok"] and "job" not in res, (key, res)
        assert key in res["errors"], (key, res["errors"])
    st, res = _call(ui_server, "/api/validate", _form(rasters=[{"path": "../x.tif"}]))
    assert "outside the UI's working folder" in res["errors"]["rasters.0"]
    st, res = _call(ui_server, "/api/validate", _form())
    assert res["ok"], res["errors"]
    assert "bands:\n  - 1\n  - 2" in res["yaml"] and res["command"].startswith(
        "geoxai train segment "
    )
    assert _call(ui_server, "/api/job")[1]["state"] == "idle"

    # guards: no file reads outside the workdir, JSON-only POSTs, loopback Host names only
    assert _call(ui_server, "/api/file?path=../../etc/passwd")[0] == 400
    with urllib.request.urlopen(ui_server.url + "api/file?path=data/notes.txt", timeout=10) as r:
        assert r.read() == b"not listed by the file picker"
    req = urllib.request.Request(ui_server.url + "api/validate", data=b"a=1")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 415
    assert _call(ui_server, "/api/job", headers={"Host": "evil.example:80"})[0] == 403


# ---- the page in headless Chromium --------------------------------------------------------


def _chrome():
    """A headless Chromium WebDriver; skip (fail under CI) when Chromium/driver are absent."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium_ok = False
    else:
        selenium_ok = True
    missing = [
        name
        for name, ok in (("chromium", browser), ("chromedriver", driver), ("selenium", selenium_ok))
        if not ok
    ]
    if missing:
        msg = (
            f"{', '.join(missing)} not installed: run `bash infra/setup.sh --test` (apt chromium "
            "chromium-driver, pip selenium from the dev extra) to run the UI browser test"
        )
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must run it)")
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,2200", "--no-proxy-server"):  # fmt: skip
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.mark.slow
def test_page_trains_and_predicts_in_chromium(ui_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not go online
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = _chrome()
    try:
        wait = WebDriverWait(d, 30)
        d.get(ui_server.url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))

        def entry(path: str):
            return d.find_element(By.CSS_SELECTOR, f'#entries li[data-path="{path}"]')

        def set_value(id_: str, value: str):
            el = d.find_element(By.ID, id_)
            el.clear()
            el.send_keys(value)

        def error_for(key: str) -> str:
            return d.find_element(By.CSS_SELECTOR, f'[data-error-for="{key}"]').text

        # pick the files in the file picker
        entry("data").find_element(By.TAG_NAME, "a").click()
        wait.until(lambda d: entry("data/image.tif"))
        entry("data/image.tif").find_element(By.CLASS_NAME, "add-raster").click()
        entry("data/dem.tif").find_element(By.CLASS_NAME, "add-raster").click()
        entry("data/mask.geojson").find_element(By.CLASS_NAME, "use-mask").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rasters .raster")) == 2)
        cards = d.find_elements(By.CSS_SELECTOR, "#rasters .raster")
        metas = {c.find_element(By.CLASS_NAME, "meta").text for c in cards}
        assert any("EPSG:32631" in m and "10 x 10 m" in m and "3 band" in m for m in metas), metas
        assert any("EPSG:4326" in m and "1 band" in m for m in metas), metas
        wait.until(lambda d: "5 " in d.find_element(By.ID, "mask-info").text)
        # the model sees red and nir of the image (not the flat band) and the DEM
        img_card = next(c for c in cards if "image.tif" in c.text)
        img_card.find_element(By.CSS_SELECTOR, 'input[data-band="3"]').click()

        set_value("tile_size", "32")
        Select(d.find_element(By.ID, "loss")).select_by_value("focal")
        assert "rare" in d.find_element(By.ID, "loss-help").text
        set_value("training.epochs", "2")
        set_value("training.lr", "0.01")
        set_value("out_dir", "runs/page")

        # an invalid value: the error appears next to its control and nothing starts
        set_value("val_fraction", "1.5")
        d.find_element(By.ID, "train").click()
        wait.until(lambda d: error_for("val_fraction"))
        assert "invalid" in d.find_element(By.ID, "val_fraction").get_attribute("class")
        assert error_for("tile_size") == "" and error_for("training.epochs") == ""
        assert d.find_element(By.ID, "job-state").text == "idle"
        # a tile larger than the area: the library's pre-training check, next to tile size
        set_value("val_fraction", "0.25")
        set_value("tile_size", "4096")
        d.find_element(By.ID, "check").click()
        wait.until(lambda d: error_for("tile_size"))
        assert error_for("val_fraction") == ""

        # train 2 epochs
        set_value("tile_size", "32")
        d.find_element(By.ID, "train").click()
        WebDriverWait(d, 400, poll_frequency=1).until(
            lambda d: d.find_element(By.ID, "job-state").text in ("done", "failed")
        )
        assert d.find_element(By.ID, "job-state").text == "done", (
            d.find_element(By.ID, "job-error").text + d.find_element(By.ID, "log-tail").text
        )
        rows = d.find_elements(By.CSS_SELECTOR, "#history tbody tr")
        assert len(rows) == 2
        assert d.find_elements(By.CSS_SELECTOR, '#history td[data-key="val_iou"]')
        wait.until(lambda d: d.execute_script(
            "const i = document.getElementById('metrics-img'); return i.complete && i.naturalWidth"
        ))  # fmt: skip
        assert "geoxai train segment" in d.find_element(By.ID, "command").get_attribute(
            "textContent"
        )

        # predict to a COG over the same rasters
        assert d.find_element(By.ID, "predict-bundle").get_attribute("value")
        set_value("predict-out", "runs/page/predict/forest.tif")
        d.find_element(By.ID, "predict").click()
        WebDriverWait(d, 300, poll_frequency=1).until(
            lambda d: (
                d.execute_script(
                    "const i = document.getElementById('quicklook-img');"
                    "return !document.getElementById('quicklook-fig').hidden && i.complete"
                    " && i.naturalWidth > 0"
                )
                or d.find_element(By.ID, "predict-error").text
            )
        )
        assert d.find_element(By.ID, "predict-error").text == ""
        assert "forest.tif" in d.find_element(By.ID, "predict-link").text
        shot = os.environ.get("GEOXAI_UI_SCREENSHOT")
        if shot:  # README figure: GEOXAI_UI_SCREENSHOT=/tmp/ui.png pytest -k chromium
            d.execute_script("window.scrollTo(0, 0)")
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(1280, height + 120)
            d.save_screenshot(shot)
    finally:
        d.quit()

    import rasterio

    from geoxai.io.cog import validate_cog
    from geoxai.train.workflows import load_workflow_config

    cog = tmp_path / "runs/page/predict/forest.tif"
    validate_cog(cog)
    with rasterio.open(cog) as src:
        p = src.read(1, masked=True)
    assert p.count() > 0 and 0 <= p.min() and p.max() <= 1
    # the saved config is what the CLI runs, with the bands the user ticked
    cfg = load_workflow_config("segment", tmp_path / "runs/page/ui_config.yaml")
    assert cfg.rasters[0].bands == [1, 2] and cfg.rasters[1].bands is None
    assert cfg.training.epochs == 2 and cfg.loss == "focal" and cfg.tile_size == 32
