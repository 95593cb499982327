"""Reference numbers of main's preprocess (commit 8e1f089) on a small synthetic cube."""

import sys

sys.path.insert(0, "/work/main")
import numpy as np

from geoxai.temporal.clouds import CloudMaskParams
from geoxai.temporal.smoothing import PreprocessParams, SmoothingParams, preprocess
from tests.fixtures.cubes import synthetic_cube

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
