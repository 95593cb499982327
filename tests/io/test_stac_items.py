"""Item normalization on REAL STAC items (Earth Search v1/v0, Planetary Computer) and search
over local static sources. No server: see test_stac.py for the APIs.

What each real catalog maps to (asserted below):

- Earth Search v1 (S2A_32TPS_20230602_0_L2A): asset keys ``red``/``nir08``/``rededge1``/``scl``
  (+ ``-jp2`` twins) -> B04/B8A/B05/SCL pointing at the COGs; ``proj:code`` EPSG:32632 ->
  ``proj:epsg`` 32632; raster:bands scale 1e-4, offset -0.1.
- Earth Search v1 search page: 3 Sentinel-1 GRD items (``hh`` only, ``proj:epsg`` 4326) stay
  Sentinel-1 (key ``hh``, no S2 band); c1-l2a / l2a items map all bands; L1C items have only
  JPEG2000 assets (used, since there is no COG) and no SCL.
- Earth Search v0 (S2A_28QCH_20200714_0_L2A): keys ``B04``/``SCL``, ``proj:epsg`` 32628, no
  scale anywhere -> baseline 02.14 from ``sentinel:product_id`` (``_N0214_``) -> offset 0.
- Planetary Computer (S2B_MSIL2A_20190629...T06VVN): keys ``B04``/``SCL``, ``proj:epsg`` 32606,
  no scale -> ``s2:processing_baseline`` 02.12 -> offset 0; its B8A says common_name
  ``rededge`` but the key wins.
"""

from __future__ import annotations

import copy
import json

import pystac
import pytest

from geoxai.errors import DataAccessError, InvalidInputError, NoDataError
from geoxai.geo.bands import CUBE_BANDS, S2_BANDS
from geoxai.io.stac import read_items, search
from geoxai.io.stac_items import (
    band_scaling,
    check_bands,
    normalize_item,
    processing_baseline,
    sensor,
)
from tests.fixtures.stac import (
    PC_COLLECTION,
    S1_COLLECTION,
    S2_CLOUDS,
    S2_COLLECTION,
    TEST_BBOX,
    s2_in_bbox,
)

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def items_dir(realdata):
    return realdata / "stac_items"


def _load(path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def es_v1(items_dir) -> dict:
    return _load(items_dir / "earthsearch_v1" / "S2A_32TPS_20230602_0_L2A.json")


@pytest.fixture(scope="module")
def es_v0(items_dir) -> dict:
    return _load(items_dir / "earthsearch_v0" / "S2A_28QCH_20200714_0_L2A.json")


@pytest.fixture(scope="module")
def pc(items_dir) -> dict:
    name = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
    return _load(items_dir / "planetary_computer" / name)


@pytest.fixture(scope="module")
def search_page(items_dir) -> list[pystac.Item]:
    return read_items(items_dir / "earthsearch_v1" / "search_20250731_s1grd_s2.json")


def test_earth_search_v1_maps_common_names_to_canonical_cogs(es_v1):
    raw = pystac.Item.from_dict(copy.deepcopy(es_v1))
    item = normalize_item(raw)
    for canon, key in [
        ("B02", "blue"),
        ("B04", "red"),
        ("B05", "rededge1"),
        ("B06", "rededge2"),
        ("B07", "rededge3"),
        ("B08", "nir"),
        ("B8A", "nir08"),
        ("B11", "swir16"),
        ("B12", "swir22"),
        ("SCL", "scl"),
    ]:
        assert item.assets[canon].href == es_v1["assets"][key]["href"], canon
        assert item.assets[canon].href.endswith(".tif")  # the COG, never the -jp2 twin
        assert key in item.assets  # originals are kept
    assert item.properties["proj:epsg"] == 32632
    assert band_scaling(item, "B04") == (1e-4, -0.1)
    assert band_scaling(item, "nir08") == (1e-4, -0.1)
    assert band_scaling(item, "SCL") == (1.0, 0.0)
    assert item.assets["B04"].extra_fields["raster:bands"][0]["offset"] == -0.1
    assert item.properties["geoxai:scaling"]["B04"] == "raster:bands"
    assert sensor(item) == "sentinel-2"
    assert processing_baseline(item) == "05.09"
    assert "B04" not in raw.assets  # the input is not modified
    assert normalize_item(item).to_dict(transform_hrefs=False) == item.to_dict(
        transform_hrefs=False
    )


def test_earth_search_v1_items_serialize_offline(es_v1):
    # The real item links its root to https://earth-search...; pystac's to_dict() would fetch
    # it. Normalized items must serialize without any network access.
    item = normalize_item(pystac.Item.from_dict(copy.deepcopy(es_v1)))
    assert item.to_dict()["id"] == es_v1["id"]


def test_search_page_keeps_sentinel1_apart(search_page):
    items = [normalize_item(it) for it in search_page]
    s1 = [it for it in items if it.collection_id == "sentinel-1-grd"]
    s2 = [it for it in items if it.collection_id != "sentinel-1-grd"]
    assert len(s1) == 3 and len(s2) == 7
    for it in s1:
        assert sensor(it) == "sentinel-1"
        assert "hh" in it.assets and band_scaling(it, "hh") == (1.0, 0.0)
        assert not set(it.assets) & set(CUBE_BANDS)
        assert it.properties["proj:epsg"] == 4326
        with pytest.raises(DataAccessError, match=rf"{it.id}.*B04"):
            check_bands([it], ["B04"])
        with pytest.raises(DataAccessError, match=r"no asset for band vv"):
            check_bands([it], ["vv"])
    for it in s2:
        assert sensor(it) == "sentinel-2"
        assert set(S2_BANDS) <= set(it.assets), it.id
        assert it.properties["proj:epsg"] in (32720, 32724)
        assert band_scaling(it, "B04") == (1e-4, -0.1)
    l1c = [it for it in s2 if it.collection_id == "sentinel-2-l1c"]
    assert len(l1c) == 2
    for it in l1c:
        assert "SCL" not in it.assets
        assert it.assets["B04"].href.endswith(".jp2")  # jp2 only: used since no COG exists
        with pytest.raises(DataAccessError, match=rf"{it.id}.*band SCL"):
            check_bands([it], CUBE_BANDS)
    kept = check_bands(s2, CUBE_BANDS, on_missing="drop")
    assert {it.collection_id for it in kept} == {"sentinel-2-l2a", "sentinel-2-c1-l2a"}
    assert len(kept) == 5


def test_earth_search_v0_uses_product_id_baseline(es_v0):
    item = normalize_item(es_v0)
    assert item.properties["proj:epsg"] == 32628
    assert item.assets["B04"].href == es_v0["assets"]["B04"]["href"]
    assert item.assets["SCL"].href == es_v0["assets"]["SCL"]["href"]
    assert processing_baseline(item) == "02.14"
    assert band_scaling(item, "B04") == (1e-4, 0.0)
    assert item.properties["geoxai:scaling"]["B8A"] == "processing-baseline 02.14"
    assert "overview" not in item.properties["geoxai:scaling"]


def test_planetary_computer_baseline_rule_and_b8a(pc):
    item = normalize_item(pc)
    assert item.properties["proj:epsg"] == 32606
    assert set(CUBE_BANDS) <= set(item.assets)
    assert item.assets["B8A"].href == pc["assets"]["B8A"]["href"]  # not "rededge" -> B05
    assert item.assets["B05"].href == pc["assets"]["B05"]["href"]
    assert processing_baseline(item) == "02.12"
    assert band_scaling(item, "B04") == (1e-4, 0.0)
    assert band_scaling(item, "red") == (1e-4, 0.0)

    newer = copy.deepcopy(pc)
    newer["properties"]["s2:processing_baseline"] = "04.00"
    assert band_scaling(normalize_item(newer), "B04") == (1e-4, -0.1)
    older = copy.deepcopy(pc)
    older["properties"]["s2:processing_baseline"] = "03.01"
    assert band_scaling(normalize_item(older), "B04") == (1e-4, 0.0)
    from_uri = copy.deepcopy(pc)
    del from_uri["properties"]["s2:processing_baseline"]
    from_uri["properties"]["s2:product_uri"] = "S2B_MSIL2A_20230629T212529_N0509_R043_T06VVN.SAFE"
    assert band_scaling(normalize_item(from_uri), "B04") == (1e-4, -0.1)


def test_no_baseline_falls_back_to_acquisition_date(pc):
    for when, offset in [("2021-12-31T10:00:00Z", 0.0), ("2022-06-01T10:00:00Z", -0.1)]:
        d = copy.deepcopy(pc)
        d["id"] = "no-baseline"
        d["properties"]["datetime"] = when
        for key in ("s2:processing_baseline", "s2:product_uri"):
            d["properties"].pop(key, None)
        item = normalize_item(d)
        assert band_scaling(item, "B04") == (1e-4, offset)
        assert item.properties["geoxai:scaling"]["B04"] == "acquisition-date"


def test_declared_scaling_beats_the_baseline_rule(es_v1):
    d = copy.deepcopy(es_v1)
    d["properties"]["s2:processing_baseline"] = "02.00"
    d["assets"]["red"]["raster:bands"][0]["offset"] = -0.2
    item = normalize_item(d)
    assert band_scaling(item, "B04") == (1e-4, -0.2)  # the catalog is trusted
    assert band_scaling(item, "B03") == (1e-4, -0.1)


def test_unknown_band_and_bad_input_are_typed(es_v1):
    item = normalize_item(es_v1)
    with pytest.raises(InvalidInputError, match=r"Unknown band 'B99'.*S2A_32TPS"):
        band_scaling(item, "B99")
    with pytest.raises(InvalidInputError, match="on_missing"):
        check_bands([item], ["B04"], on_missing="skip")
    with pytest.raises(InvalidInputError, match="pystac.Item"):
        normalize_item("S2A_32TPS_20230602_0_L2A")  # type: ignore[arg-type]
    d = copy.deepcopy(es_v1)
    d["properties"]["datetime"] = None
    with pytest.raises(InvalidInputError, match="S2A_32TPS_20230602_0_L2A.*datetime"):
        normalize_item(d)


def test_normalized_items_stack_with_stackstac(es_v1):
    stackstac = pytest.importorskip("stackstac")
    import numpy as np

    item = normalize_item(es_v1)
    # bounds inside the tile, lazily: no pixel is read (the assets are remote)
    arr = stackstac.stack(
        [item],
        assets=["B04", "B8A", "SCL"],
        epsg=item.properties["proj:epsg"],
        resolution=10,
        bounds=(700000, 5100000, 700600, 5100600),
        fill_value=np.uint16(0),
        dtype="uint16",
        rescale=False,
    )
    assert list(arr.band.values) == ["B04", "B8A", "SCL"]
    assert arr.shape == (1, 3, 60, 60)


# --------------------------------------------------------------------------- local search


@pytest.fixture
def static_source(tmp_path, stac_test_items):
    """The standard test set as individual JSON files, an ndjson and a FeatureCollection."""
    files = []
    for it in stac_test_items[:6]:
        path = tmp_path / f"{it['id']}.json"
        path.write_text(json.dumps(it))
        files.append(path)
    nd = tmp_path / "rest.ndjson"
    nd.write_text("\n".join(json.dumps(it) for it in stac_test_items[6:12]) + "\n")
    fc = tmp_path / "others.json"
    fc.write_text(json.dumps({"type": "FeatureCollection", "features": stac_test_items[12:]}))
    dupe = tmp_path / "dupe.json"  # ES_S2_00 a second time: must come back once
    dupe.write_text(json.dumps(stac_test_items[0]))
    return [*files, nd, fc, dupe]


def test_static_search_filters_sorts_and_dedupes(static_source):
    items = search(
        static_source,
        collections=S2_COLLECTION,
        bbox=TEST_BBOX,
        datetime="2023-02-01/2023-09-30",
        max_cloud=50,
    )
    want = [
        f"ES_S2_{i:02d}" for i in range(12) if s2_in_bbox(i) and 1 <= i <= 8 and S2_CLOUDS[i] <= 50
    ]
    assert [it.id for it in items] == want
    times = [it.datetime for it in items]
    assert times == sorted(times)
    assert all("B04" in it.assets for it in items)

    everything = search(static_source, collections=[S2_COLLECTION, S1_COLLECTION, PC_COLLECTION])
    ids = [it.id for it in everything]
    assert len(ids) == len(set(ids)) == 12 + 3 + 9


def test_static_search_zero_items_names_the_query(static_source):
    with pytest.raises(NoDataError, match=r"collections=\['es-s2-l2a'\].*bbox=.*datetime="):
        search(static_source, collections=S2_COLLECTION, bbox=TEST_BBOX, datetime="2019")
    with pytest.raises(NoDataError, match=r"1 item\(s\) matched .* eo:cloud_cover > 50"):
        search(  # only ES_S2_01 (2023-02-04, 80 % cloud) is in February
            static_source,
            collections=S2_COLLECTION,
            bbox=TEST_BBOX,
            datetime="2023-02",
            max_cloud=50,
        )
    with pytest.raises(NoDataError, match="carries all of"):
        search(static_source, collections=S1_COLLECTION, bands=["B04"], on_missing="drop")
    with pytest.raises(DataAccessError, match="no asset for band B04"):
        search(static_source, collections=S1_COLLECTION, bands=["B04"])


def test_static_search_rejects_bad_arguments(static_source, tmp_path):
    with pytest.raises(DataAccessError, match="does not exist"):
        search(tmp_path / "missing.json", collections="x")
    with pytest.raises(InvalidInputError, match="collection"):
        search(static_source, collections=[])
    with pytest.raises(InvalidInputError, match="bbox"):
        search(static_source, collections="x", bbox=(1, 2, 3))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        search(bad, collections="x")
