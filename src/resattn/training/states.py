"""The ``.states`` file of a checkpoint pair, version 2: its writer, its reader, and the
optimizer state it carries (saved, checked and set on a run's own optimizer).

Nothing in the file is ever run: it is data, read by parsers. The pair is
:mod:`resattn.training.checkpoint`'s; resattn 0.1's pickled files are read by
:mod:`resattn.training.legacy_states`.

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
"""
import hashlib
import json
import math
import os
import struct
import sys

import numpy as np

__all__ = ["STATES_MAGIC", "STATES_VERSION", "encode_states", "decode_states",
           "check_optimizer_state", "restore_optimizer"]

#: The first bytes of a version-2 ``.states`` file (then the version, 4 bytes).
STATES_MAGIC = b"RESATTN-STATES\n"
STATES_VERSION = 2
_FORMAT = "resattn-states"


# ----------------------------------------------------------------------------- version 2
def encode_states(prefix, params_sha1, meta, trainer):
    """The bytes of a version-2 ``.states`` file.

    Parameters
    ----------
    prefix : str
        The checkpoint's prefix: MXNet's array writer goes through
        ``prefix.trainer.tmp``, removed before this returns.
    params_sha1 : str
        SHA-1 of the ``.params`` file of the pair.
    meta : dict
        The loop state, of plain values (:func:`~resattn.training.checkpoint.save_checkpoint`).
    trainer : mxnet.gluon.Trainer or None
        Whose optimizer state to hold (None: no optimizer state).
    """
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


def decode_states(data, path):
    """The contents of a version-2 ``.states`` file, its bytes ``data`` read from ``path``.

    Returns
    -------
    dict
        ``meta``, ``params_sha1``, ``optimizer`` (arrays as NDArrays, or None)
        and ``format``, as :func:`~resattn.training.checkpoint.read_states` gives them.

    Raises
    ------
    ValueError
        A torn, damaged or foreign file, or one of another version.
    """
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


def is_schedule_value(value):
    """Whether ``value`` is a scalar (or a flat list/tuple of scalars): an attribute of a
    learning-rate schedule that a ``.states`` file keeps."""
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
                      if k != "schedulers" and is_schedule_value(v)},
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


def check_optimizer_state(state, path):
    """Raise ValueError, naming ``path``, unless ``state`` has the layout of an optimizer
    state (the module's description; the same for both formats)."""
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
                and all(isinstance(k, str) and is_schedule_value(v)
                        for k, v in value["attrs"].items())
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
        if key in current and key != "schedulers" and is_schedule_value(current[key]) and (
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


def restore_optimizer(trainer, saved, path):
    """Set ``saved`` (the ``optimizer`` of :func:`~resattn.training.checkpoint.read_states`)
    on ``trainer``'s own optimizer; a state of another optimizer or schedule is a ValueError
    naming ``path``."""
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
