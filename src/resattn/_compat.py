"""Imports of MXNet and GluonCV with errors that say what to install."""
import contextlib
import importlib
import sys

_MXNET_HINT = (
    "resattn needs MXNet, which is an extra so that the CPU and GPU builds are never "
    "installed together. Install one of:\n"
    "    pip install 'resattn[cpu]'    # mxnet==1.9.1, CPU\n"
    "    pip install 'resattn[cu112]'  # mxnet-cu112==1.9.1, CUDA 11.2")


def import_mxnet():
    """Return the ``mxnet`` module or raise an ImportError naming the extras."""
    try:
        return importlib.import_module("mxnet")
    except ImportError as err:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(_MXNET_HINT + "\n(import failed with: %s)" % err) from err


def import_gluoncv():
    """Import GluonCV's MXNet half even where PyTorch >= 2 is installed.

    GluonCV 0.10.5 raises ``RuntimeError`` at import when it finds ``torch>=2``
    (its check only allows ``torch<2``), although resattn uses none of its
    PyTorch code. Hiding ``torch`` for the duration of that import makes
    GluonCV skip the check; the real ``torch`` module is restored afterwards.
    """
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    missing = object()
    saved = sys.modules.get("torch", missing)
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        import gluoncv  # noqa: F401
    finally:
        if saved is missing:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = saved
    return sys.modules["gluoncv"]


# ----------------------------------------------------------------------------- private MXNet API
# Everything below reaches into MXNet 1.9's private attributes; the next MXNet
# difference is fixed here and nowhere else (tests/test_compat.py checks each).

def structured_params(block, prefix=""):
    """``{structural name: Parameter}``, the names ``save_parameters`` writes
    (``features.1.0.conv1.weight``), from ``Block._collect_params_with_prefix``."""
    return block._collect_params_with_prefix(prefix)


def load_param_data(param, array, ctx):
    """Set ``param`` to ``array`` on ``ctx``, initialising it (and finishing deferred
    shape inference) if needed, as ``Block.load_parameters`` does."""
    param._load_init(array, ctx)


def clear_cached_graph(block):
    """Drop the cached graph of a hybridized block; it is rebuilt at the next call."""
    block._clear_cached_op()


def has_cached_graph(block):
    """Whether a hybridized block holds a cached graph now."""
    return getattr(block, "_cached_op", None) is not None


def is_hybridized(block):
    """Whether ``block.hybridize()`` is in effect for this block itself."""
    return bool(getattr(block, "_active", False))


def set_hybridized(block, active, static_alloc=False, static_shape=False):
    """Hybridize ``block`` alone, not its children (``HybridBlock.hybridize`` recurses)."""
    block._active = active
    block._flags = [("static_alloc", static_alloc), ("static_shape", static_shape)]
    block._clear_cached_op()


def batchnorm_global_stats(block, value=None):
    """``use_global_stats`` of a BatchNorm-like block (None if it has none); set if ``value``."""
    kwargs = getattr(block, "_kwargs", None) or {}
    if "use_global_stats" not in kwargs:
        return None
    old = kwargs["use_global_stats"]
    if value is not None:
        kwargs["use_global_stats"] = value
    return old


def dropout_rate(block, value=None):
    """The rate of a ``gluon.nn.Dropout``; set if ``value`` is given. Returns the old rate."""
    old = block._rate
    if value is not None:
        block._rate = value
    return old


def settle_trainer(trainer):
    """Make a ``gluon.Trainer`` create its kvstore and put the parameters on it now,
    instead of at its first ``step`` (see ``training.distributed.Workers.settle``)."""
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()


def onnx_get_inputs():
    """``get_inputs`` of MXNet's ONNX opset-12 translations (for a custom converter)."""
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset12 import get_inputs
    return get_inputs


def onnx_graph():
    """MXNet's ``MXNetGraph`` ONNX exporter class."""
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    return MXNetGraph


def named_children(block):
    """``[(name, child)]`` of a block's registered children, in registration order."""
    return list(block._children.items())


def named_blocks(block, path=""):
    """``(path, block)`` of ``block`` and every block under it, depth first, in registration
    order, each once per place it is registered; paths are dotted as in structural parameter
    names (``features.1.0``), ``path`` that of ``block`` itself."""
    stack = [(path, block)]
    while stack:
        path, current = stack.pop()
        yield path, current
        stack.extend(("%s.%s" % (path, name) if path else name, child)
                     for name, child in reversed(named_children(current)))


def iter_blocks(block):
    """``block`` and every block under it, depth first, each once per place it is registered."""
    return (current for _, current in named_blocks(block))


@contextlib.contextmanager
def imperative(net):
    """Within this context every hybridized block of ``net`` runs imperatively (so
    forward hooks and patched ``hybrid_forward`` methods of its descendants run);
    the hybridization state, flags and cached graphs are restored afterwards."""
    from mxnet.gluon import HybridBlock

    paused = []
    try:
        for block in iter_blocks(net):
            if isinstance(block, HybridBlock) and is_hybridized(block):
                set_active(block, False)
                paused.append(block)
        yield
    finally:
        for block in paused:
            set_active(block, True)


def set_child(parent, name, child):
    """Replace the registered child ``name`` of ``parent`` by ``child``.

    Gluon keeps children in ``Block._children`` and, for attribute children, in
    the attribute as well; both are updated, so ``hybrid_forward`` code that calls
    ``self.<name>(x)`` and sequential containers that iterate their children run
    the new block.
    """
    if name not in parent._children:
        raise KeyError(name)
    old = parent._children[name]
    parent._children[name] = child
    for attr, value in list(vars(parent).items()):
        if value is old and attr != "_children":
            object.__setattr__(parent, attr, child)
    if hasattr(parent, "_clear_cached_op"):
        parent._clear_cached_op()


def set_active(block, active):
    """Turn ``block``'s own hybridization on or off, keeping its flags and cached graph
    (:func:`set_hybridized` drops the graph); returns the previous state."""
    old = bool(getattr(block, "_active", False))
    block._active = bool(active)
    return old


def trainer_updaters(trainer):
    """The ``Updater`` objects that hold a ``gluon.Trainer``'s optimizer state.

    One per device (``Trainer._updaters``), or the kvstore's own when the
    kvstore runs the optimizer (``update_on_kvstore``); the trainer creates
    its kvstore and parameters first, as ``Trainer.save_states`` and
    ``load_states`` do. All of them share the trainer's optimizer.
    """
    settle_trainer(trainer)
    if trainer._update_on_kvstore:
        updater = getattr(trainer._kvstore, "_updater", None)
        if updater is None:
            raise ValueError("the optimizer of kvstore %r runs on its servers; its state "
                             "cannot be saved or restored here" % trainer._kvstore.type)
        return [updater]
    return list(trainer._updaters)


def optimizer_update_counts(optimizer):
    """An optimizer's per-index update counts: ``(per_device, current, own)``.

    ``per_device`` is ``{device_id: {index: count}}`` (the counts of the device
    being updated are the optimizer's ``_index_update_count``); ``current`` is
    the device whose dict that is, or None, and then ``own`` is that dict.
    """
    per_device = optimizer._all_index_update_counts
    own = optimizer._index_update_count
    current = next((d for d, counts in per_device.items() if counts is own), None)
    return per_device, current, (None if current is not None else own)


def set_optimizer_update_counts(optimizer, per_device, current, own=None):
    """Restore what :func:`optimizer_update_counts` returned (copies of the dicts)."""
    optimizer._all_index_update_counts = {d: dict(c) for d, c in per_device.items()}
    if current is not None:
        optimizer._index_update_count = optimizer._all_index_update_counts[current]
    else:
        optimizer._index_update_count = dict(own or {})


def batchnorm_kwargs(block):
    """The constructor settings (``momentum``, ``eps``, ``use_global_stats``, ...) of a
    BatchNorm block (Gluon keeps them private)."""
    return block._kwargs


def conv_kwargs(block):
    """The operator arguments of a ``gluon.nn`` convolution (``kernel``, ``stride``, ``pad``,
    ``num_filter``, ``num_group``, ``layout``...), as ``Convolution`` receives them."""
    return block._kwargs


def cached_graph(block):
    """A hybridized block's cached ``(inputs, outputs)`` symbols; ``()`` before its first call."""
    return getattr(block, "_cached_graph", ())


def trace_graph(block, *args):
    """``(inputs, outputs)`` of ``block`` traced on ``args``, cached as the first
    hybridized call would (``HybridBlock._get_graph``)."""
    return block._get_graph(*args)


def build_cached_op(block, *args):
    """Build the cached operator a hybridized block's first call would build
    (``HybridBlock._build_cache``), without running it."""
    block._build_cache(*args)
