"""Reference numbers of preprocess on a small synthetic cube (observations at their exact
times, issue 15), run from the repository root:

    python tests/temporal/data/make_preprocess_reference.py \
        tests/temporal/data/preprocess_exact_time.npz
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import numpy as np  # noqa: E402

from geoxai.temporal.clouds import CloudMaskParams  # noqa: E402
from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams, preprocess  # noqa: E402
from tests.fixtures.cubes import synthetic_cube  # noqa: E402

raw, _ = synthetic_cube(7, ny=10, nx=12, cloud=0.05)
out = {}
for name, lam in (("choice", None), ("fixed", 100.0)):
    ds = preprocess(
        raw,
        PreprocessParams(
            clouds=CloudMaskParams(buffer_m=20.0), smoothing=SmoothingParams(year=2021, lambda_=lam)
        ),
    )
    out[f"{name}_features"] = ds["features"].values
    out[f"{name}_valid"] = ds["valid"].values
    out[f"{name}_n_obs"] = ds["n_obs"].values
    out[f"{name}_max_gap_days"] = ds["max_gap_days"].values
    out[f"{name}_edge_gap_days"] = ds["edge_gap_days"].values
    if lam is None:
        out["choice_lambda_choice"] = ds["lambda_choice"].values
np.savez_compressed(sys.argv[1], **out)
print({k: (v.shape, float(np.mean(v))) for k, v in out.items()})
