"""The run, stage by stage: planning (tiles, what is done, checks), the cube stage, per-tile
features, inference and explanations, exactly-once outputs and records, change layers, COGs,
the STAC catalog and the report. The only package that chains io -> temporal -> inference/xai ->
outputs; the Ray driver (``pipelines.run``) calls these functions.

Modules: ``catalog``, ``cube_stage``, ``outcomes``, ``plan``, ``radar``, ``radar_dem``,
``radar_s1``, ``records``, ``report``, ``scene``, ``settings``, ``stages``. Names below load on
first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=[
        "catalog",
        "cube_stage",
        "outcomes",
        "plan",
        "radar",
        "radar_dem",
        "radar_s1",
        "records",
        "report",
        "scene",
        "settings",
        "stages",
    ],
    submod_attrs={
        "catalog": [
            "COG_MEDIA_TYPE",
            "ZARR_MEDIA_TYPE",
            "VRT_MEDIA_TYPE",
            "build_collection",
            "write_catalog",
            "check_catalog",
        ],
        "cube_stage": [
            "stage_cube",
        ],
        "outcomes": [
            "CubeStage",
        ],
        "plan": [
            "RunPlan",
            "plan_run",
        ],
        "radar": [
            "S1_FEATURES",
            "TERRAIN_FEATURES",
            "radar_needs",
            "radar_layers",
        ],
        "radar_dem": [
            "terrain",
        ],
        "radar_s1": [
            "s1_steps",
        ],
        "records": [
            "RECORD_FORMAT",
            "STATUSES",
            "TileState",
            "write_tile",
            "write_status",
            "read_record",
            "read_records",
            "tile_state",
            "tile_is_done",
            "plan_tiles",
            "change_layers",
            "save_config",
            "layer_checksum",
        ],
        "report": [
            "STATUS_COLOURS",
            "tile_statuses",
            "stage_timings",
            "render_report",
            "write_report",
        ],
        "scene": [
            "classify_scene",
        ],
        "settings": [
            "run_layout",
            "preprocess_params",
            "date_range",
        ],
        "stages": [
            "TileModels",
            "QUALITY_CODES",
            "tile_features",
            "load_models",
            "asos_composite",
            "features_with_grid",
            "map_tile",
            "map_and_write",
            "record_empty_or_failed",
            "finish_run",
        ],
    },
)
