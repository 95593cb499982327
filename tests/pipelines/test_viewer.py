"""``geoxai view``: the server over a real socket on a two-zone run, its path jail, its messages
for bad runs, and the page driven by headless Chromium (values equal the zone Zarr's)."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from geoxai.errors import InvalidInputError
from tests.fixtures.view_run import SIZE, make_view_run
from tests.pipelines.test_ui import _chrome

HOST = "127.0.0.11"


def _serve(root: Path):
    from pipelines.viewer import make_server

    server = make_server(str(root), HOST, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def viewer(view_run):
    server, thread = _serve(view_run.root)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _get(server, path: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def _png(body: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(body), format="png")


def _zarr_value(root: Path, epsg: int, layer: str, lon: float, lat: float) -> np.ndarray:
    """The zone store's values at the pixel holding (lon, lat), found with pyproj here."""
    from pyproj import Transformer

    from geoxai.io.layout import RunLayout
    from geoxai.io.zonestore import ZoneStore

    zone = ZoneStore.open(RunLayout(str(root)), epsg)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    a, _, c, _, e, f = zone.grid.transform
    row, col = int((y - f) // e), int((x - c) // a)
    return np.asarray(zone.array(layer)[..., row, col]).reshape(-1)


def _n_obs(view_run, px: dict) -> int:
    """Clear observations of the pixel: the whole kept cube preprocessed by the library."""
    from geoxai.config import load_run_config
    from geoxai.io import store
    from geoxai.mapping.settings import preprocess_params
    from geoxai.temporal.smoothing import preprocess

    raw = store.read_cube(str(view_run.root / "cubes" / f"{px['tile_id']}.zarr")).load()
    ds = preprocess(raw, preprocess_params(load_run_config(view_run.config)))
    r = int(np.abs(raw["y"].values - px["y"]).argmin())
    c = int(np.abs(raw["x"].values - px["x"]).argmin())
    return int(ds["n_obs"].values[r, c])


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


# ---- the library: zones meet at the meridian -------------------------------------------------


def test_zones_meet_at_the_meridian_without_gaps_or_overlaps(view_run):
    """A native-zoom tile over 6 E: every pixel inside some tile core has a value; where both
    zones have data, pixels east of 6 E come from zone 32N (+2 offset) and west from 31N."""
    from pyproj import Transformer

    from geoxai.io.tiler import _pixel_lonlat, render_tile
    from geoxai.mapping.view import RunView

    view = RunView.open(str(view_run.root))
    z = view.native_zoom()
    assert z == 13  # 10 m pixels at 50.8 N
    x, y = _tile_of(6.0, 50.8, z)
    values, info = render_tile(view.mosaics["prediction"], x, y, z)
    assert sorted(info["zones"]) == [32631, 32632] and set(info["overview"].values()) == {0}
    lon, lat = _pixel_lonlat(x, y, z, 256)
    covered = np.zeros(lon.shape, dtype=bool)
    for t in view_run.tiles:
        tx, ty = Transformer.from_crs(4326, t.epsg, always_xy=True).transform(lon, lat)
        x0, y0, x1, y1 = t.core_bounds
        inside = (tx > x0 + 10) & (tx < x1 - 10) & (ty > y0 + 10) & (ty < y1 - 10)
        # the 2 x 2 px nodata corner of each tile
        corner = (tx < x0 + 2 * 10 + 10) & (ty > y1 - 2 * 10 - 10)
        covered |= inside & ~corner
    got = ~np.ma.getmaskarray(values)
    assert covered.sum() > 5000
    assert got[covered].all(), "gap inside the run"
    # the home-zone rule, against each zone rendered alone
    m31, m32 = sorted(view.mosaics["prediction"], key=lambda m: m.epsg)
    a31 = render_tile([m31], x, y, z)[0]
    a32 = render_tile([m32], x, y, z)[0]
    v31, v32 = ~np.ma.getmaskarray(a31), ~np.ma.getmaskarray(a32)
    both = v31 & v32
    east, west = lon >= 6.0, lon < 6.0
    assert (both & east).sum() > 100 and (both & west).sum() > 100  # the zones do overlap
    assert (a31[both] != a32[both]).mean() > 0.99  # and differ there (zone 32N is +0.05)
    np.testing.assert_array_equal(values[both & east], a32[both & east])
    np.testing.assert_array_equal(values[both & west], a31[both & west])
    np.testing.assert_array_equal(values[v31 & ~v32], a31[v31 & ~v32])
    np.testing.assert_array_equal(values[v32 & ~v31], a32[v32 & ~v31])
    assert (got == (v31 | v32)).all()


def test_country_zoom_reads_overviews(view_run):
    from geoxai.io.tiler import render_tile
    from geoxai.mapping.view import RunView

    view = RunView.open(str(view_run.root))
    z = view.native_zoom() - 2
    x, y = _tile_of(6.0, 50.8, z)
    _, info = render_tile(view.mosaics["prediction"], x, y, z)
    assert info["overview"] and all(v >= 1 for v in info["overview"].values()), info


def test_far_zoom_reads_the_zone_overview_cog_not_the_tiles(view_run, tmp_path):
    """Zoomed out beyond the tile COGs' overviews, a map tile comes from the zone overview COG
    (one file): with every tile COG but one gone it has the same values as the intact run,
    while a native-zoom tile over the removed COGs fails."""
    from geoxai.errors import DataAccessError
    from geoxai.io.tiler import render_tile
    from geoxai.mapping.view import RunView

    intact = RunView.open(str(view_run.root))
    factors = intact._pyramids[0].factors
    assert factors == [2, 4]  # 60 px cores: the COGs' 2x, then the zone overview's 4x
    z = intact.native_zoom() - 4
    x, y = _tile_of(6.0, 50.8, z)
    try:
        before, info = render_tile(intact.mosaics["prediction"], x, y, z)
    finally:
        intact.close()
    assert set(info["overview"].values()) == {len(factors)}, info
    assert (~np.ma.getmaskarray(before)).sum() > 20
    root = tmp_path / "copy"
    shutil.copytree(view_run.root, root)
    keep = set()  # the first COG each mosaic names: the viewer reads the overview factors there
    for vrt in (root / "mosaics").rglob("*.vrt"):
        first = vrt.read_text().split("<SourceFilename", 1)[1].split(">", 1)[1].split("<")[0]
        keep.add((vrt.parent / first).resolve())
    for cog in (root / "cogs").rglob("*.tif"):
        if cog.resolve() not in keep:
            cog.unlink()
    view = RunView.open(str(root))
    try:
        after, _ = render_tile(view.mosaics["prediction"], x, y, z)
        np.testing.assert_array_equal(np.ma.getmaskarray(after), np.ma.getmaskarray(before))
        np.testing.assert_array_equal(after.filled(-1), before.filled(-1))
        xn, yn = _tile_of(6.0, 50.8, view.native_zoom())
        with pytest.raises(DataAccessError):
            render_tile(view.mosaics["prediction"], xn, yn, view.native_zoom())
    finally:
        view.close()


# ---- the server without a browser --------------------------------------------------------------


def test_api_tiles_pixel_and_errors(viewer, view_run):
    status, _, body = _get(viewer, "/api/run")
    run = json.loads(body)
    assert status == 200 and run["zones"] == [32631, 32632] and run["counts"]["failed"] == 1
    assert [la["layer"] for la in run["layers"]][:4] == [
        "prediction",
        "asos_sensitivity",
        "spacex_attribution",
        "quality",
    ]
    assert run["problems"] == []
    grid = json.loads(_get(viewer, "/api/grid")[2])
    by_status = {f["properties"]["status"] for f in grid["features"]}
    assert by_status == {"done", "failed", "empty"}
    failed = next(f for f in grid["features"] if f["properties"]["status"] == "failed")
    assert "truncated B04" in failed["properties"]["reason"]

    z = run["native_zoom"]
    x, y = _tile_of(6.0, 50.8, z)
    status, ctype, body = _get(viewer, f"/tiles/asos_sensitivity/{z}/{x}/{y}.png")
    assert status == 200 and ctype == "image/png"
    img = _png(body)
    assert img.shape == (256, 256, 4) and (img[..., 3] > 0).mean() > 0.1
    # outside the run: an empty transparent tile, not an error
    status, ctype, body = _get(viewer, f"/tiles/prediction/{z}/{x + 40}/{y}.png")
    assert status == 200 and ctype == "image/png" and (_png(body)[..., 3] == 0).all()
    # unknown layer / band: 404 with a message
    status, _, body = _get(viewer, f"/tiles/treecover/{z}/{x}/{y}.png")
    assert status == 404 and "treecover" in json.loads(body)["error"]
    assert "prediction" in json.loads(body)["error"]
    status, _, body = _get(viewer, f"/tiles/prediction/{z}/{x}/{y}.png?band=3")
    assert status == 404 and "band" in json.loads(body)["error"]

    # a pixel in the zone overlap east of 6 E: zone 32N, values equal its Zarr
    lon, lat = 6.0004, 50.8
    px = json.loads(_get(viewer, f"/api/pixel?lon={lon}&lat={lat}")[2])
    assert px["inside"] and px["epsg"] == 32632 and px["tile_id"] == "32632_E0481_N9386"
    for layer, bands in px["values"].items():
        want = _zarr_value(view_run.root, 32632, layer, lon, lat)
        np.testing.assert_allclose([v for v in bands.values()], want, rtol=1e-6)
    assert px["record"]["config_hash"] == "feedc0de" and px["quality"] in (1, 2)
    out = json.loads(_get(viewer, "/api/pixel?lon=0&lat=0")[2])
    assert out == {"inside": False, "lon": 0.0, "lat": 0.0}
    assert _get(viewer, "/api/pixel?lon=a&lat=1")[0] == 400
    series = json.loads(_get(viewer, f"/api/series?lon={lon}&lat={lat}")[2])
    assert series["kept"] and series["n_obs"] == _n_obs(view_run, px) and series["valid"]
    assert len(series["times"]) == 24 and len(series["series"]["NDVI"]) == 24
    other = json.loads(_get(viewer, "/api/series?lon=5.995&lat=50.8")[2])
    assert other["kept"] is False and "not kept" in other["message"]


def test_loopback_only_and_path_jail(viewer, view_run, tmp_path, monkeypatch):
    from pipelines.viewer import make_server
    from pipelines.viewer import server as srv

    with pytest.raises(InvalidInputError, match="loopback"):
        make_server(str(view_run.root), "0.0.0.0", 0)
    assert viewer.server_address[0] == HOST
    assert _get(viewer, "/api/run", {"Host": "evil.example:80"})[0] == 403
    # no route reads a path outside the run (or Leaflet's dist)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    attempts = [
        "/vendor/leaflet/../../../../../../../../etc/passwd",
        "/vendor/leaflet/%2e%2e/%2e%2e/package.json",
        "/vendor/leaflet/..%2F..%2F..%2Fpackage.json",
        f"/vendor/leaflet/{secret}",
        f"/vendor/leaflet/%2F{str(secret)[1:].replace('/', '%2F')}",
        "/vendor/leaflet/%5C..%5C..%5Cpackage.json",
        "/tiles/..%2F..%2Fconfig.json/13/1/1.png",
        "/tiles/../config.json/13/1/1.png",
        f"/tiles/{str(secret).replace('/', '%2F')}/13/1/1.png",
        "/../config.json",
        f"/{secret}",
        "/api/../config.json",
        "//etc/passwd",
    ]
    for path in attempts:
        status, _, body = _get(viewer, path)
        assert status in (400, 404), (path, status)
        assert b"TOP SECRET" not in body and b"root:" not in body and b"view-demo" not in body
    # a symlink in the served Leaflet folder that leaves it is refused
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "leaflet.js").write_text("// fake leaflet")
    (dist / "evil.js").symlink_to(secret)
    monkeypatch.setattr(srv, "LEAFLET_DIST", dist)
    assert _get(viewer, "/vendor/leaflet/leaflet.js")[0] == 200
    status, _, body = _get(viewer, "/vendor/leaflet/evil.js")
    assert status == 404 and b"TOP SECRET" not in body


def test_symlinked_cog_outside_the_run_is_not_served(view_run, tmp_path):
    """A COG of the run replaced by a symlink to a file outside RUN_ROOT: the mosaic naming it
    is refused with a message, the other zone is still served."""
    from geoxai.mapping.view import RunView

    root = tmp_path / "copy"
    shutil.copytree(view_run.root, root, symlinks=True)
    cog = root / "cogs" / "prediction" / f"{view_run.tiles[0].id}.tif"
    outside = tmp_path / "outside.tif"
    shutil.copy(cog, outside)
    cog.unlink()
    cog.symlink_to(outside)
    view = RunView.open(str(root))
    assert [m.epsg for m in view.mosaics["prediction"]] == [32632]
    assert any("outside the run root" in p and "prediction.vrt" in p for p in view.problems)


def test_messages_for_bad_runs(tmp_path, view_run):
    from geoxai.mapping.view import RunView, write_missing_cogs

    # not a run root: the page's API says so, the server still starts
    (tmp_path / "empty").mkdir()
    server, thread = _serve(tmp_path / "empty")
    try:
        status, _, body = _get(server, "/api/run")
        assert status == 503 and "not a geoxai run root" in json.loads(body)["error"]
        assert "config.json" in json.loads(body)["error"]
        assert _get(server, "/")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

    # no COGs (write_cogs: false): a message with the fix; the fix works
    run = make_view_run(tmp_path / "nocogs", cogs=False)
    view = RunView.open(str(run.root))
    assert not any(view.mosaics.values())
    (msg,) = view.problems
    assert "write_cogs: false" in msg and "geoxai view --write-cogs" in msg
    lon, lat = 6.0004, 50.8
    px = view.pixel(lon, lat)  # values still come from the zone store
    assert px["epsg"] == 32632 and px["sources"]["prediction"] == "zone store"
    want = _zarr_value(run.root, 32632, "prediction", lon, lat)
    np.testing.assert_allclose(list(px["values"]["prediction"].values()), want, rtol=1e-6)
    write_missing_cogs(str(run.root))
    view = RunView.open(str(run.root))
    assert view.problems == [] and len(view.mosaics["prediction"]) == 2

    # a corrupted COG: the tile request says which file and how to fix it
    root = tmp_path / "corrupt"
    shutil.copytree(view_run.root, root)
    cog = root / "cogs" / "asos_sensitivity" / f"{view_run.tiles[0].id}.tif"
    data = cog.read_bytes()
    cog.write_bytes(data[:400] + b"\0" * (len(data) - 400))
    server, thread = _serve(root)
    try:
        z = server.view.native_zoom()
        t = view_run.tiles[0]
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(t.epsg, 4326, always_xy=True).transform(
            (t.core_bounds[0] + t.core_bounds[2]) / 2, (t.core_bounds[1] + t.core_bounds[3]) / 2
        )
        x, y = _tile_of(lon, lat, z)
        status, _, body = _get(server, f"/tiles/asos_sensitivity/{z}/{x}/{y}.png")
        assert status == 500, body[:200]
        err = json.loads(body)["error"]
        assert "asos_sensitivity" in err and "--write-cogs" in err
        assert _get(server, f"/tiles/prediction/{z}/{x}/{y}.png")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# ---- the page in headless Chromium -----------------------------------------------------------


def click_map(d, lon: float, lat: float) -> None:
    """A real click event on the map element at the screen point of (lon, lat)."""
    pt = d.execute_script(
        f"const p = state.map.latLngToContainerPoint([{lat}, {lon}]); return [p.x, p.y]"
    )
    d.execute_script(
        "const m = document.getElementById('map'); const r = m.getBoundingClientRect();"
        "const ev = new MouseEvent('click', {bubbles: true, clientX: r.left + arguments[0],"
        " clientY: r.top + arguments[1]}); m.dispatchEvent(ev);",
        pt[0],
        pt[1],
    )


@pytest.mark.slow
def test_page_shows_layers_and_pixel_values_in_chromium(viewer, view_run, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must not go online
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = _chrome()
    try:
        d.set_window_size(1400, 900)
        wait = WebDriverWait(d, 60)
        d.get(viewer.url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
        assert d.execute_script("return typeof L === 'object' && L.version") == "1.9.4"
        # the prediction layer is on and its tiles load; the grid shows every status
        wait.until(lambda d: d.execute_script(
            "return document.querySelector('.layer[data-layer=prediction]').dataset.loaded"
        ))  # fmt: skip
        legend = d.find_element(By.CSS_SELECTOR, '[data-legend="quality"]').text
        assert "clear" in legend and "sparse" in legend
        assert "failed (1)" in d.find_element(By.ID, "status-legend").text
        # toggle the ASOS layer on, set its opacity
        d.find_element(By.ID, "layer-asos_sensitivity").click()
        wait.until(lambda d: d.execute_script(
            "return document.querySelector('.layer[data-layer=asos_sensitivity]').dataset.loaded"
        ))  # fmt: skip
        d.execute_script(
            "const o = document.getElementById('opacity-asos_sensitivity'); o.value = '0.45';"
            "o.dispatchEvent(new Event('input'))"
        )
        assert d.execute_script("return state.layers.asos_sensitivity.options.opacity") == 0.45
        srcs = d.execute_script(
            "return [...document.querySelectorAll('img.leaflet-tile')].map(i => i.src)"
        )
        assert any("/tiles/asos_sensitivity/" in s for s in srcs)
        # click a pixel of zone 32N east of the meridian
        lon, lat = 6.0004, 50.8003
        click_map(d, lon, lat)
        wait.until(lambda d: d.find_element(By.ID, "pixel").get_attribute("data-ready") == "done")
        box = d.find_element(By.ID, "pixel")
        epsg = int(box.get_attribute("data-epsg"))
        got_lon, got_lat = (
            float(box.get_attribute("data-lon")),
            float(box.get_attribute("data-lat")),
        )
        assert abs(got_lon - lon) < 5e-5 and abs(got_lat - lat) < 5e-5
        assert epsg == 32632
        cells = d.find_elements(By.CSS_SELECTOR, "#pixel-values td[data-layer]")
        shown: dict[str, list[float]] = {}
        for c in cells:
            shown.setdefault(c.get_attribute("data-layer"), []).append(
                float(c.get_attribute("data-value"))
            )
        assert set(shown) >= {"prediction", "asos_sensitivity", "spacex_attribution", "quality"}
        for layer, vals in shown.items():
            want = _zarr_value(view_run.root, epsg, layer, got_lon, got_lat)
            np.testing.assert_allclose(vals, want, rtol=1e-6, err_msg=layer)
        q = int(_zarr_value(view_run.root, epsg, "quality", got_lon, got_lat)[0])
        assert d.find_element(By.ID, "pixel-quality").get_attribute("data-code") == str(q)
        status = d.find_element(By.ID, "series-status")
        px = json.loads(_get(viewer, f"/api/pixel?lon={got_lon}&lat={got_lat}")[2])
        assert status.get_attribute("data-nobs") == str(_n_obs(view_run, px)), status.text
        assert f"clear observations: {_n_obs(view_run, px)}" in status.text
        points = d.find_element(By.CSS_SELECTOR, "#series-plot polyline").get_attribute("points")
        assert len(points.split()) == 24
        d.find_element(By.CSS_SELECTOR, "#record summary").click()
        assert "feedc0de" in d.find_element(By.ID, "record-json").text
        # everything the page loaded came from the viewer itself (nothing from the internet)
        urls = d.execute_script(
            "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
        )
        assert len(urls) > 5 and all(u.startswith(viewer.url) for u in urls), urls
        shot = os.environ.get("GEOXAI_VIEW_SCREENSHOT")
        if shot:  # README figure: GEOXAI_VIEW_SCREENSHOT=examples/viewer.png pytest -k chromium
            d.set_window_size(1400, 1500)
            d.execute_script("document.getElementById('panel').scrollTop = 0")
            d.save_screenshot(shot)
    finally:
        d.quit()
    assert SIZE == 600


# ---- the command ------------------------------------------------------------------------------


def _start_cli(root: Path, *extra: str):
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "view", str(root), "--host", HOST, "--port", "0",
         *extra],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    lines, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "geoxai view on" in line:
            url = line.split("geoxai view on", 1)[1].split()[0]
            return proc, url, "".join(lines)
    proc.kill()
    raise AssertionError("geoxai view did not start: " + "".join(lines))


def _stop(proc) -> None:
    import signal

    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def test_cli_serves_and_says_what_is_wrong(view_run, tmp_path):
    proc, url, out = _start_cli(view_run.root)
    try:
        assert url.startswith(f"http://{HOST}:")
        with urllib.request.urlopen(url + "api/run", timeout=60) as r:
            assert json.loads(r.read())["name"] == "view-demo"
    finally:
        _stop(proc)
    assert proc.returncode == 0
    (tmp_path / "nothing").mkdir()
    proc, url, out = _start_cli(tmp_path / "nothing")
    try:
        assert "not a geoxai run root" in out  # in the terminal, and on the page
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url + "api/run", timeout=60)
        assert "not a geoxai run root" in json.loads(exc.value.read())["error"]
    finally:
        _stop(proc)
    run = make_view_run(tmp_path / "nocogs", cogs=False)
    proc, url, out = _start_cli(run.root)
    _stop(proc)
    assert "write_cogs: false" in out and "--write-cogs" in out


@pytest.mark.s3
def test_a_run_on_s3_is_viewed_like_a_local_one(view_run, s3_bucket, monkeypatch):
    """The run copied to the local S3 server; GDAL's endpoint options are *not* set, so the
    viewer must derive them from AWS_ENDPOINT_URL like the run's s3fs does."""
    import s3fs

    for var in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(var, raising=False)
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    fs.put(str(view_run.root) + "/", f"{s3_bucket}/view-demo/2024/", recursive=True)
    root = f"s3://{s3_bucket}/view-demo/2024"
    from pipelines.viewer import make_server

    server = make_server(root, HOST, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.view is not None, server.error
        run = json.loads(_get(server, "/api/run")[2])
        assert run["zones"] == [32631, 32632] and run["problems"] == [], run["problems"]
        z = run["native_zoom"]
        x, y = _tile_of(6.0, 50.8, z)
        status, ctype, body = _get(server, f"/tiles/prediction/{z}/{x}/{y}.png")
        assert status == 200, body[:300]
        local, _ = _serve(view_run.root)
        try:
            same = _get(local, f"/tiles/prediction/{z}/{x}/{y}.png")[2]
        finally:
            local.shutdown()
            local.server_close()
        np.testing.assert_array_equal(_png(body), _png(same))
        lon, lat = 6.0004, 50.8
        px = json.loads(_get(server, f"/api/pixel?lon={lon}&lat={lat}")[2])
        assert px["sources"]["prediction"] == "COG mosaic"
        want = _zarr_value(view_run.root, 32632, "prediction", lon, lat)
        np.testing.assert_allclose(list(px["values"]["prediction"].values()), want, rtol=1e-6)
        series = json.loads(_get(server, f"/api/series?lon={lon}&lat={lat}")[2])
        assert series["kept"] and series["n_obs"] == _n_obs(view_run, px)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.slow
def test_page_says_what_is_wrong_in_chromium(view_run, tmp_path, monkeypatch):
    """Not a run root, and a corrupted COG: the reason appears on the page."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    (tmp_path / "nothing").mkdir()
    root = tmp_path / "corrupt"
    shutil.copytree(view_run.root, root)
    for t in view_run.tiles:  # every prediction COG damaged: the first view shows it
        cog = root / "cogs" / "prediction" / f"{t.id}.tif"
        data = cog.read_bytes()
        cog.write_bytes(data[:400] + b"\0" * (len(data) - 400))
    d = _chrome()
    try:
        wait = WebDriverWait(d, 60)
        for where, expect in ((tmp_path / "nothing", "not a geoxai run root"), (root, "damaged")):
            server, thread = _serve(where)
            try:
                d.get(server.url)
                wait.until(lambda d, e=expect: e in d.find_element(By.ID, "problems").text)
                assert d.find_element(By.ID, "problems").is_displayed()
            finally:
                server.shutdown()
                server.server_close()
                thread.join(10)
    finally:
        d.quit()
