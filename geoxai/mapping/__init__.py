"""The run, stage by stage: planning (tiles, what is done, checks), the cube stage, per-tile
features, inference and explanations, exactly-once outputs and records, change layers, COGs,
the STAC catalog and the report. The only package that chains io -> temporal -> inference/xai ->
outputs; the Ray driver (``pipelines.run``) calls these functions.
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "plan": ["RunPlan", "plan_run"],
        "settings": ["date_range", "preprocess_params", "run_layout"],
        "outcomes": ["CubeStage", "TileOutcome"],
        "protocol": ["RunStages", "STAGES"],
        "cube_stage": ["stage_cube"],
        "stages": [
            "load_models",
            "features_with_grid",
            "annual_composite",
            "tile_features",
            "superresolved",
            "map_tile",
            "map_and_write",
            "record_empty_or_failed",
            "finish_run",
        ],
        "ancillary": ["ancillary_layers"],
        "records": ["write_tile", "read_records", "plan_tiles"],
        "report": ["write_report"],
        "catalog": ["write_catalog"],
        "assess": ["RunMap", "StrataSpec", "census", "draw_sample", "map_at_points"],
        "assess_report": ["assess_run", "write_assessment"],
        "scene": ["classify_scene"],
    },
)
