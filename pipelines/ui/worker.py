"""Child process of the UI: runs one training or prediction through the library, then exits.

The server starts it as ``python -m pipelines.ui.worker train CONFIG.yaml [--resume]`` or
``python -m pipelines.ui.worker predict BUNDLE OUT.tif RASTERS.json``. A separate process keeps
the page responsive, lets the server stop a run, and makes training exactly what
``geoxai train segment CONFIG.yaml`` does (same config loader, same workflow call).
The last stdout line is ``GEOXAI_RESULT=<path>`` on success; a typed error is written to stderr
as ``error: <Type>: <message>`` and exits with 2 (the CLI's convention).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from geoxai.errors import GeoXAIError
from pipelines.ui.jobs import RESULT_PREFIX


def _train(config_path: str, resume: bool) -> Path:
    from geoxai.train.workflows import load_workflow_config, run_workflow

    config = load_workflow_config("segment", config_path)
    return Path(run_workflow("segment", config, resume=resume))


def _predict(bundle: str, out: str, rasters_json: str) -> Path:
    from geoxai.io.rasters import RasterInput
    from geoxai.train.segment import predict_segment

    rasters = [RasterInput(**r) for r in json.loads(Path(rasters_json).read_text())]
    return Path(predict_segment(bundle, rasters or None, out))


def main(argv: list[str] | None = None) -> int:
    """Run the job named by ``argv``; return the process exit code (0 ok, 2 typed error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["train"] and len(args) in (2, 3):
            result = _train(args[1], resume=args[2:] == ["--resume"])
        elif args[:1] == ["predict"] and len(args) == 4:
            result = _predict(args[1], args[2], args[3])
        else:
            print(
                "usage: python -m pipelines.ui.worker train CONFIG.yaml [--resume] | "
                "predict BUNDLE OUT.tif RASTERS.json",
                file=sys.stderr,
            )
            return 64
    except GeoXAIError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"{RESULT_PREFIX}{result}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through the UI test's subprocess
    sys.exit(main())
