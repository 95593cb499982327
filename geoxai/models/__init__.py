"""Networks and what makes them portable: the TemporalUNet/U-Net core, scene backbones, the ASOS
and SpacEX networks, losses, and model bundles (``model.json`` + safe weights, registry of
architectures).

Modules: ``asos_net``, ``backbones``, ``bundle``, ``bundle_spec``, ``losses``, ``spacex_nets``,
``unet``. Names below load on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["asos_net", "backbones", "bundle", "bundle_spec", "losses", "spacex_nets", "unet"],
    submod_attrs={
        "asos_net": [
            "ASOSNet",
            "INPUT_UNITS",
            "to_network_input",
            "check_image",
            "occlude",
            "random_occlusion",
            "predict_scores",
        ],
        "backbones": [
            "BAND_ADAPTERS",
            "RGB_BANDS",
            "SimpleCNN",
            "ResNet18Classifier",
            "resnet18_state_keys",
            "read_state_dict",
            "find_cached_resnet18",
            "load_pretrained_resnet18",
        ],
        "bundle": [
            "MODEL_JSON",
            "ARCHITECTURES",
            "register_architecture",
            "LoadedBundle",
            "load_bundle",
            "save_bundle",
            "wrap_module",
        ],
        "bundle_spec": [
            "InputSpec",
            "NormalizationSpec",
            "WindowSpec",
            "OutputSpec",
            "BundleSpec",
            "BundleModel",
            "VALIDITY_NAMES",
            "validity_mask",
        ],
        "losses": [
            "LOSSES",
            "LossFn",
            "bce",
            "weighted_bce",
            "dice",
            "bce_dice",
            "focal",
            "pos_weight_from_frequency",
            "make_loss",
        ],
        "spacex_nets": [
            "ResnetGenerator",
            "PatchDiscriminator",
            "SpacexGenerators",
            "ImageBuffer",
            "to_gan",
            "from_gan",
        ],
        "unet": [
            "TemporalUNet",
            "UNet2d",
        ],
    },
)
