"""Planning a run: the pre-flight STAC check before any tile starts."""

from __future__ import annotations

import logging

import pytest

from geoxai.config import load_run_config
from geoxai.errors import StacError
from geoxai.mapping.plan import check_stac, plan_run
from tests.fixtures.stac import S2_COLLECTION, TEST_BBOX

pytestmark = pytest.mark.stac


def _config(url: str, bbox=TEST_BBOX, year: int = 2023):
    return load_run_config(
        {
            "name": "t",
            "year": year,
            "aoi": ",".join(str(v) for v in bbox),
            "stac": {"url": url, "collection": S2_COLLECTION, "max_cloud": 100},
            "store": {"root": "/nonexistent-not-written"},
            "models": {"prediction": "bundle"},
        }
    )


def test_preflight_passes_on_a_live_api_with_items(rustac_test_api, caplog):
    with caplog.at_level(logging.WARNING, logger="geoxai.mapping.plan"):
        check_stac(_config(rustac_test_api))
    assert not caplog.records


def test_preflight_warns_when_the_aoi_has_no_item(rustac_test_api, caplog):
    with caplog.at_level(logging.WARNING, logger="geoxai.mapping.plan"):
        check_stac(_config(rustac_test_api, bbox=(-60.1, -10.1, -60.0, -10.0)))
    (rec,) = caplog.records
    assert "pre-flight" in rec.getMessage() and "recorded empty" in rec.getMessage()


def test_preflight_names_an_unreachable_api():
    with pytest.raises(StacError, match=r"Pre-flight check.*127\.0\.0\.1:9.*Fix"):
        check_stac(_config("http://127.0.0.1:9/"))


@pytest.mark.slow
def test_a_run_whose_stac_is_down_stops_at_planning(run_world, tmp_path):
    """Before any cube task spends its retries: planning itself names the STAC API."""
    cfg = run_world.config(tmp_path / "store", stac={"url": "http://127.0.0.1:9/"})
    with pytest.raises(StacError, match=r"Pre-flight check.*127\.0\.0\.1:9"):
        plan_run(cfg)
    live = run_world.config(tmp_path / "store")  # the same run on its live API plans
    assert plan_run(live).todo
