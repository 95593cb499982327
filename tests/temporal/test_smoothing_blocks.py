"""The smoothing stage near its kernel (issue 14) gives today's numbers.

* :func:`preprocess` against committed numbers (made by ``data/make_preprocess_reference.py``;
  main's 8e1f089 numbers until issue 15 entered observations at their exact times), per-pixel
  lambda choice and a fixed lambda, with several row blocks (the buffer and the pooled choice
  cross block edges), in memory and dask-backed.
* the scatter binning against the dense observation matrix ``B`` (exact times: two
  interpolation weights per observation), the held sampling against the sampling matrix at
  the positions clamped to each pixel's first/last observation.
* SCL weights against the old ``np.isin`` + distance-transform implementation (kept here) on
  real SCL layers.
* float32 node means against the float64 path on a real series; the torch block on CPU
  against the numpy path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from geoxai.errors import InvalidInputError
from geoxai.temporal.axis import (
    SmoothingParams,
    bin_series,
    binning_matrix,
    fine_grid,
    sampling_matrix,
    solve_groups,
)
from geoxai.temporal.binning import (
    bin_to_grid,
    binned_buffers,
    first_columns,
    interp_nodes,
    obs_nodes,
    sample_held,
)
from geoxai.temporal.clouds import CloudMaskParams, buffer_mask, scl_weights
from geoxai.temporal.smoothing import (
    PreprocessParams,
    preprocess,
    smooth_series,
    solve_and_sample,
)
from geoxai.temporal.whittaker import whittaker
from tests.fixtures.cubes import synthetic_cube

REF = Path(__file__).parent / "data" / "preprocess_exact_time.npz"
FEATURE_ATOL = 5e-7
"""Features vs the committed numbers (one in-memory block of 64 rows, made by
data/make_preprocess_reference.py): float32 output; row blocks and lazy reads must not move
them by more than a float32 ulp or so."""


def _ref_cube():
    raw, _ = synthetic_cube(7, ny=10, nx=12, cloud=0.05)  # as data/make_preprocess_reference.py
    return raw


@pytest.mark.parametrize("name, lam", [("choice", None), ("fixed", 100.0)])
@pytest.mark.parametrize("rows, lazy", [(4, False), (64, False), (4, True)])
def test_preprocess_equals_the_committed_numbers(name, lam, rows, lazy):
    ref = np.load(REF)
    raw = _ref_cube()
    if lazy:
        raw = raw.chunk({"y": 4})  # read block by block from a dask-backed cube
    params = PreprocessParams(
        clouds=CloudMaskParams(buffer_m=20.0),
        smoothing=SmoothingParams(year=2021, lambda_=lam),
    )
    ds = preprocess(raw, params, rows_per_block=rows)
    np.testing.assert_allclose(ds["features"].values, ref[f"{name}_features"], atol=FEATURE_ATOL)
    for k in ("valid", "n_obs", "max_gap_days", "edge_gap_days"):
        np.testing.assert_array_equal(ds[k].values, ref[f"{name}_{k}"], err_msg=k)
    if lam is None:
        np.testing.assert_array_equal(ds["lambda_choice"].values, ref["choice_lambda_choice"])
        assert np.unique(ref["choice_lambda_choice"]).size > 2  # the choice has teeth


def _series(seed: int = 0, t: int = 70, n: int = 500):
    rng = np.random.default_rng(seed)
    days = np.sort(rng.uniform(-60.0, 420.0, t))
    values = rng.uniform(0.0, 0.5, (t, 4, n)).astype(np.float32)
    w = (rng.random((t, n)) > 0.4).astype(np.float32) * rng.choice([0.5, 1.0], (t, n))
    values[np.broadcast_to((w == 0)[:, None], values.shape)] = np.nan  # weight 0: anything
    return values, w.astype(np.float32), days


def test_scatter_binning_equals_the_dense_observation_matrix():
    values, w, days = _series()
    sp = SmoothingParams(year=2021)
    nodes, (ybar, wsum, woff, n_obs, ends) = bin_series(values, w, days, sp)
    bt, inside = binning_matrix(days, nodes)  # B' (G, T): two interpolation weights per column
    wi = np.where(inside[:, None], w, 0.0).astype(np.float64)
    yv = np.where(wi[:, None, :] > 0, values, 0.0)
    for q in range(0, values.shape[2], 37):  # B' W B and B' W y per pixel
        a = bt @ (wi[:, q, None] * bt.T)
        np.testing.assert_allclose(wsum[:, q], np.diag(a), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(woff[1:, q], np.diag(a, -1), rtol=1e-12, atol=1e-15)
        assert np.allclose(np.triu(a, 2), 0.0)  # tridiagonal: the banded solve still applies
        rhs = bt @ (wi[:, q, None] * yv[:, :, q])
        got = np.where(wsum[:, q, None] > 0, ybar[:, :, q] * wsum[:, q, None], 0.0)
        np.testing.assert_allclose(got, rhs, rtol=1e-9, atol=1e-15)
        pos = np.clip((days - nodes[0]) / 5.0, 0, nodes.size - 1)  # clamped to the grid
        seen = pos[(wi[:, q] > 0) & inside]
        np.testing.assert_allclose(ends[:, q], [seen.min(), seen.max()], rtol=1e-12)
    assert np.array_equal(n_obs, (wi > 0).sum(axis=0))
    assert np.isnan(ybar).any() and (wsum == 0).any()  # empty nodes exist and are NaN
    y32 = bin_to_grid([values[:, :2], values[:, 2:]], w, obs_nodes(days, nodes), nodes.size)[0]
    np.testing.assert_allclose(y32, ybar, rtol=1e-6, equal_nan=True)


def test_exact_time_observations_on_nodes_equal_the_diagonal_smoother():
    """Observations on nodes enter with one weight (the snapped data term, ``woff`` 0); off
    the nodes, the near-interpolating order-1 smoother passes through them at their times."""
    sp = SmoothingParams(year=2021, lambda_=1e-6, order=1, min_obs=2)
    nodes = fine_grid(sp)
    days = np.array([10.0, 52.0, 101.5, 230.0])
    y = np.array([0.1, 0.5, 0.2, 0.4])[:, None, None]
    w = np.ones((4, 1))
    on = nodes[np.searchsorted(nodes, days)]
    _, binned = bin_series(y, w, on, sp)
    assert (binned.woff == 0).all()
    z = whittaker(binned.ybar, binned.wsum, 1e-6, 1).z
    np.testing.assert_allclose(np.interp(on, nodes, z[:, 0, 0]), y[:, 0, 0], atol=1e-5)
    got, ok, _ = smooth_series(y, w, days, sp, at_days=days)
    assert ok.all()
    np.testing.assert_allclose(got[:, 0, 0], y[:, 0, 0], atol=1e-5)


def test_held_sampling_equals_the_sampling_matrix_at_clamped_positions():
    values, w, days = _series(1)
    sp = SmoothingParams(year=2021, lambda_=50.0)
    nodes, binned = bin_series(values, w, days, sp)
    z = whittaker(binned.ybar, binned.wsum, 500.0, 2, off=binned.woff).z
    for at in ((np.arange(24) + 0.5) * 15.0, np.sort(days)):
        lo, frac = interp_nodes(nodes, at)
        got = sample_held(z, binned.ends, lo, frac, np.ones(z.shape[2], bool))
        for q in range(0, z.shape[2], 41):
            lo_d, hi_d = nodes[0] + 5.0 * binned.ends[:, q]
            ref = sampling_matrix(nodes, np.clip(at, lo_d, hi_d)) @ z[:, :, q]
            np.testing.assert_allclose(got[:, :, q], ref, rtol=1e-12, atol=1e-15)


def test_float32_node_means_against_the_float64_path_on_a_real_series(realdata):
    from tests.fixtures.realdata_series import read_series

    s = read_series("worldcereal_ts_patch", realdata)
    sp = s.smoothing
    nodes = fine_grid(sp)
    at = obs_nodes(s.days, nodes)
    lo, frac = interp_nodes(nodes, (np.arange(sp.n_steps) + 0.5) * sp.step_days)
    w = s.weights * np.isfinite(s.values).all(axis=1)
    choice = np.arange(s.values.shape[2]) % len(sp.lambda_candidates)
    out = {}
    for dt in (np.float32, np.float64):
        binned = bin_to_grid([s.values], w, at, nodes.size, dtype=dt)
        out[dt] = solve_and_sample(binned, sp, lo, frac, choice=choice)[0]
    err = np.nanmax(np.abs(out[np.float32] - out[np.float64]))
    print(f"\nworldcereal_ts_patch: float32 vs float64 node means, max abs error {err:.2e}")
    # measured 1.0e-6 (5e-7 with observations snapped to nodes): the right-hand side over a
    # small diagonal entry (an observation near the other node) is stored as float32
    assert np.isfinite(out[np.float64]).any() and err < 2e-6


def _scl_weights_main(scl: np.ndarray, p: CloudMaskParams, res: float) -> np.ndarray:
    """main's scl_weights (np.isin classes, a distance transform per date), for reference."""
    finite = np.isfinite(scl)
    cls = np.where(finite, scl, 0).astype(np.int16)
    buffered = np.isin(cls, p.buffered_classes) & finite
    masked = np.isin(cls, p.masked_classes) | ~finite
    r = p.buffer_m / res
    for t in range(buffered.shape[0]):
        if buffered[t].any() and not buffered[t].all():
            masked[t] |= ndimage.distance_transform_edt(~buffered[t]) <= r
        elif buffered[t].all():
            masked[t] = True
    w = np.ones(scl.shape, dtype=np.float32)
    w[np.isin(cls, p.reduced_classes)] = np.float32(p.reduced_weight)
    w[masked] = 0.0
    return w


def _real_scl(root: Path) -> dict[str, np.ndarray]:
    from tests.fixtures.realdata_series import read_nc
    from tests.temporal.test_temporal_realdata import worldcereal_ts_cube

    raw, _ = worldcereal_ts_cube(root)
    out = {"worldcereal_ts_patch": raw.sel(band="SCL").values.astype(np.float32)}
    for f in ("cdse_sentinel2_l2a.nc", "bap_quintad_cdse.nc", "test_optical_cube.nc"):
        a, _, _ = read_nc(root / "openeo_gfmap_cubes" / f, "S2-L2A-SCL")
        out[f] = a.astype(np.float32)
    return out


@pytest.mark.realdata
def test_scl_weights_equal_the_distance_transform_on_real_scl(realdata):
    """Table look-up + separable disk dilation == isin + distance transform, bit for bit."""
    for name, scl in _real_scl(realdata).items():
        scl = scl.copy()
        scl[:, :2, :3] = np.nan  # missing values: masked, never buffered
        for buffer_m in (40.0, 25.0, 10.0, 0.0):
            for res in (10.0, 20.0):
                p = CloudMaskParams(buffer_m=buffer_m)
                want = _scl_weights_main(scl, p, res)
                np.testing.assert_array_equal(scl_weights(scl, p, res), want, err_msg=name)
        codes = np.where(np.isfinite(scl), scl, 0).astype(np.uint8)  # a uint8 SCL layer
        p = CloudMaskParams()
        want = _scl_weights_main(codes.astype(np.float32), p, 10.0)
        np.testing.assert_array_equal(scl_weights(codes, p, 10.0), want)
        assert (want == 0).any() and (want == 1).any()


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5, 2.0, 2.9, 4.0, 5.5, 7.0])
def test_buffer_is_the_euclidean_disk(radius):
    rng = np.random.default_rng(3)
    m = rng.random((3, 40, 50)) < 0.01
    want = np.stack([ndimage.distance_transform_edt(~f) <= radius for f in m])
    np.testing.assert_array_equal(buffer_mask(m, radius), want)


def test_torch_block_on_cpu_equals_the_numpy_path():
    pytest.importorskip("torch")
    values, w, days = _series(2, n=300)
    for lam in (None, 30.0):
        sp = SmoothingParams(year=2021, lambda_=lam)
        a, va, na = smooth_series(values, w, days, sp, criterion_channels=[0, 1])
        b, vb, nb = smooth_series(values, w, days, sp, criterion_channels=[0, 1], device="cpu")
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(na, nb)
        np.testing.assert_allclose(b, a, atol=1e-10, equal_nan=True)
        assert va.any()


def _block_main(binned, sp, lo, frac, choice, bounds):
    """main's block path (kept here, in numpy): each candidate's pixels solved, sampled held
    to float32 (NaN where not valid), scattered back; then ``np.clip`` per channel and 0
    where not valid, as preprocess did before sampling straight into the tile's rows."""
    ybar, wsum, woff, n_obs, ends = binned
    g, c, n = ybar.shape
    sm = np.full((lo.size, c, n), np.nan, dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    for k, (_, order, lam) in enumerate(solve_groups(sp)):
        pix = np.nonzero(choice == k)[0]
        if pix.size == 0:
            continue
        res = whittaker(ybar, wsum, lam, order, pixels=pix, off=woff)
        ok = res.valid & (n_obs[pix] >= sp.min_obs)
        pos = np.clip((lo + frac)[:, None], ends[0, pix], ends[1, pix])  # (S, M) held
        a = np.minimum(np.floor(pos).astype(np.int64), g - 2)
        f = (pos - a)[:, None, :]
        ch, q = np.arange(c)[None, :, None], np.arange(pix.size)[None, None, :]
        z0, z1 = res.z[a[:, None, :], ch, q], res.z[a[:, None, :] + 1, ch, q]
        sm[:, :, pix] = np.where(ok, (1.0 - f) * z0 + f * z1, np.nan)
        valid[pix] = ok
    np.clip(sm, bounds[0][None, :, None], bounds[1][None, :, None], out=sm)
    sm[:, :, ~valid] = 0.0
    return sm, valid


def _check_block_into_rows(values, w, days, sp, choice, bounds):
    nodes = fine_grid(sp)
    lo, frac = interp_nodes(nodes, (np.arange(sp.n_steps) + 0.5) * sp.step_days)
    binned = bin_to_grid([values], w, obs_nodes(days, nodes), nodes.size)
    want, want_ok = _block_main(binned, sp, lo, frac, choice, bounds)
    n, c = values.shape[2], values.shape[1]
    rows, nx = n // 10, 10
    tile = np.full((sp.n_steps, c, rows + 5, nx), 7.0, dtype=np.float32)
    dest = tile[:, :, 2 : 2 + rows].reshape(sp.n_steps, c, -1)  # a view: a row block
    assert np.shares_memory(dest, tile)
    got, ok = solve_and_sample(binned, sp, lo, frac, choice=choice, out=dest, clip=bounds, fill=0)
    assert got is dest
    np.testing.assert_array_equal(ok, want_ok)
    np.testing.assert_array_equal(
        tile[:, :, 2 : 2 + rows].view(np.uint32),
        want.reshape(sp.n_steps, c, rows, nx).view(np.uint32),
    )  # bit for bit, signed zeros included
    assert (tile[:, :, :2] == 7.0).all() and (tile[:, :, 2 + rows :] == 7.0).all()
    return want, want_ok


def test_sampling_into_the_tile_rows_equals_sample_clip_zero_scatter():
    """solve_and_sample writing each candidate's clipped samples straight into a row block
    of the tile (``out``/``clip``/``fill``) == main's sample, scatter, np.clip, zero."""
    values, w, days = _series(2, n=600)
    values[:5, 1] = 0.9  # above the clip: clipped in float32
    w[:, :20] = 0.0  # two observations (< min_obs): not valid
    w[[10, 40], :20] = 1.0
    values[[10, 40], :, :20] = 0.2
    sp = SmoothingParams(year=2021)
    choice = np.random.default_rng(4).integers(0, len(sp.lambda_candidates), 600)
    bounds = (np.float32([0.05, 0.1, -0.2, 0.0]), np.float32([0.45, 0.3, 0.2, 0.5]))
    want, ok = _check_block_into_rows(values, w, days, sp, choice, bounds)
    assert (~ok).any() and ok.any()  # too few observations somewhere: 0 there
    for k, bound in enumerate(bounds):  # clipping has teeth on both sides
        assert (want[:, :, ok] == bound[None, :, None]).any(axis=(0, 2)).all(), k
    fixed = SmoothingParams(year=2021, lambda_=100.0)
    _check_block_into_rows(values, w, days, fixed, np.zeros(600, np.int64), bounds)


def test_sampling_into_the_tile_rows_on_a_real_series(realdata):
    from tests.fixtures.realdata_series import read_series

    s = read_series("worldcereal_ts_patch", realdata)
    w = s.weights * np.isfinite(s.values).all(axis=1)
    n = s.values.shape[2] // 10 * 10
    values, w = s.values[:, :, :n], w[:, :n]
    choice = np.arange(n) % len(s.smoothing.lambda_candidates)
    c = values.shape[1]
    bounds = (np.zeros(c, np.float32), np.full(c, 0.3, np.float32))
    want, ok = _check_block_into_rows(values, w, s.days, s.smoothing, choice, bounds)
    assert ok.any() and (want[:, :, ok] == 0.3).any()


def test_sample_held_names_columns_outside_out():
    z = np.zeros((5, 1, 3))
    ends = np.array([[0.0] * 3, [4.0] * 3])
    lo, frac = np.array([0, 1]), np.array([0.5, 0.5])
    out = np.zeros((2, 1, 3))
    with pytest.raises(InvalidInputError, match="cols span 1..3"):
        sample_held(z, ends, lo, frac, np.ones(3, bool), out=out, cols=np.array([1, 2, 3]))
    with pytest.raises(InvalidInputError, match="do not fit"):
        sample_held(z, ends, lo, frac, np.ones(3, bool), out=np.zeros((2, 2, 3)))


def test_binning_into_reused_buffers_equals_fresh_arrays():
    """bin_to_grid ``into`` buffers reused block after block (a shorter last block in their
    first columns) give the fresh arrays bit for bit: nothing of the block before leaks."""
    sp = SmoothingParams(year=2021)
    nodes = fine_grid(sp)
    bufs = binned_buffers(nodes.size, 4, 500)
    for seed, n in ((3, 500), (4, 500), (5, 320)):  # the last block: fewer pixels
        values, w, days = _series(seed, n=n)
        w[:, :7] = 0.0  # pixels without observations: ends 0, G - 1
        at = obs_nodes(days, nodes)
        want = bin_to_grid([values[:, :1], values[:, 1:]], w, at, nodes.size)
        into = first_columns(bufs, n)
        assert all(np.shares_memory(a, b) for a, b in zip(into, bufs, strict=True))
        got = bin_to_grid([values[:, :1], values[:, 1:]], w, at, nodes.size, into=into)
        for name, a, b in zip(want._fields, got, want, strict=True):
            assert a.shape == b.shape, name
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=name)
    with pytest.raises(InvalidInputError, match=r"into.ybar is float64"):
        bin_to_grid([values], w, at, nodes.size, into=binned_buffers(nodes.size, 4, n, np.float64))


def test_compute_indices_into_a_buffer_equals_the_stacked_indices(realdata):
    from geoxai.geo.bands import S2_BANDS
    from geoxai.temporal.indices import IndexParams, compute_indices
    from tests.temporal.test_temporal_realdata import worldcereal_ts_cube

    raw, _ = worldcereal_ts_cube(realdata)
    refl = raw.sel(band=list(S2_BANDS)).values.reshape(raw.sizes["time"], 10, -1)
    params = IndexParams(("NDVI", "EVI", "BI", "MSAVI2", "GRNDVI"))
    want = np.stack(
        [compute_indices(refl, S2_BANDS, IndexParams((n,)))[:, 0] for n in params.indices], 1
    )
    buf = np.full((refl.shape[0], 5, refl.shape[2]), np.nan, dtype=refl.dtype)
    got = compute_indices(refl, S2_BANDS, params, out=buf)
    assert got is buf
    np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidInputError, match="compute_indices: out is float64"):
        compute_indices(refl, S2_BANDS, params, out=buf.astype(np.float64))
