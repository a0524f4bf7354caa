"""Training and evaluation of any Gluon HybridBlock, with GluonCV's schedules.

The defaults are the recipe that gave the Gluon implementation its 95.41% on
CIFAR-10 with Attention-92 (see ``docs/training.md``): Nesterov SGD with
momentum 0.9, weight decay 1e-4 without decay on biases and BatchNorm,
learning rate 0.1 x batch/64 with 5 epochs of linear warm-up then cosine
decay to 0 (GluonCV ``LRSequential``), mixup (alpha 1, off for the last 20
epochs), MSRAPrelu initialisation.

Randomness is reseeded from ``(seed, epoch, batch)`` so that a run resumed
from any checkpoint, including one written on Ctrl-C in the middle of an
epoch, follows exactly the same path as an uninterrupted one.
"""
import dataclasses
import hashlib
import json
import math
import os
import pickle
import random
import tempfile
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .._compat import import_gluoncv, settle_trainer
from ..io import atomic_write, load_parameters
from .config import KVSTORES, NonFiniteLossError, TrainConfig  # noqa: F401

__all__ = ["TrainConfig", "fit", "evaluate", "make_lr_scheduler", "mixup_batch",
           "smooth_labels", "get_context", "save_checkpoint", "load_checkpoint",
           "create_kvstore", "NonFiniteLossError", "KVSTORES"]

# ----------------------------------------------------------------------------- pieces
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


def _seed_everything(*parts):
    seed = int(hashlib.sha1(repr(parts).encode()).hexdigest()[:8], 16)
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)
    return seed


def _split(batch, ctx):
    import_gluoncv()
    from gluoncv.utils import split_and_load
    data, label = batch[0], batch[1]
    return (split_and_load(data, ctx_list=ctx, even_split=False),
            split_and_load(label, ctx_list=ctx, even_split=False))


def evaluate(net, data, ctx=None, classes=None):
    """Top-1, top-5 and mean cross-entropy of ``net`` on a DataLoader.

    Returns
    -------
    dict with keys ``top1``, ``top5``, ``loss``, ``samples``.
    """
    ctx = ctx or [mx.cpu()]
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    top1 = mx.metric.Accuracy()
    top5 = mx.metric.TopKAccuracy(5) if (classes or 6) > 5 else None
    total_loss, count = 0.0, 0
    for batch in data:
        xs, ys = _split(batch, ctx)
        for x, y in zip(xs, ys):
            out = net(x).astype("float32")
            total_loss += float(loss_fn(out, y).sum().asscalar())
            count += y.shape[0]
            top1.update([y], [out])
            if top5 is not None:
                top5.update([y], [out])
    if not count:
        raise ValueError("evaluation data is empty")
    return {"top1": top1.get()[1], "top5": top5.get()[1] if top5 is not None else 1.0,
            "loss": total_loss / count, "samples": count}


# ----------------------------------------------------------------------------- distributed
def create_kvstore(name):
    """``mx.kv.create(name)`` after checking the name and, for ``dist_*``, the environment.

    A ``dist_*`` kvstore connects to the scheduler named by the ``DMLC_*``
    variables that :mod:`resattn.launch` (or a cluster scheduler) sets; without
    them MXNet would fail obscurely or wait forever.
    """
    if name not in KVSTORES:
        raise ValueError("kvstore must be one of %s, got %r" % (", ".join(KVSTORES), name))
    if name.startswith("dist"):
        missing = [v for v in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT",
                               "DMLC_NUM_SERVER", "DMLC_NUM_WORKER") if v not in os.environ]
        if missing:
            raise ValueError("kvstore %r needs the environment of a distributed job (%s not set);"
                             " start it with `resattn launch -n WORKERS -s SERVERS -- resattn "
                             "train ...`" % (name, ", ".join(missing)))
        if os.environ["DMLC_ROLE"] != "worker":
            raise ValueError("kvstore %r: this process has DMLC_ROLE=%r; training runs in "
                             "workers (DMLC_ROLE=worker)" % (name, os.environ["DMLC_ROLE"]))
    return mx.kv.create(name)


#: First kvstore key of the sums below; the Trainer numbers parameters from 0.
_RESERVED_KEY = 1 << 24


class _Workers:
    """The workers of a job as fit sees them: rank, count, and sums over all of them.

    With a synchronous dist kvstore the Trainer keeps ``update_on_kvstore=False``
    (each worker pulls the summed gradients and applies the optimizer itself),
    so the servers hold no optimizer: for every key they store the sum of one
    push per worker. Pushing an array under a reserved key and pulling it back
    is then an all-reduce, used for losses, sample counts, stop requests,
    validation counts and BatchNorm statistics. ``dist_async`` has no such
    sum (its servers apply the optimizer to whatever is pushed, and workers
    are not in step), so there each worker keeps its own numbers.
    """

    def __init__(self, kv):
        self.kv = kv
        self.dist = kv is not None and "dist" in kv.type
        self.sync = self.dist and "async" not in kv.type
        self.rank = kv.rank if self.dist else 0
        self.num_workers = kv.num_workers if self.dist else 1
        self._keys = {}

    def sum(self, name, values):
        """``values`` summed over the workers; every worker must call it alike.

        The servers add in float32 (float64 arrays come back rounded to it), so
        counts are exact up to 2**24 and everything else to about 1e-7.
        """
        values = np.asarray(values, dtype=np.float64)
        if not self.sync:
            return values
        local = mx.nd.array(values, dtype="float32")
        if name not in self._keys:  # collective: every worker meets the same names in order
            self._keys[name] = _RESERVED_KEY + len(self._keys)
            self.kv.init(self._keys[name], mx.nd.zeros_like(local))
        self.kv.push(self._keys[name], local)
        total = mx.nd.zeros_like(local)
        self.kv.pull(self._keys[name], out=total)
        return total.asnumpy().astype(np.float64)

    def settle(self, trainer):
        """Let the Trainer put the parameters on the servers now, and wait until it has.

        Gluon's Trainer does that at its first step, with one init-and-pull per
        parameter, and pushes the first gradients right after; nothing orders
        such a pull before the gradient push of the same key, and with
        ``update_on_kvstore=False`` a late pull is answered with the gradient
        sum instead of rank 0's weights. Seen here on loopback: one parameter of
        one worker replaced, in about 1 of 6 runs of 2 workers. Call this before
        the first step of every worker.
        """
        settle_trainer(trainer)
        mx.nd.waitall()

    def check_identical(self, net, epoch):
        """Raise if this worker's parameters differ from the mean over workers.

        Compares the sum of absolute values of each parameter, to the float32
        precision of :meth:`sum`: a parameter that missed its broadcast shows,
        rounding-level drift does not.
        """
        params = net.collect_params()
        own = np.array([np.abs(p.data().asnumpy()).sum(dtype=np.float64)
                        for p in params.values()])
        mean = self.sum("checksum", own) / self.num_workers
        bad = np.flatnonzero(np.abs(mean - own) > 1e-5 * np.abs(own) + 1e-6)
        if bad.size:
            name = list(params.keys())[bad[0]]
            raise RuntimeError("after epoch %d, parameter %s of worker rank %d differs from the "
                               "other workers' (sum |w| %r, mean over workers %r)"
                               % (epoch, name, self.rank, own[bad[0]], mean[bad[0]]))

    def average_statistics(self, net):
        """Replace every non-trained parameter (BatchNorm running mean and variance) by its
        mean over workers and devices, so that all workers hold identical parameters.

        As timm's ``distribute_bn`` (reduce='mean'): the average of per-shard
        statistics, which for the variance is not the variance of the union.
        """
        params = [p for p in net.collect_params().values() if p.grad_req == "null"]
        if not params:
            return
        copies = len(params[0].list_data())
        flat = np.concatenate([sum(d.asnumpy().astype(np.float64) for d in p.list_data()).ravel()
                               for p in params])
        flat = self.sum("statistics", flat) / (copies * self.num_workers)
        offset = 0
        for p in params:
            size = int(np.prod(p.shape))
            p.set_data(mx.nd.array(flat[offset:offset + size].reshape(p.shape), dtype=p.dtype))
            offset += size


def _optimizer(cfg, net, opt_params, distributed_updates):
    """The optimizer by name, or, when the servers run it (``dist_async``), an object that
    carries each parameter's ``wd_mult`` by name: MXNet pickles the optimizer to
    the servers without the Parameters, which would lose ``no_wd``."""
    if not distributed_updates:
        return cfg.optimizer, opt_params
    names = {i: name for i, name in enumerate(net.collect_params().keys())}
    optimizer = mx.optimizer.create(cfg.optimizer, param_idx2name=names, **opt_params)
    optimizer.wd_mult = {name: p.wd_mult for name, p in net.collect_params().items()}
    return optimizer, None


# ----------------------------------------------------------------------------- checkpoints
def _sha1_file(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def save_checkpoint(prefix, net, trainer, meta):
    """Write ``prefix.params`` and ``prefix.states`` so that no crash loses a good pair.

    The states file carries the trainer's optimizer state (None without a
    trainer, as in ``dist_async`` where the servers hold it), ``meta`` and the
    SHA-1 of the parameters it belongs to. The previous states file is kept
    as ``prefix.states.prev`` until the new pair is complete, and
    :func:`load_checkpoint` takes whichever states file matches the params.
    """
    params_path, states_path = prefix + ".params", prefix + ".states"
    tmp_params = atomic_write(params_path + ".new", net.save_parameters)
    trainer_bytes = None
    if trainer is not None:
        tmp_trainer = prefix + ".trainer.tmp"
        trainer.save_states(tmp_trainer)
        with open(tmp_trainer, "rb") as f:
            trainer_bytes = f.read()
        os.remove(tmp_trainer)
    payload = {"meta": meta, "trainer": trainer_bytes, "params_sha1": _sha1_file(tmp_params)}

    def write_states(path):
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=4)

    if os.path.exists(states_path):
        os.replace(states_path, states_path + ".prev")
    atomic_write(states_path, write_states)
    os.replace(tmp_params, params_path)
    if os.path.exists(states_path + ".prev"):
        os.remove(states_path + ".prev")


def load_checkpoint(prefix, net, trainer=None, ctx=None):
    """Load a checkpoint pair written by :func:`save_checkpoint`; returns its ``meta``."""
    params_path = prefix + ".params"
    if not os.path.isfile(params_path):
        raise ValueError("no checkpoint to resume: %s does not exist" % params_path)
    digest = _sha1_file(params_path)
    payload = None
    for states_path in (prefix + ".states", prefix + ".states.prev"):
        if os.path.isfile(states_path):
            try:
                with open(states_path, "rb") as f:
                    candidate = pickle.load(f)
            except Exception:  # a torn or foreign file: try the other one
                continue
            if candidate.get("params_sha1") == digest:
                payload = candidate
                break
    if payload is None:
        raise ValueError("%s has no matching %s.states (interrupted while writing or edited "
                         "by hand); cannot resume" % (params_path, prefix))
    if trainer is not None and payload["trainer"] is None:
        raise ValueError("%s holds no optimizer state (written by a dist_async job, whose "
                         "servers keep it); cannot resume" % params_path)
    load_parameters(net, params_path, ctx=ctx)
    if trainer is not None:
        # A private file: the workers of a distributed job read one checkpoint together.
        fd, tmp = tempfile.mkstemp(suffix=".trainer")
        with os.fdopen(fd, "wb") as f:
            f.write(payload["trainer"])
        try:
            trainer.load_states(tmp)
        finally:
            os.remove(tmp)
    return payload["meta"]


# ----------------------------------------------------------------------------- outputs
def _remove_stale_temporaries(out_dir):
    """Delete temporary files a killed run left behind; the files they were for are intact."""
    for name in os.listdir(out_dir):
        if (name.startswith(".") and name.endswith(".tmp")) or name.endswith(
                (".params.new", ".trainer.tmp")):
            os.remove(os.path.join(out_dir, name))


def _write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
    atomic_write(path, write)


def _write_metrics(path, history):
    def write(tmp):
        with open(tmp, "w") as f:
            for row in history:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    atomic_write(path, write)


def _write_log(path, history, epochs):
    def write(tmp):
        with open(tmp, "w") as f:
            for r in history:
                f.write("epoch %d/%d train_loss %.4f val_loss %.4f val_top1 %.4f val_top5 %.4f "
                        "lr %.5f img/s %.1f time %.1fs\n" % (
                            r["epoch"], epochs, r["train_loss"], r["val_loss"], r["val_top1"],
                            r["val_top5"], r["lr"], r["img_per_s"], r["time_s"]))
    atomic_write(path, write)


def plot_curves(history, path):
    """Loss and accuracy per epoch as a PNG (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    epochs = [row["epoch"] for row in history]
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in history], "s-", label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [r["val_top1"] for r in history], "s-", label="val top-1")
    ax2.plot(epochs, [r["val_top5"] for r in history], "^-", label="val top-5")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


# ----------------------------------------------------------------------------- fit
class _InterruptFlag:
    """Turns the first Ctrl-C into a request honoured at the next batch boundary.

    Stopping between batches keeps parameters, BatchNorm statistics and the
    optimizer consistent, so the checkpoint resumes exactly; a second Ctrl-C
    interrupts at once. Outside the main thread signals are left alone.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this batch (press again to abort now)", flush=True)

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        import signal
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    @staticmethod
    def exit(prefix, epoch, batch):
        print("interrupted: resumable checkpoint at %s.params (epoch %d, batch %d); continue "
              "with --resume" % (prefix, epoch + 1, batch), flush=True)
        raise KeyboardInterrupt


def fit(net, train_data, val_data, out_dir, config=None, ctx=None, classes=None, resume=False,
        progress=True, extra_config=None, kvstore=None, rank=0, overwrite=False, reinit=True,
        **overrides):
    """Train ``net`` and write metrics, checkpoints and curves into ``out_dir``.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Any classification network (initialised here unless resuming).
    train_data, val_data : mxnet.gluon.data.DataLoader
        Batches of ``(image, label)``.
    out_dir : str
        Receives ``metrics.jsonl``, ``train.log``, ``config.json``,
        ``last.params``/``last.states``, ``best.params``/``best.states`` and
        ``curves.png``.
    config : TrainConfig, optional
        Settings; keyword ``overrides`` replace single fields.
    ctx : list of Context, default ``[mx.cpu()]``
    classes : int
        Number of classes (for one-hot targets); default: the net's ``classes``.
    resume : bool
        Continue from ``out_dir/last.params`` with the same epoch, batch,
        learning-rate position, optimizer state and random state.
    reinit : bool
        True (a fresh run): initialise every parameter with ``config.init``.
        False (fine-tuning): keep the parameters already initialised, e.g.
        loaded from a checkpoint, and initialise only the others, e.g. a new
        classifier.
    progress : bool
        Show a tqdm bar per epoch.
    overwrite : bool
        Start afresh in an ``out_dir`` that already holds a run; without it
        (and without ``resume``) such a directory is an error, so that no
        checkpoint is replaced by accident.
    kvstore : str or KVStore, optional
        Overrides ``config.kvstore``; one of :data:`KVSTORES` or a kvstore.
        With ``dist_sync``/``dist_device_sync`` each worker passes its own
        shard as ``train_data`` (and may pass a shard as ``val_data``) and
        everything reported is summed over the workers: ``train_loss`` and
        ``img_per_s`` of the whole job, validation of the union of the val
        shards. The gradient of a step is the mean over the global batch
        (the per-worker batches together), ``lr=None`` scales with that
        global batch, and BatchNorm statistics are averaged over the workers
        after each epoch so that every worker holds the same parameters. With
        ``dist_async`` the servers run the optimizer, each push is one update
        with the per-worker batch, and each worker reports its own numbers;
        its checkpoints hold no optimizer state and cannot be resumed.
        ``docs/distributed.md`` has the details.
    rank : int
        Worker rank; only rank 0 writes files. A dist kvstore's own rank takes
        its place.

    Returns
    -------
    list of dict
        One row per epoch, as written to ``metrics.jsonl``.
    """
    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    ctx = ctx or [mx.cpu()]
    classes = classes or getattr(net, "classes", None)
    if not classes:
        raise ValueError("classes must be given for a net without a `classes` attribute")
    if cfg.dtype == "float16" and all(c.device_type == "cpu" for c in ctx):
        raise ValueError("--dtype float16 uses MXNet AMP, which needs a GPU; pass --gpus "
                         "(this run is on the CPU)")
    kv = kvstore if kvstore is not None else cfg.kvstore
    if isinstance(kv, str):
        if kv not in KVSTORES:
            raise ValueError("kvstore must be one of %s, got %r" % (", ".join(KVSTORES), kv))
        if kv.startswith("dist"):
            kv = create_kvstore(kv)
    workers = _Workers(kv if isinstance(kv, mx.kvstore.KVStore) else None)
    server_updates = workers.dist and not workers.sync  # dist_async: the servers step
    if workers.dist:
        rank = workers.rank
        if resume and server_updates:
            raise ValueError("--resume is not possible with kvstore %r: its optimizer state "
                             "lives on the servers and is not checkpointed; use dist_sync"
                             % kv.type)
    writer = rank == 0
    if writer:
        os.makedirs(out_dir, exist_ok=True)
    if not resume and not overwrite and os.path.exists(os.path.join(out_dir, "last.params")):
        raise ValueError("%s already holds a training run (last.params); pass --resume to "
                         "continue it, --overwrite to start again, or another --out" % out_dir)
    if writer:
        _remove_stale_temporaries(out_dir)
    iters_per_epoch = len(train_data)
    if iters_per_epoch == 0:
        raise ValueError("training data yields no batch (dataset smaller than batch_size=%d "
                         "with last_batch='discard'?)" % cfg.batch_size)

    if cfg.dtype == "float16":
        from mxnet.contrib import amp
        amp.init()
    if not resume:
        init = mx.init.MSRAPrelu() if cfg.init == "msraprelu" else mx.init.Xavier()
        net.initialize(init, ctx=ctx, force_reinit=reinit)
        net.collect_params().reset_ctx(ctx)
    else:
        net.initialize(mx.init.Zero(), ctx=ctx, force_reinit=False)
    if cfg.no_wd:
        for name, param in net.collect_params().items():
            if name.endswith(("gamma", "beta", "bias")):
                param.wd_mult = 0.0
    net.hybridize(static_alloc=True)
    # Synchronous workers step together on the global batch, so the linear scaling rule
    # takes the global batch; asynchronous updates each carry one worker's batch, and the
    # servers count one update per worker and iteration.
    lr_cfg = cfg
    if workers.sync and cfg.lr is None:
        lr_cfg = dataclasses.replace(cfg, lr=cfg.base_lr * workers.num_workers)
    updates_per_iter = workers.num_workers if server_updates else 1
    opt_params = {"wd": cfg.wd, "lr_scheduler": make_lr_scheduler(
        lr_cfg, iters_per_epoch * updates_per_iter)}
    if cfg.optimizer in ("nag", "sgd"):
        opt_params["momentum"] = cfg.momentum
    if cfg.dtype == "float16":
        opt_params["multi_precision"] = True
    optimizer, opt_params = _optimizer(cfg, net, opt_params, server_updates)
    trainer = gluon.Trainer(net.collect_params(), optimizer, opt_params, kvstore=kv,
                            **({"update_on_kvstore": False} if workers.sync else {}))

    def learning_rate(iterations):
        if server_updates:  # the local optimizer never steps; the servers' schedule does
            return trainer.optimizer.lr_scheduler(iterations * updates_per_iter)
        return trainer.learning_rate
    if cfg.dtype == "float16":
        amp.init_trainer(trainer)

    start_epoch, start_batch, best_top1, history, partial = 0, 0, -1.0, [], None
    last_prefix = os.path.join(out_dir, "last")
    if resume:
        meta = load_checkpoint(last_prefix, net, trainer, ctx=ctx)
        start_epoch, start_batch = meta["epoch"], meta["batch"]
        best_top1, history, partial = meta["best_top1"], meta["history"], meta.get("partial")
        if meta.get("config") and meta["config"] != dataclasses.asdict(cfg):
            changed = sorted(k for k, v in dataclasses.asdict(cfg).items()
                             if meta["config"].get(k) != v)
            raise ValueError("--resume with different settings (%s) than the checkpoint; start "
                             "a new --out or use the same settings" % ", ".join(changed))
        if meta.get("workers", 1) != workers.num_workers:
            raise ValueError("--resume with %d worker(s), but the checkpoint was written by %d "
                             "(shards and learning rate depend on it); use %d"
                             % (workers.num_workers, meta.get("workers", 1),
                                meta.get("workers", 1)))
    if writer:
        full = dict(dataclasses.asdict(cfg), base_lr=lr_cfg.base_lr, classes=classes,
                    ctx=[str(c) for c in ctx], workers=workers.num_workers,
                    global_batch_size=cfg.batch_size * workers.num_workers,
                    **(extra_config or {}))
        _write_json(os.path.join(out_dir, "config.json"), full)
        _write_metrics(os.path.join(out_dir, "metrics.jsonl"), history)

    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
    from tqdm import tqdm
    mixup_until = cfg.epochs - cfg.mixup_off_epochs

    def checkpoint(prefix, epoch, batch, partial=None):
        save_checkpoint(prefix, net, None if server_updates else trainer, {
            "epoch": epoch, "batch": batch, "best_top1": best_top1, "history": history,
            "config": dataclasses.asdict(cfg), "partial": partial,
            "workers": workers.num_workers})

    # Workers draw different augmentation and mixup from the same (seed, epoch, batch).
    own = (workers.rank,) if workers.dist else ()
    settled = False

    stop = _InterruptFlag()
    with stop:
        for epoch in range(start_epoch, cfg.epochs):
            _seed_everything(cfg.seed, epoch, *own)
            tic, seen, loss_sum, skipped = time.time(), 0, 0.0, 0
            first = start_batch if epoch == start_epoch else 0
            if first and partial:  # sums of the batches done before the interruption
                seen, loss_sum, skipped = partial["seen"], partial["loss_sum"], partial["skipped"]
            bar = tqdm(train_data, total=iters_per_epoch, leave=False,
                       disable=None if progress else True,
                       desc="epoch %d/%d" % (epoch + 1, cfg.epochs))
            for batch_idx, batch in enumerate(bar):
                # Reseeding after each fetch makes everything random in the next batch a
                # function of (seed, epoch, batch) alone, so a resumed run can replay the
                # skipped batches and continue on exactly the same path.
                batch_seed = _seed_everything(cfg.seed, epoch, batch_idx, *own)
                if batch_idx < first:
                    continue
                xs, ys = _split(batch, ctx)
                use_mixup = cfg.mixup_alpha > 0 and epoch < mixup_until
                lam = float(np.random.RandomState(batch_seed).beta(
                    cfg.mixup_alpha, cfg.mixup_alpha)) if use_mixup else 1.0
                with autograd.record():
                    losses = []
                    for x, y in zip(xs, ys):
                        target = smooth_labels(y, classes, cfg.label_smoothing)
                        if use_mixup:
                            x, target = mixup_batch(x, target, lam)
                        out = net(x.astype(cfg.dtype) if cfg.dtype != "float32" else x)
                        losses.append(loss_fn(out.astype("float32"), target))
                    if cfg.dtype == "float16":
                        with amp.scale_loss(losses, trainer) as scaled:
                            autograd.backward(scaled)
                    else:
                        autograd.backward(losses)
                batch_loss = sum(float(l.sum().asscalar()) for l in losses)
                n = sum(y.shape[0] for y in ys)
                stop_now = None
                if workers.sync:  # one sum per batch: skip, stop and step all together
                    batch_loss, n, requests = workers.sum(
                        "batch", [batch_loss, n, stop.requested])
                    n, stop_now = int(round(n)), requests > 0
                if not math.isfinite(batch_loss):
                    if cfg.nonfinite == "stop":
                        bar.close()
                        raise NonFiniteLossError(
                            "non-finite loss %r at epoch %d batch %d; stopped, last good "
                            "checkpoint kept in %s" % (batch_loss, epoch + 1, batch_idx,
                                                       last_prefix + ".params"))
                    skipped += 1
                else:
                    if workers.sync and not settled:
                        workers.settle(trainer)
                        settled = True
                    trainer.step(n)  # synchronous: summed gradients over the global batch
                    seen += n
                    loss_sum += batch_loss
                if progress and seen:
                    bar.set_postfix(loss="%.3f" % (loss_sum / seen),
                                    img_s="%.0f" % (seen / max(time.time() - tic, 1e-9)),
                                    lr="%.4f" % learning_rate(epoch * iters_per_epoch
                                                              + batch_idx + 1))
                if stop_now is None:
                    stop_now = stop.requested
                if stop_now and batch_idx + 1 < iters_per_epoch:
                    bar.close()
                    if workers.sync:  # all stop here; running statistics are linear in
                        workers.average_statistics(net)  # their start, so resume stays exact
                    if writer:
                        checkpoint(last_prefix, epoch, batch_idx + 1, {
                            "seen": seen, "loss_sum": loss_sum, "skipped": skipped})
                    stop.exit(last_prefix, epoch, batch_idx + 1)
            bar.close()
            elapsed = time.time() - tic
            if workers.sync:
                workers.average_statistics(net)
                workers.check_identical(net, epoch + 1)
            val = evaluate(net, val_data, ctx, classes)
            stop_now = stop.requested
            if workers.sync:
                count = val["samples"]
                total = workers.sum("val", [val["loss"] * count, round(val["top1"] * count),
                                            round(val["top5"] * count), count, stop.requested])
                val = {"loss": total[0] / total[3], "top1": total[1] / total[3],
                       "top5": total[2] / total[3], "samples": int(total[3])}
                stop_now = total[4] > 0
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                   "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                   "lr": learning_rate((epoch + 1) * iters_per_epoch),
                   "img_per_s": seen / max(elapsed, 1e-9),
                   "time_s": elapsed, "skipped_batches": skipped}
            if workers.dist:
                row["workers"] = workers.num_workers
            history.append(row)
            improved = val["top1"] > best_top1
            best_top1 = max(best_top1, val["top1"])
            if writer:
                _write_metrics(os.path.join(out_dir, "metrics.jsonl"), history)
                _write_log(os.path.join(out_dir, "train.log"), history, cfg.epochs)
                if improved:
                    checkpoint(os.path.join(out_dir, "best"), epoch + 1, 0)
                checkpoint(last_prefix, epoch + 1, 0)
                plot_curves(history, os.path.join(out_dir, "curves.png"))
            if stop_now and epoch + 1 < cfg.epochs:
                stop.exit(last_prefix, epoch + 1, 0)
    return history
