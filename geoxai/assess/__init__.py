"""Good-practice accuracy and area estimation from reference samples (Olofsson et al. 2014):
stratified estimators with standard errors (``estimators``) and sample allocation
(``sampling``). Pure: arrays in, value objects out; reading runs and point files is in
:mod:`geoxai.mapping.assess` and :mod:`geoxai.io.points`.

Modules: ``estimators``, ``sampling``. Names below load on first use.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["estimators", "sampling"],
    submod_attrs={
        "estimators": [
            "Z95",
            "SampleDesignError",
            "Estimate",
            "StratifiedDesign",
            "ClassAccuracy",
            "CategoricalAccuracy",
            "ContinuousAccuracy",
            "assess_categorical",
            "assess_continuous",
        ],
        "sampling": ["allocate"],
    },
)
