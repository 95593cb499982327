"""EuroSAT subset (real data): band selection, splits, grouping, and the asos CLI end to end."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geoxai.errors import DataAccessError, InvalidInputError
from geoxai.io.eurosat import (
    ANTHROPOGENIC_CLASSES,
    EUROSAT_CLASSES,
    EUROSAT_FILE_BANDS,
    NATURAL_CLASSES,
    natural_label,
    read_eurosat,
)

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def root(realdata):
    return realdata / "eurosat_ms_subset"


def test_grouping_is_a_partition():
    assert NATURAL_CLASSES | ANTHROPOGENIC_CLASSES == set(EUROSAT_CLASSES)
    assert not NATURAL_CLASSES & ANTHROPOGENIC_CLASSES
    assert natural_label("Forest") == 1.0 and natural_label("Pasture") == 0.0
    with pytest.raises(InvalidInputError, match="Did you mean 'Forest'"):
        natural_label("Forrest")


def test_reads_canonical_bands_as_reflectance(root):
    ds = read_eurosat(root, split="train")
    assert ds.images.shape == (60, 10, 64, 64) and ds.images.dtype == np.float32
    assert set(ds.splits) == {"train"}
    assert ds.labels.sum() == 6 * len(NATURAL_CLASSES)
    # B8A is the file's last band, B08 its 8th: compare with the raw file
    with rasterio.open(ds.files[0]) as src:
        raw = src.read()
    np.testing.assert_allclose(ds.images[0, 7], raw[12] * 1e-4, rtol=1e-6)  # B8A
    np.testing.assert_allclose(ds.images[0, 6], raw[EUROSAT_FILE_BANDS.index("B08")] * 1e-4)
    assert 0 < float(np.median(ds.images)) < 0.5  # reflectance, not DN
    assert len(read_eurosat(root, classes=["Forest"], limit_per_class=3)) == 3
    assert len(read_eurosat(root)) == 100


def test_bad_inputs(root, tmp_path):
    with pytest.raises(DataAccessError, match="does not exist"):
        read_eurosat(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="Did you mean 'test'"):
        read_eurosat(root, split="tset")
    with pytest.raises(DataAccessError, match="no EuroSAT patches"):
        read_eurosat(tmp_path)


@pytest.mark.slow
def test_cli_train_fit_map_on_eurosat(root, tmp_path):
    from pipelines.cli import app

    run = CliRunner()
    b, f = tmp_path / "bundle", tmp_path / "fitted"
    r = run.invoke(app, ["asos", "train", "--data", str(root), "--out", str(b), "--epochs", "2",
                         "--width", "4"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run.invoke(app, ["asos", "map", "--bundle", str(b), "--image", "x.tif", "--out", "o.npz"])
    assert isinstance(r.exception, Exception) and "fit first" in str(r.exception)
    r = run.invoke(app, ["asos", "fit", "--bundle", str(b), "--data", str(root), "--out", str(f),
                         "--split", "validate", "--min-pixels", "50"])  # fmt: skip
    assert r.exit_code == 0, r.output
    tif = read_eurosat(root, split="test").files[0]
    out, fig = tmp_path / "map.tif", tmp_path / "fig.png"
    r = run.invoke(app, ["asos", "map", "--bundle", str(f), "--image", tif, "--out", str(out),
                         "--figure", str(fig)])  # fmt: skip
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as src:
        assert src.count == 4 and src.descriptions[0] == "asos_sensitivity"
        assert src.crs is not None and src.shape == (64, 64)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
