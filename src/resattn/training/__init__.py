"""Training application: settings, the Trainer and its callbacks, checkpoints, distributed jobs.

- :mod:`~resattn.training.config`: :class:`TrainConfig` and the choices of each setting;
- :mod:`~resattn.training.recipe`: learning-rate schedule, targets, mixup, seeding, devices;
- :mod:`~resattn.training.state`: :class:`TrainState`, where a run stands;
- :mod:`~resattn.training.trainer`: :class:`Trainer` (``train_step``, ``train_epoch``,
  ``validate``, ``fit``), :func:`evaluate` and the wrapper :func:`fit`;
- :mod:`~resattn.training.callbacks`: Ctrl-C, progress, metrics and logs, checkpoints,
  curves;
- :mod:`~resattn.training.checkpoint`: checkpoint pairs (``.params`` and ``.states``);
- :mod:`~resattn.training.states`: the ``.states`` format and the optimizer state it holds;
- :mod:`~resattn.training.legacy_states`: the reader of resattn 0.1's ``.states`` files;
- :mod:`~resattn.training.rundir`: the run directory's lock and temporary files;
- :mod:`~resattn.training.distributed`: kvstores and the workers of a job;
- :mod:`~resattn.training.launch`: starting those workers (``resattn launch``).
"""
from .._lazy import attach as _attach

__getattr__, __dir__, __all__ = _attach(__name__, {
    ".config": ["TrainConfig", "NonFiniteLossError", "KVSTORES", "LR_MODES", "OPTIMIZERS",
                "NONFINITE", "INITS", "DTYPES"],
    ".recipe": ["get_context", "make_lr_scheduler", "smooth_labels", "mixup_batch",
                "seed_everything", "split_batch", "SeededInitializer"],
    ".state": ["TrainState"],
    ".trainer": ["Trainer", "StepResult", "fit", "evaluate"],
    ".callbacks": ["Callback", "InterruptHandler", "ProgressBar", "HealthCheck", "MetricsLogger",
                   "Checkpointer", "CurvePlotter", "ConfigWriter", "RunConfig",
                   "default_callbacks", "run_health"],
    ".checkpoint": ["save_checkpoint", "load_checkpoint"],
    ".rundir": ["prepare_run_dir"],
    ".distributed": ["create_kvstore", "Workers"],
    "..viz": ["plot_curves"],
})
