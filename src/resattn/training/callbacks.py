"""Callbacks of the :class:`~resattn.training.Trainer`: what a run does besides training.

Each callback implements some of the hooks of :class:`Callback`; the
trainer calls them in list order. :func:`default_callbacks` gives what
``resattn train`` uses: Ctrl-C handling, a progress bar, and for the
writing worker, metrics, checkpoints and curves in the run directory.
"""
import os
import signal
import threading

from ..io import write_json
from .checkpoint import save_checkpoint, write_log, write_metrics

__all__ = ["Callback", "InterruptHandler", "ProgressBar", "MetricsLogger", "Checkpointer",
           "CurvePlotter", "RunConfig", "default_callbacks"]


class Callback:
    """Base class: every hook does nothing.

    Hooks receive the :class:`~resattn.training.Trainer`; its ``state``
    (:class:`~resattn.training.TrainState`), ``config``, ``net`` and
    ``workers`` describe the run.

    Attributes
    ----------
    stop_requested : bool
        A callback sets it to ask the trainer to stop at the next batch
        boundary, with a resumable checkpoint; ``fit`` then returns.
    interrupt : bool
        True for a callback whose stop is an interruption (Ctrl-C): ``fit``
        then raises KeyboardInterrupt instead of returning.
    """
    stop_requested = False
    interrupt = False

    def on_fit_start(self, trainer):
        """After setup and restore, before the first batch."""

    def on_epoch_start(self, trainer, epoch, total_batches):
        """Before the first batch of ``epoch`` (from 0)."""

    def on_batch_end(self, trainer, epoch, batch):
        """After batch ``batch`` of ``epoch`` (also for batches replayed on resume)."""

    def on_epoch_end(self, trainer, row, improved):
        """After validation; ``row`` is the epoch's metrics, ``improved`` a new best top-1."""

    def on_interrupt(self, trainer):
        """The run stops now on request; ``trainer.state`` is where it stands."""

    def on_fit_end(self, trainer):
        """Always, last: after the final epoch, an interruption or an error."""


class InterruptHandler(Callback):
    """Turns the first Ctrl-C into a request honoured at the next batch boundary.

    Stopping between batches keeps parameters, BatchNorm statistics and the
    optimizer consistent, so the checkpoint resumes exactly; a second Ctrl-C
    interrupts at once. Outside the main thread signals are left alone.
    """
    interrupt = True

    def __init__(self):
        self.stop_requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        print("\nCtrl-C: stopping after this batch (press again to abort now)", flush=True)

    def on_fit_start(self, trainer):
        self.stop_requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def on_fit_end(self, trainer):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss, images per second and learning rate."""

    def __init__(self):
        self._bar = None

    def on_epoch_start(self, trainer, epoch, total_batches):
        from tqdm import tqdm
        self._bar = tqdm(total=total_batches, leave=False, disable=None,
                         desc="epoch %d/%d" % (epoch + 1, trainer.config.epochs))

    def on_batch_end(self, trainer, epoch, batch):
        self._bar.update(1)
        state = trainer.state
        if state.seen:
            self._bar.set_postfix(loss="%.3f" % (state.loss_sum / state.seen),
                                  img_s="%.0f" % trainer.epoch_speed(),
                                  lr="%.4f" % trainer.learning_rate(
                                      epoch * trainer.iters_per_epoch + batch + 1))

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, trainer, row, improved):
        self._close()

    def on_interrupt(self, trainer):
        self._close()

    def on_fit_end(self, trainer):
        self._close()


class RunConfig(Callback):
    """``config.json``: the settings of the run, so that it can be repeated.

    Parameters
    ----------
    out_dir : str
    extra : dict, optional
        More entries (the CLI adds model, dataset, data settings).
    """

    def __init__(self, out_dir, extra=None):
        self.path = os.path.join(out_dir, "config.json")
        self.extra = dict(extra or {})

    def on_fit_start(self, trainer):
        workers = trainer.workers.num_workers
        write_json(self.path, dict(trainer.config_dict(), base_lr=trainer.base_lr,
                                   classes=trainer.classes, ctx=[str(c) for c in trainer.ctx],
                                   workers=workers,
                                   global_batch_size=trainer.config.batch_size * workers,
                                   **self.extra))


class MetricsLogger(Callback):
    """``metrics.jsonl`` (one JSON row per epoch) and ``train.log`` (one line per epoch)."""

    def __init__(self, out_dir):
        self.metrics = os.path.join(out_dir, "metrics.jsonl")
        self.log = os.path.join(out_dir, "train.log")

    def on_fit_start(self, trainer):
        write_metrics(self.metrics, trainer.state.history)

    def on_epoch_end(self, trainer, row, improved):
        write_metrics(self.metrics, trainer.state.history)
        write_log(self.log, trainer.state.history, trainer.config.epochs)


class Checkpointer(Callback):
    """``best`` and ``last`` checkpoints after every epoch, ``last`` on interruption.

    Each is a ``.params`` / ``.states`` pair written by
    :func:`~resattn.training.checkpoint.save_checkpoint`. With ``save=False``
    (the other workers of a job, whose rank 0 writes) it only says where the
    checkpoint to resume from is. ``weights_config`` (``model``, ``arch``,
    ``preprocessing``, ``class_names``, ``provenance``) is written beside each
    ``.params`` as its config (:func:`resattn.io.write_weights_config`).
    """

    def __init__(self, out_dir, save=True, weights_config=None):
        self.last = os.path.join(out_dir, "last")
        self.best = os.path.join(out_dir, "best")
        self.save = save
        self.weights_config = weights_config

    def _save(self, trainer, prefix):
        meta = dict(trainer.state.state_dict(), config=trainer.config_dict(),
                    workers=trainer.workers.num_workers)
        weights = None
        if self.weights_config:
            weights = dict(self.weights_config)
            weights["provenance"] = dict(weights.get("provenance") or {},
                                         epoch=trainer.state.epoch, batch=trainer.state.batch,
                                         checkpoint=os.path.basename(prefix))
        save_checkpoint(prefix, trainer.net, trainer.checkpointable_trainer, meta, weights)

    def on_epoch_end(self, trainer, row, improved):
        if not self.save:
            return
        if improved:
            self._save(trainer, self.best)
        self._save(trainer, self.last)

    def on_interrupt(self, trainer):
        if self.save and trainer.state.batch:  # at an epoch boundary `last` is this state
            self._save(trainer, self.last)
        print("interrupted: resumable checkpoint at %s.params (epoch %d, batch %d); continue "
              "with --resume" % (self.last, trainer.state.epoch + 1, trainer.state.batch),
              flush=True)


class CurvePlotter(Callback):
    """``curves.png``: losses and accuracies so far, after every epoch."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "curves.png")

    def on_epoch_end(self, trainer, row, improved):
        from ..viz import plot_curves
        plot_curves(trainer.state.history, self.path)


def default_callbacks(out_dir, writer=True, progress=True, extra_config=None,
                      weights_config=None):
    """The callbacks of ``resattn train``: only the writer (rank 0) writes files."""
    callbacks = [InterruptHandler()]
    if progress:
        callbacks.append(ProgressBar())
    if writer:
        callbacks += [RunConfig(out_dir, extra_config), MetricsLogger(out_dir),
                      Checkpointer(out_dir, weights_config=weights_config),
                      CurvePlotter(out_dir)]
    else:
        callbacks.append(Checkpointer(out_dir, save=False))
    return callbacks
