"""Explanations without training: the ASOS sensitivity table (fit, merge, look-up, maps), SpacEX
attribution from trained generators, Captum baselines (occlusion, Grad-CAM, DeepLIFT), and the
top-q IoU evaluation that compares them.
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "asos": ["ASOSTable", "ASOSParams", "fit_partial", "merge_tables", "asos_map"],
        "spacex": ["spacex_attribution", "load_spacex_bundle"],
        "baselines": ["occlusion_map", "gradcam_map", "deeplift_map", "top_iou"],
        "evaluate": ["evaluate_attributions"],
    },
)
