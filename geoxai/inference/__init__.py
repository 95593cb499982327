"""Inference seamless by construction: windows on a lattice fixed per UTM zone, Gaussian
importance weights, a merger of weighted predictions (numpy or torch), and class maps of scenes.

Modules: ``predict``, ``scene``, ``windows``. Names below load on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["predict", "scene", "windows"],
    submod_attrs={
        "predict": [
            "predict_windows",
        ],
        "scene": [
            "scene_probabilities",
        ],
        "windows": [
            "REFERENCE_SIGMA_RATIO",
            "MIN_WEIGHT",
            "WindowParams",
            "Blended",
            "lattice_origin",
            "window_origins",
            "gaussian_weights",
            "required_halo",
            "check_halo",
            "WindowMerger",
        ],
    },
)
