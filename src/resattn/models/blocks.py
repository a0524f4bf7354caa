"""Building blocks of the Residual Attention Network (Wang et al., CVPR 2017).

The paper's notation is used throughout: an attention module has ``p``
pre-processing residual units, a trunk branch of ``t`` units and a soft mask
branch with ``r`` units between adjacent max-poolings; its output is
``(1 + M(x)) * T(x)`` (attention residual learning, Eq. 3).
"""
import contextlib
import functools

from mxnet.gluon import nn
from mxnet.gluon.nn import BatchNorm, HybridBlock

from .. import _onednn
from .choices import ATTENTION_TYPES, LEARNING_TYPES, MAX_STAGE, VARIANTS

__all__ = ["zero_init_residual", "ResidualUnit", "ResNeXtUnit", "PostActResidualUnit",
           "PostActResNeXtUnit",
           "AttentionModule", "unit_class", "mask_pool_size",
           "ATTENTION_TYPES", "LEARNING_TYPES", "VARIANTS", "MAX_STAGE"]


def _check_int(name, value, minimum, allowed=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError("%s must be an integer >= %d%s, got %r"
                         % (name, minimum, "" if allowed is None else " (%s)" % allowed, value))


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError("%s must be one of %s, got %r" % (name, ", ".join(map(repr, choices)), value))


def _norm(norm_layer, norm_kwargs, zero_gamma=False):
    kwargs = {} if norm_kwargs is None else dict(norm_kwargs)
    if zero_gamma:
        kwargs["gamma_initializer"] = "zeros"
    return norm_layer(**kwargs)


def _pool_kwargs(variant):
    """Max-pooling of the soft mask (and the ImageNet stem) for a wiring variant.

    'official': the prototxts' kernel 3, stride 2, pad 0 with Caffe's ceil rule
    (the last window clipped to the input), which is MXNet's ``pooling_convention='full'``
    at pad 0. 'gluoncv': pad 1 and the floor rule, as GluonCV and the other Gluon and
    PyTorch implementations pool.
    """
    if variant == "official":
        return dict(kernel=(3, 3), stride=(2, 2), pad=(0, 0), pooling_convention="full")
    return dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), pooling_convention="valid")


def _max_pool(F, x, pool, clip=False):
    """``F.Pooling(x, pool_type='max', **pool)``; with ``clip``, Caffe's pooling down to 2 pixels.

    At pad 0 with the ceil rule (``pooling_convention='full'``, the official pooling)
    Caffe pools a map of 2 pixels too, to 1, clipping the 3x3/2 window to the map.
    MXNet computes the same ceil rule and clips the last window of a larger map, but
    refuses a window larger than its input. With ``clip`` the map is extended by
    ``stride - 1`` copies of its last row and column and pooled with the floor rule:
    the output size is the ceil rule's, the windows are the same, and each one's
    maximum is its clipped window's (the copies repeat a value the window holds).
    At every size MXNet pools, the result is bit-identical to the plain pooling,
    gradients included, and the graph stays size-agnostic. The copy costs a pass
    over the map, so the soft mask asks for it at its last pooling only, the one
    pooling that can meet a 2-pixel map: before any other, the map pooled next
    would be 1 pixel, where Caffe's rule gives nothing. Other arguments (pad > 0,
    the floor rule) pool as they are.
    """
    if clip and pool.get("pooling_convention") == "full" and not any(pool.get("pad", (0, 0))):
        extra = [s - 1 for s in pool["stride"]]
        if any(extra):
            x = F.pad(x, mode="edge", pad_width=(0, 0, 0, 0, 0, extra[0], 0, extra[1]))
        pool = dict(pool, pooling_convention="valid")
    return F.Pooling(x, pool_type="max", **pool)


def mask_pool_size(size, variant, clipped=False):
    """Side of the map a 3x3/2 max-pooling of ``variant`` makes of a ``size`` map, or 0.

    0 means the pooling cannot run. The official pooling follows Caffe's ceil rule,
    ``ceil((size - 3) / 2) + 1``, which gives a map down to 2 pixels (pooled to 1);
    a plain MXNet pooling of these arguments (the ImageNet stem's ``nn.MaxPool2D``)
    refuses a window larger than its input, so it needs 3 pixels: 2 gives 0 there
    unless ``clipped``. The soft mask pools as Caffe does (``clipped=True``,
    :func:`_max_pool`). The 'gluoncv' pooling (pad 1, floor rule) runs at any size.
    """
    if variant == "official":
        return 0 if size < (2 if clipped else 3) else -(-(size - 3) // 2) + 1
    return 0 if size < 1 else (size - 1) // 2 + 1


def unit_class(unit):
    """The class behind a unit factory (a class, or a ``functools.partial`` of one), or None."""
    while isinstance(unit, functools.partial):
        unit = unit.func
    return unit if isinstance(unit, type) else None


def _preactivation(unit):
    """Whether ``unit`` builds pre-activation units (the default for unknown factories)."""
    return getattr(unit_class(unit), "preactivation", True)


# MXNet's CPU BilinearResize2D is a scalar loop (~20x slower than the oneDNN
# convolutions around it, and its backward worse), so the soft mask resizes by
# two small matrix products instead. ONNX export switches back to the operator
# (see :func:`resize_operator`), which maps onto ONNX ``Resize``.
_USE_RESIZE_OP = [False]


@contextlib.contextmanager
def resize_operator():
    """Within this context, soft masks trace ``contrib.BilinearResize2D`` (for export)."""
    saved = _USE_RESIZE_OP[0]
    _USE_RESIZE_OP[0] = True
    try:
        yield
    finally:
        _USE_RESIZE_OP[0] = saved


def _interpolation(F, src, dst):
    """``(len(dst), len(src))`` bilinear weights with aligned corners from two aranges."""
    scale = F.broadcast_div(F.max(src), F.maximum(F.max(dst), 1))
    pos = F.broadcast_mul(dst, scale)
    return F.relu(1 - F.abs(F.broadcast_sub(F.expand_dims(pos, 1), F.expand_dims(src, 0))))


def _resize_like(F, x, like):
    """Bilinear resize of ``x`` to the height and width of ``like``, corners aligned.

    Equal to ``F.contrib.BilinearResize2D(x, like=like, mode='like')`` (to
    float rounding) for any sizes, as ``A_h x A_w^T`` with hat-function
    weight matrices built in the graph, so hybridized graphs stay size-agnostic.
    """
    if _USE_RESIZE_OP[0]:
        # `like` by keyword: passed positionally it is wrong once hybridized.
        return F.contrib.BilinearResize2D(x, like=like, mode="like")
    weight_w = _interpolation(F, F.contrib.arange_like(x, axis=3),
                              F.contrib.arange_like(like, axis=3))
    weight_h = _interpolation(F, F.contrib.arange_like(x, axis=2),
                              F.contrib.arange_like(like, axis=2))
    out = F.dot(x, F.BlockGrad(weight_w), transpose_b=True)
    out = F.dot(F.transpose(out, axes=(0, 1, 3, 2)), F.BlockGrad(weight_h), transpose_b=True)
    return F.transpose(out, axes=(0, 1, 3, 2))


class _PreActBottleneck(HybridBlock):
    """Pre-activation bottleneck shared by :class:`ResidualUnit` and :class:`ResNeXtUnit`."""

    #: BN-ReLU comes before each convolution, so a network of these units ends
    #: in BN-ReLU before its global pooling and a mask head starts with one.
    preactivation = True

    @staticmethod
    def mask_head(channels, norm_layer=BatchNorm, norm_kwargs=None):
        """The soft mask's head before its activation: BN-ReLU-1x1 conv-BN-ReLU-1x1 conv."""
        head = nn.HybridSequential()
        with head.name_scope():
            head.add(_norm(norm_layer, norm_kwargs), nn.Activation("relu"),
                     _onednn.Conv2D(channels, 1, use_bias=False, in_channels=channels),
                     _norm(norm_layer, norm_kwargs), nn.Activation("relu"),
                     _onednn.Conv2D(channels, 1, use_bias=False, in_channels=channels))
        return head

    def __init__(self, channels, stride, in_channels, width, groups,
                 norm_layer, norm_kwargs, last_gamma=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.stride = stride
        self.in_channels = in_channels or channels
        self.has_projection = stride != 1 or self.in_channels != channels
        with self.name_scope():
            self.bn1 = _norm(norm_layer, norm_kwargs)
            self.conv1 = _onednn.Conv2D(width, 1, use_bias=False, in_channels=self.in_channels)
            self.bn2 = _norm(norm_layer, norm_kwargs)
            self.conv2 = nn.Conv2D(width, 3, stride, 1, groups=groups, use_bias=False,
                                   in_channels=width)
            # last_gamma: the residual branch starts at zero (Goyal et al. 2017), as
            # GluonCV's `last_gamma=True`.
            self.bn3 = _norm(norm_layer, norm_kwargs, zero_gamma=last_gamma)
            self.conv3 = _onednn.Conv2D(channels, 1, use_bias=False, in_channels=width)
            if self.has_projection:
                self.proj = _onednn.Conv2D(channels, 1, stride, use_bias=False,
                                      in_channels=self.in_channels)

    def hybrid_forward(self, F, x):
        pre = F.Activation(self.bn1(x), act_type="relu")
        out = self.conv1(pre)
        out = self.conv2(F.Activation(self.bn2(out), act_type="relu"))
        out = self.conv3(F.Activation(self.bn3(out), act_type="relu"))
        # The projection sees the pre-activated input, as in He et al. (2016b).
        shortcut = self.proj(pre) if self.has_projection else x
        return out + shortcut


class ResidualUnit(_PreActBottleneck):
    """Pre-activation bottleneck residual unit, the paper's basic unit.

    BN-ReLU-1x1 conv (``channels / 4``) - BN-ReLU-3x3 conv (``stride``) -
    BN-ReLU-1x1 conv (``channels``), plus the identity, or a 1x1 projection
    of the pre-activated input when the width or the stride changes.

    Parameters
    ----------
    channels : int
        Output channels; a positive multiple of 4.
    stride : int, default 1
        Stride of the 3x3 convolution (and of the projection).
    in_channels : int, default 0
        Input channels; 0 means the input already has ``channels`` channels.
    norm_layer : type, default :class:`mxnet.gluon.nn.BatchNorm`
        Normalisation layer, e.g. ``mxnet.gluon.contrib.nn.SyncBatchNorm``.
    norm_kwargs : dict, optional
        Keyword arguments for ``norm_layer`` (``{'num_devices': 4}``).
    last_gamma : bool, default False
        Initialise the scale of the last BatchNorm to zero, as GluonCV's
        ``last_gamma`` (same parameters). In this pre-activation unit that
        BatchNorm feeds a ReLU at exactly 0, whose derivative is 0, so the
        branch then never gets a gradient and stays at zero (GluonCV's own
        ``BottleneckV2`` does the same; ``tests/test_trainer.py`` checks both):
        kept for parity with GluonCV. To train a network whose units start as
        the identity, use :func:`zero_init_residual` (``resattn train
        --zero-init-residual``), which zeroes the last convolution instead.

    Examples
    --------
    >>> import mxnet as mx
    >>> unit = ResidualUnit(64, stride=2, in_channels=32)
    >>> unit.initialize()
    >>> unit(mx.nd.zeros((1, 32, 9, 9))).shape
    (1, 64, 5, 5)
    """

    def __init__(self, channels, stride=1, in_channels=0, norm_layer=BatchNorm,
                 norm_kwargs=None, last_gamma=False, **kwargs):
        _check_unit_args(channels, stride, in_channels, 4)
        if channels % 4:
            raise ValueError("channels must be a multiple of 4 (bottleneck width channels/4), "
                             "got %r" % channels)
        super().__init__(channels, stride, in_channels, channels // 4, 1,
                         norm_layer, norm_kwargs, last_gamma, **kwargs)


class ResNeXtUnit(_PreActBottleneck):
    """Pre-activation ResNeXt unit: the bottleneck with a grouped 3x3 convolution.

    With it, :class:`AttentionModule` builds AttentionNeXt (the paper's
    Table 7). The bottleneck is ``channels * width_ratio`` wide and split into
    ``cardinality`` groups (ResNeXt 32x4d: 128 wide at 256 channels).

    Parameters
    ----------
    channels : int
        Output channels.
    stride : int, default 1
        Stride of the grouped 3x3 convolution.
    in_channels : int, default 0
        Input channels; 0 means equal to ``channels``.
    norm_layer, norm_kwargs, last_gamma
        As for :class:`ResidualUnit`.
    cardinality : int, default 32
        Number of groups of the 3x3 convolution.
    width_ratio : float, default 0.5
        Bottleneck width as a fraction of ``channels``; the width must be a
        multiple of ``cardinality``.
    """

    def __init__(self, channels, stride=1, in_channels=0, norm_layer=BatchNorm,
                 norm_kwargs=None, last_gamma=False, cardinality=32, width_ratio=0.5,
                 **kwargs):
        _check_unit_args(channels, stride, in_channels)
        width = _resnext_width(channels, cardinality, width_ratio)
        super().__init__(channels, stride, in_channels, width, cardinality,
                         norm_layer, norm_kwargs, last_gamma, **kwargs)


class _PostActBottleneck(HybridBlock):
    """Post-activation bottleneck (ResNet v1, as the AttentionNeXt prototxts build it).

    1x1 conv-BN-ReLU, 3x3 conv (``stride``, ``groups``)-BN-ReLU, 1x1 conv-BN,
    plus the identity or a 1x1 projection-BN of the input, then ReLU.
    """

    #: The unit ends in ReLU: no BN-ReLU before a network's global pooling, and a
    #: mask head of 1x1 conv-BN-ReLU-1x1 conv (the AttentionNeXt prototxts).
    preactivation = False

    @staticmethod
    def mask_head(channels, norm_layer=BatchNorm, norm_kwargs=None):
        """The soft mask's head before its activation: 1x1 conv-BN-ReLU-1x1 conv."""
        head = nn.HybridSequential()
        with head.name_scope():
            head.add(_onednn.Conv2D(channels, 1, use_bias=False, in_channels=channels),
                     _norm(norm_layer, norm_kwargs), nn.Activation("relu"),
                     _onednn.Conv2D(channels, 1, use_bias=False, in_channels=channels))
        return head

    def __init__(self, channels, stride, in_channels, width, groups,
                 norm_layer, norm_kwargs, last_gamma=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.stride = stride
        self.in_channels = in_channels or channels
        self.has_projection = stride != 1 or self.in_channels != channels
        with self.name_scope():
            self.conv1 = _onednn.Conv2D(width, 1, use_bias=False, in_channels=self.in_channels)
            self.bn1 = _norm(norm_layer, norm_kwargs)
            self.conv2 = nn.Conv2D(width, 3, stride, 1, groups=groups, use_bias=False,
                                   in_channels=width)
            self.bn2 = _norm(norm_layer, norm_kwargs)
            self.conv3 = _onednn.Conv2D(channels, 1, use_bias=False, in_channels=width)
            self.bn3 = _norm(norm_layer, norm_kwargs, zero_gamma=last_gamma)
            if self.has_projection:
                self.proj = _onednn.Conv2D(channels, 1, stride, use_bias=False,
                                      in_channels=self.in_channels)
                self.proj_bn = _norm(norm_layer, norm_kwargs)

    def hybrid_forward(self, F, x):
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        out = F.Activation(self.bn2(self.conv2(out)), act_type="relu")
        out = self.bn3(self.conv3(out))
        shortcut = self.proj_bn(self.proj(x)) if self.has_projection else x
        return F.Activation(out + shortcut, act_type="relu")


def _check_unit_args(channels, stride, in_channels, minimum=1):
    _check_int("channels", channels, minimum)
    _check_int("stride", stride, 1)
    _check_int("in_channels", in_channels, 0, "0 means equal to channels")


def _resnext_width(channels, cardinality, width_ratio):
    _check_int("cardinality", cardinality, 1)
    width = int(round(channels * width_ratio))
    if width < cardinality or width % cardinality:
        raise ValueError("ResNeXt unit: bottleneck width channels*width_ratio = %d must be a "
                         "positive multiple of cardinality=%d (channels=%d, width_ratio=%r)"
                         % (width, cardinality, channels, width_ratio))
    return width


class PostActResidualUnit(_PostActBottleneck):
    """Post-activation bottleneck residual unit (ResNet v1): the counterpart of
    :class:`ResidualUnit` with BN and ReLU after each convolution.

    Parameters
    ----------
    channels, stride, in_channels, norm_layer, norm_kwargs, last_gamma
        As for :class:`ResidualUnit`; the projection is 1x1 conv-BN of the input.
    """

    def __init__(self, channels, stride=1, in_channels=0, norm_layer=BatchNorm,
                 norm_kwargs=None, last_gamma=False, **kwargs):
        _check_unit_args(channels, stride, in_channels, 4)
        if channels % 4:
            raise ValueError("channels must be a multiple of 4 (bottleneck width channels/4), "
                             "got %r" % channels)
        super().__init__(channels, stride, in_channels, channels // 4, 1,
                         norm_layer, norm_kwargs, last_gamma, **kwargs)


class PostActResNeXtUnit(_PostActBottleneck):
    """Post-activation ResNeXt unit, the unit of the paper's AttentionNeXt prototxts.

    1x1 conv-BN-ReLU (``channels * width_ratio`` wide), grouped 3x3 conv
    (``cardinality`` groups, ``stride``)-BN-ReLU, 1x1 conv-BN, plus the
    identity or a 1x1 projection-BN of the input, then ReLU (Xie et al. 2017).
    With it, :class:`AttentionModule` builds AttentionNeXt-56 and -92 exactly
    as ``AttentionNeXt-56/92-deploy.prototxt`` do (``attentionnext56/92``).

    Parameters
    ----------
    channels, stride, in_channels, norm_layer, norm_kwargs, last_gamma, cardinality, width_ratio
        As for :class:`ResNeXtUnit`.

    Examples
    --------
    >>> import mxnet as mx
    >>> unit = PostActResNeXtUnit(64, stride=2, in_channels=32, cardinality=8)
    >>> unit.initialize()
    >>> unit(mx.nd.zeros((1, 32, 9, 9))).shape
    (1, 64, 5, 5)
    """

    def __init__(self, channels, stride=1, in_channels=0, norm_layer=BatchNorm,
                 norm_kwargs=None, last_gamma=False, cardinality=32, width_ratio=0.5,
                 **kwargs):
        _check_unit_args(channels, stride, in_channels)
        width = _resnext_width(channels, cardinality, width_ratio)
        super().__init__(channels, stride, in_channels, width, cardinality,
                         norm_layer, norm_kwargs, last_gamma, **kwargs)


def zero_init_residual(net):
    """Start every residual unit of ``net`` as the identity: the last layer of its branch at zero.

    An initialised deep network then starts as a shallow one, whatever its
    depth (Goyal et al. 2017; Zhang et al. 2019, Fixup). Which layer is zeroed
    depends on the unit's layout:

    - post-activation units (:class:`PostActResidualUnit`, :class:`PostActResNeXtUnit`):
      the scale (gamma) of the last BatchNorm, just before the addition, as
      torchvision's ``zero_init_residual`` does;
    - pre-activation units (:class:`ResidualUnit`, :class:`ResNeXtUnit`): the
      weights of the last convolution. Their last BatchNorm sits before a
      ReLU, so a zero scale there (GluonCV's ``last_gamma``) makes the ReLU's
      input exactly 0, where its derivative is 0: no gradient ever reaches that
      BatchNorm or the two convolutions before it, and the branch stays dead
      (``docs/attention.md`` measures it). A zero last convolution gets its
      gradient at once, and the branch opens after the first step.

    Works on initialised and on deferred parameters; the mask heads, the
    projections and the other layers are left alone. Only resattn's units are
    found, anywhere in ``net``.

    Returns
    -------
    int
        The number of units changed.
    """
    import mxnet as mx
    from .._compat import iter_blocks

    count = 0
    for block in iter_blocks(net):
        if isinstance(block, (_PreActBottleneck, _PostActBottleneck)):
            param = (block.conv3.weight if isinstance(block, _PreActBottleneck)
                     else block.bn3.gamma)
            param.initialize(mx.init.Zero(), ctx=param.list_ctx(), force_reinit=True)
            count += 1
    return count


class AttentionModule(HybridBlock):
    """Attention module: a trunk branch and a bottom-up top-down soft mask branch.

    ``x -> p units -> {trunk T: t units; mask M: hourglass} -> (1 + M) * T -> p units``.

    The soft mask branch max-pools (3x3, stride 2) ``4 - stage`` times
    with ``r`` units after each pooling and ``2r`` at the bottom, then goes
    back up by bilinear upsampling (aligned corners) to the size of the tensor
    it is added to, adding a one-unit skip connection at each level; a head
    of two 1x1 convolutions (its layout is the unit's: BN-ReLU-conv-BN-ReLU-conv
    for pre-activation units, conv-BN-ReLU-conv for post-activation ones) and
    the attention activation give ``M`` (paper, Sec. 3.3 and Fig. 2). Because
    every upsampling takes its target size from the tensor it meets, any
    input size at least :attr:`min_size` works, odd and non-square included,
    hybridized or not.

    Parameters
    ----------
    channels : int
        Channels of input and output.
    stage : int
        0..4; the mask has ``4 - stage`` poolings (the paper's ImageNet stages
        1, 2, 3 at 56, 28, 14 pixels have 3, 2, 1).
    p : int, default 1
        Pre-processing units before the branches split (and post-processing
        units after they merge).
    t : int, default 2
        Units of the trunk branch.
    r : int, default 1
        Units between adjacent poolings of the mask branch (2r at the bottom).
    attention : {'mixed', 'channel', 'spatial'}
        The mask activation of the paper's Sec. 3.4: f1 sigmoid per channel and
        position; f2 L2 normalisation over channels at each position; f3
        sigmoid of each channel's map standardised by its mean and std.
    learning : {'arl', 'nal'}
        Attention residual learning ``(1 + M) * T`` (Eq. 3) or naive attention
        learning ``M * T``.
    variant : {'official', 'gluoncv'}
        'official' follows the paper's Caffe prototxts: max-pooling with pad 0
        and Caffe's ceil rule (a 15-pixel map pools to 7), each upsampled map
        added to the skip unit's output only, and the head taking the last
        upsampled map alone. 'gluoncv' pools with pad 1 and the floor rule (15
        to 8) and also adds the down-path feature at each level and the trunk
        output before the head, as GluonCV, the Gluon implementation and the
        PyTorch reference do. Same parameters in both.
    unit : callable, default :class:`ResidualUnit`
        Factory ``unit(channels, stride=1, in_channels=0, norm_layer=..., norm_kwargs=...)``:
        a unit class or a ``functools.partial`` of one. The class's
        ``mask_head`` builds the mask head (pre-activation units'
        BN-ReLU-conv-BN-ReLU-conv by default, :class:`PostActResNeXtUnit`'s
        conv-BN-ReLU-conv).
    norm_layer, norm_kwargs
        Normalisation layer for every unit and the mask head.

    Examples
    --------
    >>> import mxnet as mx
    >>> module = AttentionModule(16, stage=2)
    >>> module.initialize()
    >>> module(mx.nd.ones((1, 16, 13, 7))).shape
    (1, 16, 13, 7)
    """

    def __init__(self, channels, stage, p=1, t=2, r=1, attention="mixed", learning="arl",
                 variant="official", unit=ResidualUnit, norm_layer=BatchNorm,
                 norm_kwargs=None, **kwargs):
        _check_int("channels", channels, 1)
        _check_int("stage", stage, 0, "0..%d; the mask has %d - stage poolings"
                   % (MAX_STAGE, MAX_STAGE))
        if stage > MAX_STAGE:
            raise ValueError("stage must be in 0..%d (the mask has %d - stage poolings), got %r"
                             % (MAX_STAGE, MAX_STAGE, stage))
        _check_int("p", p, 0)
        _check_int("t", t, 1)
        _check_int("r", r, 1)
        _check_choice("attention", attention, ATTENTION_TYPES)
        _check_choice("learning", learning, LEARNING_TYPES)
        _check_choice("variant", variant, VARIANTS)
        if not callable(unit):
            raise ValueError("unit must be a residual-unit factory, got %r" % (unit,))
        super().__init__(**kwargs)
        self.channels = channels
        self.stage = stage
        self.num_pools = MAX_STAGE - stage
        self.p, self.t, self.r = p, t, r
        self.attention = attention
        self.learning = learning
        self.variant = variant
        self._pool = _pool_kwargs(variant)
        levels = max(self.num_pools, 1)

        def units(n):
            seq = nn.HybridSequential()
            with seq.name_scope():
                for _ in range(n):
                    seq.add(unit(channels, norm_layer=norm_layer, norm_kwargs=norm_kwargs))
            return seq

        with self.name_scope():
            self.pre = units(p)
            self.trunk = units(t)
            # mask_down[k] follows the (k+1)-th pooling; the last level is the bottom (2r).
            self.mask_down = nn.HybridSequential()
            for level in range(levels):
                self.mask_down.add(units(2 * r if level == levels - 1 else r))
            # Levels 0..num_pools-2 have a skip unit and an up path of r units.
            self.mask_skip = units(levels - 1)
            self.mask_up = nn.HybridSequential()
            for _ in range(levels - 1):
                self.mask_up.add(units(r))
            # The unit decides the head's layout (pre- or post-activation).
            head = getattr(unit_class(unit), "mask_head", _PreActBottleneck.mask_head)
            self.mask_head = head(channels, norm_layer=norm_layer, norm_kwargs=norm_kwargs)
            self.post = units(p)

    @property
    def min_size(self):
        """Smallest side of an input map the soft mask can pool ``4 - stage`` times.

        ``2 ** (4 - stage)`` for the official pooling (Caffe's ceil rule halves a map
        down to 2 pixels, pooled to 1: 16 -> 8 -> 4 -> 2 -> 1 at stage 0), 1 for the
        'gluoncv' one.
        """
        size = 1
        while not self._fits(size):
            size += 1
        return size

    def _fits(self, size):
        for _ in range(self.num_pools):
            size = mask_pool_size(size, self.variant, clipped=True)
            if size == 0:
                return False
        return True

    def forward(self, x, *args):
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) == 4 and not all(map(self._fits, shape[2:])):
            raise ValueError("%s: a %dx%d map is too small for a soft mask with %d poolings "
                             "(variant=%r); the smallest usable map is %dx%d"
                             % (type(self).__name__, shape[2], shape[3], self.num_pools,
                                self.variant, self.min_size, self.min_size))
        return super().forward(x, *args)

    def _activate(self, F, z):
        # Activation(sigmoid) runs in oneDNN; F.sigmoid is ~7x slower on CPU.
        if self.attention == "mixed":
            return F.Activation(z, act_type="sigmoid")
        if self.attention == "channel":
            return F.L2Normalization(z, mode="channel", eps=1e-10)
        mean = F.mean(z, axis=(2, 3), keepdims=True)
        centred = F.broadcast_sub(z, mean)
        std = F.sqrt(F.mean(F.square(centred), axis=(2, 3), keepdims=True) + 1e-5)
        return F.Activation(F.broadcast_div(centred, std), act_type="sigmoid")

    def soft_mask(self, F, x, trunk):
        """The soft mask ``M(x)`` of the pre-processed input ``x``; ``trunk`` is ``T(x)``."""
        if self.num_pools == 0:
            feat = self.mask_down[0](x)
        else:
            down = []
            feat = x
            for level in range(self.num_pools):
                feat = _max_pool(F, feat, self._pool, clip=level == self.num_pools - 1)
                feat = self.mask_down[level](feat)
                down.append(feat)
            for level in reversed(range(self.num_pools - 1)):
                feat = _resize_like(F, feat, down[level])
                if self.variant == "gluoncv":
                    feat = feat + down[level]
                feat = self.mask_up[level](feat + self.mask_skip[level](down[level]))
            feat = _resize_like(F, feat, trunk)
            if self.variant == "gluoncv":
                feat = feat + trunk
        return self._activate(F, self.mask_head(feat))

    def attend(self, F, x):
        """Run the module and return ``(output, soft_mask)``."""
        x = self.pre(x)
        trunk = self.trunk(x)
        mask = self.soft_mask(F, x, trunk)
        if self.learning == "arl":
            out = (mask + 1) * trunk
        else:
            out = mask * trunk
        return self.post(out), mask

    def hybrid_forward(self, F, x):
        return self.attend(F, x)[0]

    def __repr__(self):
        return ("%s(channels=%d, stage=%d, poolings=%d, p=%d, t=%d, r=%d, attention=%r, "
                "learning=%r, variant=%r)" % (type(self).__name__, self.channels, self.stage,
                                              self.num_pools, self.p, self.t, self.r,
                                              self.attention, self.learning, self.variant))
