"""Attention modules inside an existing network: :func:`add_attention`.

:func:`add_attention` puts one :class:`~resattn.models.blocks.AttentionModule`
right after named children of any Gluon network (a GluonCV ResNet, a custom
``HybridSequential``...): each child ``c`` is replaced, in its parent, by a
sequential block ``(c, module)``, so the network's own forward code (which
calls ``self.layer2(x)`` or iterates a ``HybridSequential``) runs the module.
Widths and mask depths come from the shapes of the children's outputs in one
trial forward pass.
"""
import numbers

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import Block, HybridBlock, nn
from mxnet.gluon.nn import BatchNorm

from .._compat import clear_cached_graph, imperative, is_hybridized, iter_blocks, named_blocks, \
    named_children, set_child, set_hybridized
from ..io import input_shape
from .blocks import AttentionModule, ResidualUnit
from .choices import MAX_STAGE


__all__ = ["add_attention"]

#: Side of the smallest map the paper's masks pool down to (7 px: 56 -> 3 poolings).
_MIN_MASK_SIDE = 7
_DEFAULT_MAX_POOLS = 3


def default_num_pools(height, width):
    """Mask poolings for a ``height x width`` map: the paper's 56 -> 3, 28 -> 2, 14 -> 1, 7 -> 0.

    ``clip(floor(log2(min(height, width) / 7)), 0, 3)``, in integers.
    """
    side = min(int(height), int(width))
    pools = 0
    while pools < _DEFAULT_MAX_POOLS and side >= _MIN_MASK_SIDE * 2 ** (pools + 1):
        pools += 1
    return pools


def _as_list(after):
    if isinstance(after, str):
        after = [after]
    try:
        after = list(after)
    except TypeError:
        raise ValueError("after must be a child path or a list of them, got %r" % (after,))
    if not after:
        raise ValueError("after must name at least one child path, got an empty list")
    for path in after:
        if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
            raise ValueError("after: each entry must be a dotted child path such as 'layer2' "
                             "or 'features.2', got %r" % (path,))
    repeated = sorted({p for p in after if after.count(p) > 1})
    if repeated:
        raise ValueError("after names %s more than once" % ", ".join(map(repr, repeated)))
    return after


def _resolve(net, path):
    """``(ancestors, name, child)``: the blocks from ``net`` to the parent, the child's name."""
    parts = path.split(".")
    block, ancestors = net, []
    for depth, part in enumerate(parts):
        children = dict(named_children(block))
        if part not in children:
            where = ".".join(parts[:depth])
            valid = ["%s.%s" % (where, n) if where else n for n in children]
            raise ValueError("add_attention: %s has no child path %r (%s has no child %r); "
                             "the child paths there are: %s"
                             % (type(net).__name__, path, where or "the network", part,
                                ", ".join(valid) if valid else "none (it has no children)"))
        ancestors.append(block)
        block = children[part]
    return ancestors, parts[-1], block


def _num_pools(num_pools, after):
    if num_pools is None or isinstance(num_pools, numbers.Integral):
        num_pools = [num_pools] * len(after)
    else:
        num_pools = list(num_pools)
        if len(num_pools) != len(after):
            raise ValueError("num_pools must be an int or one entry per path of after (%d), "
                             "got %d entries" % (len(after), len(num_pools)))
    for n in num_pools:
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)
                              or not 0 <= n <= MAX_STAGE):
            raise ValueError("num_pools must be None or integers in 0..%d, got %r"
                             % (MAX_STAGE, n))
    return num_pools


def _context(net):
    """``(ctx_list, dtype)`` of the first initialised parameter, or ``(None, None)``."""
    for param in net.collect_params().values():
        try:
            ctx = param.list_ctx()
        except RuntimeError:  # not initialised
            continue
        return list(ctx), param.dtype
    return None, None


def _shape_of(symbol, data_shape):
    try:
        if len(symbol.list_outputs()) != 1:
            return None
        _, out_shapes, _ = symbol.infer_shape(data=data_shape)
    except mx.base.MXNetError:
        return None
    return None if not out_shapes else tuple(out_shapes[0])


def _trial(net, children, paths, data_shape):
    """Output shape of each child in one forward of ``net`` on ``data_shape``.

    A HybridBlock is traced symbolically (no parameters needed); a plain Block,
    or a HybridBlock whose code cannot be traced, runs imperatively on zeros in
    inference mode, which needs initialised parameters.
    """
    seen = [[] for _ in children]
    handles = [child.register_forward_hook(lambda block, inputs, out, rec=rec: rec.append(out))
               for child, rec in zip(children, seen)]
    try:
        traced = False
        if isinstance(net, HybridBlock):
            try:
                net(mx.sym.var("data"))
                traced = True
            except Exception:  # noqa: BLE001 - e.g. code reading x.shape: run it instead
                for rec in seen:
                    del rec[:]
        if not traced:
            ctx, dtype = _context(net)
            if ctx is None or any(_uninitialised(p) for p in net.collect_params().values()):
                raise ValueError("add_attention: %s needs initialised parameters for its trial "
                                 "forward pass (it cannot be traced symbolically); call "
                                 "net.initialize() or load its weights first"
                                 % type(net).__name__)
            with imperative(net), autograd.pause(train_mode=False):
                net(mx.nd.zeros(data_shape, ctx=ctx[0], dtype=dtype))
    finally:
        for handle in handles:
            handle.detach()
    shapes = []
    for path, rec in zip(paths, seen):
        if not rec:
            raise ValueError("add_attention: %r did not run in the forward pass of %s on an "
                             "input %s" % (path, type(net).__name__, data_shape))
        out = rec[0]
        if isinstance(out, mx.sym.Symbol):
            shape = _shape_of(out, data_shape)
        elif isinstance(out, mx.nd.NDArray):
            shape = tuple(out.shape)
        else:
            shape = None
        if shape is None or len(shape) != 4:
            raise ValueError("add_attention: %r outputs %s on an input %s; an attention module "
                             "needs one 4-D feature map (N, C, H, W)"
                             % (path, "a %d-D array %s" % (len(shape), shape)
                                if shape is not None else "no single array", data_shape))
        shapes.append(shape)
    return shapes


def _uninitialised(param):
    try:
        param.list_ctx()
    except RuntimeError:
        return True
    return False


def _unique_prefix(parent, name, taken):
    base = "%s_attention" % name
    for k in range(len(taken) + 1):
        rel = "%s%s_" % (base, k if k else "")
        full = parent.prefix + rel
        if not any(p.startswith(full) for p in taken):
            return rel
    raise AssertionError("unreachable")  # pragma: no cover


def add_attention(net, after, input_size=224, in_channels=3, p=1, t=2, r=1, attention="mixed",
                  learning="arl", variant="official", unit=None, norm_layer=BatchNorm,
                  norm_kwargs=None, num_pools=None, init=None):
    """Insert an attention module right after each named child of a network, in place.

    Each child ``c`` named in ``after`` is replaced, in its parent, by a
    sequential block of ``(c, AttentionModule(C, stage))``: it keeps its
    parameters, and the network's own forward code runs the module on the
    child's output, which has the same shape as that output. ``C`` (the
    child's output channels) and the mask depth come from one trial forward
    pass at ``input_size``: a map of side ``s = min(H, W)`` gets
    ``clip(floor(log2(s / 7)), 0, 3)`` max-poolings, the paper's rule (56 px:
    3, 28: 2, 14: 1, 7: 0), so ``stage = 4 - num_pools``.

    A HybridBlock is traced symbolically, so the network need not be
    initialised; a plain Block runs imperatively on zeros in inference mode
    (no state changes) and must be initialised. Load pretrained weights
    *before* adding attention: afterwards the child's structural parameter
    names gain a ``.0`` (``layer2.0.conv1.weight`` becomes
    ``layer2.0.0.conv1.weight``) and the module's are ``<path>.1....``.

    Parameters
    ----------
    net : mxnet.gluon.Block
        The network, modified in place; e.g. GluonCV's ``resnet50_v1b``.
    after : str or list of str
        Dotted child paths, with attribute names and sequential indices as in
        the structural parameter names: ``['layer2', 'layer3']`` for
        ``resnet50_v1b``, ``['features.2', 'features.3']`` for
        ``cifar_resnet56_v2``.
    input_size : int or (int, int), default 224
        Height and width of the trial input; the mask depths are chosen for it.
    in_channels : int, default 3
        Channels of the trial input.
    p, t, r, attention, learning, variant, norm_layer, norm_kwargs
        Passed to every :class:`~resattn.models.blocks.AttentionModule`.
    unit : callable, optional
        Residual-unit factory of the modules; default
        :class:`~resattn.models.blocks.ResidualUnit`, which needs output
        channels that are a multiple of 4.
    num_pools : int or list, optional
        Mask poolings (0..4) for all modules, or one entry per path (``None``
        entries follow the rule above); default the rule above.
    init : mxnet.init.Initializer, optional
        Initialiser of the new modules; default ``mx.init.MSRAPrelu()``.
        They are initialised (on the contexts and with the dtype of the
        network's parameters) only if the network has initialised
        parameters; otherwise ``net.initialize()`` initialises them with the rest.

    Returns
    -------
    list of (str, AttentionModule)
        One pair per entry of ``after``, in that order: the module's own path
        in the modified network (``'layer2.1'``, the name
        :func:`resattn.masks.capture` gives its mask) and the module.

    Raises
    ------
    ValueError
        If a path names no child (the message lists the child paths at that
        level), a child's output is not one 4-D array, its channels do not
        suit ``unit``, or ``net`` must run imperatively and is not initialised.

    Examples
    --------
    A custom network:

    >>> import mxnet as mx
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential()
    >>> net.add(nn.Conv2D(16, 3, padding=1), nn.Conv2D(32, 3, strides=2, padding=1),
    ...         nn.GlobalAvgPool2D(), nn.Dense(10))
    >>> net.initialize()
    >>> [(path, m.channels, m.num_pools) for path, m in add_attention(net, ['0', '1'], 56)]
    [('0.1', 16, 3), ('1.1', 32, 2)]
    >>> net(mx.nd.zeros((1, 3, 56, 56))).shape
    (1, 10)

    GluonCV's ResNet-50, pretrained, with attention after its second and third stages:

    >>> from resattn._compat import import_gluoncv
    >>> gcv = import_gluoncv()  # doctest: +SKIP
    >>> net = gcv.model_zoo.get_model('resnet50_v1b', pretrained=True)  # doctest: +SKIP
    >>> add_attention(net, ['layer2', 'layer3'])  # doctest: +SKIP
    [('layer2.1', AttentionModule(channels=512, stage=2, poolings=2, ...)),
     ('layer3.1', AttentionModule(channels=1024, stage=3, poolings=1, ...))]
    """
    if not isinstance(net, Block):
        raise ValueError("add_attention needs a Gluon Block, got %s" % type(net).__name__)
    after = _as_list(after)
    height, width = input_shape(input_size)[2:]
    if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral) \
            or in_channels < 1:
        raise ValueError("in_channels must be a positive int, got %r" % (in_channels,))
    pools = _num_pools(num_pools, after)
    targets = [_resolve(net, path) for path in after]
    data_shape = (1, int(in_channels), height, width)
    shapes = _trial(net, [child for _, _, child in targets], after, data_shape)
    factory = ResidualUnit if unit is None else unit
    taken = {b.prefix for b in iter_blocks(net)}
    ctx, dtype = _context(net)
    planned = []
    for path, (ancestors, name, child), shape, n in zip(after, targets, shapes, pools):
        channels = shape[1]
        if factory is ResidualUnit and channels % 4:
            raise ValueError("add_attention: %r outputs %d channels, not a multiple of 4 as the "
                             "default unit ResidualUnit needs (bottleneck width channels/4); "
                             "pass another unit=" % (path, channels))
        n = default_num_pools(*shape[2:]) if n is None else int(n)
        parent = ancestors[-1]
        container = nn.HybridSequential if isinstance(child, HybridBlock) else nn.Sequential
        with parent.name_scope():
            seq = container(prefix=_unique_prefix(parent, name, taken))
        taken.add(seq.prefix)
        with seq.name_scope():
            module = AttentionModule(channels, MAX_STAGE - n, p=p, t=t, r=r, attention=attention,
                                     learning=learning, variant=variant, unit=factory,
                                     norm_layer=norm_layer, norm_kwargs=norm_kwargs)
        planned.append((ancestors, name, child, seq, module, shape))
    # Everything is checked and built: only now is the network changed.
    for ancestors, name, child, seq, module, shape in planned:
        seq.add(child, module)
        if isinstance(child, HybridBlock) and is_hybridized(child):
            set_hybridized(seq, True)
            module.hybridize()
        set_child(ancestors[-1], name, seq)
        for block in ancestors:
            if isinstance(block, HybridBlock):
                clear_cached_graph(block)
        if ctx is not None:
            if dtype is not None and np.dtype(dtype) != np.float32:
                module.cast(dtype)
            module.initialize(mx.init.MSRAPrelu() if init is None else init, ctx=ctx)
            with autograd.pause(train_mode=False):  # finishes the deferred shapes
                module(mx.nd.zeros((1,) + tuple(shape[1:]), ctx=ctx[0], dtype=dtype))
    where = {id(block): path for path, block in named_blocks(net)}
    return [(where[id(module)], module) for _, _, _, _, module, _ in planned]
