"""Training: one trainer (:func:`~geoxai.train.trainer.fit`: checkpoints, resume, seeds, early
stopping, schedules, gradient averaging under torch.distributed), the workflow registry behind
``geoxai train NAME CONFIG``, and one module per task, each a
:class:`~geoxai.train.trainer.BaseTask`.
"""

import lazy_loader as _lazy

# The public surface, loaded on first use (each module's __all__ lists the rest).
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "trainer": ["BaseTask", "FitParams", "fit"],
        "workflows": ["run_workflow", "workflow_names", "example_config"],
    },
)
