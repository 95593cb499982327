"""stac-geoparquet written in batches: every field kept or a loud error, rows verified."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import rustac

from geoxai.errors import CorruptDataError, InvalidInputError
from geoxai.io.geoparquet import field_paths, write_stac_geoparquet


def item(i: int, **props) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": f"t{i:05d}",
        "geometry": {"type": "Point", "coordinates": [float(i % 180), 0.0]},
        "bbox": [float(i % 180), 0.0, float(i % 180), 0.0],
        "properties": {"datetime": "2024-06-01T00:00:00Z", "geoxai:timings_s": {}, **props},
        "links": [],
        "assets": {"record": {"href": f"../records/t{i:05d}.json", "roles": ["metadata"]}},
        "collection": "c",
    }


def test_batches_stream_into_one_file_with_every_item(tmp_path):
    out = tmp_path / "items.parquet"
    batches = [
        [item(i, **{"geoxai:input_items": [f"S2_{i}"]}) for i in range(k, k + 100)]
        for k in range(0, 1000, 100)
    ]
    n = write_stac_geoparquet(out, batches)
    assert n == 1000 == pq.read_metadata(out).num_rows
    back = rustac.read_sync(str(out))["features"]
    assert [f["id"] for f in back] == [f"t{i:05d}" for i in range(1000)]
    assert back[999]["properties"]["geoxai:input_items"] == ["S2_999"]
    assert "timings" not in str(back[0]["properties"])  # the empty object is dropped
    geo = json.loads(pq.read_metadata(out).metadata[b"geo"])  # GeoParquet over every batch
    assert geo["columns"]["geometry"]["bbox"] == [0.0, 0.0, 179.0, 0.0]
    assert geo["columns"]["geometry"]["geometry_types"] == ["Point"]
    assert pq.read_metadata(out).num_row_groups == 10  # one per batch: memory is one batch


def test_a_field_the_first_batch_lacks_is_an_error_not_a_silent_drop(tmp_path):
    """rustac builds the schema from the first batch and drops unknown fields later: the
    writer refuses such a batch, naming the Item and the field."""
    first = [item(0, **{"geoxai:timings_s": {"cube_s": 1.0}})]
    later = [item(1, **{"geoxai:timings_s": {"cube_s": 2.0, "asos_s": 3.0}})]
    with pytest.raises(CorruptDataError, match=r"t00001.*asos_s"):
        write_stac_geoparquet(tmp_path / "x.parquet", [first, later])
    # with the field in the first batch both Items keep it
    write_stac_geoparquet(tmp_path / "y.parquet", [later, first])
    back = {f["id"]: f for f in rustac.read_sync(str(tmp_path / "y.parquet"))["features"]}
    assert back["t00001"]["properties"]["geoxai:timings_s"] == {"cube_s": 2.0, "asos_s": 3.0}
    assert back["t00000"]["properties"]["geoxai:timings_s"]["cube_s"] == 1.0


def test_no_item_is_an_error(tmp_path):
    with pytest.raises(InvalidInputError, match="no Item"):
        write_stac_geoparquet(tmp_path / "x.parquet", [])


def test_field_paths_name_nested_fields_and_list_elements():
    paths = field_paths(item(3, **{"raster:bands": [{"nodata": 0}]}))
    assert {"properties.raster:bands[].nodata", "assets.record.roles[]", "geometry"} <= paths
    assert not any(p.startswith("geometry.") for p in paths)
