"""Networks and what makes them portable: the TemporalUNet/U-Net core, scene backbones, the ASOS
and SpacEX networks, losses, model bundles (``model.json`` + safe weights, registry of
architectures), and frozen TensorFlow graphs imported without TensorFlow (WRI's DSen2-lite).
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "unet": ["TemporalUNet", "UNet2d"],
        "bundle": [
            "LoadedBundle",
            "load_bundle",
            "save_bundle",
            "wrap_module",
            "register_architecture",
        ],
        "bundle_spec": ["BundleSpec"],
        "onnx_export": ["export_onnx"],
        "asos_net": ["ASOSNet"],
        "spacex_nets": ["SpacexGenerators"],
        "backbones": ["ResNet18Classifier", "SimpleCNN"],
        "losses": ["make_loss"],
        "dsen2": ["DSen2Lite", "import_dsen2_lite", "load_superres_bundle"],
        "tf_graph": ["read_graph"],
        "tf_graph_torch": ["GraphModule", "import_tf_bundle"],
    },
)
