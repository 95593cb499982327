"""The IoU table of explanation methods (SpacEX, ASOS, OSM, Grad-CAM, DeepLIFT).

The slow test builds the table on the synthetic forest-caused scenes of
tests/fixtures/spacex_world.py (the 16 held-out label-1 scenes, top 10 % of the pixels vs the
forest mask) and prints it; the numbers are stated in the README (SpacEX section). They are
not the paper's ranking and are not asserted beyond being valid IoUs of every method.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoxai.errors import DataAccessError, InvalidInputError
from geoxai.xai.evaluate import (
    METHODS,
    IoUTable,
    evaluate_attributions,
    load_eval_images,
    write_table,
)


def test_table_summary_markdown_and_json(tmp_path):
    t = IoUTable(
        q=10.0,
        methods=("spacex", "osm"),
        iou={"spacex": np.array([0.5, 0.3]), "osm": np.array([0.2, 0.2])},
        images=[0, 2],
        chance=np.array([0.1, 0.12]),
        seconds={"spacex": 0.2, "osm": 4.0},
        skipped=[1],
    )
    s = t.summary()
    assert s["spacex"]["mean"] == pytest.approx(0.4) and s["osm"]["seconds_per_image"] == 2.0
    md = t.to_markdown()
    assert "| spacex | 0.400 |" in md and "chance 0.110" in md
    js, mdp = write_table(t, tmp_path / "out" / "iou.json")
    doc = json.loads(js.read_text())
    assert doc["per_image"]["osm"] == [0.2, 0.2] and doc["skipped"] == [1]
    assert mdp.read_text() == md


def test_load_eval_images_checks_the_file(tmp_path):
    with pytest.raises(DataAccessError):
        load_eval_images(tmp_path / "nope.npz")
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 10, 8, 8), np.float32))
    with pytest.raises(InvalidInputError, match="masks"):
        load_eval_images(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=np.zeros((2, 10, 8, 8)), masks=np.zeros((2, 8, 9)))
    with pytest.raises(InvalidInputError, match="do not match"):
        load_eval_images(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", images=np.zeros((2, 10, 8, 8)), masks=np.ones((2, 8, 8)),
             labels=np.array([1, 0]))  # fmt: skip
    imgs, masks, labels = load_eval_images(tmp_path / "c.npz")
    assert imgs.dtype == np.float32 and masks.dtype == bool and labels.tolist() == [1, 0]


def test_bad_arguments_fail_before_any_work(tmp_path):
    imgs, masks = np.zeros((1, 10, 8, 8), np.float32), np.ones((1, 8, 8), bool)
    with pytest.raises(InvalidInputError, match="percentage"):
        evaluate_attributions(tmp_path, None, imgs, masks, q=0)
    with pytest.raises(InvalidInputError, match="Did you mean 'gradcam'"):
        evaluate_attributions(tmp_path, None, imgs, masks, methods=["gradcan"])
    with pytest.raises(InvalidInputError, match="do not match"):
        evaluate_attributions(tmp_path, None, imgs, masks[:, :4])


@pytest.mark.slow
def test_iou_table_for_all_five_methods(spacex_classifier, spacex_runs, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from tests.fixtures.spacex_world import one_thread

    w = spacex_classifier
    keep = w.val_labels == 1
    imgs, masks = w.val_images[keep], w.val_masks[keep]
    masks[0] = False  # an image without the class is skipped, not scored
    with one_thread():
        table = evaluate_attributions(w.asos_bundle, spacex_runs[5.0], imgs, masks, q=10)
    print(table.to_markdown())
    assert table.methods == METHODS and table.skipped == [0]
    for m in METHODS:
        v = table.iou[m]
        assert v.shape == (len(imgs) - 1,) and np.all((v >= 0) & (v <= 1))
    assert 0 < float(np.mean(table.chance)) < 0.2
    # the command line gives the same table
    data = tmp_path / "eval.npz"
    np.savez(data, images=w.val_images, masks=w.val_masks, labels=w.val_labels)
    out = tmp_path / "table"
    args = [
        "explain", "evaluate", "--asos-bundle", str(w.asos_bundle), "--spacex-bundle",
        str(spacex_runs[5.0]), "--images", str(data), "--q", "10", "--label", "1",
        "--out", str(out), "--methods", "spacex,asos",
    ]  # fmt: skip
    with one_thread():
        r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["methods"] == ["spacex", "asos"] and doc["n_images"] == int(keep.sum())
    assert "| spacex |" in out.with_suffix(".md").read_text()
