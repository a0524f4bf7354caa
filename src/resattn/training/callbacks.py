"""Callbacks of the :class:`~resattn.training.Trainer`: what a run does besides training.

Each callback implements some of the hooks of :class:`Callback`; the
trainer calls them in list order. :func:`default_callbacks` gives what
``resattn train`` uses: Ctrl-C handling, a progress bar, and for the
writing worker, metrics, checkpoints and curves in the run directory.
"""
import json
import math
import os
import signal
import threading

from ..io import atomic_write, write_json
from .checkpoint import save_checkpoint

__all__ = ["Callback", "InterruptHandler", "ProgressBar", "HealthCheck", "MetricsLogger",
           "Checkpointer", "CurvePlotter", "ConfigWriter", "RunConfig", "default_callbacks", "run_health",
           "near_chance", "write_metrics", "write_log"]


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


class ConfigWriter(Callback):
    """Writes ``config.json``: the settings of the run, so that it can be repeated.

    A callback, not the settings themselves (those are :class:`~resattn.training.TrainConfig`).

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


#: What to try when a run fails, by the kind of failure :class:`HealthCheck` finds.
HEALTH_ADVICE = {
    "stuck": "try another --seed, a lower --lr or more --warmup-epochs",
    "diverged": ("the network computes something else in evaluation mode than in training "
                 "(BatchNorm's running statistics do not fit the batches); "
                 "try a lower --lr or more --warmup-epochs"),
    "collapsed": "try a lower --lr or more --warmup-epochs; best.params keeps the best epoch",
}


def near_chance(classes):
    """The top-1 below which a classifier of ``classes`` classes is no better than guessing:
    ``min(2 / classes, chance + 0.1 (1 - chance))`` with ``chance = 1 / classes`` (0.19 for
    10 classes, 0.55 for 2, 0.02 for 100)."""
    chance = 1.0 / max(classes, 2)
    return min(2 * chance, chance + 0.1 * (1 - chance))


#: The rule of :class:`HealthCheck`, chosen from replayed seed studies (docs/training.md,
#: "Runs that fail say so"; ``benchmarks/health_replay.py``): nothing is judged before the
#: end of warm-up plus a grace of ``GRACE_FRACTION`` of the schedule (at least
#: ``GRACE_EPOCHS``, at most ``GRACE_MAX`` epochs), and a problem must hold
#: ``PERSIST_EPOCHS`` epochs running.
GRACE_EPOCHS, GRACE_FRACTION, GRACE_MAX, PERSIST_EPOCHS = 2, 0.35, 10, 2


def first_judged_epoch(epochs, warmup_epochs):
    """The first epoch :class:`HealthCheck` judges in a run of ``epochs`` with that warm-up."""
    grace = min(GRACE_MAX, max(GRACE_EPOCHS, int(math.ceil(GRACE_FRACTION * epochs))))
    return int(warmup_epochs or 0) + grace


def _problems(history, classes):
    """The rules at the last row of ``history``: ``{kind: text}``."""
    row, problems = history[-1], {}
    chance_loss, chance = math.log(max(classes, 2)), 1.0 / max(classes, 2)
    if row["train_loss"] >= 0.9 * chance_loss and row["val_top1"] < near_chance(classes):
        problems["stuck"] = ("training is stuck at chance after %d epochs: training loss %.3f "
                             "(chance %.3f), test top-1 %.4f (chance %.2f)" % (
                                 row["epoch"], row["train_loss"], chance_loss, row["val_top1"],
                                 chance))
    if not math.isfinite(row["val_loss"]) or row["val_loss"] > 3 * chance_loss:
        problems["diverged"] = ("the evaluation loss diverges: %.4g (chance %.3f) at epoch %d, "
                                "training loss %.3f" % (row["val_loss"], chance_loss,
                                                        row["epoch"], row["train_loss"]))
    best = max(history, key=lambda r: r["val_top1"])
    if best["val_top1"] > 3 * chance and row["val_top1"] < 0.5 * best["val_top1"]:
        problems["collapsed"] = ("test top-1 fell to %.4f at epoch %d from %.4f at epoch %d"
                                 % (row["val_top1"], row["epoch"], best["val_top1"],
                                    best["epoch"]))
    return problems


def run_health(history, classes, min_epochs=2, persist=1):
    """What is wrong with a run so far, judged from its epoch rows: a list of ``(kind, text)``.

    ``kind`` is one of :data:`HEALTH_ADVICE`'s keys, for the last row of ``history``:

    - ``'stuck'``: a training loss still within 10% of chance (``ln(classes)``, the loss
      of a uniform guess) and a test top-1 below :func:`near_chance`;
    - ``'diverged'``: an evaluation loss above 3x chance while the network is
      evaluated in inference mode, which no network that guesses uniformly reaches;
    - ``'collapsed'``: a test top-1 below half the best so far, where the best was
      above three times chance.

    Parameters
    ----------
    history : list of dict
        Epoch rows (``epoch``, ``train_loss``, ``val_loss``, ``val_top1``).
    classes : int
    min_epochs : int
        No problem is reported before this epoch (warm-up and the first epochs after it,
        when BatchNorm's running statistics still lag), except a non-finite loss.
    persist : int
        A problem is reported only when it held at each of the last ``persist`` epochs.

    Returns
    -------
    list of (str, str)
    """
    if not history:
        return []
    row = history[-1]
    if not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
        return list(_problems(history, classes).items()) or [
            ("diverged", "the loss is not finite at epoch %d" % row["epoch"])]
    if row["epoch"] < min_epochs or len(history) < persist:
        return []
    last = _problems(history, classes)
    for back in range(1, persist):
        earlier = _problems(history[:-back], classes)
        last = {k: v for k, v in last.items() if k in earlier}
    return list(last.items())


class HealthCheck(Callback):
    """Says when a run fails instead of letting it finish silently.

    After every epoch, :func:`run_health` judges the history; each problem is
    printed as one ``warning:`` line with what to try, and kept in the epoch's
    row as ``row['warnings']`` (so ``metrics.jsonl`` and ``train.log`` carry
    it). :attr:`problems` holds the last epoch's, and ``resattn train``'s
    summary names them.

    The rule (:func:`first_judged_epoch`, :data:`PERSIST_EPOCHS`) was chosen by replaying
    it on finished runs, healthy and failed (docs/training.md gives its precision and
    recall).

    Parameters
    ----------
    min_epochs : int, optional
        First epoch that may be judged; default :func:`first_judged_epoch` of the run's
        epochs and warm-up.
    persist : int, default :data:`PERSIST_EPOCHS`
        Epochs running a problem must hold before it is reported.
    verbose : bool, default True
        Print the warnings (the writer of a distributed job only).
    """

    def __init__(self, min_epochs=None, persist=None, verbose=True):
        self.min_epochs, self.verbose = min_epochs, verbose
        self.persist = PERSIST_EPOCHS if persist is None else persist
        self.problems = []

    def first_epoch(self, trainer):
        """The first epoch judged (``min_epochs``, or :func:`first_judged_epoch`)."""
        if self.min_epochs is not None:
            return self.min_epochs
        config = getattr(trainer, "config", None)
        return first_judged_epoch(getattr(config, "epochs", 0) or 0,
                                  getattr(config, "warmup_epochs", 0))

    def on_epoch_end(self, trainer, row, improved):
        found = run_health(trainer.state.history, trainer.classes, self.first_epoch(trainer),
                           self.persist)
        self.problems = [(kind, "%s; %s" % (text, HEALTH_ADVICE[kind])) for kind, text in found]
        if self.problems:
            row["warnings"] = [text for _, text in self.problems]
            if self.verbose:
                for text in row["warnings"]:
                    print("warning: " + text, flush=True)


def environment_line():
    """``resattn V, MXNet V, threads: <why>; CPU: <model; ISA; cores>``: what a run ran on."""
    import mxnet as mx

    from .. import __version__, _threads
    return "resattn %s, MXNet %s, threads: %s; CPU: %s" % (
        __version__, mx.__version__, _threads.CHOICE[1], _threads.describe_cpu())


def write_metrics(path, history):
    """``metrics.jsonl``: one JSON object per epoch row, written atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            for row in history:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    atomic_write(path, write)


def write_log(path, history, epochs, header=None):
    """``train.log``: the ``header`` lines (each after a hash sign and a space), then one
    human-readable line per epoch and its warnings; written atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            for line in header or ():
                f.write("# %s\n" % line)
            for r in history:
                f.write("epoch %d/%d train_loss %.4f val_loss %.4f val_top1 %.4f val_top5 %.4f "
                        "lr %.5f img/s %.1f time %.1fs\n" % (
                            r["epoch"], epochs, r["train_loss"], r["val_loss"], r["val_top1"],
                            r["val_top5"], r["lr"], r["img_per_s"], r["time_s"]))
                for text in r.get("warnings", ()):
                    f.write("  warning: %s\n" % text)
    atomic_write(path, write)


class MetricsLogger(Callback):
    """``metrics.jsonl`` (one JSON row per epoch) and ``train.log`` (a header naming the
    versions, the thread count and the CPU, then one line per epoch and its warnings)."""

    def __init__(self, out_dir):
        self.metrics = os.path.join(out_dir, "metrics.jsonl")
        self.log = os.path.join(out_dir, "train.log")
        self.header = None

    def on_fit_start(self, trainer):
        self.header = [environment_line()]
        write_metrics(self.metrics, trainer.state.history)

    def on_epoch_end(self, trainer, row, improved):
        write_metrics(self.metrics, trainer.state.history)
        write_log(self.log, trainer.state.history, trainer.config.epochs, self.header)


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
        #: ``(epoch, batch)`` of the ``last`` checkpoint this run wrote (None before the first).
        self.last_written = None

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
        if prefix == self.last:
            self.last_written = (trainer.state.epoch, trainer.state.batch)

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
    callbacks.append(HealthCheck(verbose=writer))
    if writer:
        callbacks += [ConfigWriter(out_dir, extra_config), MetricsLogger(out_dir),
                      Checkpointer(out_dir, weights_config=weights_config),
                      CurvePlotter(out_dir)]
    else:
        callbacks.append(Checkpointer(out_dir, save=False))
    return callbacks
