"""Training: one trainer (:func:`~geoxai.train.trainer.fit`: checkpoints, resume, seeds, early
stopping, schedules, gradient averaging under torch.distributed), the workflow registry behind
``geoxai train NAME CONFIG``, and one module per task, each a
:class:`~geoxai.train.trainer.BaseTask`.

Modules: ``asos``, ``classify``, ``distributed``, ``history``, ``registry``, ``segment``,
``segment_data``, ``spacex``, ``temporal``, ``temporal_workflow``, ``trainer``. Names below load on
first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=[
        "asos",
        "classify",
        "distributed",
        "history",
        "registry",
        "segment",
        "segment_data",
        "spacex",
        "temporal",
        "temporal_workflow",
        "trainer",
    ],
    submod_attrs={
        "asos": [
            "TrainParams",
            "train_asos",
            "AsosTask",
            "load_labelled_images",
            "AsosConfig",
            "train_asos_workflow",
            "train_asos_images",
        ],
        "classify": [
            "MODELS",
            "BAND_PRESETS",
            "FILE_LAYOUTS",
            "ClassifyConfig",
            "PatchData",
            "read_patches",
            "resolve_bands",
            "ClassifyTask",
            "evaluate_classifier",
            "train_classifier",
        ],
        "distributed": [
            "is_main_process",
            "shard",
        ],
        "history": [
            "plot_history",
            "progress_bar",
            "write_metrics",
        ],
        "registry": [
            "WORKFLOWS",
            "FitParamsModel",
            "workflow_names",
            "workflow_config_class",
            "load_workflow_config",
            "run_workflow",
            "save_config",
            "example_config",
        ],
        "segment": [
            "SegmentConfig",
            "SegmentTask",
            "train_segment",
            "check_segment",
            "predict_segment",
            "training_rasters",
            "iou_counts",
            "ARCHITECTURE",
        ],
        "segment_data": [
            "TileSplit",
            "split_tiles",
            "band_statistics",
        ],
        "spacex": [
            "save_spacex_bundle",
            "SpacexParams",
            "SpacexTask",
            "SpacexConfig",
            "lsgan_loss",
            "activation_loss",
            "generator_losses",
            "train_gan",
            "TrainReport",
            "train_spacex",
        ],
        "temporal": [
            "TemporalTrainParams",
            "TemporalTask",
            "window_origins",
            "fit_normalization",
            "train_temporal",
            "save_temporal_bundle",
            "evaluate_map",
        ],
        "temporal_workflow": [
            "TemporalTile",
            "TemporalConfig",
            "load_training_tile",
            "train_temporal_workflow",
        ],
        "trainer": [
            "FitParams",
            "TrainTask",
            "BaseTask",
            "FitResult",
            "fit",
            "prepare_out_dir",
            "lr_factor",
            "epoch_generator",
            "LR_SCHEDULES",
        ],
    },
)
