"""Checkpoints and run outputs: parameter/state pairs that no crash can tear, metrics, logs,
and the lock that gives a run directory to one run at a time.

A checkpoint is ``prefix.params`` (the network, as ``save_parameters``
writes it) and ``prefix.states`` (optimizer state, loop state and the SHA-1
of the parameters it belongs to). Nothing in either file is ever run: both
are data, read by parsers.

The ``.states`` file (version 2)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
One file, written atomically (:func:`resattn.io.atomic_write`), of four parts:

1. the 15 bytes ``RESATTN-STATES`` and a newline, then the format version
   as a 4-byte little-endian unsigned integer (2);
2. the length of a JSON document (8-byte little-endian unsigned), then the
   document, UTF-8;
3. the length of an array section (8-byte little-endian unsigned), then the
   section: exactly what ``mxnet.nd.save`` writes for a dict of named
   NDArrays (MXNet's own binary format, read back by
   ``mxnet.nd.load_frombuffer``, a parser), or nothing when there is no array;
4. the end of the file (a longer or shorter file is torn and not used).

The JSON document holds ``format`` (``"resattn-states"``), ``version``,
``params_sha1`` (of the ``.params`` of the pair), ``arrays_sha1`` (of the
array section), ``meta`` (the loop state: epoch, batch, best top-1, history,
partial sums of the epoch, the settings and the number of workers) and
``optimizer``: None without one (``dist_async``, whose servers hold it), else
the optimizer's class name, ``num_update``, ``begin_num_update``, the update
count of every parameter index per device (``update_counts``, with
``current_device``), the learning-rate schedule's state (its class and its
scalar attributes, and those of its parts) and ``states``, the updater's state
of each parameter index, whose arrays are references ``{"__nd__": name}`` into
the array section. Values JSON has no type for are tagged objects of one key:
``{"__tuple__": [...]}``, ``{"__dict__": [[key, value], ...]}`` (keys that are
not strings), ``{"__float__": "nan"}`` (also ``"inf"``, ``"-inf"``) and
``{"__ndarray__": {"dtype", "shape", "data"}}`` (NumPy arrays of numbers), so
that every value comes back with its type and, for floats, bit for bit. The
loop state holds no random-generator state: training reseeds every generator
from ``(seed, epoch, batch)``.

Files of resattn 0.1 (pickles)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Until version 2 (resattn 0.1, and development versions before it),
``.states`` was a pickle of ``{"meta", "trainer", "params_sha1"}`` whose
``trainer`` was MXNet's ``Trainer.save_states`` output, itself a pickle of
the updater's states and the optimizer. Such files still
load and resume exactly, through a restricted unpickler that turns every
object into data and runs no code of any class: only these globals are
accepted, each replaced by a checking stand-in (:data:`LEGACY_GLOBALS`):

- ``numpy.core.multiarray.scalar`` and ``numpy.dtype`` (also under
  ``numpy._core``): NumPy floats in the loop state. The stand-ins accept the
  names of numeric dtypes and the bytes of one value, and give a Python number;
- ``mxnet.ndarray.ndarray.NDArray`` and ``builtins.bytearray``: the optimizer's
  arrays. ``NDArray`` must be called with ``(None,)`` and given the state
  ``{"handle": bytes}``, which MXNet's raw-bytes parser decodes; ``bytearray``
  takes bytes only;
- the optimizers resattn trains with (``mxnet.optimizer.optimizer`` ``SGD``,
  ``NAG``, ``Adam``) and GluonCV's ``LRSequential`` and ``LRScheduler``:
  records of a class name and a dict of attributes, built with no argument.
  Nothing of those classes runs; resattn reads the update counts, the
  schedule's scalars and the arrays out of the records and sets them on the
  optimizer the run built.

Any other global (``os.system``, ``builtins.getattr``, ``eval``...), a
persistent id, or a stand-in called with other arguments is refused with
:class:`UnsafeCheckpointError`, which names the file. Checkpoints are written
in version 2 only.

The run directory's lock
~~~~~~~~~~~~~~~~~~~~~~~~
:func:`prepare_run_dir` takes ``OUT/.lock`` (``fcntl.flock``, exclusive) for
the writer of a run: a second run, or a ``--resume``, of the same directory
fails at once with :class:`RunDirInUseError`. The kernel releases the lock
when its process ends, however it ends (a SIGKILL included), so nothing
stale is left to clean up (forked children, such as DataLoader workers, close
their copy at once and never keep it alive); the file stays, holding the last
holder's pid and start time for the message. The other workers of a
distributed job write nothing and take no lock.
"""
import errno
import hashlib
import io
import json
import math
import os
import pickle
import socket
import struct
import sys
import time
import warnings

import numpy as np

from ..io import atomic_write, config_path, load_parameters, sha1_file, write_weights_config

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no lock
    fcntl = None

__all__ = ["save_checkpoint", "load_checkpoint", "read_states", "UnsafeCheckpointError",
           "LEGACY_GLOBALS", "prepare_run_dir", "lock_run_dir", "RunLock", "RunDirInUseError",
           "remove_stale_temporaries", "write_metrics", "write_log"]

#: The first bytes of a version-2 ``.states`` file (then the version, 4 bytes).
STATES_MAGIC = b"RESATTN-STATES\n"
STATES_VERSION = 2
_FORMAT = "resattn-states"


class UnsafeCheckpointError(ValueError):
    """A ``.states`` file asks to run code when loaded: resattn never writes such a file.

    Raised before anything in the file has run; the message names the file
    and what it asked for.
    """

    def __init__(self, path, what, where="it"):
        self.path, self.what = path, what
        super().__init__(
            "%s is not a file resattn wrote: %s asks to call %s when loaded, which no resattn "
            "checkpoint does; refused, nothing in it was run (delete it, or resume from a "
            "checkpoint you trust)" % (path, where, what))


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(prefix, net, trainer, meta, weights_config=None):
    """Write ``prefix.params`` and ``prefix.states`` so that no crash loses a good pair.

    With ``weights_config`` (keyword arguments of
    :func:`resattn.io.write_weights_config`: ``model``, ``arch``,
    ``preprocessing``, ...), ``prefix.params.json`` describes the parameters,
    so that ``resattn eval``, ``predict``, ``masks`` and ``export`` need no flags.

    The states file (the module's description has its format; no pickle)
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
        data = _states_bytes(prefix, sha1_file(tmp_params), meta, trainer)
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
    the restricted unpickler the module's description lists; a file that asks
    to run code is refused with :class:`UnsafeCheckpointError`.
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
                problems.append(_first_line(err))
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
        _restore_optimizer(trainer, payload["optimizer"], source)
    return payload["meta"]


def read_states(path):
    """Read a ``.states`` file (version 2, or a resattn 0.1 pickle) without running anything.

    Returns
    -------
    dict
        ``meta`` (dict), ``params_sha1`` (str), ``optimizer`` (dict or None: the
        optimizer state as the module's description says, arrays as NDArrays)
        and ``format`` (``'resattn-states/2'`` or ``'pickle (resattn 0.1)'``).

    Raises
    ------
    UnsafeCheckpointError
        The file asks to run code.
    ValueError
        Any other file that is not a whole ``.states`` file.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(STATES_MAGIC):
        result = _read_v2(data, path)
    elif data[:1] == b"\x80":  # a pickle (protocol 2 or later): resattn 0.1
        result = _read_legacy(data, path)
    else:
        raise ValueError("%s is not a resattn .states file" % path)
    if not isinstance(result["meta"], dict) or not isinstance(result["params_sha1"], str):
        raise ValueError("%s is not a resattn .states file (no meta or params_sha1)" % path)
    if result["optimizer"] is not None:
        _check_optimizer_state(result["optimizer"], path)
    return result


def _first_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# ----------------------------------------------------------------------------- version 2
def _states_bytes(prefix, params_sha1, meta, trainer):
    """The bytes of a version-2 ``.states`` file."""
    arrays = {}
    optimizer = None if trainer is None else _to_json(_optimizer_state(trainer), arrays)
    blob = b""
    if arrays:
        import mxnet as mx
        tmp = prefix + ".trainer.tmp"  # removed by remove_stale_temporaries if killed here
        try:
            mx.nd.save(tmp, arrays)
            with open(tmp, "rb") as f:
                blob = f.read()
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    doc = {"format": _FORMAT, "version": STATES_VERSION, "params_sha1": params_sha1,
           "arrays_sha1": hashlib.sha1(blob).hexdigest(), "meta": _to_json(meta),
           "optimizer": optimizer}
    text = json.dumps(doc, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()
    return b"".join([STATES_MAGIC, struct.pack("<I", STATES_VERSION),
                     struct.pack("<Q", len(text)), text, struct.pack("<Q", len(blob)), blob])


def _read_v2(data, path):
    torn = ValueError("%s is torn or damaged (a .states file of the wrong length)" % path)
    pos = len(STATES_MAGIC)
    if len(data) < pos + 12:
        raise torn
    (version,) = struct.unpack_from("<I", data, pos)
    if version != STATES_VERSION:
        raise ValueError("%s is a .states file of version %d; this resattn reads version %d "
                         "(and resattn 0.1's)" % (path, version, STATES_VERSION))
    (size,) = struct.unpack_from("<Q", data, pos + 4)
    pos += 12
    if size > len(data) - pos - 8:
        raise torn
    try:
        doc = json.loads(data[pos:pos + size].decode("utf-8"))
    except ValueError as err:
        raise ValueError("%s: its JSON document does not parse (%s)" % (path, err)) from None
    pos += size
    (size,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    if pos + size != len(data):
        raise torn
    blob = data[pos:]
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or "meta" not in doc:
        raise ValueError("%s is not a resattn .states file" % path)
    if hashlib.sha1(blob).hexdigest() != doc.get("arrays_sha1"):
        raise ValueError("%s: its arrays do not match their SHA-1 (damaged)" % path)
    arrays = {}
    if blob:
        import mxnet as mx
        arrays = mx.nd.load_frombuffer(blob)
        if not isinstance(arrays, dict):
            raise ValueError("%s: its array section holds no named arrays" % path)
    optimizer = doc.get("optimizer")
    return {"meta": _from_json(doc["meta"], path=path),
            "params_sha1": doc.get("params_sha1"),
            "optimizer": None if optimizer is None else _from_json(optimizer, arrays, path),
            "format": "%s/%d" % (_FORMAT, STATES_VERSION)}


_TAGS = ("__tuple__", "__dict__", "__float__", "__ndarray__", "__nd__")


def _to_json(value, arrays=None):
    """``value`` as JSON values, tagged where JSON has no type (the module's description).

    With ``arrays`` (a dict), NDArrays go there and become references.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"__float__": repr(float(value))}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _to_json(value.item(), arrays)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {"__ndarray__": {"dtype": value.dtype.str, "shape": list(value.shape),
                                "data": [_to_json(v) for v in value.ravel().tolist()]}}
    if isinstance(value, list):
        return [_to_json(v, arrays) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, arrays) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _to_json(v, arrays) for k, v in value.items()}
        return {"__dict__": [[_to_json(k), _to_json(v, arrays)] for k, v in value.items()]}
    mx = sys.modules.get("mxnet")
    if arrays is not None and mx is not None and isinstance(value, mx.nd.NDArray):
        name = "%d" % len(arrays)
        arrays[name] = value
        return {"__nd__": name}
    raise TypeError("a checkpoint cannot hold %r (of type %s)" % (value, type(value).__name__))


def _from_json(value, arrays=None, path="<states>"):
    """The inverse of :func:`_to_json`; anything else is a ValueError."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [_from_json(v, arrays, path) for v in value]
    if not isinstance(value, dict):
        raise ValueError("%s: unexpected JSON value %r" % (path, value))
    if len(value) == 1 and next(iter(value)) in _TAGS:
        (tag, body), = value.items()
        if tag == "__tuple__" and isinstance(body, list):
            return tuple(_from_json(v, arrays, path) for v in body)
        if tag == "__dict__" and isinstance(body, list) and all(
                isinstance(p, list) and len(p) == 2 for p in body):
            out = {}
            for k, v in body:
                key = _from_json(k, None, path)
                if not isinstance(key, (str, int, float, bool, tuple)) and key is not None:
                    raise ValueError("%s: unexpected key %r" % (path, key))
                out[key] = _from_json(v, arrays, path)
            return out
        if tag == "__float__" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "__ndarray__" and isinstance(body, dict):
            return _ndarray_from_json(body, path)
        if tag == "__nd__" and arrays is not None and isinstance(body, str) and body in arrays:
            return arrays[body]
        raise ValueError("%s: malformed %s %r" % (path, tag, body))
    if any(k.startswith("__") for k in value):
        raise ValueError("%s: unexpected key in %r" % (path, sorted(value)))
    return {k: _from_json(v, arrays, path) for k, v in value.items()}


def _ndarray_from_json(body, path):
    try:
        dtype = np.dtype(body["dtype"]) if isinstance(body.get("dtype"), str) else None
    except TypeError:
        dtype = None
    shape, data = body.get("shape"), body.get("data")
    if dtype is None or dtype.kind not in "biuf" or not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape) \
            or not isinstance(data, list) or len(data) != int(np.prod(shape, dtype=np.int64)):
        raise ValueError("%s: malformed array %r" % (path, {k: body.get(k) for k in
                                                            ("dtype", "shape")}))
    values = [_from_json(v, None, path) for v in data]
    if not all(isinstance(v, (bool, int, float)) for v in values):
        raise ValueError("%s: malformed array values" % path)
    return np.array(values, dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------- optimizer state
def _class_name(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def _plain(value):
    """A scalar attribute (or a flat list/tuple of scalars) of a learning-rate schedule."""
    scalar = (type(None), bool, int, float, str, np.bool_, np.integer, np.floating)
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, scalar) for v in value)
    return isinstance(value, scalar)


def _scheduler_state(scheduler):
    """A learning-rate schedule's position: its class and scalar attributes, and its parts'."""
    if scheduler is None:
        return None
    parts = getattr(scheduler, "schedulers", None)
    return {"class": _class_name(type(scheduler)),
            "attrs": {k: v for k, v in vars(scheduler).items()
                      if k != "schedulers" and _plain(v)},
            "schedulers": [_scheduler_state(s) for s in parts] if isinstance(parts, list)
            else None}


def _optimizer_state(trainer):
    """What a ``gluon.Trainer``'s optimizer needs to continue exactly (module description)."""
    from .._compat import optimizer_update_counts, trainer_updaters
    updater = trainer_updaters(trainer)[0]
    optimizer = updater.optimizer
    per_device, current, own = optimizer_update_counts(optimizer)
    return {"class": type(optimizer).__name__, "num_update": int(optimizer.num_update),
            "begin_num_update": int(optimizer.begin_num_update),
            "update_counts": per_device, "current_device": current, "own_update_counts": own,
            "lr_scheduler": _scheduler_state(optimizer.lr_scheduler),
            "states": dict(updater.states)}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_optimizer_state(state, path):
    """Raise ValueError unless ``state`` has the layout of :func:`_optimizer_state`."""
    import mxnet as mx

    def bad(what):
        return ValueError("%s: malformed optimizer state (%s)" % (path, what))

    def counts(value):
        return isinstance(value, dict) and all(
            isinstance(k, (int, str)) and _is_int(v) for k, v in value.items())

    def array_state(value):
        if value is None or isinstance(value, mx.nd.NDArray):
            return True
        return isinstance(value, (tuple, list)) and all(array_state(v) for v in value)

    def schedule(value):
        if value is None:
            return True
        return (isinstance(value, dict) and isinstance(value.get("class"), str)
                and isinstance(value.get("attrs"), dict)
                and all(isinstance(k, str) and _plain(v) for k, v in value["attrs"].items())
                and (value.get("schedulers") is None or (
                    isinstance(value["schedulers"], list)
                    and all(s is not None and schedule(s) for s in value["schedulers"]))))

    if not isinstance(state, dict):
        raise bad("not a dict")
    if not isinstance(state.get("class"), str):
        raise bad("class")
    if not _is_int(state.get("num_update")) or not _is_int(state.get("begin_num_update")):
        raise bad("num_update")
    per_device = state.get("update_counts")
    if not isinstance(per_device, dict) or not all(
            _is_int(k) and counts(v) for k, v in per_device.items()):
        raise bad("update_counts")
    current, own = state.get("current_device"), state.get("own_update_counts")
    if not ((current is None and counts(own))
            or (_is_int(current) and current in per_device and own is None)):
        raise bad("current_device")
    if not schedule(state.get("lr_scheduler")):
        raise bad("lr_scheduler")
    states = state.get("states")
    if not isinstance(states, dict) or not all(
            isinstance(k, (int, str)) and array_state(v) for k, v in states.items()):
        raise bad("states")


def _restore_schedule(scheduler, saved, path):
    if scheduler is None or saved is None:
        return
    if saved["class"] != _class_name(type(scheduler)):
        raise ValueError("%s holds the state of learning-rate schedule %s, but this run's is %s;"
                         " cannot resume" % (path, saved["class"], _class_name(type(scheduler))))
    current = vars(scheduler)
    for key, value in saved["attrs"].items():
        if key in current and key != "schedulers" and _plain(current[key]) and (
                type(current[key]) is type(value)
                or (isinstance(current[key], (int, float)) and isinstance(value, (int, float))
                    and not isinstance(current[key], bool) and not isinstance(value, bool))):
            setattr(scheduler, key, list(value) if isinstance(value, list) else value)
    parts = getattr(scheduler, "schedulers", None)
    if isinstance(parts, list) and saved["schedulers"] is not None:
        if len(parts) != len(saved["schedulers"]):
            raise ValueError("%s holds a learning-rate schedule of %d parts, but this run's has "
                             "%d; cannot resume" % (path, len(saved["schedulers"]), len(parts)))
        for part, part_saved in zip(parts, saved["schedulers"]):
            _restore_schedule(part, part_saved, path)


def _copy_state(state):
    if isinstance(state, (tuple, list)):
        return type(state)(_copy_state(s) for s in state)
    return None if state is None else state.copy()


def _restore_optimizer(trainer, saved, path):
    """Set ``saved`` (:func:`read_states`' ``optimizer``) on the trainer's own optimizer."""
    from .._compat import set_optimizer_update_counts, trainer_updaters
    updaters = trainer_updaters(trainer)
    optimizer = updaters[0].optimizer
    if saved["class"] != type(optimizer).__name__:
        raise ValueError("%s holds the state of optimizer %s, but this run's is %s; cannot "
                         "resume" % (path, saved["class"], type(optimizer).__name__))
    optimizer.num_update = saved["num_update"]
    optimizer.begin_num_update = saved["begin_num_update"]
    set_optimizer_update_counts(optimizer, saved["update_counts"], saved["current_device"],
                                saved["own_update_counts"])
    _restore_schedule(optimizer.lr_scheduler, saved["lr_scheduler"], path)
    for i, updater in enumerate(updaters):
        # Each device's updater gets arrays of its own; they move to its device at first use.
        states = {k: (v if i == 0 else _copy_state(v)) for k, v in saved["states"].items()}
        updater.states = states
        updater.states_synced = dict.fromkeys(states, False)
        updater.optimizer = optimizer


# ----------------------------------------------------------------------------- resattn 0.1 files
class _Refused(Exception):
    """Raised inside the restricted unpickler: what the pickle asked for."""

    def __init__(self, what):
        super().__init__(what)
        self.what = what


class _Record:
    """A pickled object of an allowed class, kept as data: the class's name and the
    attributes the pickle gives it. Nothing of the real class runs."""
    name = kind = None

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise _Refused("%s with arguments %r" % (cls.name, args + tuple(kwargs.items())))
        self = object.__new__(cls)
        self.state = {}
        return self

    def __setstate__(self, state):
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise _Refused("%s with a state of type %s" % (self.name, type(state).__name__))
        self.state = state


def _record(module, name, kind):
    return type("_Record_" + name, (_Record,), {"name": "%s.%s" % (module, name), "kind": kind})


class _NDArrayRecord:
    """``mxnet.ndarray.ndarray.NDArray`` as its pickle builds it: ``NDArray(None)``, then the
    state ``{'handle': bytes}`` (``MXNDArraySaveRawBytes``), decoded by MXNet's parser."""

    def __new__(cls, *args, **kwargs):
        if args != (None,) or kwargs:
            raise _Refused("mxnet.ndarray.ndarray.NDArray with arguments %r" % (args,))
        self = object.__new__(cls)
        self.raw = None
        return self

    def __setstate__(self, state):
        if not (isinstance(state, dict) and set(state) == {"handle"}
                and isinstance(state["handle"], (bytes, bytearray))):
            raise _Refused("mxnet.ndarray.ndarray.NDArray with a state other than raw bytes")
        self.raw = bytearray(state["handle"])

    def decode(self):
        import mxnet as mx
        if self.raw is None:
            raise ValueError("an NDArray without data")
        array = mx.nd.NDArray(None)
        array.__setstate__({"handle": bytearray(self.raw)})
        return array


def _bytearray(*args, **kwargs):
    """``builtins.bytearray`` of bytes only (never of a size, which would allocate it)."""
    if kwargs or len(args) > 1 or (args and not isinstance(args[0], bytes)):
        raise _Refused("builtins.bytearray with arguments %r" % (args[:1] and
                                                                 (type(args[0]).__name__,),))
    return bytearray(*args)


#: Numeric dtypes a pickled NumPy number may have (``numpy.dtype``'s first argument).
_NUMPY_NUMBERS = frozenset("b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8".split())


class _DType:
    """``numpy.dtype`` as a pickle builds it: ``dtype(name, align, copy)``, then its state."""

    def __new__(cls, *args, **kwargs):
        if kwargs or not 1 <= len(args) <= 3 or args[0] not in _NUMPY_NUMBERS or not all(
                isinstance(a, bool) for a in args[1:]):
            raise _Refused("numpy.dtype with arguments %r" % (args,))
        self = object.__new__(cls)
        self.name, self.order = args[0], "="
        return self

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise _Refused("numpy.dtype with state %r" % (state,))
        self.order = state[1]

    def numpy(self):
        dtype = np.dtype(self.name)
        return dtype.newbyteorder(self.order) if self.order in "<>" else dtype


def _np_scalar(*args, **kwargs):
    """``numpy.core.multiarray.scalar(dtype, bytes)`` of a numeric dtype, as a Python number."""
    if kwargs or len(args) != 2 or not isinstance(args[0], _DType) or not isinstance(
            args[1], bytes) or len(args[1]) != args[0].numpy().itemsize:
        raise _Refused("numpy.core.multiarray.scalar with arguments other than a number")
    return np.frombuffer(args[1], dtype=args[0].numpy())[0].item()


_NUMPY_GLOBALS = {("numpy.core.multiarray", "scalar"): _np_scalar,
                  ("numpy._core.multiarray", "scalar"): _np_scalar,
                  ("numpy", "dtype"): _DType}

#: ``(module, name)`` a resattn 0.1 ``.states`` pickle may name, each with its stand-in:
#: ``'outer'``, the file itself (its loop state holds NumPy floats), and ``'trainer'``,
#: MXNet's ``Trainer.save_states`` bytes inside it. Nothing else is ever looked up.
#:
#: :meta hide-value:
LEGACY_GLOBALS = {
    "outer": dict(_NUMPY_GLOBALS),
    "trainer": {
        **_NUMPY_GLOBALS,
        ("mxnet.ndarray.ndarray", "NDArray"): _NDArrayRecord,
        ("builtins", "bytearray"): _bytearray,
        **{("mxnet.optimizer.optimizer", n): _record("mxnet.optimizer.optimizer", n, "optimizer")
           for n in ("SGD", "NAG", "Adam")},
        **{("gluoncv.utils.lr_scheduler", n): _record("gluoncv.utils.lr_scheduler", n,
                                                      "scheduler")
           for n in ("LRSequential", "LRScheduler")}},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, allowed):
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise _Refused("%s.%s" % (module, name))
        return found

    def persistent_load(self, pid):
        raise _Refused("a persistent object %r" % (pid,))


def _restricted_loads(data, allowed, path, where):
    try:
        return _RestrictedUnpickler(data, allowed).load()
    except _Refused as refused:
        raise UnsafeCheckpointError(path, refused.what, where) from None
    except RecursionError:
        raise ValueError("%s: nested too deeply" % path) from None


def _check_plain(value, path, depth=0):
    """Plain builtins only (what the loop state of a 0.1 file holds)."""
    if depth > 100:
        raise ValueError("%s: its loop state is nested too deeply" % path)
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, path, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, path, depth + 1)
            _check_plain(v, path, depth + 1)
    else:
        raise ValueError("%s: unexpected %s in its loop state" % (path, type(value).__name__))


def _legacy_schedule(record, path):
    if record is None:
        return None
    if not isinstance(record, _Record) or record.kind != "scheduler":
        raise ValueError("%s: its optimizer's learning-rate schedule is not one resattn uses"
                         % path)
    parts = record.state.get("schedulers")
    return {"class": record.name,
            "attrs": {k: v for k, v in record.state.items() if k != "schedulers" and _plain(v)},
            "schedulers": [_legacy_schedule(p, path) for p in parts]
            if isinstance(parts, list) else None}


def _legacy_array_state(value, path):
    if value is None:
        return None
    if isinstance(value, _NDArrayRecord):
        return value.decode()
    if isinstance(value, (tuple, list)):
        return type(value)(_legacy_array_state(v, path) for v in value)
    raise ValueError("%s: unexpected %s in its optimizer state" % (path, type(value).__name__))


def _legacy_optimizer(loaded, path):
    """The optimizer state of ``Updater.get_states(dump_optimizer=True)``, from its records."""
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and isinstance(loaded[0], dict)
            and isinstance(loaded[1], _Record) and loaded[1].kind == "optimizer"):
        raise ValueError("%s: its optimizer state is not MXNet's (states, optimizer)" % path)
    states, record = loaded
    fields = record.state
    per_device = fields.get("_all_index_update_counts", {})
    own = fields.get("_index_update_count", {})
    current = None
    if isinstance(per_device, dict):
        current = next((d for d, c in per_device.items() if c is own), None)
    return {"class": record.name.rsplit(".", 1)[1], "num_update": fields.get("num_update"),
            "begin_num_update": fields.get("begin_num_update", 0),
            "update_counts": per_device, "current_device": current,
            "own_update_counts": None if current is not None else own,
            "lr_scheduler": _legacy_schedule(fields.get("lr_scheduler"), path),
            "states": {k: _legacy_array_state(v, path) for k, v in states.items()}}


def _read_legacy(data, path):
    """A resattn 0.1 ``.states`` pickle, through the restricted unpickler (module description)."""
    payload = _restricted_loads(data, LEGACY_GLOBALS["outer"], path, "it")
    if not isinstance(payload, dict) or not {"meta", "trainer", "params_sha1"} <= set(payload):
        raise ValueError("%s is not a resattn .states file" % path)
    _check_plain(payload["meta"], path)
    trainer = payload["trainer"]
    optimizer = None
    if trainer is not None:
        if not isinstance(trainer, bytes):
            raise ValueError("%s: its optimizer state is not bytes" % path)
        loaded = _restricted_loads(trainer, LEGACY_GLOBALS["trainer"], path,
                                   "its optimizer state")
        optimizer = _legacy_optimizer(loaded, path)
    return {"meta": payload["meta"], "params_sha1": payload["params_sha1"],
            "optimizer": optimizer, "format": "pickle (resattn 0.1)"}


# ----------------------------------------------------------------------------- run directory
LOCK_NAME = ".lock"

#: The descriptors of the locks this process holds: closed in forked children (DataLoader
#: workers), which must not keep a lock alive after the run that took it has died.
_HELD = {}


def _close_held_locks_in_child():
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_locks_in_child)


class RunDirInUseError(ValueError):
    """The run directory is locked by a run that is still going."""


class RunLock:
    """The exclusive lock of a run directory (``OUT/.lock``), taken by :func:`lock_run_dir`.

    :meth:`release` (or leaving a ``with`` block) gives it back; the kernel
    gives it back when the process ends, however it ends.
    """

    def __init__(self, out_dir, fd):
        self.out_dir, self.path, self._fd = out_dir, os.path.join(out_dir, LOCK_NAME), fd

    @property
    def held(self):
        """Whether this process holds the lock now (False where locks are not supported)."""
        return self._fd is not None and self._fd in _HELD

    def release(self):
        """Give the lock back (a second call does nothing)."""
        fd, self._fd = self._fd, None
        if fd is not None and _HELD.pop(fd, None) is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _lock_holder(fd):
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_run_dir(out_dir):
    """Take the exclusive lock of ``out_dir`` (created if needed) for a run's writer.

    Returns
    -------
    RunLock

    Raises
    ------
    RunDirInUseError
        Another process holds it: ``OUT is in use by another resattn train (pid N,
        started ...); wait for it, or use another --out``.
    """
    os.makedirs(out_dir, exist_ok=True)
    if fcntl is None:  # pragma: no cover - not POSIX
        return RunLock(out_dir, None)
    path = os.path.join(out_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _lock_holder(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = "pid %s" % holder.get("pid", "unknown")
            if holder.get("host") and holder["host"] != socket.gethostname():
                who += " on %s" % holder["host"]
            if holder.get("started"):
                who += ", started %s" % holder["started"]
            raise RunDirInUseError("%s is in use by another resattn train (%s); wait for it, or "
                                   "use another --out" % (out_dir, who)) from None
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            warnings.warn("%s: this file system does not support locks (%s); nothing stops "
                          "another run from using the directory at the same time"
                          % (out_dir, err.strerror), RuntimeWarning, stacklevel=2)
            return RunLock(out_dir, None)
        raise
    _HELD[fd] = path
    try:
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "argv": sys.argv}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info + b"\n", 0)
    except OSError:  # only the message of a later run loses the details
        pass
    return RunLock(out_dir, fd)


def prepare_run_dir(out_dir, resume=False, overwrite=False, writer=True):
    """Create ``out_dir``, lock it for this run and refuse to start a new run over an old one.

    The writer (rank 0) takes the directory's lock (:func:`lock_run_dir`)
    first: while another process holds it (a run, or a resumed run, that is
    still going) this raises :class:`RunDirInUseError`. Without ``resume``
    or ``overwrite``, a directory that already holds a run (``last.params``)
    is an error, so that no checkpoint is replaced by accident. The writer
    also removes temporary files a killed run left behind.

    Returns
    -------
    RunLock or None
        The writer's lock, to :meth:`~RunLock.release` when the run ends (the
        other workers take none: they write nothing).
    """
    lock = lock_run_dir(out_dir) if writer else None
    try:
        if not resume and not overwrite and os.path.exists(os.path.join(out_dir, "last.params")):
            raise ValueError("%s already holds a training run (last.params); pass --resume to "
                             "continue it, --overwrite to start again, or another --out"
                             % out_dir)
        if writer:
            remove_stale_temporaries(out_dir)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


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
