"""``geoxai stac-search`` on real item files and against a real rustac server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.fixtures.stac import S1_COLLECTION, S2_COLLECTION, TEST_BBOX

pytestmark = pytest.mark.realdata


@pytest.fixture
def items_file(tmp_path, stac_test_items):
    path = tmp_path / "items.ndjson"
    path.write_text("\n".join(json.dumps(it) for it in stac_test_items) + "\n")
    return path


def test_help():
    result = CliRunner().invoke(app, ["stac-search", "--help"])
    assert result.exit_code == 0 and "--max-cloud" in result.output


def test_ids_from_local_files(items_file):
    bbox = ",".join(map(str, TEST_BBOX))
    args = ["stac-search", str(items_file), "-c", S2_COLLECTION, "--bbox", bbox]
    result = CliRunner().invoke(app, [*args, "--max-cloud", "30", "--format", "ids"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [
        "ES_S2_00",
        "ES_S2_02",
        "ES_S2_04",
        "ES_S2_06",
        "ES_S2_08",
        "ES_S2_09",
    ]


@pytest.mark.stac
def test_geojson_from_rustac(rustac_test_api):
    args = ["stac-search", rustac_test_api, "-c", S1_COLLECTION, "--format", "geojson"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["features"]) == 3
    assert all("hh" in f["assets"] for f in doc["features"])


def test_missing_band_is_a_typed_error(items_file):
    args = ["stac-search", str(items_file), "-c", S1_COLLECTION, "--band", "B04"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "no asset for band B04" in str(result.exception)
