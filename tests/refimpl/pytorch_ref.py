"""The PyTorch reference's CIFAR Attention-92 (tengshaofeng/ResidualAttentionNetwork-pytorch).

``ResidualAttentionModel_92_32input_update`` of ``model/residual_attention_network.py``
(added in commit 18c3c0c, the day before fd627b6 published ``model_92_sgd.pkl``;
its modules and units are those of 2fc8f2a, unchanged since). ``train.py``
imports it as ``ResidualAttentionModel``, builds it with ``.cuda()`` and no
``DataParallel``, and writes ``model_92_sgd.pkl`` with
``torch.save(model.state_dict(), ...)`` whenever the test accuracy improves;
the code is Python 2 (``output_channels/4``, Python 2.7 ``.pyc`` files in the
history).

Facts this re-implementation keeps, with the reference's attribute names:

- ``ResidualBlock(input_channels, output_channels, stride=1)``: BN-ReLU, 1x1
  to ``output_channels / 4`` (Python 2 integer division), BN-ReLU, 3x3 with the
  stride, BN-ReLU, 1x1; ``conv4`` (1x1, stride) is built in *every* unit but
  applied to the activated input only when channels or stride change;
- the masks pool with ``MaxPool2d(3, 2, 1)`` and upsample with
  ``UpsamplingBilinear2d`` (bilinear, aligned corners) to fixed sizes: 16 then
  32 in ``attention_module1``, 16 in the stage-2 modules;
- on the way up the upsampled map is added to the down-path feature and to
  the skip unit's output, the last one to the trunk output, before the head
  ``conv1_1_blocks`` (BN-ReLU-1x1-BN-ReLU-1x1-Sigmoid); the module returns
  ``last_blocks((1 + M) * T)``;
- 8x8 average pooling and the Linear ``fc``; input in [0, 1], not normalised.
"""
import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, input_channels, output_channels, stride=1):
        super().__init__()
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.stride = stride
        width = output_channels // 4
        self.bn1 = nn.BatchNorm2d(input_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(input_channels, width, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, output_channels, 1, 1, bias=False)
        self.conv4 = nn.Conv2d(input_channels, output_channels, 1, stride, bias=False)

    def forward(self, x):
        activated = self.relu(self.bn1(x))
        out = self.relu(self.bn2(self.conv1(activated)))
        out = self.relu(self.bn3(self.conv2(out)))
        out = self.conv3(out)
        if self.input_channels != self.output_channels or self.stride != 1:
            return out + self.conv4(activated)
        return out + x


def _pair_of_units(channels):
    return nn.Sequential(ResidualBlock(channels, channels), ResidualBlock(channels, channels))


def _head(channels):
    return nn.Sequential(
        nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, kernel_size=1, stride=1, bias=False),
        nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, kernel_size=1, stride=1, bias=False),
        nn.Sigmoid())


def _upsample(size):
    # nn.UpsamplingBilinear2d(size) is this module.
    return nn.Upsample(size=size, mode="bilinear", align_corners=True)


class _Module(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.first_residual_blocks = ResidualBlock(channels, channels)
        self.trunk_branches = _pair_of_units(channels)

    def forward(self, x):
        x = self.first_residual_blocks(x)
        trunk = self.trunk_branches(x)
        return self.last_blocks((1 + self._mask(x, trunk)) * trunk)


class AttentionModule_stage1_cifar(_Module):
    def __init__(self, in_channels, out_channels, size1=(16, 16), size2=(8, 8)):
        super().__init__(out_channels)
        c = out_channels
        self.mpool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.down_residual_blocks1 = ResidualBlock(c, c)
        self.skip1_connection_residual_block = ResidualBlock(c, c)
        self.mpool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.middle_2r_blocks = _pair_of_units(c)
        self.interpolation1 = _upsample(size2)
        self.up_residual_blocks1 = ResidualBlock(c, c)
        self.interpolation2 = _upsample(size1)
        self.conv1_1_blocks = _head(c)
        self.last_blocks = ResidualBlock(c, c)

    def _mask(self, x, trunk):
        down = self.down_residual_blocks1(self.mpool1(x))
        skip = self.skip1_connection_residual_block(down)
        bottom = self.middle_2r_blocks(self.mpool2(down))
        up = self.up_residual_blocks1(self.interpolation1(bottom) + down + skip)
        return self.conv1_1_blocks(self.interpolation2(up) + trunk)


class AttentionModule_stage2_cifar(_Module):
    def __init__(self, in_channels, out_channels, size=(8, 8)):
        super().__init__(out_channels)
        c = out_channels
        self.mpool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.middle_2r_blocks = _pair_of_units(c)
        self.interpolation1 = _upsample(size)
        self.conv1_1_blocks = _head(c)
        self.last_blocks = ResidualBlock(c, c)

    def _mask(self, x, trunk):
        bottom = self.middle_2r_blocks(self.mpool1(x))
        return self.conv1_1_blocks(self.interpolation1(bottom) + trunk)


class AttentionModule_stage3_cifar(_Module):
    def __init__(self, in_channels, out_channels, size=(8, 8)):
        super().__init__(out_channels)
        c = out_channels
        self.middle_2r_blocks = _pair_of_units(c)
        self.conv1_1_blocks = _head(c)
        self.last_blocks = ResidualBlock(c, c)

    def _mask(self, x, trunk):
        return self.conv1_1_blocks(self.middle_2r_blocks(x))


class ResidualAttentionModel_92_32input_update(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.residual_block1 = ResidualBlock(32, 128)
        self.attention_module1 = AttentionModule_stage1_cifar(128, 128, size1=(32, 32),
                                                              size2=(16, 16))
        self.residual_block2 = ResidualBlock(128, 256, 2)
        self.attention_module2 = AttentionModule_stage2_cifar(256, 256, size=(16, 16))
        self.attention_module2_2 = AttentionModule_stage2_cifar(256, 256, size=(16, 16))
        self.residual_block3 = ResidualBlock(256, 512, 2)
        self.attention_module3 = AttentionModule_stage3_cifar(512, 512)
        self.attention_module3_2 = AttentionModule_stage3_cifar(512, 512)
        self.attention_module3_3 = AttentionModule_stage3_cifar(512, 512)
        self.residual_block4 = ResidualBlock(512, 1024)
        self.residual_block5 = ResidualBlock(1024, 1024)
        self.residual_block6 = ResidualBlock(1024, 1024)
        self.mpool2 = nn.Sequential(nn.BatchNorm2d(1024), nn.ReLU(inplace=True),
                                    nn.AvgPool2d(kernel_size=8))
        self.fc = nn.Linear(1024, 10)

    def forward(self, x):
        out = x
        for name, child in self.named_children():
            if name == "fc":
                break
            out = child(out)
        return self.fc(out.view(out.size(0), -1))


def randomize(model, seed=0):
    """Random weights (torch's default initialisation) and BatchNorm statistics."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(1000)
    return model.eval()
