"""The spectral mask against real reference masks (../shared/realdata, via `realdata`).

References: the L2A scene classification (SCL, mapped by :func:`scl_classes`: 3 -> shadow,
8/9/10 -> cloud) of the WorldCereal patch (118 dates, Belgium 2017/18, SCL at 20 m) and of
three openEO GFMAP cubes (CDSE 2022/23; ``bap_quintad`` is a best-available-pixel composite,
not single acquisitions), and the s2cloudless mask (CLM) of eo-learn's 5 L1C scenes. Solar
angles from acquisition time and place (:func:`solar_angles`; ``tests/temporal/realmasks.py``).

Measured with the defaults (``SpectralMaskParams()``), each date classified **alone** (no
series: the projected shadow test only), precision / recall / F1:

==========================  =================  =================  ================
case (bands)                cloud P / R / F1   shadow P / R / F1  reference
==========================  =================  =================  ================
worldcereal_ts_patch (5)    0.97 / 0.87 / 0.91 0.52 / 0.03 / 0.05 SCL
cdse_sentinel2_l2a (4*)     1.00 / 0.90 / 0.95 (no SCL shadow)    SCL
bap_quintad_cdse (4)        0.85 / 0.82 / 0.83 -    / 0.00 / 0.00 SCL (composite)
test_optical_cube (4)       1.00 / 0.83 / 0.91 (no SCL shadow)    SCL
eolearn_testeopatch (13)    1.00 / 0.70 / 0.82 (no shadow ref)    s2cloudless CLM
==========================  =================  =================  ================

(4*: B01 B04 B08 B11, B01 standing in for blue; 4: B02 B03 B04 B08, no SWIR.)

Shadows on single dates. The WorldCereal patch is 640 m wide: most of its SCL shadows (11,528
pixel-dates) are cast by clouds outside it (dates with shadow and no cloud in the patch at
all), which no single-date rule can see. Of the 304 SCL shadow pixels that lie within the
projection reach of an SCL cloud inside the patch, the single-date rule finds 85 %. With the
series (the temporal test as the extra), shadow P / R / F1 = 0.73 / 0.99 / 0.84 on the
WorldCereal patch and 0.74 / 0.44 / 0.55 on ``bap_quintad``.

Weights (what the smoother sees) with the default 40 m buffer, single dates, masked pixels
against SCL cloud or shadow: precision 0.87, recall 0.86 on the WorldCereal patch (0.96 / 0.82
without the buffer).

Known misses: SCL's thin cirrus (class 10, B02 ~0.10) is mostly not found without B10; SCL's
medium-probability cloud edges (class 8) are found at ~75 %.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from geoxai.temporal.clouds import CloudMaskParams, class_weights
from geoxai.temporal.masks import (
    CLOUD,
    NODATA,
    SHADOW,
    SNOW,
    SpectralMaskParams,
    mask_scores,
    project_clouds,
    spectral_classes,
)
from tests.temporal import realmasks

pytestmark = pytest.mark.realdata

P = SpectralMaskParams()


def _single_dates(case: realmasks.MaskCase) -> np.ndarray:
    """Each date classified on its own (no series)."""
    az, el = case.sun
    return np.concatenate(
        [
            spectral_classes(
                case.refl[i : i + 1],
                case.bands,
                P,
                case.resolution_m,
                sun=(az[i : i + 1], el[i : i + 1]),
            )
            for i in range(case.refl.shape[0])
        ]
    )


def _report(case: realmasks.MaskCase, scores: dict, how: str) -> None:
    cells = " | ".join(
        f"{k} P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f} (n_ref {v['n_ref']:.0f})"
        for k, v in scores.items()
    )
    print(f"{case.name} vs {case.reference}, {how}: {cells}")


@pytest.fixture(scope="module")
def wc(realdata):
    return realmasks.worldcereal(realdata)


def test_worldcereal_single_dates_find_clouds_and_shadows(wc):
    cls = _single_dates(wc)
    s = mask_scores(cls, wc.ref)
    _report(wc, s, "single dates")
    assert s["cloud"]["f1"] > 0.88 and s["cloud"]["precision"] > 0.95
    assert s["shadow"]["recall"] > 0.02 and s["shadow"]["precision"] > 0.45
    # the shadows a single date can explain: within reach of a cloud in the patch
    reach = np.stack(
        [
            project_clouds(wc.ref[i] == CLOUD, wc.sun[0][i], wc.sun[1][i], P, wc.resolution_m)
            for i in range(wc.ref.shape[0])
        ]
    )
    ref_sh = (wc.ref == SHADOW) & reach
    found = float(((cls == SHADOW) & ref_sh).sum() / ref_sh.sum())
    print(
        f"SCL shadows within reach of an SCL cloud in the patch: {int(ref_sh.sum())}, "
        f"found {found:.2f}"
    )
    assert ref_sh.sum() > 200 and found > 0.75


def test_worldcereal_series_adds_the_temporal_test(wc):
    cls = spectral_classes(wc.refl, wc.bands, P, wc.resolution_m, sun=wc.sun)
    s = mask_scores(cls, wc.ref)
    _report(wc, s, "series")
    assert s["shadow"]["recall"] > 0.9 and s["shadow"]["precision"] > 0.65
    assert s["cloud"]["f1"] > 0.88


def test_worldcereal_weights_with_the_default_buffer(wc):
    cls = _single_dates(wc)
    bad = np.isin(wc.ref, (CLOUD, SHADOW))
    keep = (wc.ref != NODATA) & ~np.isin(cls, (NODATA, SNOW))
    out = {}
    for buf in (0.0, 40.0):
        w = class_weights(cls, CloudMaskParams(method="spectral", buffer_m=buf), wc.resolution_m)
        masked = (w == 0) & keep
        out[buf] = (
            float((masked & bad).sum() / masked.sum()),
            float((masked & bad).sum() / (bad & keep).sum()),
        )
        print(
            f"weights, buffer {buf:g} m: masked precision {out[buf][0]:.3f}, "
            f"recall {out[buf][1]:.3f}"
        )
    assert out[40.0][0] > 0.8 and out[40.0][1] > out[0.0][1]


@pytest.mark.parametrize(
    "name, min_f1",
    [("cdse_sentinel2_l2a", 0.9), ("bap_quintad_cdse", 0.78), ("test_optical_cube", 0.85)],
)
def test_openeo_cubes_clouds_against_scl(realdata, name, min_f1):
    case = realmasks.openeo(realdata, name)
    s = mask_scores(_single_dates(case), case.ref)
    _report(case, s, "single dates")
    assert s["cloud"]["f1"] > min_f1


def test_eolearn_clouds_against_s2cloudless(realdata):
    """L1C top-of-atmosphere scenes (13 bands): two overcast dates, three clear ones."""
    case = realmasks.eolearn(realdata)
    cls = _single_dates(case)
    s = mask_scores(cls, case.ref, (CLOUD,))
    _report(case, s, "single dates")
    assert s["cloud"]["precision"] > 0.99 and s["cloud"]["recall"] > 0.6
    clear_dates = ~(case.ref == CLOUD).any(axis=(1, 2))
    assert clear_dates.sum() == 3 and not (cls[clear_dates] == CLOUD).any()


def test_no_warning_when_every_date_has_its_angles(wc):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectral_classes(
            wc.refl[:5], wc.bands, P, wc.resolution_m, sun=(wc.sun[0][:5], wc.sun[1][:5])
        )
