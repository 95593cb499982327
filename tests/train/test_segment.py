"""Rasters + mask -> U-Net workflow (geoxai.train.segment, geoxai.io.rasters)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError, StoreError
from geoxai.io.rasters import MaskInput, RasterInput, derive_grid, prepare_scene
from geoxai.models.unet import UNet2d
from geoxai.synthetic.segment import write_synthetic_scene
from geoxai.train.segment import SegmentConfig, iou_counts, predict_segment, train_segment
from geoxai.train.segment_data import split_tiles

UTM = "EPSG:32631"
X0, Y1 = 500_000.0, 5_600_000.0


def _write(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = UTM,
    transform: Affine | None = None,
    nodata: float | None = None,
) -> str:
    a = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=a.shape[1],
        width=a.shape[2],
        count=a.shape[0],
        dtype=a.dtype,
        crs=crs,
        transform=transform or Affine(10, 0, X0, 0, -10, Y1),
        nodata=nodata,
    ) as dst:
        dst.write(a)
    return str(path)


def _polygons(
    path: Path,
    boxes: list[tuple[float, float, float, float]],
    crs: str = UTM,
    driver: str = "GeoJSON",
    classes: list[str] | None = None,
) -> str:
    import pyogrio
    import shapely

    from geoxai.io.rasters import to_crs

    geoms = [to_crs(shapely.box(*b), UTM, crs) for b in boxes]
    pyogrio.raw.write(
        str(path),
        geometry=shapely.to_wkb(np.asarray(geoms, dtype=object)),
        field_data=[np.asarray(classes or ["tree"] * len(boxes), dtype=object)],
        fields=["kind"],
        crs=crs,
        driver=driver,
        geometry_type="Polygon",
    )
    return str(path)


@pytest.fixture()
def small(tmp_path: Path) -> dict[str, str]:
    """A 64 x 64 px 10 m scene: 2-band float image, a mask with two squares."""
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 64, 64)).astype(np.float32)
    return {
        "image": _write(tmp_path / "img.tif", img),
        "mask": _polygons(
            tmp_path / "m.geojson",
            [(X0 + 50, Y1 - 300, X0 + 250, Y1 - 100), (X0 + 300, Y1 - 600, X0 + 500, Y1 - 400)],
            crs="EPSG:4326",
        ),
        "dir": str(tmp_path),
    }


def _config(tmp: Path, rasters: list[str], mask: str, **kw: object) -> SegmentConfig:
    base = {
        "rasters": [{"path": p} for p in rasters],
        "mask": {"path": mask},
        "tile_size": 16,
        "out_dir": str(tmp / "out"),
        "training": {"epochs": 1, "progress": False},
    }
    return SegmentConfig.model_validate({**base, **kw})


# ---- model -------------------------------------------------------------------------------------


def test_unet2d_shapes_groupnorm_and_batch_independence() -> None:
    torch.manual_seed(0)
    net = UNet2d(3, 1, base=8, depth=2).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(3, 3, 30, 21)
    y = net(x)
    assert y.shape == (3, 1, 30, 21)
    # GroupNorm: a sample's output does not depend on the rest of the batch
    torch.testing.assert_close(net(x[:1]), y[:1])
    with pytest.raises(InvalidInputError, match="C=3"):
        net(torch.randn(1, 4, 16, 16))


# ---- grid, stacking, nodata --------------------------------------------------------------------


def test_grid_defaults_first_crs_finest_resolution_hull_bounds(tmp_path: Path) -> None:
    p = write_synthetic_scene(tmp_path, size_px=64)
    rs = [RasterInput(path=p["image"]), RasterInput(path=p["dem"])]
    grid, area, _ = derive_grid(rs, MaskInput(path=p["trees"]), tile_size=16)
    with rasterio.open(p["image"]) as src:
        assert grid.crs == src.crs.to_string()
        img_bounds = src.bounds
    assert grid.resolution == 5.0  # the DEM's 5 m (EPSG:3035) is the finest input
    hb = area.bounds  # convex hull of the polygons, in the image CRS
    x0, y0, x1, y1 = grid.bounds
    assert x0 - 1e-6 <= hb[0] < x0 + 5 and y1 - 5 < hb[3] <= y1 + 1e-6
    assert x0 >= img_bounds.left - 1e-6 and x1 <= img_bounds.right + 1e-6
    assert x0 % 5 == 0 and y1 % 5 == 0
    # overrides
    b = [
        img_bounds.left + 100,
        img_bounds.bottom + 100,
        img_bounds.left + 400,
        img_bounds.bottom + 300,
    ]
    g2, _, _ = derive_grid(
        rs, MaskInput(path=p["trees"]), crs="EPSG:3035", resolution=20, tile_size=4
    )
    assert g2.crs == "EPSG:3035" and g2.resolution == 20
    g3, _, _ = derive_grid(rs, MaskInput(path=p["trees"]), bounds=b, resolution=10, tile_size=16)
    assert g3.bounds == pytest.approx(tuple(b)) and g3.shape == (20, 30)


def test_nodata_conventions_unify_into_one_valid_mask(tmp_path: Path) -> None:
    h = w = 32
    a = np.ones((h, w), np.float32)
    a[3, 4] = np.nan  # NaN, no nodata tag
    b = np.full((h, w), 7, np.int16)
    b[10, 11] = -9999  # nodata value in the file
    c = np.full((h, w), 3, np.uint8)
    c[20, 21] = 255  # no tag in the file; the config overrides nodata = 255
    d = np.full((h, w), 5.0, np.float32)
    d[25, 26] = 0.0  # a real zero: valid (no tag, no override)
    rs = [
        RasterInput(path=_write(tmp_path / "a.tif", a)),
        RasterInput(path=_write(tmp_path / "b.tif", b, nodata=-9999)),
        RasterInput(path=_write(tmp_path / "c.tif", c), nodata=255),
        RasterInput(path=_write(tmp_path / "d.tif", d)),
    ]
    m = _write(tmp_path / "mask.tif", (np.arange(h * w).reshape(h, w) % 7 == 0).astype(np.uint8))
    scene = prepare_scene(rs, MaskInput(path=m), tile_size=16)
    want = np.ones((h, w), bool)
    want[3, 4] = want[10, 11] = want[20, 21] = False
    np.testing.assert_array_equal(scene.valid, want)
    assert np.isnan(scene.data[:, ~want]).any(axis=0).all()
    assert scene.data[3, 25, 26] == 0.0
    assert scene.band_names == ["a_b1", "b_b1", "c_b1", "d_b1"]
    assert not scene.labelled[10, 11] and scene.target[10, 11] == 0


def test_reprojected_raster_hole_and_edge_are_invalid(tmp_path: Path) -> None:
    p = write_synthetic_scene(tmp_path, size_px=64)
    rs = [RasterInput(path=p["image"], name="s2"), RasterInput(path=p["dem"], name="dem")]
    with rasterio.open(p["image"]) as src:
        box = list(src.bounds)
    scene = prepare_scene(rs, MaskInput(path=p["trees"]), resolution=10, bounds=box, tile_size=16)
    assert scene.grid.shape == (64, 64)
    assert scene.band_names[:5] == [f"s2_{b}" for b in ("B02", "B03", "B04", "B08", "B11")]
    assert scene.band_names[5] == "dem_elevation"
    # the image's 4 nodata columns (DN 0) and the DEM's north-east hole are invalid
    assert not scene.valid[:, :4].any() and scene.valid[17:, 4:].all()
    assert np.isnan(scene.data[5, :15, -15:]).all() and np.isfinite(scene.data[:5, :16, -16:]).all()
    assert np.isfinite(scene.data[5, 17:, 4:]).all() and np.isfinite(scene.data[5, :, 4:-17]).all()
    assert scene.valid[scene.grid.shape[0] // 2, scene.grid.shape[1] // 2]
    elev = scene.data[5][scene.valid]
    assert 0 < elev.min() and elev.max() < 1000  # -9999 never leaks into an average


def test_mask_formats_and_attribute_filter(tmp_path: Path, small: dict[str, str]) -> None:
    boxes = [(X0 + 50, Y1 - 300, X0 + 250, Y1 - 100), (X0 + 300, Y1 - 600, X0 + 500, Y1 - 400)]
    grid, area, metas = derive_grid(
        [RasterInput(path=small["image"])], MaskInput(path=small["mask"]), tile_size=16
    )
    from geoxai.io.rasters import rasterize_labels

    ref, _ = rasterize_labels(MaskInput(path=small["mask"]), grid, area)
    assert ref.sum() == 2 * 20 * 20
    for name, driver, crs in (("m.gpkg", "GPKG", "EPSG:3035"), ("m.shp", "ESRI Shapefile", UTM)):
        path = _polygons(tmp_path / name, boxes, crs=crs, driver=driver)
        got, _ = rasterize_labels(MaskInput(path=path), grid, area)
        assert (got != ref).sum() <= 4, name  # reprojection moves edges by < 1 px
    path = _polygons(tmp_path / "k.gpkg", boxes, driver="GPKG", classes=["oak", "pine"])
    only, _ = rasterize_labels(MaskInput(path=path, attribute="kind", values=["pine"]), grid, area)
    assert only.sum() == 20 * 20 and only[45, 35] == 1 and only[15, 10] == 0
    with pytest.raises(ConfigError, match="Did you mean 'kind'"):
        rasterize_labels(MaskInput(path=path, attribute="kinds", values=["x"]), grid, area)
    with pytest.raises(InvalidInputError, match="no polygon"):
        rasterize_labels(MaskInput(path=path, attribute="kind", values=["elm"]), grid, area)


def test_split_is_spatially_separated_with_a_gap() -> None:
    lab = np.ones((160, 192), bool)
    s = split_tiles(lab, 16, 0.2, seed=3)
    assert s == split_tiles(lab, 16, 0.2, seed=3)
    n = 10 * 12
    assert len(s.train) + len(s.val) + len(s.gap) == n
    assert 0.2 * n <= len(s.val) <= 0.3 * n
    val = {(r // 16, c // 16) for r, c in s.val}
    for r, c in s.train:
        i, j = r // 16, c // 16
        assert all((i + di, j + dj) not in val for di in (-1, 0, 1) for dj in (-1, 0, 1))
    # tiles with too few labelled pixels are not used
    lab[:, :96] = False
    s2 = split_tiles(lab, 16, 0.2, seed=0)
    assert all(c >= 96 for _, c in s2.train + s2.val + s2.gap)
    with pytest.raises(ConfigError, match="too few"):
        split_tiles(np.ones((32, 32), bool), 16, 0.2)


def test_iou_counts() -> None:
    p = np.array([0.9, 0.9, 0.1, 0.1, 0.9])
    t = np.array([1, 0, 1, 0, 1])
    m = np.array([True, True, True, True, False])
    r = iou_counts(p, t, m)
    assert r["iou"] == pytest.approx(1 / 3) and r["precision"] == 0.5 and r["recall"] == 0.5


# ---- bad input: a clear typed error before training starts --------------------------------------


def _no_training(cfg: SegmentConfig) -> None:
    assert not (Path(cfg.out_dir) / "checkpoints").exists()


def test_rasters_that_do_not_overlap(tmp_path: Path, small: dict[str, str]) -> None:
    far = _write(
        tmp_path / "far.tif",
        np.ones((8, 8), np.float32),
        transform=Affine(10, 0, X0 + 50_000, 0, -10, Y1),
    )
    cfg = _config(tmp_path, [small["image"], far], small["mask"])
    with pytest.raises(InvalidInputError, match="far.tif.*does not overlap"):
        train_segment(cfg)
    _no_training(cfg)


def test_mixed_crs_without_overlap(tmp_path: Path, small: dict[str, str]) -> None:
    # a raster in EPSG:3035 somewhere in Spain
    far = _write(
        tmp_path / "laea.tif",
        np.ones((8, 8), np.float32),
        crs="EPSG:3035",
        transform=Affine(10, 0, 3_200_000, 0, -10, 2_000_000),
    )
    cfg = _config(tmp_path, [small["image"], far], small["mask"])
    with pytest.raises(InvalidInputError, match="compared in EPSG:32631.*EPSG:3035"):
        train_segment(cfg)
    _no_training(cfg)


def test_mask_without_positives(tmp_path: Path, small: dict[str, str]) -> None:
    zeros = _write(tmp_path / "zeros.tif", np.zeros((64, 64), np.uint8))
    cfg = _config(tmp_path, [small["image"]], zeros)
    with pytest.raises(InvalidInputError, match="no positive"):
        train_segment(cfg)
    _no_training(cfg)


def test_tile_size_larger_than_area(tmp_path: Path, small: dict[str, str]) -> None:
    cfg = _config(tmp_path, [small["image"]], small["mask"], tile_size=128)
    with pytest.raises(ConfigError, match="tile_size 128 px is larger than the training area"):
        train_segment(cfg)
    _no_training(cfg)


def test_unwritable_output_paths(tmp_path: Path, small: dict[str, str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cfg = _config(tmp_path, [small["image"]], small["mask"], out_dir=str(blocker / "out"))
    with pytest.raises(StoreError, match="not writable"):
        train_segment(cfg)
    with pytest.raises(StoreError, match="not writable"):
        predict_segment(tmp_path, None, blocker / "pred.tif")
    with pytest.raises(ConfigError, match=r"\.tif"):
        predict_segment(tmp_path, None, tmp_path / "pred.png")


def test_missing_file_and_bad_band(tmp_path: Path, small: dict[str, str]) -> None:
    with pytest.raises(DataAccessError, match="does not exist"):
        train_segment(_config(tmp_path, [str(tmp_path / "nope.tif")], small["mask"]))
    cfg = _config(tmp_path, [small["image"]], small["mask"])
    cfg = cfg.model_copy(update={"rasters": [RasterInput(path=small["image"], bands=[3])]})
    with pytest.raises(ConfigError, match=r"bands \[3\] do not exist"):
        train_segment(cfg)


def test_config_did_you_mean_and_defaults(tmp_path: Path, small: dict[str, str]) -> None:
    from geoxai.train.workflows import load_workflow_config

    base = {
        "rasters": [{"path": small["image"]}],
        "mask": {"path": small["mask"]},
        "out_dir": str(tmp_path),
    }
    with pytest.raises(ConfigError, match="Did you mean 'tile_size'"):
        load_workflow_config("segment", {**base, "tile_sise": 64})
    with pytest.raises(ConfigError, match="focal"):
        load_workflow_config("segment", {**base, "loss": "focall"})
    cfg = load_workflow_config("segment", base)
    assert isinstance(cfg, SegmentConfig)
    assert cfg.fit_params().monitor == "val_iou" and cfg.fit_params().mode == "max"
    cfg2 = load_workflow_config("segment", {**base, "training": {"monitor": "val_loss"}})
    assert cfg2.fit_params().monitor == "val_loss"  # type: ignore[attr-defined]


# ---- end to end on the synthetic world -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Train once on a 3.84 km scene: 5-band 10 m image (UTM 31N) + 5 m DEM (EPSG:3035)."""
    tmp = tmp_path_factory.mktemp("segment")
    p = write_synthetic_scene(tmp / "scene", size_px=384)
    cfg = SegmentConfig(
        rasters=[RasterInput(path=p["image"], name="s2"), RasterInput(path=p["dem"], name="dem")],
        mask=MaskInput(path=p["trees"]),
        resolution=10,
        tile_size=32,
        base_channels=16,
        depth=3,
        training={
            "epochs": 30,
            "lr": 3e-3,
            "batch_size": 4,
            "lr_schedule": "cosine",
            "progress": False,
        },
        out_dir=str(tmp / "out"),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI cores: one intra-op thread is far faster
    try:
        bundle = train_segment(cfg)
    finally:
        torch.set_num_threads(threads)
    return {"bundle": bundle, "out": Path(cfg.out_dir), "scene": p, "config": cfg}


@pytest.mark.slow
def test_learns_tree_cover_on_a_held_out_area(trained: dict[str, object]) -> None:
    out = trained["out"]
    assert isinstance(out, Path)
    ev = json.loads((out / "evaluation.json").read_text())
    print("held-out IoU (blended prediction.tif):", ev["heldout_iou"], ev["tiles"])
    assert ev["heldout_iou"] >= 0.8
    hist = json.loads((out / "metrics.json").read_text())
    assert len(hist) == 30 and all("val_iou" in h for h in hist)
    assert ev["best_epoch"] == 1 + int(np.argmax([h["val_iou"] for h in hist]))
    for f in ("checkpoints/best.pt", "checkpoints/last.pt", "metrics.png", "prediction.tif"):
        assert (out / f).is_file(), f
    bundle = trained["bundle"]
    assert isinstance(bundle, Path)
    for f in ("model.json", "model.safetensors", "grid.json", "train_config.yaml"):
        assert (bundle / f).is_file(), f
    spec = json.loads((bundle / "model.json").read_text())
    assert spec["architecture"] == "unet2d" and spec["normalization"]["kind"] == "affine"
    from geoxai.io.cog import validate_cog

    validate_cog(out / "prediction.tif")


@pytest.fixture()
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_predict_again_and_on_new_rasters(trained: dict[str, object], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    out, bundle, scene = trained["out"], trained["bundle"], trained["scene"]
    assert isinstance(out, Path) and isinstance(bundle, Path) and isinstance(scene, dict)
    again = predict_segment(bundle, None, tmp_path / "again.tif")
    with rasterio.open(again) as a, rasterio.open(out / "prediction.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.crs == b.crs and a.transform == b.transform
    # new rasters: the eastern half of the image (the DEM as is), through the CLI
    with rasterio.open(scene["image"]) as src:
        win = rasterio.windows.Window(192, 0, 192, 384)
        prof = src.profile | {"width": 192, "height": 384, "transform": src.window_transform(win)}
        half = tmp_path / "east.tif"
        with rasterio.open(half, "w", **prof) as dst:
            dst.write(src.read(window=win))
    res = CliRunner().invoke(
        app,
        [
            "segment",
            "predict",
            "--bundle",
            str(bundle),
            "--raster",
            str(half),
            "--raster",
            scene["dem"],
            "--out",
            str(tmp_path / "east_pred.tif"),
        ],
    )
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "east_pred.tif") as e, rasterio.open(out / "prediction.tif") as b:
        assert e.width == 192 and e.bounds.right == pytest.approx(b.bounds.right)
        pe, pb = e.read(1), b.read(1)
        # the training grid is the hull's box, the new one the new image's: align them
        col = round((e.bounds.left - b.bounds.left) / 10)
        row = round((e.bounds.top - b.bounds.top) / -10)
        r0, r1 = max(0, -row), min(pe.shape[0], pb.shape[0] - row)
        a = pe[r0 + 8 : r1 - 8, 24:-8]  # away from the new west edge
        ref = pb[r0 + row + 8 : r1 + row - 8, col + 24 : -8]
        ok = np.isfinite(a) & np.isfinite(ref)
        assert ok.mean() > 0.8  # the rest is the DEM hole (NaN in both)
        assert np.mean((a[ok] >= 0.5) == (ref[ok] >= 0.5)) > 0.99
    res = CliRunner().invoke(
        app,
        [
            "segment",
            "predict",
            "--bundle",
            str(bundle),
            "--raster",
            str(half),
            "--out",
            str(tmp_path / "x.tif"),
        ],
    )
    assert res.exit_code != 0 and "trained on 2 rasters" in str(res.exception)
    # an output that is one of its own inputs is refused before anything is written
    before = half.read_bytes()
    with pytest.raises(InvalidInputError, match="is the input raster.*another --out"):
        predict_segment(bundle, [RasterInput(path=str(half)), RasterInput(path=scene["dem"])], half)
    assert half.read_bytes() == before


@pytest.mark.slow
def test_tiny_run_through_the_workflow_registry(tmp_path: Path, small: dict[str, str]) -> None:
    """One epoch on 64 x 64 px: the files a run leaves, the saved config, resume is a no-op."""
    import yaml

    from geoxai.train.workflows import load_workflow_config, run_workflow

    cfg = load_workflow_config(
        "segment",
        {
            "rasters": [{"path": small["image"], "name": "img"}],
            "mask": {"path": small["mask"]},
            "tile_size": 16,
            "val_fraction": 0.25,
            "loss": "weighted_bce",
            "base_channels": 4,
            "depth": 1,
            "training": {"epochs": 1, "batch_size": 4, "progress": False},
            "out_dir": str(tmp_path / "run"),
        },
    )
    bundle = run_workflow("segment", cfg)
    assert bundle == tmp_path / "run" / "bundle"
    saved = yaml.safe_load((bundle / "train_config.yaml").read_text())
    assert Path(saved["rasters"][0]["path"]).is_absolute() and saved["loss"] == "weighted_bce"
    ev = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert ev["pos_weight"] >= 1  # auto: negatives / positives of the training tiles, >= 1
    with rasterio.open(tmp_path / "run" / "prediction.tif") as src:
        assert src.shape == (50, 45) and src.descriptions == ("probability",)
        p = src.read(1)
    assert np.nanmin(p) >= 0 and np.nanmax(p) <= 1
    mtime = (tmp_path / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns
    run_workflow("segment", cfg)  # resume: the finished run is not trained again
    assert (tmp_path / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
