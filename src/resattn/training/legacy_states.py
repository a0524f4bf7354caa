"""The reader of resattn 0.1's ``.states`` files (pickles), kept for 0.1 files only: runs
written by resattn 0.1 still load and resume exactly. Nothing writes this format any more;
checkpoints are written in version 2 (:mod:`resattn.training.states`), and
:func:`resattn.training.checkpoint.read_states` reads both.

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
"""
import io
import pickle

import numpy as np

from .states import is_schedule_value

__all__ = ["UnsafeCheckpointError", "LEGACY_GLOBALS", "read_legacy_states"]


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
            "attrs": {k: v for k, v in record.state.items()
                      if k != "schedulers" and is_schedule_value(v)},
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


def read_legacy_states(data, path):
    """A resattn 0.1 ``.states`` pickle, its bytes ``data`` read from ``path``, through the
    restricted unpickler (the module's description).

    Returns
    -------
    dict
        ``meta``, ``params_sha1``, ``optimizer`` (or None) and ``format``, as
        :func:`~resattn.training.checkpoint.read_states` gives them.

    Raises
    ------
    UnsafeCheckpointError
        The file asks for a global, a persistent id or a call that is not allowed.
    ValueError
        Any other file that is not a 0.1 ``.states`` file.
    """
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
