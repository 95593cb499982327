"""Explanations without training: the ASOS sensitivity table (fit, merge, look-up, maps), SpacEX
attribution from trained generators, Captum baselines (occlusion, Grad-CAM, DeepLIFT), and the
top-q IoU evaluation that compares them.

Modules: ``asos``, ``baselines``, ``evaluate``, ``spacex``. Names below load on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["asos", "baselines", "evaluate", "spacex"],
    submod_attrs={
        "asos": [
            "ASOSParams",
            "ASOSTable",
            "QUANTUM",
            "TABLE_SIZE_WARN",
            "TableSizeWarning",
            "cube_index",
            "n_cubes_per_axis",
            "fit_partial",
            "merge_tables",
            "lookup",
            "activation_map",
            "asos_map",
            "DEFAULT_TRANSFORM",
        ],
        "baselines": [
            "ScoreModel",
            "occlusion_map",
            "gradcam_map",
            "deeplift_map",
            "top_mask",
            "top_iou",
            "activation_rgb",
            "image_rgb",
            "comparison_figure",
            "CLASS_SPECTRA",
            "cause_scenes",
        ],
        "evaluate": [
            "METHODS",
            "IoUTable",
            "evaluate_attributions",
            "load_eval_images",
            "write_table",
        ],
        "spacex": [
            "ScoreShift",
            "score_shift",
            "attribution",
            "spacex_figure",
            "freeze",
            "set_grad",
            "load_classifier",
            "generators_of",
            "spacex_attribution",
            "load_spacex_bundle",
            "META_KEY",
            "META_FILE",
        ],
    },
)
