"""The training loop: :class:`Trainer` (setup, ``train_step``, ``train_epoch``, ``validate``,
``fit``), :func:`evaluate`, and :func:`fit`, the one-call wrapper ``resattn train`` uses.

Randomness is reseeded from ``(seed, epoch, batch)`` so that a run resumed
from any checkpoint, including one written on Ctrl-C in the middle of an
epoch, follows exactly the same path as an uninterrupted one.
"""
import dataclasses
import math
import os
import time
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..models.blocks import zero_init_residual
from .callbacks import Checkpointer, default_callbacks
from .checkpoint import load_checkpoint
from .config import INIT_ONLY_FIELDS, NonFiniteLossError, TrainConfig, check_kvstore
from .distributed import Workers, create_kvstore, make_optimizer
from .recipe import (SeededInitializer, make_lr_scheduler, mixup_batch, seed_everything,
                     smooth_labels, split_batch)
from .rundir import run_directory
from .state import TrainState

__all__ = ["Trainer", "StepResult", "fit", "evaluate"]


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
        xs, ys = split_batch(batch, ctx)
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


#: What :meth:`Trainer.train_step` did: the batch's summed ``loss`` and
#: ``samples`` (over all workers when they are synchronous), whether it
#: ``stepped`` (False: skipped for a non-finite loss) and whether any worker
#: asked to ``stop``.
StepResult = dataclasses.make_dataclass("StepResult", ["loss", "samples", "stepped", "stop"])


class Trainer:
    """Trains a classification network with the resattn recipe; callbacks do the rest.

    The loop is ``fit`` -> ``train_epoch`` -> ``train_step``, then
    ``validate`` after each epoch; where it stands is :attr:`state`, a
    :class:`~resattn.training.TrainState` saved in checkpoints. Writing
    files, progress bars and Ctrl-C are callbacks
    (:mod:`resattn.training.callbacks`).

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Any classification network (initialised by :meth:`setup` unless restored).
    config : TrainConfig, optional
        Settings; keyword ``overrides`` replace single fields.
    ctx : list of Context, default ``[mx.cpu()]``
    classes : int
        Number of classes (for one-hot targets); default: the net's ``classes``.
    kvstore : str or KVStore, optional
        Overrides ``config.kvstore``; see :func:`fit` for the distributed modes.
    rank : int
        Worker rank; a dist kvstore's own rank takes its place.
    callbacks : list of Callback
    """

    def __init__(self, net, config=None, ctx=None, classes=None, kvstore=None, rank=0,
                 callbacks=(), **overrides):
        self.config = dataclasses.replace(config or TrainConfig(), **overrides)
        self.net = net
        self.ctx = ctx or [mx.cpu()]
        self.classes = classes or getattr(net, "classes", None)
        if not self.classes:
            raise ValueError("classes must be given for a net without a `classes` attribute")
        if self.config.dtype == "float16" and all(c.device_type == "cpu" for c in self.ctx):
            raise ValueError("--dtype float16 uses MXNet AMP, which needs a GPU; pass --gpus "
                             "(this run is on the CPU)")
        kv = kvstore if kvstore is not None else self.config.kvstore
        if isinstance(kv, str) and check_kvstore(kv).startswith("dist"):
            kv = create_kvstore(kv)
        self.kvstore = kv
        self.workers = Workers(kv if isinstance(kv, mx.kvstore.KVStore) else None)
        #: dist_async: the servers run the optimizer, so its state is not checkpointed.
        self.server_updates = self.workers.dist and not self.workers.sync
        self.rank = self.workers.rank if self.workers.dist else rank
        self.callbacks = list(callbacks)
        self.state = TrainState()
        self.trainer = None
        self.iters_per_epoch = None
        self._loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
        self._settled = False
        self._epoch_tic = time.time()

    # ------------------------------------------------------------------ setup
    @property
    def base_lr(self):
        """The learning rate after warm-up: synchronous workers scale it with the global batch."""
        if self.workers.sync and self.config.lr is None:
            return self.config.base_lr * self.workers.num_workers
        return self.config.base_lr

    @property
    def checkpointable_trainer(self):
        """The ``gluon.Trainer`` whose state a checkpoint holds (None under ``dist_async``)."""
        return None if self.server_updates else self.trainer

    def config_dict(self):
        """The settings as a plain dict, as checkpoints and ``config.json`` store them."""
        return dataclasses.asdict(self.config)

    def setup(self, iters_per_epoch, restore=False, reinit=True):
        """Initialise the network and build the optimizer for ``iters_per_epoch`` batches.

        ``restore`` leaves the parameters to a checkpoint; ``reinit=False``
        (fine-tuning) keeps parameters already initialised and initialises
        only the others.
        """
        cfg = self.config
        if iters_per_epoch == 0:
            raise ValueError("training data yields no batch (dataset smaller than batch_size=%d "
                             "with last_batch='discard'?)" % cfg.batch_size)
        self.iters_per_epoch = iters_per_epoch
        if cfg.dtype == "float16":
            from mxnet.contrib import amp
            amp.init()
        # Parameters loaded already (fine-tuning, a restored checkpoint) are kept; MXNet
        # warns once per parameter that it "ignores" them, which is what is meant here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is already initialized, ignoring")
            if restore:
                self.net.initialize(mx.init.Zero(), ctx=self.ctx, force_reinit=False)
            else:
                init = mx.init.MSRAPrelu() if cfg.init == "msraprelu" else mx.init.Xavier()
                # The initial weights follow the seed, not the generator's state at the
                # first forward pass (deferred initialisation), which no seed reaches.
                init = SeededInitializer(init, cfg.seed, self.net.collect_params())
                self.net.initialize(init, ctx=self.ctx, force_reinit=reinit)
        if not restore:
            self.net.collect_params().reset_ctx(self.ctx)
            if cfg.zero_init_residual and reinit:
                zero_init_residual(self.net)
        if cfg.no_wd:
            for name, param in self.net.collect_params().items():
                if name.endswith(("gamma", "beta", "bias")):
                    param.wd_mult = 0.0
        self.net.hybridize(static_alloc=True)
        # Synchronous workers step together on the global batch, so the linear scaling rule
        # takes the global batch; asynchronous updates each carry one worker's batch, and the
        # servers count one update per worker and iteration.
        lr_cfg = dataclasses.replace(cfg, lr=self.base_lr)
        opt_params = {"wd": cfg.wd, "lr_scheduler": make_lr_scheduler(
            lr_cfg, iters_per_epoch * self._updates_per_iter)}
        if cfg.optimizer in ("nag", "sgd"):
            opt_params["momentum"] = cfg.momentum
        if cfg.dtype == "float16":
            opt_params["multi_precision"] = True
        optimizer, opt_params = make_optimizer(cfg, self.net, opt_params, self.server_updates)
        self.trainer = gluon.Trainer(self.net.collect_params(), optimizer, opt_params,
                                     kvstore=self.kvstore,
                                     **({"update_on_kvstore": False} if self.workers.sync
                                        else {}))
        if cfg.dtype == "float16":
            amp.init_trainer(self.trainer)

    @property
    def _updates_per_iter(self):
        return self.workers.num_workers if self.server_updates else 1

    def restore(self, prefix):
        """Continue from checkpoint ``prefix``: parameters, optimizer and :attr:`state`.

        The checkpoint must have been written with the same settings and
        number of workers (shards and learning rate depend on them).
        """
        if self.server_updates:
            raise ValueError("--resume is not possible with kvstore %r: its optimizer state "
                             "lives on the servers and is not checkpointed; use dist_sync"
                             % self.kvstore.type)
        meta = load_checkpoint(prefix, self.net, self.trainer, ctx=self.ctx)
        saved = meta.get("config")
        # How the network was initialised does not matter to a run that loads it.
        current = {k: v for k, v in self.config_dict().items() if k not in INIT_ONLY_FIELDS}
        if saved:
            saved = {k: v for k, v in saved.items() if k not in INIT_ONLY_FIELDS}
        if saved and saved != current:
            changed = sorted(k for k, v in current.items() if saved.get(k) != v)
            raise ValueError("--resume with different settings (%s) than the checkpoint; start "
                             "a new --out or use the same settings" % ", ".join(changed))
        if meta.get("workers", 1) != self.workers.num_workers:
            raise ValueError("--resume with %d worker(s), but the checkpoint was written by %d "
                             "(shards and learning rate depend on it); use %d"
                             % (self.workers.num_workers, meta.get("workers", 1),
                                meta.get("workers", 1)))
        self.state.load_state_dict(meta)

    def learning_rate(self, iterations):
        """The learning rate after ``iterations`` batches of this worker."""
        if self.server_updates:  # the local optimizer never steps; the servers' schedule does
            return self.trainer.optimizer.lr_scheduler(iterations * self._updates_per_iter)
        return self.trainer.learning_rate

    def epoch_speed(self):
        """Images per second of this epoch so far (of the whole job when synchronous)."""
        return self.state.seen / max(time.time() - self._epoch_tic, 1e-9)

    # ------------------------------------------------------------------ steps
    def _stop_requested(self):
        return any(getattr(cb, "stop_requested", False) for cb in self.callbacks)

    def _own_seed(self):
        # Workers draw different augmentation and mixup from the same (seed, epoch, batch).
        return (self.workers.rank,) if self.workers.dist else ()

    def mixup_weight(self, epoch, batch_seed):
        """Mixup's ``lam`` for a batch: Beta(alpha, alpha) from its seed; 1 when mixup is off."""
        cfg = self.config
        if cfg.mixup_alpha > 0 and epoch < cfg.epochs - cfg.mixup_off_epochs:
            return float(np.random.RandomState(batch_seed).beta(cfg.mixup_alpha,
                                                                cfg.mixup_alpha))
        return None

    def train_step(self, batch, lam=None):
        """One optimizer step on ``batch`` (mixed up with weight ``lam`` unless None).

        The gradient is of the summed loss over the (global) batch; the
        trainer steps with the number of images. A non-finite loss raises
        :class:`NonFiniteLossError` (``nonfinite='stop'``) or skips the step
        (``'skip'``). The epoch's partial sums in :attr:`state` are updated.

        Returns
        -------
        StepResult
        """
        cfg = self.config
        xs, ys = split_batch(batch, self.ctx)
        with autograd.record():
            losses = []
            for x, y in zip(xs, ys):
                target = smooth_labels(y, self.classes, cfg.label_smoothing)
                if lam is not None:
                    x, target = mixup_batch(x, target, lam)
                out = self.net(x.astype(cfg.dtype) if cfg.dtype != "float32" else x)
                losses.append(self._loss(out.astype("float32"), target))
            if cfg.dtype == "float16":
                from mxnet.contrib import amp
                with amp.scale_loss(losses, self.trainer) as scaled:
                    autograd.backward(scaled)
            else:
                autograd.backward(losses)
        loss = sum(float(l.sum().asscalar()) for l in losses)
        samples = sum(y.shape[0] for y in ys)
        stop = None
        if self.workers.sync:  # one sum per batch: skip, stop and step all together
            loss, samples, requests = self.workers.sum("batch", [loss, samples,
                                                                 self._stop_requested()])
            samples, stop = int(round(samples)), requests > 0
        stepped = math.isfinite(loss)
        if not stepped:
            if cfg.nonfinite == "stop":
                raise NonFiniteLossError("non-finite loss %r at epoch %d batch %d" % (
                    loss, self.state.epoch + 1, self.state.batch))
            self.state.skipped += 1
        else:
            if self.workers.sync and not self._settled:
                self.workers.settle(self.trainer)
                self._settled = True
            self.trainer.step(samples)  # synchronous: summed gradients over the global batch
            self.state.seen += samples
            self.state.loss_sum += loss
        if stop is None:  # on its own, a worker stops as soon as it is asked to
            stop = self._stop_requested()
        return StepResult(loss, samples, stepped, stop)

    def train_epoch(self, data, epoch):
        """Train ``epoch`` (from 0) on ``data``, resuming at ``state.batch`` when it was cut.

        Returns
        -------
        bool
            True if the epoch ran to its end, False if a stop was requested
            (the state then points at the next batch).
        """
        seed_everything(self.config.seed, epoch, *self._own_seed())
        self.state.start_epoch(epoch)
        first = self.state.batch
        self._epoch_tic = time.time()
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch, self.iters_per_epoch)
        for index, batch in enumerate(data):
            # Reseeding after each fetch makes everything random in the next batch a
            # function of (seed, epoch, batch) alone, so a resumed run can replay the
            # skipped batches and continue on exactly the same path.
            batch_seed = seed_everything(self.config.seed, epoch, index, *self._own_seed())
            if index >= first:
                self.state.batch = index
                result = self.train_step(batch, self.mixup_weight(epoch, batch_seed))
                self.state.batch = index + 1
                stop = result.stop
            else:
                stop = False
            for cb in self.callbacks:
                cb.on_batch_end(self, epoch, index)
            if not self.workers.sync:  # a callback may have asked just now
                stop = stop or self._stop_requested()
            if stop and index + 1 < self.iters_per_epoch:
                if self.workers.sync:  # all stop here; running statistics are linear in
                    self.workers.average_statistics(self.net)  # their start: resume is exact
                return False
        return True

    def validate(self, data):
        """:func:`evaluate` on ``data``; synchronous workers sum their shards' counts.

        Returns
        -------
        (dict, bool)
            ``top1``, ``top5``, ``loss``, ``samples``, and whether any worker asked to stop.
        """
        val = evaluate(self.net, data, self.ctx, self.classes)
        stop = self._stop_requested()
        if self.workers.sync:
            count = val["samples"]
            total = self.workers.sum("val", [val["loss"] * count, round(val["top1"] * count),
                                             round(val["top5"] * count), count, stop])
            val = {"loss": total[0] / total[3], "top1": total[1] / total[3],
                   "top5": total[2] / total[3], "samples": int(total[3])}
            stop = total[4] > 0
        return val, stop

    def _epoch_row(self, epoch, val, elapsed):
        state = self.state
        row = {"epoch": epoch + 1, "train_loss": state.loss_sum / max(state.seen, 1),
               "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
               "lr": self.learning_rate((epoch + 1) * self.iters_per_epoch),
               "img_per_s": state.seen / max(elapsed, 1e-9),
               "time_s": elapsed, "skipped_batches": state.skipped}
        if self.workers.dist:
            row["workers"] = self.workers.num_workers
        return row

    # ------------------------------------------------------------------ loop
    def fit(self, train_data, val_data, resume_from=None, reinit=True):
        """Train from :attr:`state` to ``config.epochs``; returns the history.

        Parameters
        ----------
        train_data, val_data : DataLoader
        resume_from : str, optional
            Checkpoint prefix to :meth:`restore` first.
        reinit : bool
            See :meth:`setup`.

        A callback that sets ``stop_requested`` ends the run at the next batch
        boundary (after the callbacks' ``on_interrupt``, so with a resumable
        checkpoint) and ``fit`` returns the history so far.

        Raises
        ------
        KeyboardInterrupt
            After Ctrl-C (:class:`~resattn.training.callbacks.InterruptHandler`), or
            when another worker of a synchronous job was interrupted.
        """
        self.setup(len(train_data), restore=resume_from is not None, reinit=reinit)
        if resume_from is not None:
            self.restore(resume_from)
        try:
            for cb in self.callbacks:
                cb.on_fit_start(self)
            for epoch in range(self.state.epoch, self.config.epochs):
                if not self.train_epoch(train_data, epoch):
                    self._stop()
                    break
                elapsed = time.time() - self._epoch_tic
                if self.workers.sync:
                    self.workers.average_statistics(self.net)
                    self.workers.check_identical(self.net, epoch + 1)
                val, stop = self.validate(val_data)
                row = self._epoch_row(epoch, val, elapsed)
                improved = self.state.end_epoch(row)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, row, improved)
                if not self.workers.sync:
                    stop = stop or self._stop_requested()
                if stop and epoch + 1 < self.config.epochs:
                    self._stop()
                    break
        finally:
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return self.state.history

    def _stop(self):
        """End the run where it stands: the callbacks' ``on_interrupt``, then, unless a
        callback of this worker stopped it on purpose (early stopping), KeyboardInterrupt."""
        for cb in self.callbacks:
            cb.on_interrupt(self)
        if not any(cb.stop_requested and not cb.interrupt for cb in self.callbacks):
            raise KeyboardInterrupt


def fit(net, train_data, val_data, out_dir, config=None, ctx=None, classes=None, resume=False,
        progress=True, extra_config=None, kvstore=None, rank=0, overwrite=False, reinit=True,
        callbacks=None, weights_config=None, **overrides):
    """Train ``net`` and write metrics, checkpoints and curves into ``out_dir``.

    A thin wrapper: a :class:`Trainer` with :func:`~resattn.training.callbacks.default_callbacks`.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Any classification network (initialised here unless resuming).
    train_data, val_data : mxnet.gluon.data.DataLoader
        Batches of ``(image, label)``.
    out_dir : str
        Receives ``metrics.jsonl``, ``train.log``, ``config.json``,
        ``last.params``/``last.states``, ``best.params``/``best.states`` and
        ``curves.png``. The writer (rank 0) holds the directory's lock
        (``OUT/.lock``) until ``fit`` returns or raises: a run of a directory
        that another run is using (also with ``resume``) fails at once with
        :class:`~resattn.training.rundir.RunDirInUseError`. A write that fails
        (a full disk) leaves no temporary file; the previous checkpoint stays
        (:func:`~resattn.training.rundir.run_directory`).
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
    callbacks : list of Callback, optional
        Replace the default callbacks.
    weights_config : dict, optional
        ``model``, ``arch``, ``preprocessing``, ``class_names``, ``provenance``:
        written beside every checkpoint's ``.params`` as its config
        (:func:`resattn.io.write_weights_config`), as ``resattn train`` does.

    Returns
    -------
    list of dict
        One row per epoch, as written to ``metrics.jsonl``.
    """
    trainer = Trainer(net, config, ctx=ctx, classes=classes, kvstore=kvstore, rank=rank,
                      **overrides)
    writer = trainer.rank == 0
    # The writer holds the directory's lock for the whole run: a second run (or --resume)
    # of it fails at once instead of mixing its files with this one's.
    with run_directory(out_dir, resume=resume, overwrite=overwrite, writer=writer):
        trainer.callbacks = list(callbacks) if callbacks is not None else default_callbacks(
            out_dir, writer=writer, progress=progress, extra_config=extra_config,
            weights_config=weights_config)
        last = os.path.join(out_dir, "last")
        try:
            return trainer.fit(train_data, val_data, resume_from=last if resume else None,
                               reinit=reinit)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(_nonfinite_message(err, trainer, last, resume)) from None


_NONFINITE_ADVICE = ("try a lower --lr, more --warmup-epochs, or --nonfinite skip (which skips "
                     "such batches)")


def _nonfinite_message(err, trainer, last, resume):
    """What a run stopped by a non-finite loss leaves behind, truly, and what to try."""
    params = last + ".params"
    checkpointers = [cb for cb in trainer.callbacks if isinstance(cb, Checkpointer) and cb.save]
    if checkpointers:
        written = checkpointers[0].last_written
        if written is not None:
            epoch, batch = written
            when = ("after epoch %d" % epoch if not batch
                    else "epoch %d, batch %d" % (epoch + 1, batch))
            good = "%s (%s)" % (params, when)
        elif resume:
            good = "%s (the checkpoint this run resumed from)" % params
        else:
            good = None
    else:  # callbacks of the caller's own: say what is on disk
        good = params if os.path.isfile(params) else None
    if good is not None:
        return ("%s; stopped, the last good checkpoint is kept: %s. To go on, start again "
                "(--overwrite, or another --out) and %s" % (err, good, _NONFINITE_ADVICE))
    before = ""
    if os.path.isfile(params):
        before = " (%s is the run this one replaces)" % params
    return ("%s; stopped before this run wrote any checkpoint%s: %s"
            % (err, before, _NONFINITE_ADVICE))
