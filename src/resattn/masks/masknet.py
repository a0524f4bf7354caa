"""Capture of the soft masks: :class:`MaskNet` and :func:`capture`.

Two layouts are handled. A network laid out as :class:`ResidualAttentionNet`
(a ``features`` HybridSequential and an ``output`` block, every attention
module at the top level of a HybridSequential in ``features`` and none
elsewhere) runs through :class:`MaskNet`, hybridized or not, and its masks
are named ``'stage{s}.module{k}'``, ``s`` the index in ``features``. Any
other network with attention modules anywhere (e.g. a GluonCV ResNet after
:func:`resattn.models.add_attention`) runs its own forward code
imperatively, each module recording its mask, and the masks are named by
the module's path in the network (``'layer2.1'``).
"""
from collections import namedtuple

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import HybridBlock, nn

from .. import _onednn
from .._compat import imperative, is_hybridized, named_children, set_hybridized
from ..models.blocks import AttentionModule

__all__ = ["Mask", "Capture", "MaskNet", "capture", "capture_trunk"]

#: One module's soft mask: ``name``, ``stage``, ``index`` and ``array``, a
#: float32 numpy array ``(N, C, H, W)`` (or ``(N, H, W)`` once reduced by
#: :func:`reduce_masks`). In a ResidualAttentionNet layout ``name`` is
#: ``'stage{s}.module{k}'`` with the network's attention stage s (1..3, not
#: :attr:`AttentionModule.stage`) and k from 1 within the stage; elsewhere
#: ``name`` is the module's dotted path (``'layer2.1'``), ``stage`` numbers
#: the modules' distinct parent blocks from 1 in the order they run and
#: ``index`` the modules from 1 within their parent (1 after
#: :func:`~resattn.models.add_attention`, one module per parent).
Mask = namedtuple("Mask", "name stage index array")
#: Result of :func:`capture`: ``logits`` (N, classes) and ``masks``, a list of
#: :class:`Mask` in network order.
Capture = namedtuple("Capture", "logits masks")
_CACHE_ATTR = "_resattn_mask_net"


def _modules_anywhere(net):
    """``[(path, module)]`` of every AttentionModule in ``net``, depth first, each once."""
    found, seen = [], set()

    def walk(block, path):
        for name, child in named_children(block):
            sub = "%s.%s" % (path, name) if path else name
            if isinstance(child, AttentionModule):
                if id(child) not in seen:
                    seen.add(id(child))
                    found.append((sub, child))
            else:
                walk(child, sub)

    walk(net, "")
    return found


def _has_layout(net):
    """Whether ``net`` is laid out as ResidualAttentionNet (``features`` / ``output``, every
    attention module at the top level of a stage): its masks keep 0.1's 'stage{s}.module{k}'
    names; any other network's masks are named by their paths."""
    try:
        _attention_modules(net)
    except ValueError:
        return False
    return True


def _attention_modules(net):
    """``[(name, stage, index, module)]`` of the attention modules of a network laid out as
    ResidualAttentionNet, or a ValueError (also if it has modules elsewhere)."""
    features = getattr(net, "features", None)
    if not isinstance(net, HybridBlock) or not isinstance(features, nn.HybridSequential) \
            or not isinstance(getattr(net, "output", None), HybridBlock):
        raise ValueError("mask capture needs a HybridBlock with a `features` HybridSequential "
                         "and an `output` block, as ResidualAttentionNet has; got %s"
                         % type(net).__name__)
    found = []
    for s, block in enumerate(features):
        if isinstance(block, nn.HybridSequential):
            modules = [b for b in block if isinstance(b, AttentionModule)]
            found.extend(("stage%d.module%d" % (s, k + 1), s, k + 1, m)
                         for k, m in enumerate(modules))
    if not found:
        raise ValueError("%s has no AttentionModule at the top level of a HybridSequential in "
                         "its `features`; nothing to capture" % type(net).__name__)
    inside = {id(m) for _, _, _, m in found}
    outside = [path for path, m in _modules_anywhere(net) if id(m) not in inside]
    if outside:
        raise ValueError("%s has attention modules outside the ResidualAttentionNet layout "
                         "(not at the top level of a HybridSequential in `features`): %s; "
                         "capture() names such networks' masks by path"
                         % (type(net).__name__, ", ".join(outside)))
    return found


def _layout(net):
    return [(name, s, k) for name, s, k, _ in _attention_modules(net)]


def _forward(net, F, x, visit):
    """``net.output(net.features(x))``, with ``visit(module, x)`` for each attention module."""
    for block in net.features:
        if isinstance(block, nn.HybridSequential) \
                and any(isinstance(b, AttentionModule) for b in block):
            for child in block:
                x = visit(child, x) if isinstance(child, AttentionModule) else child(x)
        else:
            x = block(x)
    return net.output(x)


class MaskNet(HybridBlock):
    """The network with its soft masks as extra outputs.

    ``MaskNet(net)(x)`` returns ``(logits, M_1, ..., M_n)`` with the masks in
    network order (names in :attr:`names`). ``net`` is a child, so the
    parameters are shared, not copied. Hybridizing the wrapper does not
    hybridize ``net`` (it is not recursive), so ``net`` keeps its own state.

    Parameters
    ----------
    net : ResidualAttentionNet
        Or any HybridBlock with ``features`` and ``output`` whose attention
        modules all sit at the top level of a HybridSequential in ``features``
        (a ValueError names any module elsewhere; :func:`capture` handles
        such networks without :class:`MaskNet`).
    """

    def __init__(self, net, **kwargs):
        layout = _layout(net)
        super().__init__(**kwargs)
        self.net = net
        self.layout = layout

    @property
    def names(self):
        """Mask names ``'stage{s}.module{k}'`` in output order."""
        return [name for name, _, _ in self.layout]

    def hybridize(self, active=True, static_alloc=False, static_shape=False):
        """Hybridize the wrapper alone; ``net`` and its children keep their state."""
        set_hybridized(self, active, static_alloc, static_shape)

    def hybrid_forward(self, F, x):
        masks = []

        def visit(module, h):
            out, mask = module.attend(F, h)
            masks.append(mask)
            return out

        logits = _forward(self.net, F, x, visit)
        return (logits,) + tuple(masks)


def _mask_net(net):
    layout = _layout(net)
    wrapper = net.__dict__.get(_CACHE_ATTR)
    if wrapper is None or wrapper.layout != layout:
        wrapper = MaskNet(net)
        # Not through Block.__setattr__, which would register the wrapper as a
        # child of net (a cycle, and extra parameters in net's structure).
        object.__setattr__(net, _CACHE_ATTR, wrapper)
    return wrapper


def _as_input(net, x):
    if isinstance(x, mx.nd.NDArray):
        arr = x
    else:
        ctx = next(iter(net.collect_params().values())).list_ctx()[0]
        arr = mx.nd.array(np.asarray(x, dtype=np.float32), ctx=ctx)
    if arr.ndim != 4:
        raise ValueError("input must be a batch (N, C, H, W), got shape %s" % (arr.shape,))
    return arr


def _to_numpy(out):
    if isinstance(out, mx.nd.NDArray):
        return out.asnumpy()
    if isinstance(out, (list, tuple)):
        return tuple(_to_numpy(o) for o in out)
    return out


def _capture_anywhere(net, x, modules):
    """Run ``net``'s own forward imperatively, each module recording its mask."""
    calls = []
    patched = []

    def recording(path, module):
        def hybrid_forward(F, h, *args, **kwargs):
            out, mask = module.attend(F, h)
            calls.append((path, mask))
            return out
        return hybrid_forward

    try:
        for path, module in modules:
            patched.append((module, module.__dict__.get("hybrid_forward")))
            # An instance attribute shadows the class's method; not Block.__setattr__.
            object.__setattr__(module, "hybrid_forward", recording(path, module))
        with imperative(net), autograd.pause(train_mode=False):
            out = net(x)
    finally:
        for module, saved in patched:
            if saved is None:
                module.__dict__.pop("hybrid_forward", None)
            else:
                object.__setattr__(module, "hybrid_forward", saved)
    if not calls:
        raise ValueError("none of the attention modules of %s ran in its forward pass (%s)"
                         % (type(net).__name__, ", ".join(p for p, _ in modules)))
    masks, runs, parents, members = [], {}, {}, {}
    for path, mask in calls:
        runs[path] = runs.get(path, 0) + 1
        parent = path.rpartition(".")[0]
        stage = parents.setdefault(parent, len(parents) + 1)
        index = members.setdefault(parent, {}).setdefault(path, len(members[parent]) + 1)
        name = path if runs[path] == 1 else "%s#%d" % (path, runs[path])
        masks.append(Mask(name, stage, index, mask.asnumpy()))
    return Capture(_to_numpy(out), masks)


def capture(net, x, hybridize=None):
    """Run ``net`` on ``x`` in inference mode and return its logits and soft masks.

    Nothing is recorded for autograd and BatchNorm uses its running
    statistics, whatever the caller's autograd scope. A network laid out as
    ResidualAttentionNet runs through :class:`MaskNet`, built once per network
    and cached on it. Any other network with attention modules anywhere runs
    its own forward code imperatively (its hybridized blocks are switched to
    imperative for the call, keeping their cached graphs, and switched back)
    while each module records its mask.

    Parameters
    ----------
    net : mxnet.gluon.Block
        An initialised network with :class:`AttentionModule` s: a
        ResidualAttentionNet, or e.g. a GluonCV ResNet after
        :func:`resattn.models.add_attention`.
    x : NDArray or array_like
        Input batch ``(N, 3, H, W)``; numpy arrays go to the parameters' context.
    hybridize : bool, optional
        ResidualAttentionNet layout only: run the wrapper as one cached graph
        (fast for repeated captures) or imperatively; by default as ``net``
        itself is. Both give the same masks. Other networks always run
        imperatively, whatever ``hybridize`` says.

    Returns
    -------
    Capture
        ``(logits, masks)``: ``logits`` a float32 array (N, classes), equal to
        ``net(x)`` (a tuple of arrays if ``net`` has several outputs);
        ``masks`` a list of :class:`Mask` in network order, each ``array`` the
        soft mask ``M`` (N, C, H, W) of one module, shaped as its input. The
        names are ``'stage{s}.module{k}'`` in a ResidualAttentionNet layout,
        else the modules' paths (``'layer2.1'``; ``'#2'`` is appended for a
        module's second run in one forward pass, and so on).

    Raises
    ------
    ValueError
        If ``net`` has no attention module, or ``x`` is not 4-dimensional.
    """
    modules = _modules_anywhere(net)
    if not modules:
        raise ValueError("%s has no AttentionModule; nothing to capture" % type(net).__name__)
    if not _has_layout(net):
        return _capture_anywhere(net, _as_input(net, x), modules)
    wrapper = _mask_net(net)
    active = is_hybridized(net) if hybridize is None else bool(hybridize)
    if is_hybridized(wrapper) != active:
        wrapper.hybridize(active)
    x = _as_input(net, x)
    with autograd.pause(train_mode=False):
        # The wrapper's own graph holds the network's 1x1 convolutions: at sizes where
        # oneDNN would crash on one of them, run it imperatively (resattn/_onednn.py).
        out = _onednn.safe_call(wrapper, wrapper.forward, x)
    masks = [Mask(name, s, k, m.asnumpy()) for (name, s, k), m in zip(wrapper.layout, out[1:])]
    return Capture(out[0].asnumpy(), masks)


def _trunk_ends(net):
    """``[(name, stage, index, block)]``: for each attention module of a ResidualAttentionNet
    layout its trunk branch, for each plain block (``attention='none'``: ``2p + t`` units)
    its ``(p + t)``-th unit, whose output stands where the module's ``T(x)`` would."""
    features = getattr(net, "features", None)
    if not isinstance(features, nn.HybridSequential) or not hasattr(net, "p") \
            or not hasattr(net, "t"):
        raise ValueError("trunk capture needs a ResidualAttentionNet (a `features` "
                         "HybridSequential and its p and t), got %s" % type(net).__name__)
    found = []
    for s, block in enumerate(features):
        if not isinstance(block, nn.HybridSequential) or s == 0 or s == len(features) - 1:
            continue
        # A stage is its transition unit, then its modules (or plain blocks).
        for k, child in enumerate(list(block)[1:]):
            name = "stage%d.module%d" % (s, k + 1)
            if isinstance(child, AttentionModule):
                found.append((name, s, k + 1, child.trunk))
            elif isinstance(child, nn.HybridSequential) and len(child) == 2 * net.p + net.t:
                found.append((name, s, k + 1, child[net.p + net.t - 1]))
    if not found:
        raise ValueError("%s has neither attention modules nor plain blocks of 2p + t = %d "
                         "units in its stages; nothing to capture"
                         % (type(net).__name__, 2 * net.p + net.t))
    return found


def capture_trunk(net, x):
    """Run ``net`` on ``x`` in inference mode and return its trunk features ``T(x)``.

    The counterpart of :func:`capture` for the baseline a mask is judged
    against: what the features themselves do. For each attention module the
    output of its trunk branch (``t`` units, before ``(1 + M) T``); for each
    block of a plain network of the same depth (``attention='none'``, ``2p + t``
    units) the output of its ``(p + t)``-th unit, which stands where the
    module's ``T`` would. The network runs imperatively for the call (its
    hybridization is restored).

    Parameters
    ----------
    net : ResidualAttentionNet
        With attention modules or plain blocks.
    x : NDArray or array_like
        Input batch ``(N, 3, H, W)``.

    Returns
    -------
    Capture
        ``(logits, masks)`` with ``masks`` a list of :class:`Mask` whose arrays
        are the trunk features (N, C, H, W), signed, named
        ``'stage{s}.module{k}'`` as the masks are.
    """
    ends = _trunk_ends(net)
    x = _as_input(net, x)
    seen = {}
    handles = [block.register_forward_hook(
        lambda blk, args, out, name=name: seen.__setitem__(name, out.asnumpy()))
        for name, _, _, block in ends]
    try:
        with imperative(net), autograd.pause(train_mode=False):
            out = net(x)
    finally:
        for handle in handles:
            handle.detach()
    return Capture(_to_numpy(out), [Mask(name, s, k, seen[name]) for name, s, k, _ in ends])
