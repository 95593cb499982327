"""The UI's API answers malformed requests and odd folders with a 400/ an entry list, never a
crash (issue 21); ``tiles: []`` is a config error, not "every tile"."""

from __future__ import annotations

import os
import urllib.request

import pytest

from tests.pipelines.test_ui import _call, _form, make_scene, ui_server  # noqa: F401


def test_ls_skips_links_out_of_the_workdir_and_broken_links(ui_server, tmp_path):  # noqa: F811
    from pipelines.ui.forms import UIPaths, list_dir

    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"x")
    os.symlink(outside, tmp_path / "data" / "out_dir_link")
    os.symlink(outside / "secret.tif", tmp_path / "data" / "out_file.tif")
    os.symlink(tmp_path / "data" / "gone.tif", tmp_path / "data" / "broken.tif")
    os.symlink(tmp_path / "data" / "image.tif", tmp_path / "data" / "inside.tif")
    st, listing = _call(ui_server, "/api/ls?dir=data")
    assert st == 200, listing
    names = {e["name"] for e in listing["entries"]}
    assert {"image.tif", "dem.tif", "mask.geojson", "inside.tif"} <= names
    assert not names & {"out_dir_link", "out_file.tif", "broken.tif"}
    assert list_dir(UIPaths(tmp_path), "data")["entries"] == listing["entries"]
    assert _call(ui_server, "/api/ls?dir=data/out_dir_link")[0] == 400  # the jail holds


@pytest.mark.parametrize(
    "body",
    [
        {"rasters": "data/image.tif"},
        {"rasters": [1, None]},
        {"rasters": [{"path": "data/image.tif", "bands": "1,2"}]},
        {"rasters": [{"path": "data/image.tif", "bands": ["x"]}]},
        {"rasters": [{"path": ["data/image.tif"]}]},
        {"mask": "data/mask.geojson"},
        {"mask": {"path": 5}},
        {"out_dir": ["runs"]},
        {"training.epochs": {"a": 1}},
    ],
)
def test_validate_answers_a_malformed_body_with_errors(ui_server, body):  # noqa: F811
    st, res = _call(ui_server, "/api/validate", _form(**body))
    assert st == 200 and not res["ok"] and res["errors"], res


def test_validate_answers_bytes_that_are_not_json_with_400(ui_server):  # noqa: F811
    for data in (b"{not json", b"\xff\xfe\x00", b"[1, 2]"):
        req = urllib.request.Request(
            ui_server.url + "api/validate", data=data, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400


def test_empty_tile_list_is_an_error_not_every_tile():
    from geoxai.config import load_run_config
    from geoxai.errors import ConfigError

    doc = {
        "name": "t",
        "aoi": "4.0,50.0,4.1,50.1",
        "year": 2024,
        "stac": {"url": "http://127.0.0.5:9/"},
        "store": {"root": "/tmp/x"},
        "models": {"prediction": "bundle"},
        "tiles": [],
    }
    with pytest.raises(ConfigError, match=r"tiles: \[\] selects no tile; omit the key"):
        load_run_config(doc)
    assert load_run_config({**doc, "tiles": None}).tiles is None
