"""Training settings: :class:`TrainConfig` and the choices of each setting.

Importing this module does not import MXNet (the CLI takes its choices from here).
"""
import dataclasses
import math
import os

__all__ = ["TrainConfig", "NonFiniteLossError", "check_kvstore", "check_num_workers",
           "max_loader_workers", "default_warmup_epochs", "KVSTORES", "LR_MODES", "OPTIMIZERS",
           "NONFINITE", "INITS", "DTYPES", "LOADER_WORKERS_PER_CPU", "WARMUP_EPOCHS",
           "INIT_ONLY_FIELDS"]

#: How gradients are aggregated: on one machine ('local', 'device') or across the
#: workers of a parameter-server job (``dist_*``, under ``resattn launch``).
KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
#: Learning-rate decay after warm-up (GluonCV ``LRScheduler`` modes).
LR_MODES = ("cosine", "step", "linear", "poly", "constant")
#: 'nag' is Nesterov SGD, the recipe's optimizer.
OPTIMIZERS = ("nag", "sgd", "adam")
#: On a NaN/inf loss: stop (keeping the last good checkpoint) or skip the batch.
NONFINITE = ("stop", "skip")
#: Parameter initialisation of a fresh run.
INITS = ("msraprelu", "xavier")
#: float16 trains with MXNet AMP on a GPU.
DTYPES = ("float32", "float16")


def check_kvstore(name):
    """``name`` if it is one of :data:`KVSTORES`, else a ValueError listing them."""
    if name not in KVSTORES:
        raise ValueError("kvstore must be one of %s, got %r" % (", ".join(KVSTORES), name))
    return name


#: Most data-loading processes (``--num-workers``) per CPU this process may use. Each is a
#: fork of the training process; beyond a few per core they only contend for the cores
#: (and every one holds its own batches in memory).
LOADER_WORKERS_PER_CPU = 4


def _usable_cpus():
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def max_loader_workers():
    """The most data-loading processes allowed here: :data:`LOADER_WORKERS_PER_CPU` per
    CPU this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``)."""
    return LOADER_WORKERS_PER_CPU * _usable_cpus()


def check_num_workers(num_workers, option="--num-workers"):
    """``num_workers`` if it is an integer in ``[0, max_loader_workers()]``, else a ValueError
    naming the value, the cap and why."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError("%s must be an integer >= 0 (0: load in the main process), got %r"
                         % (option, num_workers))
    cap = max_loader_workers()
    if num_workers > cap:
        raise ValueError("%s %d is more than the %d data-loading processes allowed here (%d per "
                         "CPU, %d CPUs usable): each is a fork of this process, and more than "
                         "that only contend for the cores"
                         % (option, num_workers, cap, LOADER_WORKERS_PER_CPU, _usable_cpus()))
    return num_workers


#: Warm-up epochs of the recipe (``TrainConfig.warmup_epochs``' default).
WARMUP_EPOCHS = 5


def default_warmup_epochs(epochs):
    """The recipe's warm-up for a run of ``epochs``: :data:`WARMUP_EPOCHS` (5), or
    ``epochs - 1`` for a shorter run, whose warm-up must end before its last epoch."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        return WARMUP_EPOCHS  # TrainConfig names the bad ``epochs``
    return min(WARMUP_EPOCHS, epochs - 1)


#: Settings that only decide how a run initialises its network: a resumed run (which loads
#: its parameters) ignores them, and a checkpoint written before one existed resumes.
INIT_ONLY_FIELDS = ("init", "zero_init_residual")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
    """Every training setting; saved as ``config.json`` so a run can be repeated.

    ``lr=None`` means ``0.1 * batch_size / 64`` (the linear scaling rule with
    the seed's base rate). ``mixup_off_epochs`` switches mixup off for the
    last epochs; ``lr_steps`` are epochs for ``lr_mode='step'``.
    ``zero_init_residual`` (default True) starts every residual unit as the
    identity, the last layer of its branch at zero
    (:func:`resattn.models.blocks.zero_init_residual`); it only acts when a run
    initialises the network (not on resume or fine-tuning). Measured in
    ``docs/attention.md``: over 10 seeds of the demo recipe cut to 9 epochs, test
    top-1 0.973 +- 0.007 with it against 0.883 +- 0.070 without.
    """
    epochs: int = 220
    batch_size: int = 64
    lr: float = None
    optimizer: str = "nag"
    momentum: float = 0.9
    wd: float = 1e-4
    no_wd: bool = True
    lr_mode: str = "cosine"
    warmup_epochs: int = WARMUP_EPOCHS
    lr_steps: tuple = (80, 120)
    lr_decay: float = 0.1
    mixup_alpha: float = 1.0
    mixup_off_epochs: int = 20
    label_smoothing: float = 0.0
    init: str = "msraprelu"
    zero_init_residual: bool = True
    seed: int = 0
    dtype: str = "float32"
    nonfinite: str = "stop"
    kvstore: str = "device"
    log_interval: int = 0

    def __post_init__(self):
        self._check_types()
        self.lr_steps = tuple(self.lr_steps)
        checks = [
            ("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size,
             isinstance(self.batch_size, int) and self.batch_size >= 1, ">= 1"),
            ("lr", self.lr, self.lr is None or (self.lr > 0 and math.isfinite(self.lr)),
             "> 0 (or None for 0.1 x batch/64)"),
            ("optimizer", self.optimizer, self.optimizer in OPTIMIZERS, "one of %s" % (OPTIMIZERS,)),
            ("momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)"),
            ("wd", self.wd, self.wd >= 0, ">= 0"),
            ("lr_mode", self.lr_mode, self.lr_mode in LR_MODES, "one of %s" % (LR_MODES,)),
            ("warmup_epochs", self.warmup_epochs, 0 <= self.warmup_epochs < self.epochs,
             "in [0, epochs=%d)" % self.epochs),
            ("lr_steps", self.lr_steps, all(0 < s for s in self.lr_steps), "positive epochs"),
            ("lr_decay", self.lr_decay, 0 < self.lr_decay <= 1, "in (0, 1]"),
            ("mixup_alpha", self.mixup_alpha, self.mixup_alpha >= 0, ">= 0 (0: off)"),
            ("mixup_off_epochs", self.mixup_off_epochs, self.mixup_off_epochs >= 0, ">= 0"),
            ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("init", self.init, self.init in INITS, "one of %s" % (INITS,)),
            ("dtype", self.dtype, self.dtype in DTYPES, "one of %s" % (DTYPES,)),
            ("nonfinite", self.nonfinite, self.nonfinite in NONFINITE, "one of %s" % (NONFINITE,)),
        ]
        check_kvstore(self.kvstore)
        for name, value, ok, allowed in checks:
            if not ok:
                raise ValueError("%s must be %s, got %r" % (name, allowed, value))

    def _check_types(self):
        """Settings from JSON files or Python must have the fields' types (no silent casts)."""
        for field in dataclasses.fields(self):
            value, default = getattr(self, field.name), field.default
            if field.name == "lr" and value is None:
                continue
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float) or field.name == "lr":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value)
                if ok:
                    setattr(self, field.name, float(value))
            elif isinstance(default, str):
                ok = isinstance(value, str)
            else:  # lr_steps
                ok = isinstance(value, (list, tuple)) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value)
            if not ok:
                kind = {bool: "true or false", int: "an integer", float: "a finite number",
                        str: "a string"}.get(type(default), "a list of integers")
                raise ValueError("%s must be %s, got %r" % (
                    field.name, "a finite number" if field.name == "lr" else kind, value))

    @property
    def base_lr(self):
        """The learning rate: ``lr``, or ``0.1 * batch_size / 64`` when it is None."""
        return self.lr if self.lr is not None else 0.1 * self.batch_size / 64
