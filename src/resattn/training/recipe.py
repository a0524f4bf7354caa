"""The pieces of the training recipe: devices, learning-rate schedule, targets, mixup, seeding.

The defaults of :class:`~resattn.training.config.TrainConfig` are the recipe
that gave the Gluon implementation its 95.41% on CIFAR-10 with Attention-92
(see ``docs/training.md``): Nesterov SGD with momentum 0.9, weight decay 1e-4
without decay on biases and BatchNorm, learning rate 0.1 x batch/64 with 5
epochs of linear warm-up then cosine decay to 0 (GluonCV ``LRSequential``),
mixup (alpha 1, off for the last 20 epochs), MSRAPrelu initialisation.
"""
import hashlib
import random

import mxnet as mx
import numpy as np

from .._compat import import_gluoncv

__all__ = ["get_context", "make_lr_scheduler", "smooth_labels", "mixup_batch", "seed_everything",
           "split_batch", "SeededInitializer"]


def get_context(gpus=None):
    """``[mx.cpu()]`` for ``None``/'', else the listed GPUs, checked to exist."""
    if gpus is None or str(gpus).strip() == "":
        return [mx.cpu()]
    try:
        ids = [int(g) for g in str(gpus).split(",") if g.strip() != ""]
    except ValueError:
        raise ValueError("--gpus must be comma-separated GPU ids like 0,1, got %r" % gpus) \
            from None
    available = mx.context.num_gpus()
    bad = [g for g in ids if g < 0 or g >= available]
    if bad or not ids:
        raise ValueError("--gpus %s: MXNet sees %d GPU(s)%s; install mxnet-cu112 on a CUDA 11.2 "
                         "machine, or leave --gpus out to train on the CPU"
                         % (gpus, available, "" if available else " (this is a CPU build or "
                            "a machine without GPU)"))
    return [mx.gpu(g) for g in ids]


def make_lr_scheduler(cfg, iters_per_epoch):
    """Warm-up then decay, as GluonCV's ``LRSequential`` of two ``LRScheduler``.

    A phase of a single iteration has no slope to follow; it runs at the base
    rate (GluonCV would divide by zero).
    """
    import_gluoncv()
    from gluoncv.utils import LRScheduler, LRSequential
    steps = [s - cfg.warmup_epochs for s in cfg.lr_steps if s > cfg.warmup_epochs]
    decay_iters = (cfg.epochs - cfg.warmup_epochs) * iters_per_epoch
    parts = []
    if cfg.warmup_epochs:
        warm_iters = cfg.warmup_epochs * iters_per_epoch
        parts.append(LRScheduler("linear" if warm_iters > 1 else "constant", base_lr=0,
                                 target_lr=cfg.base_lr, nepochs=cfg.warmup_epochs,
                                 iters_per_epoch=iters_per_epoch))
    parts.append(LRScheduler(cfg.lr_mode if decay_iters > 1 else "constant", base_lr=cfg.base_lr,
                             target_lr=0, nepochs=cfg.epochs - cfg.warmup_epochs,
                             iters_per_epoch=iters_per_epoch, step_epoch=steps,
                             step_factor=cfg.lr_decay, power=2))
    return LRSequential(parts)


def smooth_labels(labels, classes, eta):
    """One-hot targets with label smoothing: ``1 - eta + eta / K`` on the class, ``eta / K`` elsewhere."""
    onehot = mx.nd.one_hot(labels.astype("int32"), classes)
    if eta:
        onehot = onehot * (1 - eta) + eta / classes
    return onehot


def mixup_batch(data, targets, lam):
    """Mixup (Zhang et al. 2018) with the batch reversed as partner: ``lam * a + (1 - lam) * b``."""
    flipped = data[::-1] if isinstance(data, np.ndarray) else data.flip(axis=0)
    flipped_t = targets[::-1] if isinstance(targets, np.ndarray) else targets.flip(axis=0)
    return lam * data + (1 - lam) * flipped, lam * targets + (1 - lam) * flipped_t


def seed_everything(*parts):
    """Seed Python's, NumPy's and MXNet's generators from ``parts``; returns the seed."""
    seed = seed_of(*parts)
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)
    return seed


class SeededInitializer(mx.init.Initializer):
    """An initializer that draws each parameter from a generator of its own.

    Gluon initialises parameters whose shapes are inferred (deferred
    initialisation) at the network's first forward pass, from MXNet's global
    generator in whatever state it is then in. Wrapping the initializer makes
    parameter ``i`` of ``params`` (in the network's structural order, not its
    process-dependent name) a function of ``(seed, i)`` alone: the same for
    any run with the same seed, different for different seeds, whatever ran
    before in the process and whenever the first forward pass happens.

    Parameters
    ----------
    base : mx.init.Initializer
        The initializer to draw with (``MSRAPrelu``, ``Xavier``); parameters
        with an initializer of their own (BatchNorm's ones and zeros) keep it.
    seed : int
        The run's seed (``TrainConfig.seed``).
    params : ParameterDict
        The network's parameters, in the order that numbers them.

    Notes
    -----
    Drawing reseeds MXNet's global generator. Training reseeds every generator
    before each batch (:func:`seed_everything`), so nothing else depends on it.
    """

    def __init__(self, base, seed, params):
        super().__init__()
        self._base = base
        self._seed = int(seed)
        self._order = {p.name: i for i, p in enumerate(params.values())}

    def __call__(self, desc, arr):
        mx.random.seed(seed_of(self._seed, "init", self._order.get(str(desc), str(desc))))
        self._base(desc, arr)

    def _init_weight(self, name, arr):  # pragma: no cover - __call__ delegates everything
        self._base._init_weight(name, arr)


def seed_of(*parts):
    """The 32-bit seed :func:`seed_everything` derives from ``parts``."""
    return int(hashlib.sha1(repr(parts).encode()).hexdigest()[:8], 16)


def split_batch(batch, ctx):
    """``(data, label)`` of a batch split over the devices ``ctx`` (GluonCV ``split_and_load``)."""
    import_gluoncv()
    from gluoncv.utils import split_and_load
    data, label = batch[0], batch[1]
    return (split_and_load(data, ctx_list=ctx, even_split=False),
            split_and_load(label, ctx_list=ctx, even_split=False))
