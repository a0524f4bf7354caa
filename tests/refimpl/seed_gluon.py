"""The seed's Gluon CIFAR Attention-92 (PistonY/ResidualAttentionNetwork), both namings.

Two generations of the seed's code compute the same network under different
parameter names in the first attention module:

- ``ResidualAttentionModel_92_32input_update`` (``model/*.py`` of commits
  6c48813 to 6b390fb, which saved ``test_iter198999_0.95410``,
  ``test_iter205999_0.95650``, ``test_iter233999_0.95680`` and
  ``test_iter228999_0.96570``): ``attention_module1`` is an
  ``AttentionModule_stage1_cifar`` with ``down_residual_blocks1``,
  ``skip1_connection_residual_block``, ``middle_2r_blocks.0/1``,
  ``up_residual_blocks1`` and the head ``conv1_1_blocks``;
- ``ResidualAttentionModel_32input(additional_stage=True)`` (0736f57 onwards;
  8574060's ``test_iter254999_0.96650`` is the first file it saved, then
  ``test_iter124020_0.96980``, ``test_iter59475_0.97000`` and
  ``test_epoch215_0.97140``): ``attention_module1`` is an
  ``AttentionModule_stage2`` with ``softmax1_blocks`` (one unit),
  ``skip1_connection_residual_block``, ``softmax2_blocks.0/1``,
  ``softmax3_blocks`` (one unit) and the head ``softmax4_blocks``.

The later modules carry the same names in both (``softmax1_blocks.0/1`` and
the head ``softmax2_blocks``; the 1-pooling modules are
``AttentionModule_stage2_cifar`` then ``AttentionModule_stage3``, the
0-pooling ones ``AttentionModule_stage3_cifar`` then ``AttentionModule_stage4``).

Both wire the mask alike: max-pooling 3x3/2 pad 1; on the way up, the
upsampled map plus the down-path feature of that level plus the skip unit's
output; the last upsampled map plus the trunk output goes into the head
BN-ReLU-1x1-BN-ReLU-1x1-sigmoid; the module returns ``last((1 + M) * T)``.
Upsampling is ``contrib.BilinearResize2D`` to fixed sizes (32 and 16 in the
first module, 16 in the second stage), corners aligned (the only behaviour of
that operator in the MXNet 1.3 the seed used; the keyword default since).
The residual units are pre-activation bottlenecks (``channels // 4`` wide,
the stride in the 3x3 convolution) with a 1x1 ``conv4`` projection of the
activated input only where the shape changes. The classifier ``fc`` is a 1x1
convolution with bias after 8x8 average pooling. Every commit saved with
``save_parameters`` (structural names such as
``attention_module1.softmax1_blocks.bn1.gamma``).
"""
from mxnet.gluon import nn


def _seq(*blocks):
    seq = nn.HybridSequential()
    with seq.name_scope():
        for block in blocks:
            seq.add(block)
    return seq


class ResidualBlock(nn.HybridBlock):
    """Pre-activation bottleneck ``basic_layer.ResidualBlock(channels, in_channels, stride)``."""

    def __init__(self, channels, in_channels=None, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.in_channels = in_channels or channels
        self.stride = stride
        self.projects = stride != 1 or self.in_channels != channels
        with self.name_scope():
            self.bn1 = nn.BatchNorm()
            self.conv1 = nn.Conv2D(channels // 4, 1, use_bias=False)
            self.bn2 = nn.BatchNorm()
            self.conv2 = nn.Conv2D(channels // 4, 3, stride, 1, use_bias=False)
            self.bn3 = nn.BatchNorm()
            self.conv3 = nn.Conv2D(channels, 1, use_bias=False)
            if self.projects:
                self.conv4 = nn.Conv2D(channels, 1, stride, use_bias=False)

    def hybrid_forward(self, F, x):
        pre = F.Activation(self.bn1(x), act_type="relu")
        out = F.Activation(self.bn2(self.conv1(pre)), act_type="relu")
        out = F.Activation(self.bn3(self.conv2(out)), act_type="relu")
        out = self.conv3(out)
        return out + (self.conv4(pre) if self.projects else x)


def _units(channels, count=2):
    return _seq(*[ResidualBlock(channels) for _ in range(count)])


def _head(channels):
    """BN-ReLU-1x1-BN-ReLU-1x1-sigmoid: parameters at indices 0, 2, 3 and 5."""
    return _seq(nn.BatchNorm(), nn.Activation("relu"),
                nn.Conv2D(channels, 1, use_bias=False),
                nn.BatchNorm(), nn.Activation("relu"),
                nn.Conv2D(channels, 1, use_bias=False),
                nn.Activation("sigmoid"))


def _pool():
    return nn.MaxPool2D(pool_size=3, strides=2, padding=1)


class UpsamplingBilinear2d(nn.HybridBlock):
    """Bilinear resize to a fixed ``size x size``, corners aligned."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def hybrid_forward(self, F, x):
        return F.contrib.BilinearResize2D(x, height=self.size, width=self.size,
                                          align_corners=True)


class _Module(nn.HybridBlock):
    """``first_residual_blocks``, ``trunk_branches`` and ``last_blocks`` of every module."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.first_residual_blocks = ResidualBlock(channels)
            self.trunk_branches = _units(channels)
            self._build(channels)
            self.last_blocks = ResidualBlock(channels)

    def hybrid_forward(self, F, x):
        x = self.first_residual_blocks(x)
        trunk = self.trunk_branches(x)
        mask = self._mask(F, x, trunk)
        return self.last_blocks(F.broadcast_mul(mask + 1, trunk))


class AttentionModule_stage1_cifar(_Module):
    """Two poolings, 6c48813 names."""

    def __init__(self, channels, size1=16, size2=8, **kwargs):
        self._sizes = (size1, size2)
        super().__init__(channels, **kwargs)

    def _build(self, channels):
        size1, size2 = self._sizes
        self.mpool1 = _pool()
        self.down_residual_blocks1 = ResidualBlock(channels)
        self.skip1_connection_residual_block = ResidualBlock(channels)
        self.mpool2 = _pool()
        self.middle_2r_blocks = _units(channels)
        self.interpolation1 = UpsamplingBilinear2d(size2)
        self.up_residual_blocks1 = ResidualBlock(channels)
        self.interpolation2 = UpsamplingBilinear2d(size1)
        self.conv1_1_blocks = _head(channels)

    def _mask(self, F, x, trunk):
        down = self.down_residual_blocks1(self.mpool1(x))
        skip = self.skip1_connection_residual_block(down)
        bottom = self.middle_2r_blocks(self.mpool2(down))
        up = self.up_residual_blocks1(self.interpolation1(bottom) + down + skip)
        return self.conv1_1_blocks(self.interpolation2(up) + trunk)


class AttentionModule_stage2(_Module):
    """Two poolings, 8574060 names (the seed's ImageNet stage-2 module, used at 32 pixels)."""

    def __init__(self, channels, size1=28, size2=14, **kwargs):
        self._sizes = (size1, size2)
        super().__init__(channels, **kwargs)

    def _build(self, channels):
        size1, size2 = self._sizes
        self.mpool1 = _pool()
        self.softmax1_blocks = ResidualBlock(channels)
        self.skip1_connection_residual_block = ResidualBlock(channels)
        self.mpool2 = _pool()
        self.softmax2_blocks = _units(channels)
        self.interpolation2 = UpsamplingBilinear2d(size2)
        self.softmax3_blocks = ResidualBlock(channels)
        self.interpolation1 = UpsamplingBilinear2d(size1)
        self.softmax4_blocks = _head(channels)

    def _mask(self, F, x, trunk):
        down = self.softmax1_blocks(self.mpool1(x))
        skip = self.skip1_connection_residual_block(down)
        bottom = self.softmax2_blocks(self.mpool2(down))
        up = self.softmax3_blocks(self.interpolation2(bottom) + down + skip)
        return self.softmax4_blocks(self.interpolation1(up) + trunk)


class AttentionModule_stage2_cifar(_Module):
    """One pooling: ``softmax1_blocks.0/1`` and the head ``softmax2_blocks`` (both namings)."""

    def __init__(self, channels, size1=8, **kwargs):
        self._size = size1
        super().__init__(channels, **kwargs)

    def _build(self, channels):
        self.mpool1 = _pool()
        self.softmax1_blocks = _units(channels)
        self.interpolation1 = UpsamplingBilinear2d(self._size)
        self.softmax2_blocks = _head(channels)

    def _mask(self, F, x, trunk):
        bottom = self.softmax1_blocks(self.mpool1(x))
        return self.softmax2_blocks(self.interpolation1(bottom) + trunk)


class AttentionModule_stage3_cifar(_Module):
    """No pooling: ``softmax1_blocks.0/1`` straight into the head ``softmax2_blocks``."""

    def __init__(self, channels, size1=8, **kwargs):
        super().__init__(channels, **kwargs)

    def _build(self, channels):
        self.softmax1_blocks = _units(channels)
        self.softmax2_blocks = _head(channels)

    def _mask(self, F, x, trunk):
        return self.softmax2_blocks(self.softmax1_blocks(x))


#: 8574060's names for the 1- and 0-pooling modules; same blocks, same names.
AttentionModule_stage3 = AttentionModule_stage2_cifar


class AttentionModule_stage4(AttentionModule_stage3_cifar):
    def __init__(self, channels, **kwargs):
        super().__init__(channels, **kwargs)


class _CifarNet(nn.HybridBlock):
    """conv1, residual_block1..6, attention_module*, mpool2 and the 1x1-conv ``fc``."""

    def __init__(self, first, second, third, classes, modules, **kwargs):
        super().__init__(**kwargs)
        self._order = []
        with self.name_scope():
            self._add("conv1", _seq(nn.Conv2D(32, 3, 1, 1, use_bias=False), nn.BatchNorm(),
                                    nn.Activation("relu")))
            self._add("residual_block1", ResidualBlock(128, in_channels=32))
            self._stage(1, modules[0], lambda: first(128, size1=32, size2=16))
            self._add("residual_block2", ResidualBlock(256, in_channels=128, stride=2))
            self._stage(2, modules[1], lambda: second(256, size1=16))
            self._add("residual_block3", ResidualBlock(512, in_channels=256, stride=2))
            self._stage(3, modules[2], lambda: third(512))
            self._add("residual_block4", ResidualBlock(1024, in_channels=512))
            self._add("residual_block5", ResidualBlock(1024))
            self._add("residual_block6", ResidualBlock(1024))
            self._add("mpool2", _seq(nn.BatchNorm(), nn.Activation("relu"),
                                     nn.AvgPool2D(pool_size=8, strides=1)))
            self._add("fc", nn.Conv2D(classes, 1))

    def _add(self, name, block):
        setattr(self, name, block)
        self._order.append(name)

    def _stage(self, stage, count, make):
        for k in range(count):
            self._add("attention_module%d%s" % (stage, "" if k == 0 else "_%d" % (k + 1)), make())

    def hybrid_forward(self, F, x):
        for name in self._order:
            x = getattr(self, name)(x)
        return F.Flatten(x)


def ResidualAttentionModel_92_32input_update():
    """The seed's CIFAR Attention-92 of commit 6c48813 (10 classes)."""
    return _CifarNet(AttentionModule_stage1_cifar, AttentionModule_stage2_cifar,
                     AttentionModule_stage3_cifar, 10, (1, 2, 3))


def ResidualAttentionModel_32input(classes=10, additional_stage=False):
    """The seed's CIFAR model of 8574060 onwards: Attention-92 with ``additional_stage``."""
    return _CifarNet(AttentionModule_stage2, AttentionModule_stage3, AttentionModule_stage4,
                     classes, (1, 2, 3) if additional_stage else (1, 1, 1))
