"""Inference seamless by construction: windows on a lattice fixed per UTM zone, Gaussian
importance weights, a merger of weighted predictions (numpy or torch), and class maps of scenes.
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "windows": ["WindowParams", "WindowMerger", "gaussian_weights", "lattice_origin"],
        "predict": ["predict_windows"],
        "scene": ["scene_probabilities"],
    },
)
