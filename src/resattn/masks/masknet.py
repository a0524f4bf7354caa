"""Capture of the soft masks: :class:`MaskNet` and :func:`capture`."""
from collections import namedtuple

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import HybridBlock, nn

from .._compat import is_hybridized, set_hybridized
from ..models.blocks import AttentionModule

__all__ = ["Mask", "Capture", "MaskNet", "capture"]

#: One module's soft mask: ``name`` ``'stage{s}.module{k}'``, the network's
#: attention ``stage`` s (1..3, not :attr:`AttentionModule.stage`), ``index``
#: k (from 1 within the stage) and ``array``, a float32 numpy array
#: ``(N, C, H, W)`` (or ``(N, H, W)`` once reduced by :func:`reduce_masks`).
Mask = namedtuple("Mask", "name stage index array")
#: Result of :func:`capture`: ``logits`` (N, classes) and ``masks``, a list of
#: :class:`Mask` in network order.
Capture = namedtuple("Capture", "logits masks")
_CACHE_ATTR = "_resattn_mask_net"


def _attention_modules(net):
    """``[(name, stage, index, module)]`` of the attention modules, or a ValueError."""
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
        modules sit at the top level of a HybridSequential in ``features``.
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


def capture(net, x, hybridize=None):
    """Run ``net`` on ``x`` in inference mode and return its logits and soft masks.

    Nothing is recorded for autograd and BatchNorm uses its running
    statistics, whatever the caller's autograd scope. The wrapper
    (:class:`MaskNet`) is built once per network and cached on it.

    Parameters
    ----------
    net : ResidualAttentionNet
        An initialised network (see :class:`MaskNet` for other networks).
    x : NDArray or array_like
        Input batch ``(N, 3, H, W)``; numpy arrays go to the parameters' context.
    hybridize : bool, optional
        Run the wrapper as one cached graph (fast for repeated captures) or
        imperatively; by default as ``net`` itself is. Both give the same masks.

    Returns
    -------
    Capture
        ``(logits, masks)``: ``logits`` a float32 array (N, classes), equal to
        ``net(x)``; ``masks`` a list of :class:`Mask` in network order, each
        ``array`` the soft mask ``M`` (N, C, H, W) of one module.

    Raises
    ------
    ValueError
        If ``net`` has no attention modules where :class:`MaskNet` looks, or
        ``x`` is not 4-dimensional.
    """
    wrapper = _mask_net(net)
    active = is_hybridized(net) if hybridize is None else bool(hybridize)
    if is_hybridized(wrapper) != active:
        wrapper.hybridize(active)
    x = _as_input(net, x)
    with autograd.pause(train_mode=False):
        out = wrapper(x)
    masks = [Mask(name, s, k, m.asnumpy()) for (name, s, k), m in zip(wrapper.layout, out[1:])]
    return Capture(out[0].asnumpy(), masks)


