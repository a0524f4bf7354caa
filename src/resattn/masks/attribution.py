"""Which channels of each soft mask matter for a class: gradient-times-mask attribution."""
import contextlib
import numbers
from collections import namedtuple

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import HybridBlock, nn

from .._compat import batchnorm_global_stats, clear_cached_graph, dropout_rate
from .masknet import _as_input, _attention_modules, _forward

__all__ = ["ClassChannels", "class_channels"]

#: Result of :func:`class_channels` for one module: ``channels`` (N, top_k)
#: indices, most important first, and ``weights`` (N, C), the score of every channel.
ClassChannels = namedtuple("ClassChannels", "name stage index channels weights")


def _class_ids(class_id, logits):
    n, classes = logits.shape
    if class_id is None:
        return logits.argmax(axis=1).astype(np.int64)
    ids = np.asarray(class_id)
    if ids.ndim == 0:
        ids = np.full(n, ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer) \
            or ids.min() < 0 or ids.max() >= classes:
        raise ValueError("class_id must be None, an integer or N = %d integers in 0..%d, got %r"
                         % (n, classes - 1, class_id))
    return ids.astype(np.int64)


@contextlib.contextmanager
def _inference_flags(net):
    """Set ``net`` up to be recorded for exact inference-mode gradients on MXNet 1.9.

    Under ``autograd.record(train_mode=False)`` the backward of BatchNorm
    uses batch statistics that inference never computed, and so does not
    match the forward; oneDNN's float32 max-pooling backward is wrong as well
    (against float64 and finite differences), both nondeterministically.
    Recording in training mode is right once every batch
    normalisation uses its running statistics (``use_global_stats``, which
    also leaves them unchanged) and every dropout is off, as set here: then
    training mode computes the inference function and its true gradient.
    Cached graphs hold these flags, so they are cleared on entry and exit.
    """
    norms, drops, hybrid = [], [], []

    def find(block):
        flag = batchnorm_global_stats(block)
        if flag is not None:
            norms.append((block, flag))
        if isinstance(block, nn.Dropout):
            drops.append((block, dropout_rate(block)))
        if isinstance(block, HybridBlock):
            hybrid.append(block)

    net.apply(find)
    try:
        for block, _ in norms:
            batchnorm_global_stats(block, True)
        for block, _ in drops:
            dropout_rate(block, 0.0)
        for block in hybrid:
            clear_cached_graph(block)
        yield
    finally:
        for block, flag in norms:
            batchnorm_global_stats(block, flag)
        for block, rate in drops:
            dropout_rate(block, rate)
        for block in hybrid:
            clear_cached_graph(block)


def class_channels(net, x, class_id=None, top_k=8):
    """The channels of each soft mask that matter most for a class.

    For class ``c`` with logit ``y_c``, the weight of channel ``k`` of a
    module's mask is ``w_k = mean over (h, w) of M_k * dy_c/dM_k``: the
    first-order estimate of how much ``y_c`` would drop if that channel of the
    mask were closed (``M_k -> 0``), the gradient-times-input attribution of
    the mask. The gradient is total (through every later module) and taken
    in inference mode, image by image. It comes from Eq. 3 without changing
    the module: ``(1 + M) * T`` and ``M * T`` both have derivative ``T`` in
    ``M``, so ``dy/dM = T * dy/dP`` with ``P`` the input of the module's
    post-processing units.

    Parameters
    ----------
    net : ResidualAttentionNet
        An initialised network. Its cached graphs, if hybridized, are
        rebuilt on its next call.
    x : NDArray or array_like
        Input batch (N, 3, H, W).
    class_id : int, sequence of N int, or None
        The class; ``None`` takes each image's predicted class.
    top_k : int
        Channels returned per module and image; at most the narrowest mask's C.

    Returns
    -------
    list of ClassChannels
        In network order: ``channels`` (N, top_k) int64 by decreasing weight
        and ``weights`` (N, C). Average a mask over them with
        ``reduce_mask(mask, ('channels', result.channels))``.
    """
    found = _attention_modules(net)
    narrowest = min(module.channels for _, _, _, module in found)
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) \
            or not 1 <= top_k <= narrowest:
        raise ValueError("top_k must be an integer in 1..%d (the narrowest mask's channels), "
                         "got %r" % (narrowest, top_k))
    x = _as_input(net, x)
    seen = [{} for _ in found]
    handles = []
    for (_, _, _, module), rec in zip(found, seen):
        handles.append(module.trunk.register_forward_hook(
            lambda block, inputs, out, rec=rec: rec.__setitem__("trunk", out)))
        handles.append(module.post.register_forward_pre_hook(
            lambda block, inputs, rec=rec: rec.__setitem__("product", inputs[0])))
    offsets = []

    def visit(module, h):
        out, mask = module.attend(mx.nd, h)
        # A zero offset on the output: its gradient is dy/d(out), all later paths included.
        with autograd.pause():
            zero = mx.nd.zeros(out.shape, ctx=out.context, dtype=out.dtype)
        zero.attach_grad()
        offsets.append((zero, mask))
        return out + zero

    with _inference_flags(net):
        try:
            with autograd.record(train_mode=True):
                logits = _forward(net, mx.nd, x, visit)
                ids = _class_ids(class_id, logits.asnumpy())
                score = mx.nd.pick(logits, mx.nd.array(ids, ctx=logits.context)).sum()
        finally:
            for handle in handles:
                handle.detach()
        score.backward()
        products = []
        for (_, _, _, module), rec, (zero, _) in zip(found, seen, offsets):
            products.append(rec["product"].detach())
            if len(module.post):
                products[-1].attach_grad()
                with autograd.record(train_mode=True):
                    out = module.post(products[-1])
                out.backward(zero.grad)
    result = []
    for (name, s, k, module), rec, (zero, mask), product in zip(found, seen, offsets, products):
        grad_product = product.grad if len(module.post) else zero.grad
        grad_mask = grad_product * rec["trunk"].detach()
        weights = (mask.detach() * grad_mask).mean(axis=(2, 3)).asnumpy()
        channels = np.argsort(-weights, axis=1, kind="stable")[:, :top_k]
        result.append(ClassChannels(name, s, k, channels.astype(np.int64), weights))
    return result


