"""Spectral mask: classes, single-date shadow projection, missing sun angles, seams, scores."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import xarray as xr

from geoxai.errors import ConfigError, InvalidInputError
from geoxai.geo.bands import SUN_AZIMUTH, SUN_ELEVATION
from geoxai.io.stac_items import item_sun_angles
from geoxai.temporal.clouds import CloudMaskParams, required_halo_px, spectral_weights
from geoxai.temporal.indices import IndexParams
from geoxai.temporal.masks import (
    CLEAR,
    CLOUD,
    NODATA,
    SHADOW,
    SNOW,
    WATER,
    MissingSunAnglesWarning,
    SpectralMaskParams,
    cube_sun_angles,
    mask_scores,
    project_clouds,
    scl_classes,
    shadow_reach_px,
    solar_angles,
    spectral_classes,
)
from geoxai.temporal.smoothing import (
    PreprocessParams,
    SmoothingParams,
    observation_weights,
    preprocess,
)

BANDS = ("B02", "B03", "B04", "B08", "B11")
VEG = np.array([0.03, 0.06, 0.04, 0.35, 0.18], np.float32)
CLOUDY = np.array([0.45, 0.45, 0.45, 0.5, 0.35], np.float32)
DARK = np.array([0.02, 0.03, 0.02, 0.08, 0.05], np.float32)  # shadowed vegetation
SNOWY = np.array([0.6, 0.6, 0.6, 0.55, 0.05], np.float32)
WATERY = np.array([0.04, 0.05, 0.03, 0.02, 0.01], np.float32)
NOTEMP = SpectralMaskParams(temporal_shadow=False)


def _field(ny: int = 200, nx: int = 200, t: int = 1) -> np.ndarray:
    return np.broadcast_to(VEG[None, :, None, None], (t, 5, ny, nx)).copy()


def _put(refl: np.ndarray, t: int, rows: slice, cols: slice, spec: np.ndarray) -> None:
    refl[t, :, rows, cols] = spec[:, None, None]


def test_one_date_shadow_lies_away_from_the_sun():
    """Sun in the south at 45 degrees: a cloud's shadow is 200..1200 m north of it.

    One date, no series: the temporal test cannot help, the projection alone finds it."""
    refl = _field()
    _put(refl, 0, slice(150, 160), slice(95, 105), CLOUDY)
    _put(refl, 0, slice(90, 100), slice(95, 105), DARK)  # 600 m north: shadow
    _put(refl, 0, slice(170, 180), slice(95, 105), DARK)  # 200 m south: towards the sun
    _put(refl, 0, slice(90, 100), slice(20, 30), DARK)  # north-west, out of the sun's line
    sun = (np.array([180.0]), np.array([45.0]))
    cls = spectral_classes(refl, BANDS, NOTEMP, 10.0, sun=sun)[0]
    assert (cls[150:160, 95:105] == CLOUD).all()
    assert (cls[90:100, 95:105] == SHADOW).all()
    assert (cls[170:180, 95:105] == CLEAR).all()
    assert (cls[90:100, 20:30] == CLEAR).all()
    assert (cls == SHADOW).sum() == 100


@pytest.mark.parametrize(
    "azimuth, elevation, drow, dcol",
    [(180.0, 45.0, -1, 0), (90.0, 45.0, 0, -1), (0.0, 45.0, 1, 0), (135.0, 30.0, -1, -1)],
)
def test_projection_direction_and_distance(azimuth, elevation, drow, dcol):
    cloud = np.zeros((301, 301), bool)
    cloud[150, 150] = True
    p = SpectralMaskParams(cloud_heights_m=(300.0, 600.0), max_shadow_distance_m=5000.0)
    proj = project_clouds(cloud, azimuth, elevation, p, 10.0)
    rr, cc = np.nonzero(proj)
    dist = np.hypot(rr - 150, cc - 150) * 10.0
    tan_el = math.tan(math.radians(elevation))
    assert dist.min() == pytest.approx(300.0 / tan_el, abs=15.0)
    assert dist.max() == pytest.approx(600.0 / tan_el, abs=15.0)
    assert np.all(np.sign(rr - 150) == drow) and np.all(np.sign(cc - 150) == dcol)
    # the cap on the horizontal distance
    capped = project_clouds(cloud, azimuth, elevation, SpectralMaskParams(), 10.0)
    far = np.hypot(*(np.nonzero(capped) - np.array([[150], [150]]))).max() * 10.0
    assert far <= 1200.0 + 10.0
    # rows running south to north flip the row direction only
    up = project_clouds(cloud, azimuth, elevation, p, 10.0, y_ascending=True)
    np.testing.assert_array_equal(up, proj[::-1])
    # no sun, no projection
    assert not project_clouds(cloud, azimuth, -3.0, p, 10.0).any()
    assert not project_clouds(cloud, math.nan, 40.0, p, 10.0).any()


def test_classes_snow_water_nodata_and_the_temporal_extra():
    refl = _field(8, 8, t=12)
    _put(refl, 1, slice(0, 2), slice(0, 2), CLOUDY)
    _put(refl, 2, slice(0, 2), slice(0, 2), SNOWY)
    _put(refl, 3, slice(0, 2), slice(0, 2), DARK)  # no cloud on this date: temporal test only
    refl[:, :, 5, 5] = WATERY[None, :]  # water every date is water, never shadow
    refl[4, 0, 7, 7] = np.nan
    sun = (np.full(12, 170.0), np.full(12, 50.0))
    cls = spectral_classes(refl, BANDS, SpectralMaskParams(), 10.0, sun=sun)
    assert (cls[1, :2, :2] == CLOUD).all() and (cls[2, :2, :2] == SNOW).all()
    assert (cls[3, :2, :2] == SHADOW).all()
    assert (cls[:, 5, 5] == WATER).all()
    assert cls[4, 7, 7] == NODATA
    assert (cls[0] == CLEAR).sum() == 63
    # without the temporal extra the cloudless date has no shadow
    single = spectral_classes(refl, BANDS, NOTEMP, 10.0, sun=sun)
    assert (single[3, :2, :2] == CLEAR).all()


def test_missing_sun_angles_warn_and_fall_back_to_the_temporal_test():
    refl = _field(60, 40, t=10)
    _put(refl, 2, slice(40, 50), slice(10, 20), CLOUDY)
    _put(refl, 2, slice(10, 20), slice(10, 20), DARK)
    sun = (np.full(10, 180.0), np.full(10, 45.0))
    sun[0][2] = np.nan
    with pytest.warns(MissingSunAnglesWarning, match="1 of 10 dates"):
        cls = spectral_classes(refl, BANDS, NOTEMP, 10.0, sun=sun)
    assert (cls[2, 10:20, 10:20] == SHADOW).all()  # found by the temporal test
    with pytest.warns(MissingSunAnglesWarning):
        w = spectral_weights(refl, BANDS, CloudMaskParams(method="spectral"), 10.0)
    assert np.isfinite(w).all() and (w[2, 10:20, 10:20] == 0).all()


def test_seamless_adjacent_tiles_agree_given_the_declared_halo():
    """Two crops with halo >= required_halo_px give the full scene's weights in their cores."""
    rng = np.random.default_rng(3)
    t, ny, nx = 3, 120, 420
    refl = _field(ny, nx, t=t)
    for k in range(t):
        for _ in range(12):
            r, c = rng.integers(0, ny - 8), rng.integers(0, nx - 8)
            _put(refl, k, slice(r, r + 8), slice(c, c + 8), CLOUDY)
        dark = rng.random((ny, nx)) < 0.3
        refl[k, :, dark] = DARK[None, :]
    sun = (np.array([150.0, 200.0, 95.0]), np.array([40.0, 25.0, 60.0]))
    p = CloudMaskParams(
        method="spectral",
        buffer_m=20.0,
        spectral=SpectralMaskParams(max_shadow_distance_m=600.0),
    )
    halo = required_halo_px(p, 10.0)
    assert halo == 2 + 60
    full = spectral_weights(refl, BANDS, p, 10.0, sun=sun)
    for x0, x1 in ((halo, 210), (210, nx - halo)):
        crop = refl[..., x0 - halo : x1 + halo]
        w = spectral_weights(crop, BANDS, p, 10.0, sun=sun)[..., halo:-halo]
        np.testing.assert_array_equal(w, full[..., x0:x1])
    short = 10  # a halo that covers the buffer but not the projection
    w = spectral_weights(refl[..., 210 - short :], BANDS, p, 10.0, sun=sun)[..., short:]
    assert not np.array_equal(w, full[..., 210:])


def test_halo_declares_the_projection_only_where_the_spectral_mask_can_run():
    assert shadow_reach_px(SpectralMaskParams(), 10.0) == 120
    assert shadow_reach_px(SpectralMaskParams(max_shadow_distance_m=0.0), 10.0) == 0
    assert required_halo_px(CloudMaskParams(method="scl"), 10.0) == 4
    assert required_halo_px(CloudMaskParams(method="spectral"), 10.0) == 124
    assert required_halo_px(CloudMaskParams(method="spectral"), 20.0) == 62
    assert required_halo_px(CloudMaskParams(), 10.0) == 124  # "auto" may fall back
    assert required_halo_px(CloudMaskParams(), 10.0, ["B04", "SCL"]) == 4
    assert required_halo_px(CloudMaskParams(), 10.0, ["B02", "B04", "B08"]) == 124


def _cube(refl: np.ndarray, sun: tuple[np.ndarray, np.ndarray] | None) -> xr.DataArray:
    t = refl.shape[0]
    coords: dict = {
        "time": np.datetime64("2021-06-01", "ns") + np.arange(t) * np.timedelta64(5, "D"),
        "band": list(BANDS),
        "y": 5_000_000.0 - 10.0 * np.arange(refl.shape[2]),
        "x": 500_000.0 + 10.0 * np.arange(refl.shape[3]),
    }
    if sun is not None:
        coords[SUN_AZIMUTH] = ("time", sun[0])
        coords[SUN_ELEVATION] = ("time", sun[1])
    return xr.DataArray(refl, dims=("time", "band", "y", "x"), coords=coords, name="reflectance")


def test_cube_without_scl_uses_its_sun_angles_and_pixel_size():
    """observation_weights reads the angles from the cube's coords and the pixel size from x."""
    refl = _field(200, 200)
    _put(refl, 0, slice(150, 160), slice(95, 105), CLOUDY)
    _put(refl, 0, slice(60, 70), slice(95, 105), DARK)  # 800..1000 m north
    params = PreprocessParams(
        clouds=CloudMaskParams(method="spectral", buffer_m=0.0, spectral=NOTEMP),
        smoothing=SmoothingParams(year=2021),
    )
    raw = _cube(refl, (np.array([180.0]), np.array([45.0])))
    np.testing.assert_array_equal(cube_sun_angles(raw)[0], [180.0])
    w = observation_weights(raw, params)
    assert (w[0, 60:70, 95:105] == 0).all() and (w[0, 150:160, 95:105] == 0).all()
    assert w.sum() == 200 * 200 - 200
    # 20 m pixels (from the x spacing): the dark patch is 1600..2000 m away, beyond the cap
    raw20 = raw.assign_coords(x=500_000.0 + 20.0 * np.arange(200))
    w20 = observation_weights(raw20, params)
    assert (w20[0, 60:70, 95:105] == 1).all()
    with pytest.warns(MissingSunAnglesWarning):
        w0 = observation_weights(_cube(refl, None), params)
    assert (w0[0, 60:70, 95:105] == 1).all()


def test_features_stay_finite_without_sun_angles():
    rng = np.random.default_rng(0)
    t = 40
    refl = _field(6, 6, t=t) * rng.uniform(0.9, 1.1, (t, 1, 6, 6)).astype(np.float32)
    for k in range(0, t, 4):
        _put(refl, k, slice(0, 3), slice(0, 6), CLOUDY)
    refl[:, :, 5, 5] = np.nan  # a pixel that never has data
    raw = _cube(refl, None)
    raw = raw.assign_coords(
        time=np.datetime64("2021-01-03", "ns") + np.arange(t) * 9 * 86400 * 10**9
    )
    params = PreprocessParams(
        bands=BANDS,
        clouds=CloudMaskParams(method="spectral"),
        smoothing=SmoothingParams(year=2021),
        indices=IndexParams(indices=("NDVI",)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingSunAnglesWarning)
        ds = preprocess(raw, params)
    assert np.isfinite(ds["features"].values).all()
    assert not bool(ds["valid"][5, 5]) and bool(ds["valid"][0, 0])


def test_mask_scores_and_scl_classes():
    ref = np.array([CLOUD, CLOUD, SHADOW, CLEAR, NODATA, CLEAR])
    pred = np.array([CLOUD, CLEAR, SHADOW, CLOUD, CLOUD, SHADOW])
    s = mask_scores(pred, ref)
    assert s["cloud"]["precision"] == 0.5 and s["cloud"]["recall"] == 0.5  # nodata left out
    assert s["shadow"]["precision"] == 0.5 and s["shadow"]["recall"] == 1.0
    assert s["shadow"]["f1"] == pytest.approx(2 / 3)
    assert math.isnan(mask_scores(pred, ref, (SNOW,))["snow"]["recall"])
    scl = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, np.nan])
    assert scl_classes(scl).tolist() == [5, 5, 0, 2, 0, 0, 4, 0, 1, 1, 1, 3, 5]
    with pytest.raises(InvalidInputError, match="not classes"):
        scl_classes(np.array([4.0, 12.0]))
    with pytest.raises(InvalidInputError, match="shape"):
        mask_scores(pred, ref[:3])


def test_item_sun_angles_from_either_extension():
    assert item_sun_angles({"view:sun_azimuth": 150.0, "view:sun_elevation": 60.0}) == (150, 60)
    az, el = item_sun_angles({"s2:mean_solar_azimuth": 160.0, "s2:mean_solar_zenith": 35.0})
    assert (az, el) == (160.0, 55.0)
    assert all(math.isnan(v) for v in item_sun_angles({"view:sun_azimuth": None}))


def test_solar_angles_known_positions():
    """Solar noon at the equinox on the equator: sun near the zenith; Belgium mid-June."""
    az, el = solar_angles(np.array(["2021-03-20T12:07"], dtype="datetime64[s]"), 0.0, 0.0)
    assert el[0] > 88.5
    az, el = solar_angles(np.array(["2021-06-21T11:48"], dtype="datetime64[s]"), 3.0, 50.8)
    assert el[0] == pytest.approx(90 - 50.8 + 23.44, abs=0.5) and az[0] == pytest.approx(180, abs=3)


@pytest.mark.realdata
def test_solar_angles_match_real_items(realdata):
    """Against the view:sun_* of real Earth Search / Planetary Computer items (scene means)."""
    n = 0
    for path in sorted((realdata / "stac_items").rglob("*.json")):
        doc = json.loads(path.read_text())
        for it in doc.get("features", [doc]) if isinstance(doc, dict) else doc:
            props = it.get("properties", {})
            az, el = item_sun_angles(props)
            if math.isnan(az) or "bbox" not in it:
                continue
            b = it["bbox"]
            when = np.array([props["datetime"].rstrip("Z")], dtype="datetime64[s]")
            a2, e2 = solar_angles(when, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
            assert abs((a2[0] - az + 180) % 360 - 180) < 1.5 and abs(e2[0] - el) < 1.0, it["id"]
            n += 1
    assert n >= 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cloud_heights_m": (3000.0, 200.0)}, "cloud_heights_m"),
        ({"cloud_heights_m": (-1.0, 200.0)}, "cloud_heights_m"),
        ({"max_shadow_distance_m": -5.0}, "max_shadow_distance_m"),
        ({"temporal_min_clear": 0}, "temporal_min_clear"),
    ],
)
def test_bad_params_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SpectralMaskParams(**kwargs)


def test_bands_and_shapes_are_checked():
    with pytest.raises(InvalidInputError, match="lacks \\['B08'\\]"):
        spectral_classes(_field(4, 4)[:, :3], BANDS[:3], NOTEMP, 10.0)
    with pytest.raises(InvalidInputError, match="one band per name"):
        spectral_classes(_field(4, 4), BANDS[:4], NOTEMP, 10.0)
    with pytest.raises(InvalidInputError, match="one \\(azimuth, elevation\\) per date"):
        spectral_classes(_field(4, 4), BANDS, NOTEMP, 10.0, sun=(np.zeros(2), np.zeros(2)))
    # B01 stands in for a missing B02; no B03/B11: no snow, clouds still found
    refl = _field(4, 4)[:, [0, 2, 3]]
    refl[0, :, 0, 0] = CLOUDY[[0, 2, 3]]
    sun = (np.array([180.0]), np.array([45.0]))
    cls = spectral_classes(refl, ("B01", "B04", "B08"), NOTEMP, 10.0, sun=sun)
    assert cls[0, 0, 0] == CLOUD and (cls[0].ravel()[1:] == CLEAR).all()


def test_synthetic_world_single_date_shadows_through_the_cube(tmp_path):
    """End to end: items with view:sun_* -> build_cube coords -> single-date shadows.

    The synthetic world casts each date's clouds 500-1,500 m away from the sun (its own SCL
    is the truth). Measured on this 2 km tile, 13 dates, each date alone: cloud P/R/F1
    1.00/0.78/0.88, shadow 0.91/0.50/0.64.
    """
    from datetime import date

    from geoxai.geo.grid import TileSpec
    from geoxai.io.cube import build_cube
    from geoxai.io.stac import read_items
    from geoxai.synthetic.world import SyntheticWorld, WorldParams

    tile = TileSpec(32631, 288, 2814, tile_size_m=2000)
    params = WorldParams(
        tiles=(tile,),
        margin_px=130,
        start=date(2023, 6, 1),
        end=date(2023, 7, 31),
        swath_edge_prob=0.0,
    )
    archive = SyntheticWorld(params).write(tmp_path)
    halo = required_halo_px(CloudMaskParams(method="spectral"), 10.0)
    raw = build_cube(read_items(archive.ndjson), tile.with_halo(halo), resampling="nearest")
    raw = raw.load()
    az, el = cube_sun_angles(raw)
    assert np.isfinite(az).all() and np.isfinite(el).all()
    refl = raw.sel(band=list(BANDS)).values
    cls = np.concatenate(
        [
            spectral_classes(
                refl[i : i + 1], BANDS, NOTEMP, 10.0, sun=(az[i : i + 1], el[i : i + 1])
            )
            for i in range(refl.shape[0])
        ]
    )
    core = (slice(None), slice(halo, -halo), slice(halo, -halo))
    s = mask_scores(cls[core], scl_classes(raw.sel(band="SCL").values)[core])
    print({k: {m: round(v[m], 3) for m in ("precision", "recall", "f1")} for k, v in s.items()})
    assert s["cloud"]["precision"] > 0.95 and s["cloud"]["recall"] > 0.7
    assert s["shadow"]["precision"] > 0.8 and s["shadow"]["recall"] > 0.4
