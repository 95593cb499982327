"""Planetary Computer signing at read time, against local stand-ins of the token endpoint and of
blob storage (tests/fixtures/pc.py), with Planetary Computer's real STAC items (their hrefs
rewritten to the local blob server, small synthetic band files written where they point)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geoxai.errors import DataAccessError, GeoXAIError
from geoxai.geo.grid import TileSpec
from geoxai.io.signing import (
    SIGNER,
    SigningAuthError,
    SigningError,
    blob_container,
    redact,
    resolve_signing,
)
from tests.fixtures.pc import reset_sdk

PC_ITEMS = "stac_items/planetary_computer/site1-20200606-tall-strip-africa.geojson"
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL"]
TILE = TileSpec(32735, 275, 4575, 16, tile_size_m=2000)  # inside granule 35MNM only


def rewrite(doc: dict, blob_url: str) -> dict:
    """A STAC item with every blob href moved to the local blob server (emulator path style:
    ``https://<account>.blob.core.windows.net/<c>/<b>`` -> ``<blob_url>/<account>/<c>/<b>``)."""
    out = json.loads(json.dumps(doc))
    for a in out["assets"].values():
        href = a["href"]
        if ".blob.core.windows.net/" in href:
            host, rest = href.split("://", 1)[1].split("/", 1)
            a["href"] = f"{blob_url}/{host.split('.')[0]}/{rest}"
    return out


def _write_band(path: Path, asset: dict, tile: TileSpec, value: int) -> None:
    """A small GeoTIFF on the asset's own grid (EPSG, pixel size, origin), covering the tile
    with 200 m to spare: DN = value + (row + col) % 50 (SCL: class 4)."""
    import rasterio
    from rasterio.transform import Affine

    res, _, x0, _, _, y0 = asset["proj:transform"][:6]
    minx, miny, maxx, maxy = tile.bounds
    c0 = int((minx - 200 - x0) // res)
    r0 = int((y0 - (maxy + 200)) // res)
    w = int(np.ceil((maxx + 200 - (x0 + c0 * res)) / res))
    h = int(np.ceil(((y0 - r0 * res) - (miny - 200)) / res))
    rr, cc = np.mgrid[0:h, 0:w]
    data = (value + (rr + cc) % 50).astype(np.uint16) if value else np.full((h, w), 4, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype,
        crs=f"EPSG:{tile.epsg}",
        transform=Affine(res, 0, x0 + c0 * res, 0, -res, y0 - r0 * res),
        nodata=0,
        tiled=True,
        blockxsize=128,
        blockysize=128,
        compress="deflate",
    ) as dst:
        dst.write(data, 1)


@pytest.fixture
def pc_items(realdata, pc_standin):
    """The real PC items a bbox search for ``TILE`` returns (of the strip of 9), rewritten;
    band files for the granule that holds the tile."""
    from shapely.geometry import box

    feats = json.loads((realdata / PC_ITEMS).read_text())["features"]
    area = TILE.footprint(halo=True)
    items = [rewrite(f, pc_standin.blob_url) for f in feats if box(*f["bbox"]).intersects(area)]
    assert [i["id"] for i in items] == ["S2B_MSIL2A_20200606T080609_R078_T35MNM_20200826T094900"]
    item = items[0]
    for k, band in enumerate(BANDS):
        href = item["assets"][band]["href"]
        local = pc_standin.root / href[len(pc_standin.blob_url) + 1 :]
        _write_band(local, item["assets"][band], TILE, 0 if band == "SCL" else 1000 + 100 * k)
    return items


def _copied(items, standin, tag: str) -> list[dict]:
    """The items with every band file copied to a new blob name (``<name>.<tag>.tif``)."""
    import shutil

    out = json.loads(json.dumps(items))
    for a in out[0]["assets"].values():
        old = standin.root / a["href"][len(standin.blob_url) + 1 :]
        if a["href"].startswith(standin.blob_url) and old.is_file():
            a["href"] = a["href"][: -len(".tif")] + f".{tag}.tif"
            shutil.copy(old, standin.root / a["href"][len(standin.blob_url) + 1 :])
    return out


def _cube(items, signing="planetary-computer"):
    from geoxai.io.cube import build_cube

    return build_cube(items, TILE, signing=signing).load()


pytestmark = pytest.mark.realdata


def test_reads_are_signed_in_the_reader_with_one_token_per_container(pc_items, pc_standin):
    before = SIGNER.requests
    cube = _cube(pc_items)
    # the real item's metadata, the local pixels: B04 DN x 1e-4 (baseline 02.12, no offset)
    import rasterio
    from rasterio.windows import from_bounds

    href = pc_items[0]["assets"]["B04"]["href"]
    with rasterio.open(pc_standin.root / href[len(pc_standin.blob_url) + 1 :]) as src:
        dn = src.read(1, window=from_bounds(*TILE.bounds, src.transform))
    b04 = cube.sel(band="B04").values[0]
    assert b04.shape == dn.shape == TILE.shape
    np.testing.assert_allclose(b04, dn * 1e-4, rtol=0, atol=1e-6)
    assert set(np.unique(cube.sel(band="SCL").values)) == {4.0}
    served = pc_standin.blob_stats["served"]
    assert served >= 11  # every band file read through a signed URL
    assert sum(pc_standin.tokens.requests.values()) == 1 == SIGNER.requests - before
    assert SIGNER.expiry("sentinel2l2a01", "sentinel2-l2") is not None
    # hrefs stay unsigned in everything the cube carries
    assert "sig=" not in json.dumps(cube.attrs) and "?" not in str(cube.coords)
    # unsigned reads are refused by the blob stand-in
    with pytest.raises(DataAccessError, match="403"):
        _cube(pc_items, signing="none")


def test_expired_or_revoked_tokens_are_refreshed(pc_items, pc_standin):
    pc_standin.tokens.ttl_s = 2.0  # short lifetime: refreshed before expiry
    _cube(pc_items)
    import time

    time.sleep(2.2)  # the cached token has expired: the next open fetches a new one
    _cube(pc_items)
    assert sum(pc_standin.tokens.requests.values()) == 2
    # revoked while still cached: the read is refused (403), retried once with a fresh token
    pc_standin.tokens.ttl_s = 600.0
    _cube(pc_items)
    refused = pc_standin.blob_stats["refused"]
    n = sum(pc_standin.tokens.requests.values())
    pc_standin.tokens.revoke_all()
    cube = _cube(_copied(pc_items, pc_standin, "v2"))  # new files: nothing in GDAL's URL cache
    assert np.isfinite(cube.sel(band="B04").values).all()
    assert pc_standin.blob_stats["refused"] > refused
    assert sum(pc_standin.tokens.requests.values()) == n + 1  # one fresh token, not one per file


def test_token_endpoint_down_is_retried_then_fails_naming_it(pc_items, pc_standin, monkeypatch):
    from tests.fixtures.net import free_port

    dead = f"http://127.0.0.8:{free_port('127.0.0.8')}"
    reset_sdk(dead)
    monkeypatch.setattr(SIGNER, "backoff_s", 0.01)
    before = SIGNER.requests
    with pytest.raises(SigningError) as e:
        _cube(pc_items)
    msg = str(e.value)
    assert dead in msg and "3 tries" in msg and "PC_SDK_SAS_URL" in msg
    assert isinstance(e.value, DataAccessError | OSError)
    # bounded: each reader that tried made at most `retries` requests, and the whole cube far
    # fewer than one per try of every asset read
    assert 3 <= SIGNER.requests - before <= 3 * len(BANDS)


def test_refused_subscription_key_is_a_typed_error_without_the_key(pc_items, pc_standin):
    pc_standin.tokens.require_key = "the-right-key"
    reset_sdk(pc_standin.sas_url, key="wrong-key-0123456789")
    with pytest.raises(SigningAuthError) as e:
        _cube(pc_items)
    msg = str(e.value)
    assert "PC_SDK_SUBSCRIPTION_KEY" in msg and "401" in msg
    assert "wrong-key-0123456789" not in msg and "the-right-key" not in msg
    reset_sdk(pc_standin.sas_url, key="the-right-key")
    assert np.isfinite(_cube(pc_items).sel(band="B04").values).all()


def test_errors_of_signed_reads_hold_no_token(pc_items, pc_standin):
    item = next(i for i in pc_items if "T35MNM" in i["id"])
    href = item["assets"]["B08"]["href"]
    (pc_standin.root / href[len(pc_standin.blob_url) + 1 :]).unlink()  # 404 once signed
    with pytest.raises(DataAccessError) as e:
        _cube(pc_items)
    msg = str(e.value)
    assert "B08" in msg
    assert not any(sig in msg for sig in pc_standin.tokens.signatures())
    assert "sig=" not in msg or "sig=<redacted>" in msg


def test_selection_parsing_and_redaction():
    assert resolve_signing("auto", "https://planetarycomputer.microsoft.com/api/stac/v1") == (
        "planetary-computer"
    )
    assert resolve_signing("auto", "https://earth-search.aws.element84.com/v1") == "none"
    assert resolve_signing("none", "https://planetarycomputer.microsoft.com/api/stac/v1") == "none"
    with pytest.raises(GeoXAIError, match="stac.signing"):
        resolve_signing("pc", "x")
    assert blob_container("https://acc.blob.core.windows.net/cont/a/b.tif") == ("acc", "cont")
    assert blob_container("http://127.0.0.8:1/acc/cont/a.tif") == ("acc", "cont")
    with pytest.raises(GeoXAIError, match="signing: none"):
        blob_container("s3://bucket/key.tif")
    text = "Error opening 'https://a.blob.core.windows.net/c/x.tif?st=1&se=2&sig=SECRET': 403"
    assert "SECRET" not in redact(text) and "x.tif?<redacted>" in redact(text)
    assert "SECRET" not in redact("token sv=1&sig=SECRET")


def test_run_config_selects_signing_outside_the_output_hash():
    from geoxai.config import load_run_config

    doc = {
        "name": "pc",
        "aoi": "27.4,-7.8,27.5,-7.7",
        "year": 2020,
        "stac": {"url": "https://planetarycomputer.microsoft.com/api/stac/v1"},
        "store": {"root": "/tmp/x"},
        "models": {"prediction": "/tmp/m"},
    }
    auto = load_run_config(doc)
    assert auto.stac.signing == "auto"
    forced = load_run_config({**doc, "stac": {**doc["stac"], "signing": "none"}})
    assert auto.output_hash() == forced.output_hash()
    with pytest.raises(GeoXAIError):
        load_run_config({**doc, "stac": {**doc["stac"], "signing": "azure"}})


def test_sentinel1_and_dem_of_a_run_are_signed_when_read(pc_standin, tmp_path):
    """The run's ancillary layers (``sentinel1``/``dem`` sections) sign their hrefs at read time
    by ``stac.signing``, like the optical cube: unsigned they are refused (403)."""
    import pandas as pd
    from affine import Affine

    from geoxai.config import RunConfig
    from geoxai.mapping.ancillary import ancillary_layers
    from geoxai.synthetic.files import write_cog

    tile = TileSpec(32631, 960, 9380, halo_px=4, tile_size_m=600)
    lon0, lat0, lon1, lat1 = tile.footprint(halo=True).buffer(0.01).bounds
    x0, _, _, y1 = tile.with_halo(40).bounds
    n = tile.with_halo(40).shape[0]
    grid = Affine(10.0, 0.0, x0, 0.0, -10.0, y1)
    ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]

    def blob(account: str, container: str, name: str, values: np.ndarray) -> str:
        path = pc_standin.root / account / container / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cog(path, values, grid, tile.crs, None)
        return f"{pc_standin.blob_url}/{account}/{container}/{name}"

    def item(iid: str, collection: str, when: str, assets: dict, props: dict) -> dict:
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": iid,
            "collection": collection,
            "bbox": [lon0, lat0, lon1, lat1],
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"datetime": when, "proj:epsg": tile.epsg, **props},
            "links": [],
            "assets": {
                k: {
                    "href": href,
                    "type": "image/tiff; application=geotiff",
                    "roles": ["data"],
                    "proj:shape": [n, n],
                    "proj:transform": list(grid)[:6],
                    "raster:bands": [{"data_type": "float32", "nodata": -32768}],
                }
                for k, href in assets.items()
            },
        }

    elev = np.full((n, n), 250.0, np.float32)
    dem = item(
        "dem-1",
        "cop-dem-glo-30",
        "2021-04-22T00:00:00Z",
        {"data": blob("elevationeuwest", "copernicus-dem", "dem.tif", elev)},
        {},
    )
    s1 = [
        item(
            f"S1A_SIGNED_{i}",
            "sentinel-1-rtc",
            (pd.Timestamp("2023-05-01T06:00:00Z") + pd.Timedelta(days=12 * i)).isoformat(),
            {
                p: blob(
                    "sentinel1euwestrtc",
                    "sentinel1-grd-rtc",
                    f"{i}_{p}.tif",
                    np.full((n, n), v, np.float32),
                )
                for p, v in (("vv", 0.05), ("vh", 0.01))
            },
            {
                "sar:polarizations": ["VV", "VH"],
                "sat:orbit_state": "ascending",
                "constellation": "sentinel-1",
            },
        )
        for i in range(3)
    ]
    for name, docs in (("dem.ndjson", [dem]), ("s1.ndjson", s1)):
        (tmp_path / name).write_text("".join(json.dumps(d) + "\n" for d in docs))

    def config(signing: str) -> RunConfig:
        return RunConfig.model_validate(
            {
                "name": "signed-ancillary",
                "year": 2023,
                "aoi": "bbox:3.0,50.0,3.01,50.01",
                "stac": {"url": str(tmp_path / "dem.ndjson"), "signing": signing},
                "sentinel1": {"url": str(tmp_path / "s1.ndjson"), "min_acquisitions": 1},
                "dem": {"url": str(tmp_path / "dem.ndjson")},
                "store": {"root": str(tmp_path / "store")},
                "models": {"prediction": "bundle"},
            }
        )

    before = sum(pc_standin.tokens.requests.values())
    s1_layer, terr = ancillary_layers(tile, config("planetary-computer"))
    np.testing.assert_allclose(terr["DEM"].values, 250.0)
    vv = s1_layer["backscatter"].sel(band="VV").values  # (step, y, x) dB
    assert s1_layer["s1_valid"].values.all() and np.isfinite(vv).any()
    np.testing.assert_allclose(vv[np.isfinite(vv)], 10 * np.log10(0.05), atol=1e-4)
    # one token per container read (DEM, S1), not one per asset
    assert sum(pc_standin.tokens.requests.values()) - before == 2
    assert set(pc_standin.tokens.requests) >= {
        ("elevationeuwest", "copernicus-dem"),
        ("sentinel1euwestrtc", "sentinel1-grd-rtc"),
    }
    with pytest.raises(DataAccessError, match="403"):
        ancillary_layers(tile, config("none"))
