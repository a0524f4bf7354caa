"""A Residual Attention Network as a backbone: its stage outputs, timm's ``features_only`` way.

A classification network (:class:`~resattn.models.network.ResidualAttentionNet`)
has five feature blocks in ``features``: the stem (index 0), the three
attention stages (1..3) and the residual head (4), whose global average
pooling ends the spatial part. :class:`ResidualAttentionFeatures` runs them
and returns the outputs of the blocks named by ``out_indices``, a list of
``(N, C, H, W)`` maps; it *shares* the classifier's blocks (same parameter
objects, same structural names ``features.*``), so weights loaded into the
classifier are the feature network's, and a classifier's parameter file loads
into it with ``ignore=('output.weight', 'output.bias')``.

:class:`FeatureInfo` (``net.feature_info``) describes each output as timm
does: ``num_chs`` (channels), ``reduction`` (stride with respect to the
input), ``module`` (the block's dotted path in the classifier, as in its
structural parameter names) and the block's ``name``; :meth:`FeatureInfo.shapes`
gives the exact output shapes at any input size, odd ones included.

:func:`dilate` turns the last strided blocks into dilated ones (the *a trous*
algorithm of dilated ResNets), for dense prediction at output stride 8 or 16.

Examples
--------
>>> import mxnet as mx, resattn
>>> net = resattn.get_model('attention56', width_mult=1/16, features_only=True,
...                         out_indices=(1, 2, 3, 4))
>>> net.initialize()
>>> net.feature_info.channels(), net.feature_info.reduction()
([16, 32, 64, 128], [4, 8, 16, 32])
>>> [o.shape for o in net(mx.nd.zeros((1, 3, 199, 251)))]
[(1, 16, 50, 63), (1, 32, 25, 32), (1, 64, 13, 16), (1, 128, 7, 8)]
>>> net.feature_info.shapes((199, 251))
[(1, 16, 50, 63), (1, 32, 25, 32), (1, 64, 13, 16), (1, 128, 7, 8)]
"""
import numbers

import mxnet as mx
from mxnet.gluon import HybridBlock, nn

from .. import _compat, _onednn, _threads
from .blocks import AttentionModule, _PostActBottleneck, _PreActBottleneck, mask_pool_size

__all__ = ["FEATURE_NAMES", "FeatureInfo", "ResidualAttentionFeatures", "feature_info",
           "feature_net", "dilate", "head_trunk", "trunk_blocks"]

#: Names of the five feature blocks of a ResidualAttentionNet, by index in ``features``.
FEATURE_NAMES = ("stem", "stage1", "stage2", "stage3", "head")
_NUM = len(FEATURE_NAMES)
_UNITS = (_PreActBottleneck, _PostActBottleneck)
# Attributes kept on the network (object.__setattr__: not Block attributes, no parameters).
_NATIVE = "_resattn_native_strides"
_DILATION = "_resattn_dilation"


def check_network(net, what="a ResidualAttentionNet"):
    from .network import ResidualAttentionNet
    if not isinstance(net, ResidualAttentionNet):
        raise ValueError("%s expects %s (resattn.get_model(...)), got %s"
                         % (what, "a ResidualAttentionNet", type(net).__name__))
    return net


def _head_stop(net):
    """Index, in the head, of its global average pooling: the spatial part ends there."""
    head = net.features[_NUM - 1]
    for i, child in enumerate(head):
        if isinstance(child, nn.GlobalAvgPool2D):
            return i
    raise ValueError("the head of %s has no GlobalAvgPool2D; its spatial output cannot be "
                     "told apart from its pooled one" % type(net).__name__)


def _transition(net, index):
    """The first residual unit of block ``index`` (1..4): the one that may stride."""
    block = net.features[index]
    unit = block[0]
    if not isinstance(unit, _UNITS):
        raise ValueError("block %d of %s does not start with a resattn residual unit (%s)"
                         % (index, type(net).__name__, type(unit).__name__))
    return unit


def _stem_strides(net):
    """``(conv stride, pooling or None)`` of the stem."""
    stem = net.features[0]
    conv = stem[0]
    stride = _compat.conv_kwargs(conv)["stride"][0]
    pools = [b for b in stem if isinstance(b, nn.MaxPool2D)]
    return stride, (pools[0] if pools else None)


def _native_strides(net):
    """Strides of the five blocks as built (before any :func:`dilate`)."""
    saved = net.__dict__.get(_NATIVE)
    if saved is None:
        conv_stride, pool = _stem_strides(net)
        strides = [conv_stride * (2 if pool is not None else 1)]
        strides += [_compat.conv_kwargs(_transition(net, i).conv2)["stride"][0]
                    for i in range(1, _NUM)]
        saved = tuple(strides)
        object.__setattr__(net, _NATIVE, saved)
    return saved


def _current_strides(net):
    """Strides of the five blocks now (a dilated block strides 1)."""
    native = _native_strides(net)
    return (native[0],) + tuple(_compat.conv_kwargs(_transition(net, i).conv2)["stride"][0]
                                for i in range(1, _NUM))


def _block_side(net, index, side):
    """Side of block ``index``'s output for an input side ``side`` of that block."""
    if index == 0:
        conv = _compat.conv_kwargs(net.features[0][0])
        k, s, p = conv["kernel"][0], conv["stride"][0], conv["pad"][0]
        side = (side + 2 * p - k) // s + 1
        _, pool = _stem_strides(net)
        if pool is not None:
            side = mask_pool_size(side, net.variant)
        return side
    stride = _compat.conv_kwargs(_transition(net, index).conv2)["stride"][0]
    return (side - 1) // stride + 1


def _module_path(net, index):
    if index < _NUM - 1:
        return "features.%d" % index
    return "features.%d.%d" % (index, _head_stop(net) - 1)


class FeatureInfo:
    """What each output of a feature network is: channels, stride, module (timm's ``feature_info``).

    A sequence of dicts, one per output in output order, with keys
    ``index`` (the block's index in ``features``: 0 stem, 1..3 the attention
    stages, 4 the head), ``name`` (``'stem'``, ``'stage1'``, ... ``'head'``),
    ``module`` (the dotted path of the block whose output it is, in the
    classifier's structural names: ``'features.2'``; for the head its last
    block before the global pooling, ``'features.4.4'``), ``num_chs`` and
    ``reduction`` (the product of the strides up to that block: the input
    side divided by the output side at sizes the strides divide, 224 px for
    the ImageNet models; ``shapes`` gives exact sizes at any input) and
    ``dilation`` (of its 3x3 convolutions, 1 unless :func:`dilate`).
    """

    def __init__(self, net, indices):
        self._net = net
        self._indices = tuple(indices)

    def _dicts(self):
        net = self._net
        strides = _current_strides(net)
        dilations = net.__dict__.get(_DILATION) or (1,) * _NUM
        channels = (net.features[0][0]._channels,) + tuple(net.widths)
        out, reduction = [], 1
        for i in range(_NUM):
            reduction *= strides[i]
            out.append({"index": i, "name": FEATURE_NAMES[i], "module": _module_path(net, i),
                        "num_chs": int(channels[i]), "reduction": int(reduction),
                        "dilation": int(dilations[i])})
        return [out[i] for i in self._indices]

    def __len__(self):
        return len(self._indices)

    def __getitem__(self, item):
        return self._dicts()[item]

    def __iter__(self):
        return iter(self._dicts())

    def __repr__(self):
        return "FeatureInfo(%s)" % ", ".join(
            "%s: %d ch, /%d" % (d["name"], d["num_chs"], d["reduction"]) for d in self)

    def get_dicts(self, keys=None):
        """The dicts, or only their ``keys``."""
        if keys is None:
            return self._dicts()
        return [{k: d[k] for k in keys} for d in self._dicts()]

    def _get(self, key, idx):
        values = [d[key] for d in self._dicts()]
        return values if idx is None else values[idx]

    def channels(self, idx=None):
        """Channels of every output (or of output ``idx``)."""
        return self._get("num_chs", idx)

    def reduction(self, idx=None):
        """Stride of every output (or of output ``idx``) with respect to the input."""
        return self._get("reduction", idx)

    def module_name(self, idx=None):
        """Module path of every output (or of output ``idx``)."""
        return self._get("module", idx)

    @property
    def out_indices(self):
        """The block indices of the outputs."""
        return self._indices

    def shapes(self, input_size, batch_size=1):
        """Exact output shapes ``(N, C, H, W)`` for an input of ``input_size``.

        Parameters
        ----------
        input_size : int or (int, int)
            Height and width of the input (any size the network accepts).
        batch_size : int
            ``N``.
        """
        from ..io import input_shape
        _, _, height, width = input_shape(input_size, batch_size)
        sides, h, w = [], height, width
        for i in range(_NUM):
            h, w = _block_side(self._net, i, h), _block_side(self._net, i, w)
            sides.append((h, w))
        channels = self.channels()
        return [(batch_size, c) + sides[i] for c, i in zip(channels, self._indices)]


def feature_info(net, out_indices=None):
    """:class:`FeatureInfo` of a ResidualAttentionNet's blocks ``out_indices`` (default all)."""
    check_network(net, "feature_info")
    return FeatureInfo(net, check_out_indices(out_indices))


def check_out_indices(out_indices):
    if out_indices is None:
        return tuple(range(_NUM))
    if isinstance(out_indices, numbers.Integral) and not isinstance(out_indices, bool):
        out_indices = (out_indices,)
    try:
        values = list(out_indices)
    except TypeError:
        raise ValueError("out_indices must be a sequence of block indices in -%d..%d (0 stem, "
                         "1..3 the attention stages, 4 the head), got %r"
                         % (_NUM, _NUM - 1, out_indices)) from None
    if not values:
        raise ValueError("out_indices must name at least one block (0 stem, 1..3 the attention "
                         "stages, 4 the head), got an empty sequence")
    result = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not -_NUM <= v < _NUM:
            raise ValueError("out_indices: %r is not a block index; allowed are 0..%d (or -%d..-1 "
                             "from the end): %s" % (v, _NUM - 1, _NUM, ", ".join(
                                 "%d %s" % (i, n) for i, n in enumerate(FEATURE_NAMES))))
        result.append(int(v) % _NUM)
    if any(b <= a for a, b in zip(result, result[1:])):
        raise ValueError("out_indices must be strictly increasing (blocks in network order), got "
                         "%r" % (tuple(values),))
    return tuple(result)


class ResidualAttentionFeatures(HybridBlock):
    """The stage outputs of a Residual Attention Network, as a list.

    ``net(x)`` returns ``[out_i for i in out_indices]``: the outputs of the
    stem (0), of the attention stages 1, 2, 3 and of the head (4) before its
    global pooling, each ``(N, C, H, W)``; blocks after the last index do not
    run. ``feature_info`` describes them. The blocks are the classifier's own
    (``features`` is its child too), so parameters are shared and named
    ``features.*`` as in the classifier; hybridized or not, at any input
    size the classifier accepts.

    Parameters
    ----------
    net : ResidualAttentionNet
        The classifier (built, loaded or trained); kept as :attr:`classifier`.
    out_indices : sequence of int, optional
        Blocks whose outputs are returned, in increasing order: 0..4, or -5..-1
        from the end. Default all five.

    Raises
    ------
    ValueError
        An index outside 0..4 (naming the blocks), indices out of order, or a
        ``net`` that is not a ResidualAttentionNet.
    """

    def __init__(self, net, out_indices=None, **kwargs):
        check_network(net, "ResidualAttentionFeatures")
        indices = check_out_indices(out_indices)
        stop = _head_stop(net)
        super().__init__(**kwargs)
        self._out_indices = indices
        self._stop = stop
        object.__setattr__(self, "_classifier", net)
        with self.name_scope():
            self.features = net.features

    @property
    def classifier(self):
        """The classification network whose blocks this one runs."""
        return self._classifier

    @property
    def out_indices(self):
        """Block indices of the outputs."""
        return self._out_indices

    @property
    def feature_info(self):
        """:class:`FeatureInfo` of the outputs."""
        return FeatureInfo(self._classifier, self._out_indices)

    @property
    def attention_modules(self):
        """The classifier's attention modules, as ``(name, module)`` pairs."""
        return self._classifier.attention_modules

    @property
    def min_input_size(self):
        """Smallest input side the classifier's poolings can run at."""
        return self._classifier.min_input_size

    def initialize(self, init=None, ctx=None, verbose=False, force_reinit=False):
        """Initialise the parameters (``mx.init.Uniform()`` unless ``init``), and the
        classifier's ``output`` layer where it is not initialised yet, so that
        :attr:`classifier` keeps working."""
        init = mx.init.Uniform() if init is None else init
        super().initialize(init, ctx, verbose, force_reinit)
        for param in self._classifier.output.collect_params().values():
            try:
                param.list_ctx()
            except RuntimeError:  # not initialised
                param.initialize(None, ctx, default_init=init)

    def load_hint(self, names):
        """Why a weight file may not fit (see :meth:`ResidualAttentionNet.load_hint`)."""
        hint = self._classifier.load_hint(names)
        if hint is None and any(n.startswith("output.") for n in names):
            hint = ("a classifier's file loads into its feature network with "
                    "ignore=('output.weight', 'output.bias')")
        return hint

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):
            _threads.warn_once_if_unreached()
            self._classifier._check_input(x)
            if _compat.is_hybridized(self):
                return _onednn.safe_call(self, super().forward, x, *args)
        return super().forward(x, *args)

    def hybrid_forward(self, F, x):
        outs = []
        last = self._out_indices[-1]
        for i in range(last + 1):
            block = self.features[i]
            if i == _NUM - 1:
                for k in range(self._stop):
                    x = block[k](x)
            else:
                x = block(x)
            if i in self._out_indices:
                outs.append(x)
        return outs

    def __repr__(self):
        return "%s(out_indices=%s, %r)" % (type(self).__name__, self._out_indices,
                                           self.feature_info)


def feature_net(net, out_indices=None):
    """A :class:`ResidualAttentionFeatures` of ``net``'s blocks ``out_indices``; what
    ``get_model(name, features_only=True, out_indices=...)`` returns."""
    feat = ResidualAttentionFeatures(net, out_indices)
    cfg = getattr(net, "pretrained_cfg", None)
    if cfg is not None:
        object.__setattr__(feat, "pretrained_cfg", cfg)
    return feat


def trunk_blocks(net, start, stop):
    """A new HybridSequential of ``net``'s feature blocks ``start..stop`` (inclusive), shared.

    Block 4 (the head) enters without its global pooling (:func:`head_trunk`'s
    children), so the sequence ends in a spatial map. Dense models split a
    backbone this way (GluonCV's ``features``/``top_features`` of Faster R-CNN,
    YOLOv3's ``stages``).
    """
    check_network(net, "trunk_blocks")
    if not 0 <= start <= stop < _NUM:
        raise ValueError("trunk_blocks: blocks %r..%r are not a range of 0..%d"
                         % (start, stop, _NUM - 1))
    seq = nn.HybridSequential(prefix="")
    for i in range(start, stop + 1):
        if i == _NUM - 1:
            head = net.features[i]
            for k in range(_head_stop(net)):
                seq.add(head[k])
        else:
            seq.add(net.features[i])
    return seq


def head_trunk(net):
    """The head of ``net`` without its global pooling, flattening and dropout (shared blocks)."""
    return trunk_blocks(net, _NUM - 1, _NUM - 1)


# ----------------------------------------------------------------------------- dilation
def _units(block):
    """The residual units on the trunk path of a block: not those of any soft mask branch."""
    found = []

    def walk(b):
        if isinstance(b, _UNITS):
            found.append(b)
        elif isinstance(b, AttentionModule):
            for part in (b.pre, b.trunk, b.post):
                walk(part)
        else:
            for _, child in _compat.named_children(b):
                walk(child)

    walk(block)
    return found


def _set_conv(conv, stride=None, dilation=None):
    kw = _compat.conv_kwargs(conv)
    if stride is not None:
        kw["stride"] = (stride,) * len(kw["stride"])
    if dilation is not None:
        k = kw["kernel"][0]
        kw["dilate"] = (dilation,) * len(kw["dilate"])
        kw["pad"] = (dilation * (k - 1) // 2,) * len(kw["pad"])


def output_strides(net):
    """The output strides :func:`dilate` can give ``net``: its strides after each block."""
    native = _native_strides(check_network(net, "output_strides"))
    values, total = [], 1
    for s in native:
        total *= s
        values.append(total)
    return sorted(set(values))


def dilate(net, output_stride):
    """Run ``net`` at ``output_stride``: the later strided blocks dilated (*a trous*), in place.

    As GluonCV's dilated ResNets for segmentation: in each block whose stride
    would take the total stride past ``output_stride``, the first residual
    unit's stride becomes 1 (its 3x3 convolution keeps the dilation of the
    blocks before it), and every other 3x3 convolution on the trunk path of
    the block (the residual units between the attention modules, each module's
    pre-processing, trunk and post-processing units, the head's units) is
    dilated by the stride removed so far (2, then 4). On the trunk path this
    is exact: the dilated network's output, sampled every ``stride removed``
    pixels, is the undilated one's. No parameter changes; the classifier keeps
    working (its global pooling sees a larger map).

    The soft mask branches are **not** dilated: MXNet's max-pooling has no
    dilation, so a mask's bottom-up top-down hourglass keeps its poolings and
    3x3 convolutions and runs on the finer map, its receptive field in input
    pixels halved (quartered at dilation 4). The masks then come at the finer
    resolution, as trunk and mask must have the same shape; fine-tuning adapts
    them. (An exact *a trous* mask would run the mask on each polyphase
    component of the map and interleave the results.) The stem is never
    dilated: ``output_stride`` cannot go below the stem's stride.

    Parameters
    ----------
    net : ResidualAttentionNet
        Modified in place (also through any feature network or dense model
        sharing its blocks; dilate before hybridizing those).
    output_stride : int
        Total stride of the last block: one of :func:`output_strides` (the
        ImageNet models 4, 8, 16, 32, the CIFAR ones 1, 2, 4); the largest
        undoes any earlier dilation.

    Returns
    -------
    tuple of int
        The dilation of each of the five blocks.

    Raises
    ------
    ValueError
        ``output_stride`` not among those the network can give (they are named).
    """
    check_network(net, "dilate")
    allowed = output_strides(net)
    if isinstance(output_stride, bool) or output_stride not in allowed:
        raise ValueError("output_stride must be one of %s for this network (its strides after "
                         "each block, stem %s), got %r"
                         % (", ".join(map(str, allowed)), _native_strides(net)[0],
                            output_stride))
    native = _native_strides(net)
    total, dilation = native[0], 1
    dilations = [1]
    for i in range(1, _NUM):
        stride = native[i]
        units = _units(net.features[i])
        first = _transition(net, i)
        if total * stride > output_stride:
            before, dilation = dilation, dilation * stride
            _set_conv(first.conv2, stride=1, dilation=before)
            if first.has_projection:
                _set_conv(first.proj, stride=1)
            first.stride = 1
        else:
            total *= stride
            _set_conv(first.conv2, stride=stride, dilation=dilation)
            if first.has_projection:
                _set_conv(first.proj, stride=stride)
            first.stride = stride
        for unit in units:
            if unit is not first:
                _set_conv(unit.conv2, dilation=dilation)
        dilations.append(dilation)
    object.__setattr__(net, _DILATION, tuple(dilations))
    for block in _compat.iter_blocks(net):
        if isinstance(block, HybridBlock):
            _compat.clear_cached_graph(block)
    return tuple(dilations)
