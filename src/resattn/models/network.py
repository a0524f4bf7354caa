"""The generic Residual Attention Network."""
import mxnet as mx
import numpy as np
from mxnet.gluon import nn
from mxnet.gluon.nn import BatchNorm, HybridBlock

from .. import _compat, _onednn, _threads
from .choices import STEMS
from .blocks import (ATTENTION_TYPES, AttentionModule, ResidualUnit, _check_choice, _check_int,
                     _pool_kwargs, _preactivation, mask_pool_size)

__all__ = ["ResidualAttentionNet", "STEMS"]



class ResidualAttentionNet(HybridBlock):
    """Residual Attention Network: a stem, three attention stages and a residual head.

    Each attention stage ``i`` is one residual unit (stride 2 from the second
    stage on) followed by ``modules[i]`` :class:`AttentionModule` of width
    ``widths[i]`` whose masks have ``4 - stages[i]`` poolings; then
    ``final_units`` residual units of width ``widths[3]``, BN-ReLU (for
    pre-activation units only), global average pooling and a fully connected
    classifier (paper, Table 1). With ``modules = (m-1, m, m+1)`` (or
    ``(1, 1, 1)``) the depth is ``36m + 20``.

    The network is split as in the Gluon model zoo: ``features`` (stem,
    ``stage1..3``, head; indices 0..4) and ``output``. Global pooling makes
    every input size at least :attr:`min_input_size` work; a smaller input is
    a ValueError that names it. As a backbone (timm's interface):
    :attr:`feature_info`, :meth:`forward_features`, :meth:`forward_head`,
    :meth:`reset_classifier`, and ``get_model(name, features_only=True)``
    (:mod:`resattn.models.features`).

    Parameters
    ----------
    modules : sequence of 3 int
        Attention modules per stage (``m``).
    widths : sequence of 4 int
        Output channels of the three attention stages and of the final units.
    stages : sequence of 3 int
        ``stage`` argument of the modules of each stage (mask depth ``4 - stage``).
    stem : {'imagenet', 'cifar'}
    stem_channels : int
        Width of the stem convolution.
    p, t, r : int
        Pre/post-processing, trunk and mask units of every module.
    final_units : int
        Residual units after the last attention stage (the first one projects).
    final_stride : int
        Stride of the first final unit (2 on ImageNet, 1 on CIFAR).
    classes : int
        Number of classes of the classifier.
    attention, learning, variant, unit, norm_layer, norm_kwargs
        Passed to every :class:`AttentionModule`; ``unit`` and the norm
        arguments also build the transition and final units. ``variant`` also
        sets the ImageNet stem's max-pooling ('official': pad 0 and Caffe's
        ceil rule, as the prototxts; 'gluoncv': pad 1 and the floor rule).
        ``attention='none'`` replaces each attention module by its trunk path
        alone (``2p + t`` residual units): a plain residual network of the
        same depth, the baseline of the paper's Table 3.
    dropout : float
        Dropout rate before the classifier (0: none).
    """

    def __init__(self, modules, widths, stages=(1, 2, 3), stem="imagenet", stem_channels=64,
                 p=1, t=2, r=1, final_units=3, final_stride=2, classes=1000,
                 attention="mixed", learning="arl", variant="official", unit=ResidualUnit,
                 norm_layer=BatchNorm, norm_kwargs=None, dropout=0.0, **kwargs):
        modules, widths, stages = tuple(modules), tuple(widths), tuple(stages)
        if len(modules) != 3 or len(stages) != 3:
            raise ValueError("modules and stages need 3 entries (one per attention stage), got "
                             "modules=%r, stages=%r" % (modules, stages))
        if len(widths) != 4:
            raise ValueError("widths needs 4 entries (3 attention stages and the final units), "
                             "got %r" % (widths,))
        for i, m in enumerate(modules):
            _check_int("modules[%d]" % i, m, 0)
        _check_choice("stem", stem, STEMS)
        _check_choice("attention", attention, ATTENTION_TYPES + ("none",))
        _check_int("stem_channels", stem_channels, 1)
        _check_int("final_units", final_units, 1)
        _check_int("final_stride", final_stride, 1)
        _check_int("classes", classes, 1)
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1), got %r" % (dropout,))
        super().__init__(**kwargs)
        self.modules_per_stage = modules
        self.widths = widths
        self.stages = stages
        self.stem = stem
        self.variant = variant
        # Units per module: the plain network's blocks of 2p + t units end their trunk
        # after p + t of them (resattn.masks.capture_trunk).
        self.p, self.t, self.r = p, t, r
        self._unit = unit
        self.classes = classes
        self.in_channels = 3
        unit_kw = dict(norm_layer=norm_layer, norm_kwargs=norm_kwargs)
        norm_kw = {} if norm_kwargs is None else dict(norm_kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential()
            stem_seq = nn.HybridSequential()
            if stem == "imagenet":
                stem_seq.add(nn.Conv2D(stem_channels, 7, 2, 3, use_bias=False, in_channels=3))
            else:
                stem_seq.add(nn.Conv2D(stem_channels, 3, 1, 1, use_bias=False, in_channels=3))
            stem_seq.add(norm_layer(**norm_kw), nn.Activation("relu"))
            if stem == "imagenet":
                pool = _pool_kwargs(variant)
                stem_seq.add(nn.MaxPool2D(pool["kernel"], pool["stride"], pool["pad"],
                                          ceil_mode=pool["pooling_convention"] == "full"))
            self.features.add(stem_seq)
            in_ch = stem_channels
            for i in range(3):
                stage_seq = nn.HybridSequential()
                stage_seq.add(unit(widths[i], stride=1 if i == 0 else 2, in_channels=in_ch,
                                   **unit_kw))
                for _ in range(modules[i]):
                    if attention == "none":
                        plain = nn.HybridSequential()
                        for _ in range(2 * p + t):
                            plain.add(unit(widths[i], **unit_kw))
                        stage_seq.add(plain)
                    else:
                        stage_seq.add(AttentionModule(widths[i], stages[i], p=p, t=t, r=r,
                                                      attention=attention, learning=learning,
                                                      variant=variant, unit=unit, **unit_kw))
                self.features.add(stage_seq)
                in_ch = widths[i]
            head = nn.HybridSequential()
            head.add(unit(widths[3], stride=final_stride, in_channels=in_ch, **unit_kw))
            for _ in range(final_units - 1):
                head.add(unit(widths[3], **unit_kw))
            if _preactivation(unit):
                # Pre-activation units leave their sum un-normalised; post-activation
                # units end in ReLU already (the AttentionNeXt prototxts).
                head.add(norm_layer(**norm_kw), nn.Activation("relu"))
            head.add(nn.GlobalAvgPool2D(), nn.Flatten())
            if dropout:
                head.add(nn.Dropout(dropout))
            self.features.add(head)
            self.output = nn.Dense(classes, in_units=widths[3])

    @property
    def attention_modules(self):
        """The attention modules in network order, as ``(name, module)`` pairs.

        Names are ``'stage{s}.module{k}'`` with the network's stage index
        ``s`` in 1..3 and ``k`` counting from 1 within the stage.
        """
        found = []
        for s in range(1, 4):
            modules = [b for b in self.features[s] if isinstance(b, AttentionModule)]
            found.extend(("stage%d.module%d" % (s, k + 1), b) for k, b in enumerate(modules))
        return found

    def load_hint(self, names):
        """Why a weight file with parameter ``names`` may not fit this network, or None."""
        if not _preactivation(self._unit) and any(n.endswith("mask_head.5.weight")
                                                  for n in names):
            return ("the file holds pre-activation units (a 6-layer mask head), as resattn "
                    "0.1's attentionnext56 had; since 0.2 the AttentionNeXt models are the "
                    "prototxts' post-activation networks (see CHANGELOG.md). Build the "
                    "network the file was written for with unit=resattn.ResNeXtUnit, e.g. "
                    "get_model('attentionnext56', unit=resattn.ResNeXtUnit)")
        return None

    @property
    def min_input_size(self):
        """Smallest input side (pixels) every pooling of the network can run at.

        With ``variant='official'`` the prototxts' pooling (pad 0, Caffe's
        ceil rule, its window clipped to the map) needs 2 pixels at each mask's last
        pooling, so the ImageNet models need inputs of 31 pixels at least; the
        'gluoncv' pooling runs at any size.
        """
        size = 1
        while not self._fits(size):
            size += 1
        return size

    def _fits(self, size):
        """Whether an input side of ``size`` pixels reaches the classifier."""
        if self.stem == "imagenet":
            size = mask_pool_size((size - 1) // 2 + 1, self.variant)  # 7x7/2 conv, pooling
        for s in range(1, 4):
            if s > 1:
                size = (size - 1) // 2 + 1  # the transition unit's stride 2
            if not all(m._fits(size) for m in self.features[s]
                       if isinstance(m, AttentionModule)):
                return False
        return size > 0

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):
            _threads.warn_once_if_unreached()  # MXNet imported first and out of reach
            self._check_input(x)
            if _compat.is_hybridized(self):
                # A size-agnostic graph cannot dodge oneDNN's 1x1-convolution crash at
                # sizes such as 2048x2048 (see resattn/_onednn.py); such calls run
                # imperatively, where each 1x1 convolution splits itself.
                return _onednn.safe_call(self, super().forward, x, *args)
        return super().forward(x, *args)

    def _check_input(self, x):
        """Fail early, naming the expected shape, instead of deep inside MXNet."""
        shape = tuple(x.shape)
        expected = "(N, %d, H, W) with N, H, W >= 1" % self.in_channels
        if len(shape) != 4:
            raise ValueError("%s expects a 4-D batch %s, got shape %s (rank %d)%s"
                             % (type(self).__name__, expected, shape, len(shape),
                                "; add a batch axis with x.expand_dims(0)"
                                if len(shape) == 3 else ""))
        if shape[1] != self.in_channels:
            hint = "; channels-last input? use x.transpose((0, 3, 1, 2))" \
                if shape[3] == self.in_channels else ""
            raise ValueError("%s expects %s, got shape %s: %d channels%s"
                             % (type(self).__name__, expected, shape, shape[1], hint))
        if min(shape) < 1:
            raise ValueError("%s expects %s, got an empty batch of shape %s"
                             % (type(self).__name__, expected, shape))
        if not (self._fits(shape[2]) and self._fits(shape[3])):
            raise ValueError("%s: a %dx%d input is too small for its poolings (variant=%r); "
                             "the smallest usable input is %dx%d"
                             % (type(self).__name__, shape[2], shape[3], self.variant,
                                self.min_input_size, self.min_input_size))
        if x.dtype not in (np.float32, np.float16, np.float64):
            raise ValueError("%s expects floating-point input (float32), got dtype %s; convert "
                             "images with x.astype('float32') and normalise them"
                             % (type(self).__name__, np.dtype(x.dtype).name))

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))

    # ------------------------------------------------------------------ as a backbone
    @property
    def feature_info(self):
        """:class:`~resattn.models.features.FeatureInfo` of the five feature blocks.

        Stem (0), attention stages 1..3 and the head (4) before its global
        pooling: channels, stride (``reduction``) and module path of each, as
        timm's ``feature_info``; ``get_model(name, features_only=True)`` returns
        a network that outputs them.
        """
        from .features import feature_info
        return feature_info(self)

    def forward_features(self, x):
        """The last spatial feature map: the head's output before global pooling.

        ``(N, widths[3], H / 32, W / 32)`` for the ImageNet models (``/ 4`` for
        the CIFAR ones), the map the classifier pools; NDArray or Symbol in,
        the same out. ``forward_head(forward_features(x))`` is ``net(x)``.
        """
        from .features import _head_stop
        if isinstance(x, mx.nd.NDArray):
            self._check_input(x)
        for i in range(len(self.features) - 1):
            x = self.features[i](x)
        head = self.features[len(self.features) - 1]
        for k in range(_head_stop(self)):
            x = head[k](x)
        return x

    def forward_head(self, x, pre_logits=False):
        """Global pooling (and dropout) and the classifier on :meth:`forward_features`' map.

        With ``pre_logits`` the pooled ``(N, widths[3])`` features, before the
        classifier.
        """
        from .features import _head_stop
        head = self.features[len(self.features) - 1]
        for k in range(_head_stop(self), len(head)):
            x = head[k](x)
        return x if pre_logits else self.output(x)

    def reset_classifier(self, classes, init=None):
        """Replace the classifier by a new one of ``classes`` outputs (0: none).

        The new ``output`` is ``Dense(classes, in_units=widths[3])`` (structural
        names ``output.weight``, ``output.bias`` as before), initialised with
        ``init`` (default ``mx.init.Xavier()``) on the network's contexts if the
        network is initialised, else with the network's ``initialize()``. With
        ``classes=0`` the network returns its pooled features ``(N,
        widths[3])`` and has no classifier parameters, as timm's
        ``reset_classifier(0)``. ``pretrained_cfg`` loses its class names when
        their number no longer fits.

        Raises
        ------
        ValueError
            ``classes`` not an integer >= 0.
        """
        from .._compat import set_child
        _check_int("classes", classes, 0, "0 removes the classifier")
        ctx = None
        for param in self.features.collect_params().values():
            try:
                ctx = param.list_ctx()
            except RuntimeError:  # not initialised
                pass
            break
        with self.name_scope():
            output = nn.HybridSequential() if classes == 0 else \
                nn.Dense(classes, in_units=self.widths[3])
        set_child(self, "output", output)
        self.classes = classes
        if ctx is not None and classes:
            output.initialize(mx.init.Xavier() if init is None else init, ctx=ctx)
        cfg = getattr(self, "pretrained_cfg", None)
        names = getattr(cfg, "class_names", None)
        if names is not None and len(names) != classes:
            object.__setattr__(self, "pretrained_cfg", cfg.replace(class_names=None))
        return self
