"""Checkpoint pairs that no crash can tear: ``prefix.params`` and ``prefix.states``.

A checkpoint is ``prefix.params`` (the network, as ``save_parameters``
writes it) and ``prefix.states`` (optimizer state, loop state and the SHA-1
of the parameters it belongs to). Nothing in either file is ever run: both
are data, read by parsers. The ``.states`` format (version 2) is
:mod:`resattn.training.states`'s; files of resattn 0.1 (pickles) are read by
:mod:`resattn.training.legacy_states`. The run directory that holds a run's
pairs is :mod:`resattn.training.rundir`'s.
"""
import os

from .._checks import first_line
from ..io import atomic_write, config_path, load_parameters, sha1_file, write_weights_config
from .legacy_states import UnsafeCheckpointError, read_legacy_states
from .states import (STATES_MAGIC, check_optimizer_state, decode_states, encode_states,
                     restore_optimizer)

__all__ = ["save_checkpoint", "load_checkpoint", "read_states"]


def save_checkpoint(prefix, net, trainer, meta, weights_config=None):
    """Write ``prefix.params`` and ``prefix.states`` so that no crash loses a good pair.

    With ``weights_config`` (keyword arguments of
    :func:`resattn.io.write_weights_config`: ``model``, ``arch``,
    ``preprocessing``, ...), ``prefix.params.json`` describes the parameters,
    so that ``resattn eval``, ``predict``, ``masks`` and ``export`` need no flags.

    The states file (:mod:`~resattn.training.states` has its format; no pickle)
    carries the trainer's optimizer state (None without a trainer, as in
    ``dist_async`` where the servers hold it), ``meta`` and the SHA-1 of the
    parameters it belongs to. ``meta`` holds plain values: None, bools,
    numbers, strings, lists, tuples, dicts and NumPy numbers or arrays. The
    previous states file is kept as ``prefix.states.prev`` until the new pair
    is complete, and :func:`load_checkpoint` takes whichever states file
    matches the params.
    """
    params_path, states_path = prefix + ".params", prefix + ".states"
    tmp_params = atomic_write(params_path + ".new", net.save_parameters)
    try:
        data = encode_states(prefix, sha1_file(tmp_params), meta, trainer)
    except BaseException:
        os.remove(tmp_params)
        raise

    def write_states(path):
        with open(path, "wb") as f:
            f.write(data)

    try:
        if os.path.exists(states_path):
            os.replace(states_path, states_path + ".prev")
        atomic_write(states_path, write_states)
        if weights_config:
            # The config describes the new parameters: written (for the file's final name)
            # just before they take that name.
            write_weights_config(tmp_params, **weights_config)
            os.replace(config_path(tmp_params), config_path(params_path))
        os.replace(tmp_params, params_path)
    except BaseException:
        # Disk full, Ctrl-C...: the old pair stays loadable (its states are in .prev, which
        # load_checkpoint reads); only the new parameters' temporary file goes.
        for leftover in (tmp_params, config_path(tmp_params)):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    if os.path.exists(states_path + ".prev"):
        os.remove(states_path + ".prev")


def load_checkpoint(prefix, net, trainer=None, ctx=None):
    """Load a checkpoint pair written by :func:`save_checkpoint`; returns its ``meta``.

    ``prefix.states`` may also be a file of resattn 0.1 (a pickle), read by
    the restricted unpickler of :mod:`~resattn.training.legacy_states`; a file
    that asks to run code is refused with
    :class:`~resattn.training.legacy_states.UnsafeCheckpointError`.
    """
    params_path = prefix + ".params"
    if not os.path.isfile(params_path):
        raise ValueError("no checkpoint to resume: %s does not exist" % params_path)
    digest = sha1_file(params_path)
    payload, source, problems = None, None, []
    for states_path in (prefix + ".states", prefix + ".states.prev"):
        if os.path.isfile(states_path):
            try:
                candidate = read_states(states_path)
            except UnsafeCheckpointError:
                raise
            except Exception as err:  # a torn or foreign file: try the other one
                problems.append(first_line(err))
                continue
            if candidate["params_sha1"] == digest:
                payload, source = candidate, states_path
                break
    if payload is None:
        raise ValueError("%s has no matching %s.states (interrupted while writing or edited "
                         "by hand); cannot resume%s" % (params_path, prefix, "".join(
                             "; " + p for p in problems)))
    if trainer is not None and payload["optimizer"] is None:
        raise ValueError("%s holds no optimizer state (written by a dist_async job, whose "
                         "servers keep it); cannot resume" % params_path)
    load_parameters(net, params_path, ctx=ctx)
    if trainer is not None:
        restore_optimizer(trainer, payload["optimizer"], source)
    return payload["meta"]


def read_states(path):
    """Read a ``.states`` file (version 2, or a resattn 0.1 pickle) without running anything.

    Returns
    -------
    dict
        ``meta`` (dict), ``params_sha1`` (str), ``optimizer`` (dict or None: the
        optimizer state as :mod:`~resattn.training.states` describes it, arrays as NDArrays)
        and ``format`` (``'resattn-states/2'`` or ``'pickle (resattn 0.1)'``).

    Raises
    ------
    ~resattn.training.legacy_states.UnsafeCheckpointError
        The file asks to run code.
    ValueError
        Any other file that is not a whole ``.states`` file.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(STATES_MAGIC):
        result = decode_states(data, path)
    elif data[:1] == b"\x80":  # a pickle (protocol 2 or later): resattn 0.1
        result = read_legacy_states(data, path)
    else:
        raise ValueError("%s is not a resattn .states file" % path)
    if not isinstance(result["meta"], dict) or not isinstance(result["params_sha1"], str):
        raise ValueError("%s is not a resattn .states file (no meta or params_sha1)" % path)
    if result["optimizer"] is not None:
        check_optimizer_state(result["optimizer"], path)
    return result
