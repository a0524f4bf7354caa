"""Training application: settings, the Trainer and its callbacks, checkpoints, distributed jobs."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    ".config": ["TrainConfig", "NonFiniteLossError", "KVSTORES", "LR_MODES", "OPTIMIZERS",
                "NONFINITE", "INITS", "DTYPES"],
    ".trainer": ["fit", "evaluate", "make_lr_scheduler", "mixup_batch", "smooth_labels",
                 "get_context", "save_checkpoint", "load_checkpoint", "create_kvstore",
                 "plot_curves"],
})
