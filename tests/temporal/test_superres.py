"""WRI's DSen2-lite without TensorFlow (geoxai.models.dsen2, geoxai.temporal.superres), real data.

The graph and TensorFlow's own outputs come from ../shared/realdata/wri_superresolve (GPL-3.0,
read there, never copied: bundles are made in tmp dirs); Wald's protocol runs on the real
WorldCereal patch; seamlessness on two adjacent tiles of a synthetic world read by build_cube.
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch

from geoxai.errors import ConfigError, GraphImportError, InvalidInputError, ModelBundleError
from geoxai.models.dsen2 import (
    DSEN2_BANDS,
    DSEN2_OUTPUTS,
    import_dsen2_lite,
    load_superres_bundle,
)
from geoxai.models.tf_graph import read_graph
from geoxai.temporal.superres import (
    lattice_phase,
    prepare_reference,
    prepare_tile,
    required_halo_px,
    run_network,
    superresolve_cube,
    wald_protocol,
)

pytestmark = pytest.mark.realdata

WS = "wri_superresolve"
TS = "worldcereal_ts_patch"
STEM = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
PATCH_TRANSFORM = [10.0, 0.0, 501_360.0, 0.0, -10.0, 5_629_680.0]


@pytest.fixture(scope="module")
def graph(realdata) -> Path:
    return realdata / WS / "superresolve_graph.pb"


@pytest.fixture(scope="module")
def reference(realdata):
    return dict(np.load(realdata / WS / "reference_io.npz"))


@pytest.fixture(scope="module")
def bundle(graph, tmp_path_factory):
    path = import_dsen2_lite(graph, tmp_path_factory.mktemp("sr") / "wri-dsen2-lite")
    return load_superres_bundle(path)


def _read(path: Path, var: str) -> np.ndarray:
    """(bands, y, x) of one NetCDF variable, north-up (GDAL's netCDF driver)."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no geotransform in these files
        with rasterio.open(f"netcdf:{path}:{var}") as src:
            return src.read()


@pytest.fixture(scope="module")
def patch(realdata):
    """The real patch: 10 m bands (T, 4, 64, 64), 20 m bands (T, 6, 32, 32) reflectance
    (NaN = nodata), SCL (T, 32, 32)."""
    d = realdata / TS

    def refl(a):
        return np.where(a == 0, np.nan, a.astype(np.float32) * np.float32(1e-4))

    b10 = np.stack([refl(_read(d / f"S2_L2A_10m_{STEM}", b)) for b in DSEN2_BANDS[:4]], 1)
    b20 = np.stack([refl(_read(d / f"S2_L2A_20m_{STEM}", b)) for b in DSEN2_OUTPUTS], 1)
    scl = _read(d / f"S2_L2A_20m_{STEM}", "SCL")
    return b10, b20, scl


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("inp", "out", "crop"),
    [
        ("input", "output", 0),
        ("input_padded", "output_padded_cropped", 4),
        ("random_input", "random_output", 0),
    ],
)
def test_bundle_reproduces_tensorflow(bundle, reference, inp, out, crop):
    """The bundle's model (as inference calls it: (B, T=1, C, h, w)) gives TF's outputs."""
    with torch.no_grad():
        y = bundle.model(_nchw(reference[inp])[:, None]).permute(0, 2, 3, 1).numpy()
    if crop:
        y = y[:, crop:-crop, crop:-crop]
    assert y.shape == reference[out].shape
    err = np.abs(y - reference[out]).max()
    assert err <= 1e-5, err


@pytest.mark.parametrize("window", [5, 17, 64])
def test_windows_equal_one_pass(bundle, reference, window):
    """Windows with the network's reach as margin give exactly the one-pass result."""
    x = reference["random_input"].transpose(0, 3, 1, 2)
    y = run_network(bundle.net, x, margin=6, window=window, clip=(-1, 2))
    np.testing.assert_allclose(y.transpose(0, 2, 3, 1), reference["random_output"], atol=1e-5)


def test_preparation_reproduces_the_reference_input(patch, reference):
    """The reference input (six clearest dates; arrays in the NetCDF row order, south-up) is
    our preparation of the same real bands; on the patch grid (on the 40 m lattice) the tile
    path prepares the same from the 20 m bands read as 2x2 blocks."""
    b10, b20, scl = patch
    clear = np.isin(scl, [4, 5, 6]).mean(axis=(1, 2))
    idx = np.sort(np.argsort(-clear)[:6])
    x = prepare_reference(b10[idx, :, ::-1], b20[idx, :, ::-1])
    np.testing.assert_allclose(x, reference["input"].transpose(0, 3, 1, 2), atol=1e-6)
    nearest = np.concatenate([b10[idx], b20[idx].repeat(2, -2).repeat(2, -1)], axis=1)
    assert lattice_phase(PATCH_TRANSFORM) == (0, 0)
    np.testing.assert_allclose(
        prepare_tile(nearest, (0, 0)), prepare_reference(b10[idx], b20[idx]), atol=1e-7
    )


@pytest.mark.parametrize(("oy", "ox"), [(1, 3), (2, 2), (3, 1), (5, 6)])
def test_tile_preparation_sits_on_the_zone_lattice(patch, oy, ox):
    """A crop at any offset, prepared with its own phase, equals the whole patch's preparation
    beyond 5 px from its edges: the result depends on the pixel, not on the array."""
    b10, b20, _ = patch
    full = np.concatenate([b10[:3], b20[:3].repeat(2, -2).repeat(2, -1)], axis=1)
    ref = prepare_tile(full, (0, 0))
    t = list(PATCH_TRANSFORM)
    t[2] += 10 * ox
    t[5] -= 10 * oy
    crop = full[..., oy : oy + 40, ox : ox + 44]
    got = prepare_tile(crop, lattice_phase(t))
    m = 5
    np.testing.assert_allclose(
        got[..., m:-m, m:-m], ref[..., oy + m : oy + 40 - m, ox + m : ox + 44 - m], atol=1e-6
    )
    assert not np.allclose(got[..., :2, :], ref[..., oy : oy + 2, ox : ox + 44], atol=1e-6)


def test_wald_protocol_network_beats_bilinear(bundle, patch):
    """Degrade every band 2x, super-resolve back to 20 m, compare with the real 20 m bands on
    clear pixels of the dates >= 90 % clear: the network's mean RMSE is below bilinear's."""
    b10, b20, scl = patch
    clear_px = np.isin(scl, [4, 5, 6])
    dates = clear_px.mean(axis=(1, 2)) >= 0.9
    mask = clear_px[dates] & np.isfinite(b20[dates]).all(1)
    res = wald_protocol(bundle.net, b10[dates], b20[dates], mask)
    lines = [
        f"{b}: network {v['network']:.4f} bilinear {v['bilinear']:.4f}" for b, v in res.items()
    ]
    print(f"Wald's protocol, {int(dates.sum())} dates:\n" + "\n".join(lines))
    assert res["mean"]["network"] < 0.8 * res["mean"]["bilinear"]
    assert all(res[b]["network"] < res[b]["bilinear"] for b in DSEN2_OUTPUTS)


# ---- the run path: cubes of adjacent tiles -------------------------------------------------------

HALO = 23  # odd: tile origins are not on the 20 m / 40 m lattice


@pytest.fixture(scope="module")
def sr_world(tmp_path_factory):
    from geoxai.geo.grid import TileSpec
    from geoxai.synthetic.world import SyntheticWorld, WorldParams

    tiles = tuple(TileSpec(32631, 960 + c, 9380, tile_size_m=600) for c in range(2))
    world = SyntheticWorld(
        WorldParams(
            tiles=tiles,
            margin_px=24,
            start=date(2023, 6, 1),
            end=date(2023, 6, 16),
            clouds=False,
            swath_edge_prob=0.5,  # nodata edges: NaN must not leak across the tile border
        )
    )
    return tiles, world.write(tmp_path_factory.mktemp("srworld"))


def _run_config(archive, bundle_path, root):
    from geoxai.config import load_run_config

    return load_run_config(
        {
            "name": "sr",
            "aoi": "3.0,50.0,3.1,50.1",
            "year": 2023,
            "stac": {"url": str(archive.ndjson), "margin_days": 0},
            "store": {"root": str(root)},
            "models": {"prediction": "unused"},
            "processing": {
                "halo_px": HALO,
                "tile_size_m": 600,
                "super_resolution": {"bundle": str(bundle_path)},
            },
        }
    )


@pytest.mark.slow
def test_adjacent_tiles_agree_in_their_overlap(bundle, sr_world, tmp_path):
    """Two neighbours' cubes, super-resolved on their own, agree in their overlap beyond
    required_halo_px from either array's edge, and so do the smoothed features of the run path
    (mapping.stage_cube with the option reads the 20 m bands as blocks, tile_features applies
    the network before smoothing)."""
    from geoxai.io import store
    from geoxai.mapping.cube_stage import stage_cube
    from geoxai.mapping.stages import tile_features

    tiles, archive = sr_world
    cfg = _run_config(archive, bundle.path, tmp_path / "store")
    west, east = (t.with_halo(HALO) for t in tiles)
    cubes, feats, valid = [], [], []
    for tile in (west, east):
        stage = stage_cube(tile, cfg)
        assert stage.status == "ok", stage.reason
        raw = store.read_cube(stage.url).load()
        assert raw.attrs["resampling"] == "nearest"
        cubes.append(superresolve_cube(raw, bundle))
        ds, _ = tile_features(raw, tile, cfg, list(DSEN2_BANDS), superres=bundle)
        feats.append(ds["features"].values)
        valid.append(ds["valid"].values)
    k = required_halo_px()
    ov = 2 * HALO  # columns both arrays hold
    a, b = (c.values for c in cubes)
    sl_a, sl_b = slice(-ov + k, -k), slice(k, ov - k)
    np.testing.assert_allclose(a[..., sl_a], b[..., sl_b], atol=1e-6)
    assert np.isnan(a).any() and np.isfinite(a[..., sl_a]).any()
    np.testing.assert_array_equal(valid[0][:, sl_a], valid[1][:, sl_b])
    assert valid[0][:, sl_a].sum() > 500  # smoothed features compared on valid pixels
    np.testing.assert_allclose(feats[0][..., sl_a], feats[1][..., sl_b], atol=1e-5)
    bands = list(cubes[0].band.values)
    i = bands.index("B11")  # the network changed the SWIR blocks
    raw_w = store.read_cube(stage_cube(west, cfg).url).values
    assert np.nanmax(np.abs(a[:, i] - raw_w[:, i])) > 1e-3


def test_refuses_a_cube_resampled_bilinearly(bundle, sr_world):
    from geoxai.io.cube import build_cube
    from geoxai.io.stac import read_items

    tiles, archive = sr_world
    raw = build_cube(read_items(archive.ndjson), tiles[0].with_halo(4), resampling="bilinear")
    with pytest.raises(InvalidInputError, match="resampling='nearest'"):
        superresolve_cube(raw, bundle)


class _Spy:
    """A numpy cube read through xarray's lazy indexing that records the rows each read asks."""

    def __init__(self, values):
        self.values, self.shape, self.dtype, self.ndim = values, values.shape, values.dtype, 4
        self.rows: list[tuple[int, int]] = []

    def __getitem__(self, key):
        y = key[2].indices(self.shape[2])
        self.rows.append(y[:2])
        return self.values[key]


@pytest.fixture(scope="module")
def small_windows(graph, tmp_path_factory):
    """The bundle with 24 px windows: the whole cube's pass is windowed in rows too."""
    path = import_dsen2_lite(graph, tmp_path_factory.mktemp("sr24") / "b", window_px=24)
    return load_superres_bundle(path)


@pytest.mark.parametrize(
    ("cuts", "windows"), [((17, 40, 64, 70), False), ((1, 2, 50), False), ((64,), True)]
)
def test_row_blocks_equal_the_whole_cube(bundle, small_windows, sr_world, cuts, windows):
    """Rows read block by block (any cut, on or off the 40 m lattice) hold exactly (bit for bit)
    what superresolve_cube computes for the whole cube, and a block's read asks the raw cube
    for its rows plus required_halo_px only: the run (mapping.superresolved) streams."""
    bundle = small_windows if windows else bundle
    import xarray as xr

    from geoxai.io.cube import build_cube
    from geoxai.io.cube_rows import lazy_array
    from geoxai.io.stac import read_items
    from geoxai.mapping.stages import superresolved

    tiles, archive = sr_world
    raw = build_cube(read_items(archive.ndjson), tiles[0].with_halo(HALO), resampling="nearest")
    raw = raw.load()
    whole = superresolve_cube(raw, bundle)
    spy = _Spy(raw.values)
    lazy_raw = xr.DataArray(lazy_array(spy), dims=raw.dims, coords=raw.coords, attrs=raw.attrs)
    lazy = superresolved(lazy_raw, bundle)
    assert lazy.attrs["super_resolution"] == whole.attrs["super_resolution"]
    ny = raw.sizes["y"]
    edges = [0, *cuts, ny]
    h = required_halo_px()
    got = []
    for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
        spy.rows.clear()
        got.append(lazy.isel(y=slice(r0, r1)).values)
        assert spy.rows == [(max(0, r0 - h), min(ny, r1 + h))]
    stacked = np.concatenate(got, axis=2)
    np.testing.assert_array_equal(stacked, whole.values)  # NaN where NaN, else bit equal
    # one date alone is one network batch of 1, not of 4: torch's convolution may sum in
    # another order there (measured: <= 1.2e-7 with 24 px windows), so float noise only
    sel = lazy.isel(time=1, band=[4, 9], y=slice(3, 30, 2), x=slice(5, 9)).values
    np.testing.assert_allclose(sel, whole.values[1, [4, 9], 3:30:2, 5:9], rtol=0, atol=1e-6)


def test_run_config_option(bundle, sr_world, tmp_path):
    from geoxai.config import load_run_config

    _, archive = sr_world
    on = _run_config(archive, bundle.path, tmp_path)
    doc = on.model_dump(mode="json")
    doc["processing"].pop("super_resolution")
    off = load_run_config(doc)
    assert off.processing.super_resolution is None
    assert on.output_hash() != off.output_hash()
    with pytest.raises(ConfigError, match="bundel"):
        load_run_config({**doc, "processing": {"super_resolution": {"bundel": "x"}}})


def test_other_bundles_are_refused(tmp_path):
    from geoxai.models.tf_graph_torch import import_tf_bundle
    from tests.models.test_tf_graph import _small_net

    pb = tmp_path / "net.pb"
    pb.write_bytes(_small_net())
    path = import_tf_bundle(pb, tmp_path / "b", features=["a", "b"])
    with pytest.raises(ModelBundleError, match="wri-dsen2-lite"):
        load_superres_bundle(path)


def test_truncated_real_graph_is_refused(graph):
    """Cut at every node boundary (where a prefix is still a valid protobuf) and at 50 random
    places: always a typed error, never a smaller graph."""
    from tensorboardX.proto.graph_pb2 import GraphDef

    data = graph.read_bytes()
    g = GraphDef()
    g.ParseFromString(data)
    cuts, pos = [], 0
    for node in g.node:
        n = node.ByteSize()
        pos += 1 + len(_varint(n)) + n
        cuts.append(pos)
    rng = np.random.default_rng(1)
    cuts += [int(c) for c in rng.integers(1, len(data) - 1, 50)] + [len(data) - 1]
    assert max(cuts) < len(data)  # the library trailer follows the last node
    for c in cuts:
        with pytest.raises(GraphImportError, match="truncated|not a readable"):
            read_graph(data[:c])
    assert read_graph(data).n_weights == 41_640  # + 48 int32 paddings = WRI's 41,688


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_cli_import_tf(graph, reference, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "bundle"
    res = CliRunner().invoke(app, ["models", "import-tf", str(graph), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wri-dsen2-lite" in res.output and read_graph(graph).sha256[:16] in res.output
    b = load_superres_bundle(out)
    assert b.spec.source.licence == "GPL-3.0" and b.spec.inputs.features == list(DSEN2_BANDS)
    assert b.spec.preparation["reach_px"] == 6
    with torch.no_grad():
        y = b.net(_nchw(reference["random_input"])).permute(0, 2, 3, 1).numpy()
    assert np.abs(y - reference["random_output"]).max() <= 1e-5
    bad = CliRunner().invoke(
        app, ["models", "import-tf", str(graph), "--out", str(out), "--architecture", "tf-grap"]
    )
    assert bad.exit_code != 0 and "tf-graph" in str(bad.exception)
