"""Soft masks ``M(x)`` of a Residual Attention Network: capture, reduce, score.

Each attention module outputs ``(1 + M(x)) * T(x)`` (Eq. 3); the soft mask
``M`` has the trunk's shape ``(N, C, H, W)``. The paper's Fig. 1 shows such
masks: a low-level one diminishing the blue sky around a balloon, a
high-level one highlighting the balloon. This module reads them out without
changing the network:
:func:`capture` runs a wrapper, :class:`MaskNet`, that walks the network's
``features`` calling :meth:`AttentionModule.attend` where the normal forward
calls the module, so the network itself has no extra outputs.

Examples
--------
>>> import mxnet as mx, resattn
>>> from resattn.masks import capture, reduce_mask
>>> net = resattn.get_model('attention56_cifar', width_mult=1/16)
>>> net.initialize()
>>> logits, masks = capture(net, mx.nd.zeros((1, 3, 32, 32)))
>>> [(m.name, m.array.shape) for m in masks]  # doctest: +NORMALIZE_WHITESPACE
[('stage1.module1', (1, 8, 32, 32)), ('stage2.module1', (1, 16, 16, 16)),
 ('stage3.module1', (1, 32, 8, 8))]
>>> reduce_mask(masks[0], 'mean').shape
(1, 32, 32)
"""
import contextlib
import numbers
from collections import OrderedDict, namedtuple

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import HybridBlock, nn

from .blocks import AttentionModule

__all__ = ["Mask", "Capture", "ClassChannels", "MaskNet", "capture", "REDUCTIONS",
           "reduce_mask", "reduce_masks", "class_channels", "box_score", "score_by_stage"]

#: One module's soft mask: ``name`` ``'stage{s}.module{k}'``, the network's
#: attention ``stage`` s (1..3, not :attr:`AttentionModule.stage`), ``index``
#: k (from 1 within the stage) and ``array``, a float32 numpy array
#: ``(N, C, H, W)`` (or ``(N, H, W)`` once reduced by :func:`reduce_masks`).
Mask = namedtuple("Mask", "name stage index array")
#: Result of :func:`capture`: ``logits`` (N, classes) and ``masks``, a list of
#: :class:`Mask` in network order.
Capture = namedtuple("Capture", "logits masks")
#: Result of :func:`class_channels` for one module: ``channels`` (N, top_k)
#: indices, most important first, and ``weights`` (N, C), the score of every channel.
ClassChannels = namedtuple("ClassChannels", "name stage index channels weights")

#: Reductions of ``(N, C, H, W)`` masks to ``(N, H, W)`` maps (see :func:`reduce_mask`).
REDUCTIONS = ("mean", "max", ("channel", "k"), ("channels", "indices"))

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
        self._active = active
        self._flags = [("static_alloc", static_alloc), ("static_shape", static_shape)]
        self._clear_cached_op()

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
    active = bool(getattr(net, "_active", False) if hybridize is None else hybridize)
    if wrapper._active != active:
        wrapper.hybridize(active)
    x = _as_input(net, x)
    with autograd.pause(train_mode=False):
        out = wrapper(x)
    masks = [Mask(name, s, k, m.asnumpy()) for (name, s, k), m in zip(wrapper.layout, out[1:])]
    return Capture(out[0].asnumpy(), masks)


def _mask_array(mask):
    arr = mask.array if isinstance(mask, Mask) else mask
    arr = arr.asnumpy() if isinstance(arr, mx.nd.NDArray) else np.asarray(arr)
    if arr.ndim != 4:
        raise ValueError("a soft mask is (N, C, H, W), got shape %s" % (arr.shape,))
    return arr


def _channel_index(k, channels):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < channels:
        raise ValueError("channel index must be an integer in 0..%d (the mask has %d channels), "
                         "got %r" % (channels - 1, channels, k))
    return int(k)


def reduce_mask(mask, how="mean"):
    """Reduce a soft mask ``M`` (N, C, H, W) to one map (N, H, W) per image.

    Parameters
    ----------
    mask : Mask or array_like
        A :class:`Mask` from :func:`capture` or an array (N, C, H, W).
    how : str or tuple
        - ``'mean'``: the channel mean, how much the module lets the trunk
          features through at each position on average (``(1 + M) T``):
          where it enhances or diminishes features, as in the paper's Fig. 1.
        - ``'max'``: the channel maximum, where any feature's mask is open.
        - ``('channel', k)``: channel ``k`` alone, the mask of one trunk feature.
        - ``('channels', indices)``: the mean over a subset of channels,
          ``indices`` of shape (K,) for every image or (N, K) per image, e.g.
          ``class_channels(...)[i].channels``.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)``, float32 for float32 masks.
    """
    arr = _mask_array(mask)
    channels = arr.shape[1]
    if isinstance(how, str):
        if how == "mean":
            return arr.mean(axis=1)
        if how == "max":
            return arr.max(axis=1)
    elif isinstance(how, tuple) and len(how) == 2 and how[0] == "channel":
        return arr[:, _channel_index(how[1], channels)]
    elif isinstance(how, tuple) and len(how) == 2 and how[0] == "channels":
        idx = np.asarray(how[1])
        if idx.ndim == 1:
            idx = np.broadcast_to(idx, (arr.shape[0],) + idx.shape)
        if idx.ndim != 2 or idx.shape[0] != arr.shape[0] or idx.shape[1] == 0 \
                or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("('channels', indices) needs integer indices of shape (K,) or (N, K) "
                             "with N = %d, K >= 1; got %s of shape %s"
                             % (arr.shape[0], idx.dtype, idx.shape))
        bad = idx[(idx < 0) | (idx >= channels)]
        if bad.size:
            _channel_index(int(bad.flat[0]), channels)
        return np.take_along_axis(arr, idx[:, :, None, None], axis=1).mean(axis=1)
    raise ValueError("unknown reduction %r; valid: 'mean', 'max', ('channel', k), "
                     "('channels', indices)" % (how,))


def reduce_masks(masks, how="mean"):
    """:func:`reduce_mask` for a list of masks: a list of :class:`Mask` with (N, H, W) arrays.

    ``how`` is one reduction for all masks or a list of one per mask.
    """
    masks = list(masks)
    hows = how if isinstance(how, list) else [how] * len(masks)
    if len(hows) != len(masks):
        raise ValueError("reduce: a list needs one reduction per mask (%d), got %d"
                         % (len(masks), len(hows)))
    return [Mask(m.name, m.stage, m.index, reduce_mask(m, h)) for m, h in zip(masks, hows)]


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
        if "use_global_stats" in (getattr(block, "_kwargs", None) or {}):
            norms.append((block, block._kwargs["use_global_stats"]))
        if isinstance(block, nn.Dropout):
            drops.append((block, block._rate))
        if isinstance(block, HybridBlock):
            hybrid.append(block)

    net.apply(find)
    try:
        for block, _ in norms:
            block._kwargs["use_global_stats"] = True
        for block, _ in drops:
            block._rate = 0.0
        for block in hybrid:
            block._clear_cached_op()
        yield
    finally:
        for block, flag in norms:
            block._kwargs["use_global_stats"] = flag
        for block, rate in drops:
            block._rate = rate
        for block in hybrid:
            block._clear_cached_op()


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


def _coverage(lo, hi, size, cells):
    """(N, cells): the fraction of each map cell inside [lo, hi) of an axis ``size`` long."""
    step = size / cells
    edges = np.arange(cells + 1) * step
    overlap = np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1])
    return np.clip(overlap, 0, None) / step


def box_score(maps, boxes, image_size=None, per_image=False):
    """How much more a mask map is open inside an object box than outside.

    Per image, the mean of the map inside the box divided by its mean
    outside (a ratio of means: 1 means no preference, 2 twice as open on the
    object); then the mean of these ratios over the images. A map cell
    counts inside in proportion to its area covered by the box, which equals
    upsampling the map to the image by nearest neighbour and counting pixels,
    so maps of any resolution compare with boxes in image pixels.

    Parameters
    ----------
    maps : array_like
        Reduced masks (N, h, w), e.g. from :func:`reduce_mask`.
    boxes : array_like
        (N, 4) boxes ``(x0, y0, x1, y1)`` in image pixels, ends exclusive.
    image_size : (int, int), optional
        ``(H, W)`` of the image the boxes refer to; default the maps' (h, w).
    per_image : bool
        Return the N ratios instead of their mean.

    Returns
    -------
    float or numpy.ndarray
        The mean ratio, or (N,) ratios; ``inf`` where a map is 0 outside the box.
    """
    maps = np.asarray(maps, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError("maps must be (N, h, w), got shape %s" % (maps.shape,))
    if boxes.shape != (maps.shape[0], 4):
        raise ValueError("boxes must be (N, 4) = (%d, 4) boxes (x0, y0, x1, y1), got shape %s"
                         % (maps.shape[0], boxes.shape))
    n, h, w = maps.shape
    height, width = (h, w) if image_size is None else tuple(image_size)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError("box %d = %s is not a non-empty box inside the %dx%d (HxW) image"
                             % (i, tuple(boxes[i].tolist()), height, width))
        if x0 == 0 and y0 == 0 and x1 == width and y1 == height:
            raise ValueError("box %d = %s covers the whole %dx%d image: nothing outside it"
                             % (i, tuple(boxes[i].tolist()), height, width))
    inside = _coverage(boxes[:, 1], boxes[:, 3], height, h)[:, :, None] \
        * _coverage(boxes[:, 0], boxes[:, 2], width, w)[:, None, :]
    outside = 1.0 - inside
    mean_in = (inside * maps).sum(axis=(1, 2)) / inside.sum(axis=(1, 2))
    mean_out = (outside * maps).sum(axis=(1, 2)) / outside.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mean_in / mean_out
    return ratios if per_image else float(ratios.mean())


def _batches(data, batch_size):
    if isinstance(data, (np.ndarray, mx.nd.NDArray)):
        size = data.shape[0] if batch_size is None else batch_size
        for start in range(0, data.shape[0], size):
            yield data[start:start + size]
    else:
        for batch in data:
            yield batch[0] if isinstance(batch, (tuple, list)) else batch


def score_by_stage(net, data, boxes, image_size=None, reduce="mean", by="stage",
                   batch_size=None, hybridize=None):
    """:func:`box_score` of every captured mask, averaged per stage (or per module).

    Parameters
    ----------
    net : ResidualAttentionNet
    data : array_like or iterable
        Images (N, 3, H, W), or an iterable of batches (a batch may be a tuple
        whose first element is the images, as a DataLoader gives).
    boxes : array_like
        (N, 4) boxes ``(x0, y0, x1, y1)`` for the images in order.
    image_size : (int, int), optional
        ``(H, W)`` the boxes refer to; default each batch's input size.
    reduce : str, tuple or list
        Reduction of each mask, as in :func:`reduce_masks`.
    by : {'stage', 'module'}
        Aggregate the modules of a stage, or keep one score per module.
    batch_size : int, optional
        Split an array ``data`` into batches of this size (default: one batch).
    hybridize : bool, optional
        Passed to :func:`capture`.

    Returns
    -------
    OrderedDict
        ``{'stage1': score, ...}`` or ``{'stage1.module1': score, ...}``: the
        mean over images and over the stage's modules of the per-image ratios.
    """
    if by not in ("stage", "module"):
        raise ValueError("by must be 'stage' or 'module', got %r" % (by,))
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError("boxes must be (N, 4), got shape %s" % (boxes.shape,))
    ratios = OrderedDict()
    seen = 0
    for x in _batches(data, batch_size):
        n = x.shape[0]
        if seen + n > len(boxes):
            raise ValueError("data has more images than the %d boxes" % len(boxes))
        size = tuple(x.shape[2:]) if image_size is None else image_size
        for mask in reduce_masks(capture(net, x, hybridize=hybridize).masks, reduce):
            key = mask.name if by == "module" else "stage%d" % mask.stage
            ratios.setdefault(key, []).append(
                box_score(mask.array, boxes[seen:seen + n], size, per_image=True))
        seen += n
    if seen != len(boxes):
        raise ValueError("data has %d images but %d boxes were given" % (seen, len(boxes)))
    return OrderedDict((k, float(np.concatenate(v).mean())) for k, v in ratios.items())
