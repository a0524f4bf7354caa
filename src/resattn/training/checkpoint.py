"""Checkpoints and run outputs: parameter/state pairs that no crash can tear, metrics, logs.

A checkpoint is ``prefix.params`` (the network, as ``save_parameters``
writes it) and ``prefix.states`` (optimizer state, loop state and the SHA-1
of the parameters it belongs to). resattn 0.1 wrote the same files.
"""
import json
import os
import pickle
import tempfile

from ..io import atomic_write, config_path, load_parameters, sha1_file, write_weights_config

__all__ = ["save_checkpoint", "load_checkpoint", "prepare_run_dir", "remove_stale_temporaries",
           "write_metrics", "write_log"]


def save_checkpoint(prefix, net, trainer, meta, weights_config=None):
    """Write ``prefix.params`` and ``prefix.states`` so that no crash loses a good pair.

    With ``weights_config`` (keyword arguments of
    :func:`resattn.io.write_weights_config`: ``model``, ``arch``,
    ``preprocessing``, ...), ``prefix.params.json`` describes the parameters,
    so that ``resattn eval``, ``predict``, ``masks`` and ``export`` need no flags.

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
    payload = {"meta": meta, "trainer": trainer_bytes, "params_sha1": sha1_file(tmp_params)}

    def write_states(path):
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=4)

    if os.path.exists(states_path):
        os.replace(states_path, states_path + ".prev")
    atomic_write(states_path, write_states)
    if weights_config:
        # The config describes the new parameters: written (for the file's final name) just
        # before they take that name.
        write_weights_config(tmp_params, **weights_config)
        os.replace(config_path(tmp_params), config_path(params_path))
    os.replace(tmp_params, params_path)
    if os.path.exists(states_path + ".prev"):
        os.remove(states_path + ".prev")


def load_checkpoint(prefix, net, trainer=None, ctx=None):
    """Load a checkpoint pair written by :func:`save_checkpoint`; returns its ``meta``."""
    params_path = prefix + ".params"
    if not os.path.isfile(params_path):
        raise ValueError("no checkpoint to resume: %s does not exist" % params_path)
    digest = sha1_file(params_path)
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
def prepare_run_dir(out_dir, resume=False, overwrite=False, writer=True):
    """Create ``out_dir`` and refuse to start a new run over an old one.

    Without ``resume`` or ``overwrite``, a directory that already holds a run
    (``last.params``) is an error, so that no checkpoint is replaced by
    accident. The writer (rank 0) also removes temporary files a killed run
    left behind.
    """
    if writer:
        os.makedirs(out_dir, exist_ok=True)
    if not resume and not overwrite and os.path.exists(os.path.join(out_dir, "last.params")):
        raise ValueError("%s already holds a training run (last.params); pass --resume to "
                         "continue it, --overwrite to start again, or another --out" % out_dir)
    if writer:
        remove_stale_temporaries(out_dir)


def remove_stale_temporaries(out_dir):
    """Delete temporary files a killed run left behind; the files they were for are intact."""
    for name in os.listdir(out_dir):
        if (name.startswith(".") and name.endswith(".tmp")) or name.endswith(
                (".params.new", ".trainer.tmp")):
            os.remove(os.path.join(out_dir, name))


def write_metrics(path, history):
    """``metrics.jsonl``: one JSON object per epoch row, written atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            for row in history:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    atomic_write(path, write)


def write_log(path, history, epochs):
    """``train.log``: one human-readable line per epoch, written atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            for r in history:
                f.write("epoch %d/%d train_loss %.4f val_loss %.4f val_top1 %.4f val_top5 %.4f "
                        "lr %.5f img/s %.1f time %.1fs\n" % (
                            r["epoch"], epochs, r["train_loss"], r["val_loss"], r["val_top1"],
                            r["val_top5"], r["lr"], r["img_per_s"], r["time_s"]))
    atomic_write(path, write)
