import json
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from conftest import randomize_batchnorm, rel_diff
from resattn import AttentionModule, ResidualAttentionNet, ResidualUnit, ResNeXtUnit


def _init(block, x):
    block.initialize(mx.init.Xavier())
    block(x)
    randomize_batchnorm(block)
    return block


def _both(block, x):
    y_imp = block(x)
    block.hybridize()
    y_hyb = block(x)
    return y_imp, y_hyb


@pytest.mark.parametrize("stride,in_channels,out_shape", [
    (1, 0, (2, 16, 9, 7)), (2, 0, (2, 16, 5, 4)), (1, 8, (2, 16, 9, 7)), (2, 8, (2, 16, 5, 4))])
def test_residual_unit_shapes_and_projection(stride, in_channels, out_shape):
    unit = ResidualUnit(16, stride=stride, in_channels=in_channels)
    x = mx.nd.random.normal(shape=(2, in_channels or 16, 9, 7))
    _init(unit, x)
    assert unit.has_projection == (stride != 1 or in_channels not in (0, 16))
    assert hasattr(unit, "proj") == unit.has_projection
    assert unit.conv1.weight.shape == (4, in_channels or 16, 1, 1)  # channels / 4
    y_imp, y_hyb = _both(unit, x)
    assert y_imp.shape == out_shape
    assert rel_diff(y_imp, y_hyb) < 1e-5


def test_residual_unit_matches_numpy_reference():
    """The pre-activation bottleneck computed step by step with numpy."""
    unit = ResidualUnit(8, stride=1, in_channels=4)
    x = mx.nd.random.normal(shape=(1, 4, 5, 5))
    _init(unit, x)

    def bn(layer, a):
        g, b, m, v = (layer.params.get(k).data().asnumpy()
                      for k in ("gamma", "beta", "running_mean", "running_var"))
        r = lambda t: t.reshape(1, -1, 1, 1)  # noqa: E731
        return (a - r(m)) / np.sqrt(r(v) + layer._kwargs["eps"]) * r(g) + r(b)

    def conv(layer, a, pad):
        w = layer.weight.data().asnumpy()
        a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        k = w.shape[2]
        out = np.zeros((a.shape[0], w.shape[0], a.shape[2] - k + 1, a.shape[3] - k + 1))
        for i in range(k):
            for j in range(k):
                patch = a[:, :, i:i + out.shape[2], j:j + out.shape[3]]
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
        return out

    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    xn = x.asnumpy()
    pre = relu(bn(unit.bn1, xn))
    out = conv(unit.conv1, pre, 0)
    out = conv(unit.conv2, relu(bn(unit.bn2, out)), 1)
    out = conv(unit.conv3, relu(bn(unit.bn3, out)), 0)
    expected = out + conv(unit.proj, pre, 0)
    assert rel_diff(unit(x), expected) < 1e-5


def test_resnext_unit_grouped():
    unit = ResNeXtUnit(64, stride=2, in_channels=32, cardinality=8)
    x = mx.nd.random.normal(shape=(1, 32, 8, 8))
    _init(unit, x)
    assert unit.conv2._kwargs["num_group"] == 8
    assert unit.conv2.weight.shape == (32, 4, 3, 3)
    assert unit(x).shape == (1, 64, 4, 4)


def _pooling_count(block):
    sym = block(mx.sym.var("data"))
    return sum(n["op"] == "Pooling" for n in json.loads(sym.tojson())["nodes"])


@pytest.mark.parametrize("stage", range(5))
@pytest.mark.parametrize("variant", ["official", "gluoncv"])
@pytest.mark.parametrize("size", [(33, 27), (7, 12), (1, 3), (16, 8), (4, 2)])
def test_attention_module_keeps_odd_non_square_shapes(stage, variant, size):
    module = AttentionModule(8, stage, variant=variant)
    x = mx.nd.random.normal(shape=(2, 8) + size)
    if min(size) < module.min_size:
        # The official pooling (pad 0, Caffe's ceil rule) needs 2 pixels at each pooling.
        assert variant == "official" and stage < 4
        module.initialize()
        with pytest.raises(ValueError, match="smallest usable map is %d" % module.min_size):
            module(x)
        return
    _init(module, x)
    assert _pooling_count(module) == 4 - stage
    y_imp, y_hyb = _both(module, x)
    assert y_imp.shape == x.shape == y_hyb.shape
    assert rel_diff(y_imp, y_hyb) < 1e-5


@pytest.mark.parametrize("stage, smallest", [(0, 16), (1, 8), (2, 4), (3, 2), (4, 1)])
def test_official_modules_run_down_to_the_map_caffe_pools(stage, smallest):
    """Caffe pools a 2-pixel map to 1 (pad 0, ceil rule, the window clipped), so a mask of
    n poolings runs from 2**n pixels: 16 -> 8 -> 4 -> 2 -> 1 at stage 0. The gluoncv
    pooling runs at any size. tests/test_caffe.py compares these with Caffe's output."""
    module = AttentionModule(16, stage)
    assert module.min_size == smallest
    assert AttentionModule(16, stage, variant="gluoncv").min_size == 1
    for size in [(smallest, smallest), (smallest, smallest + 1)]:
        x = mx.nd.random.normal(shape=(2, 16) + size)
        module = _init(AttentionModule(16, stage), x)
        y_imp, y_hyb = _both(module, x)
        assert y_imp.shape == x.shape == y_hyb.shape
        assert rel_diff(y_imp, y_hyb) < 1e-5
    if smallest > 1:
        with pytest.raises(ValueError, match="%dx%d map is too small .* smallest usable map "
                                             "is %dx%d" % (smallest, smallest - 1,
                                                           smallest, smallest)):
            module(mx.nd.zeros((2, 16, smallest, smallest - 1)))


def test_variants_share_parameters_but_differ():
    x = mx.nd.random.normal(shape=(1, 8, 16, 16))
    a = _init(AttentionModule(8, 2, variant="official"), x)
    b = AttentionModule(8, 2, variant="gluoncv")
    b.initialize()
    b(x)
    pa, pb = a._collect_params_with_prefix(), b._collect_params_with_prefix()
    assert {k: v.shape for k, v in pa.items()} == {k: v.shape for k, v in pb.items()}
    for k in pa:
        pb[k].set_data(pa[k].data())
    assert rel_diff(a(x), b(x)) > 1e-3


@pytest.mark.parametrize("attention", ["mixed", "channel", "spatial"])
@pytest.mark.parametrize("learning", ["arl", "nal"])
def test_attention_and_learning_types(attention, learning):
    module = AttentionModule(8, 3, p=0, attention=attention, learning=learning)
    x = mx.nd.random.normal(shape=(2, 8, 10, 9))
    _init(module, x)
    out, mask = module.attend(mx.nd, x)
    trunk = module.trunk(x)
    m = mask.asnumpy()
    if attention == "mixed":
        assert m.min() >= 0 and m.max() <= 1
    elif attention == "channel":  # f2: unit L2 norm over channels at every position
        np.testing.assert_allclose(np.sqrt((m ** 2).sum(axis=1)), 1.0, rtol=1e-4)
    else:  # f3: sigmoid of standardised maps; the logit of each map has mean 0
        logit = np.log(m / (1 - m))
        np.testing.assert_allclose(logit.mean(axis=(2, 3)), 0, atol=1e-3)
    expected = ((1 + m) if learning == "arl" else m) * trunk.asnumpy()
    np.testing.assert_allclose(out.asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert rel_diff(module(x), out) == 0


def test_mask_unit_counts_follow_p_t_r():
    module = AttentionModule(8, 1, p=2, t=4, r=3)
    count = lambda seq: len(seq)  # noqa: E731
    assert count(module.pre) == count(module.post) == 2
    assert count(module.trunk) == 4
    assert [count(level) for level in module.mask_down] == [3, 3, 6]
    assert count(module.mask_skip) == 2
    assert [count(level) for level in module.mask_up] == [3, 3]


class _CountingNorm(nn.BatchNorm):
    made = []

    def __init__(self, **kwargs):
        _CountingNorm.made.append(kwargs)
        super().__init__(**kwargs)


def test_norm_layer_reaches_every_normalisation():
    _CountingNorm.made.clear()
    net = ResidualAttentionNet(modules=(1, 1, 1), widths=(8, 16, 32, 32), stages=(2, 3, 4),
                               stem="cifar", stem_channels=4, final_stride=1, classes=3,
                               norm_layer=_CountingNorm, norm_kwargs={"momentum": 0.8})
    norms = [b for b in _walk(net) if isinstance(b, nn.BatchNorm)]
    assert norms and all(type(b) is _CountingNorm for b in norms)
    assert len(_CountingNorm.made) == len(norms)
    assert all(kw == {"momentum": 0.8} for kw in _CountingNorm.made)


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(channels=8, stage=5), "stage must be in 0..4"),
    (dict(channels=8, stage=-1), "stage"),
    (dict(channels=8, stage=1.5), "stage"),
    (dict(channels=0, stage=1), "channels"),
    (dict(channels=8, stage=1, p=-1), "p must"),
    (dict(channels=8, stage=1, t=0), "t must"),
    (dict(channels=8, stage=1, r=0), "r must"),
    (dict(channels=8, stage=1, attention="soft"), "'mixed', 'channel', 'spatial'"),
    (dict(channels=8, stage=1, learning="res"), "'arl', 'nal'"),
    (dict(channels=8, stage=1, variant="caffe"), "'official', 'gluoncv'"),
    (dict(channels=8, stage=1, unit=3), "unit"),
])
def test_attention_module_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as err:
        AttentionModule(**kwargs)
    bad = [v for k, v in kwargs.items() if k not in ("channels",)][-1]
    if kwargs.get("channels") == 0:
        bad = 0
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(channels=10), "multiple of 4"), (dict(channels=8, stride=0), "stride"),
    (dict(channels=8, in_channels=-2), "in_channels")])
def test_residual_unit_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ResidualUnit(**kwargs)


def test_resnext_bad_cardinality():
    with pytest.raises(ValueError, match="cardinality=32"):
        ResNeXtUnit(16)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(modules=(1, 1), widths=(8, 8, 8, 8)), "modules and stages need 3"),
    (dict(modules=(1, 1, 1), widths=(8, 8, 8)), "widths needs 4"),
    (dict(modules=(1, 1, 1), widths=(8, 8, 8, 8), stem="mnist"), "'imagenet', 'cifar'"),
    (dict(modules=(1, -1, 1), widths=(8, 8, 8, 8)), r"modules\[1\]"),
    (dict(modules=(1, 1, 1), widths=(8, 8, 8, 8), classes=0), "classes"),
    (dict(modules=(1, 1, 1), widths=(8, 8, 8, 8), dropout=1.0), "dropout"),
])
def test_network_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ResidualAttentionNet(**kwargs)


def test_import_without_mxnet_names_the_extras():
    code = ("import sys; sys.modules['mxnet'] = None\n"
            "import resattn\n"  # the package itself imports without MXNet
            "try:\n    resattn.AttentionModule\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "resattn[cpu]" in out and "resattn[cu112]" in out


def _tiny_net(**kwargs):
    net = ResidualAttentionNet(modules=(1, 1, 1), widths=(8, 16, 32, 32), stages=(2, 3, 4),
                               stem="cifar", stem_channels=4, final_stride=1, classes=3, **kwargs)
    net.initialize()
    return net


@pytest.mark.parametrize("hybrid", [False, True])
@pytest.mark.parametrize("x,fragment", [
    (mx.nd.zeros((3, 16, 16)), r"4-D batch \(N, 3, H, W\).*got shape \(3, 16, 16\)"),
    (mx.nd.zeros((2, 16, 16, 3)), r"got shape \(2, 16, 16, 3\): 16 channels; channels-last"),
    (mx.nd.zeros((2, 1, 16, 16)), r"\(N, 3, H, W\).*1 channels"),
    (mx.nd.zeros((2, 3, 16, 16), dtype="uint8"), "floating-point input.*uint8"),
])
def test_network_rejects_bad_input_early(x, fragment, hybrid):
    net = _tiny_net()
    if hybrid:
        net.hybridize()
    with pytest.raises(ValueError, match=fragment):
        net(x)


def test_network_accepts_any_size_down_to_one_pixel():
    net = _tiny_net(variant="gluoncv")
    assert net(mx.nd.zeros((1, 3, 1, 1))).shape == (1, 3)
    # The official (Caffe) pooling needs 2 pixels at each pooling: 4 -> 2 -> 1.
    official = _tiny_net()
    assert official.min_input_size == 4
    assert official(mx.nd.zeros((1, 3, 4, 4))).shape == (1, 3)
    official.hybridize()
    assert official(mx.nd.zeros((1, 3, 4, 5))).shape == (1, 3)
    with pytest.raises(ValueError, match="3x4 input is too small .* smallest usable input "
                                         "is 4x4"):
        official(mx.nd.zeros((1, 3, 3, 4)))


def test_attention_none_is_plain_network_of_same_depth():
    plain, attn = _tiny_net(attention="none"), _tiny_net()
    assert not any(isinstance(b, AttentionModule) for b in _walk(plain))
    units = lambda net: sum(isinstance(b, ResidualUnit) for b in _walk(net))  # noqa: E731
    per_module_trunk = 2 * 1 + 2  # p + t + p
    mask_units = {2: 5, 3: 2, 4: 2}  # (poolings+1) r + (poolings-1)(1 + r) per module
    assert units(attn) - units(plain) == sum(mask_units.values())
    assert units(plain) == 3 + 3 + 3 * per_module_trunk
    assert plain(mx.nd.zeros((1, 3, 9, 9))).shape == (1, 3)
