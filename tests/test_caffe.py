"""variant='official' against the authors' own Caffe deploy files.

The prototxts are read and run by tests/caffe_ref.py (its own parser and a
NumPy interpreter, independent of resattn); every Caffe blob is mapped onto
one resattn parameter (a blob or a parameter left over fails), and logits and
each attention module's output are compared at 224 and at 200 pixels, where
Caffe's pooling rule gives other map sizes than pad-1 floor pooling would
(a 50-pixel map pools to 25, 12, 6 instead of 25, 13, 7).
"""
import os

import mxnet as mx
import numpy as np
import pytest

from caffe_ref import REF_DIR, CaffeNet, max_pool
from conftest import rel_diff
from resattn import get_model, model_config
from resattn.models.blocks import AttentionModule, _PostActBottleneck, _PreActBottleneck

pytestmark = pytest.mark.skipif(
    not os.path.isdir(REF_DIR),
    reason="the authors' prototxts are not here (%s, from ../shared/ref/caffe/)" % REF_DIR)

PROTOTXTS = {"attention56": "Attention-56-deploy.prototxt",
             "attention92": "Attention-92-deploy.prototxt",
             "attentionnext56": "AttentionNeXt-56-deploy.prototxt",
             "attentionnext92": "AttentionNeXt-92-deploy.prototxt"}
# AttentionNeXt-92's classifier reads a blob no layer makes (see caffe_ref).
RENAME = {"ave_pool_gather": "ave_pool"}
EPS = 1e-5  # MXNet BatchNorm's eps; Caffe's frozen BN adds none
TOL = 1e-9  # relative, in float64


def _caffe(name):
    return CaffeNet.from_file(os.path.join(REF_DIR, PROTOTXTS[name]), RENAME)


class _Mapper:
    """Pairs every resattn layer with the Caffe layer of the same role, by the prototxts'
    naming scheme; BN layers of pre-activation units are found through the graph (the BN
    that makes the blob a unit's first convolution reads)."""

    def __init__(self, caffe):
        self.layers = {layer.name: layer for layer in caffe.layers}
        self.bn_of = {}
        for layer in caffe.layers:
            if layer.type == "BN":
                self.bn_of[layer.tops[0]] = layer.name
        self.pairs = []

    def bn_before(self, layer_name):
        """The BN whose (ReLU'd, in place) top is the first bottom of ``layer_name``."""
        return self.bn_of[self.layers[layer_name].bottoms[0]]

    def add(self, block, caffe_name):
        assert caffe_name in self.layers, "no Caffe layer %r" % caffe_name
        self.pairs.append((block, caffe_name))

    def unit(self, unit, prefix):
        b1 = prefix + "/branch1/"
        if isinstance(unit, _PreActBottleneck):
            self.add(unit.bn1, self.bn_before(b1 + "conv1_1x1"))
            self.add(unit.conv1, b1 + "conv1_1x1")
            self.add(unit.bn2, b1 + "conv1_1x1/bn")
            self.add(unit.conv2, b1 + "conv2_3x3")
            self.add(unit.bn3, b1 + "conv2_3x3/bn")
            self.add(unit.conv3, b1 + "conv3_1x1")
            if unit.has_projection:
                self.add(unit.proj, prefix + "/branch2/conv1_1x1")
        else:
            assert isinstance(unit, _PostActBottleneck)
            for i, conv in enumerate(("conv1_1x1", "conv2_3x3", "conv3_1x1"), 1):
                self.add(getattr(unit, "conv%d" % i), b1 + conv)
                self.add(getattr(unit, "bn%d" % i), b1 + conv + "/bn")
            if unit.has_projection:
                self.add(unit.proj, prefix + "/branch2/conv1_1x1")
                self.add(unit.proj_bn, prefix + "/branch2/conv1_1x1/bn")

    def module(self, module, m):
        pre = isinstance(module.pre[0], _PreActBottleneck)
        down, up = ("down_sample", "up_sample") if pre else ("down", "up")
        self.unit(module.pre[0], m + "/trunk/res1")
        for j, unit in enumerate(module.trunk):
            self.unit(unit, "%s/trunk/res%d" % (m, j + 2))
        for level, seq in enumerate(module.mask_down):
            for u, unit in enumerate(seq):
                self.unit(unit, "%s/mask/%s/res%d_%d" % (m, down, level + 1, u + 1))
        for level, seq in enumerate(module.mask_skip):
            self.unit(seq, "%s/mask/skip/res%d" % (m, level + 1))
        for level, seq in enumerate(module.mask_up):
            for u, unit in enumerate(seq):
                self.unit(unit, "%s/mask/%s/res%d_%d" % (m, up, level + 1, u + 1))
        head = [b for b in module.mask_head if not isinstance(b, mx.gluon.nn.Activation)]
        if pre:
            self.add(head[0], self.bn_before(m + "/mask/linear_1"))
            head = head[1:]
        for block, name in zip(head, ("linear_1", "linear_1/bn", "linear_2")):
            self.add(block, "%s/mask/%s" % (m, name))
        self.unit(module.post[0], m)

    def network(self, net):
        self.add(net.features[0][0], "conv1")
        self.add(net.features[0][1], "conv1/bn")
        names = []
        for s in range(1, 4):
            self.unit(net.features[s][0], "pre_res_%d" % s)
            for k in range(1, len(net.features[s])):
                name = "Attention%s_%d" % ("ABC"[s - 1], k)
                self.module(net.features[s][k], name)
                names.append(name)
        head = net.features[4]
        units = [b for b in head if isinstance(b, (_PreActBottleneck, _PostActBottleneck))]
        for j, unit in enumerate(units):
            self.unit(unit, "post_res_4_%d" % (j + 1))
        if isinstance(units[0], _PreActBottleneck):
            self.add(head[len(units)], self.bn_before("ave_pool"))
        self.add(net.output, "classifier")
        return names


def _load_blobs(net, caffe, blobs):
    """Assign every Caffe blob to its resattn parameter; return the module names."""
    mapper = _Mapper(caffe)
    names = mapper.network(net)
    used = [name for _, name in mapper.pairs]
    assert len(used) == len(set(used)), "a Caffe layer mapped twice"
    left = sorted(set(blobs) - set(used))
    assert not left, "Caffe blobs without a resattn parameter: %s" % left[:10]
    assigned = set()
    for block, name in mapper.pairs:
        b = blobs[name]
        # Gluon names end in _weight, _bias, _gamma, _beta, _running_mean, _running_var.
        params = {k.rsplit("_", 1)[-1]: p for k, p in block.collect_params().items()}
        if len(b) == 4:  # BN: slope, bias, mean, inv_std
            slope, bias, mean, inv_std = (x.reshape(-1) for x in b)
            values = {"gamma": slope, "beta": bias, "mean": mean,
                      "var": 1.0 / inv_std ** 2 - EPS}
        else:
            values = {"weight": b[0]}
            if len(b) > 1:
                values["bias"] = b[1]
        assert set(values) == set(params), (name, sorted(params))
        for key, value in values.items():
            param = params[key]
            assert tuple(param.shape) == value.shape, (name, key, param.shape, value.shape)
            param.set_data(mx.nd.array(value, dtype=param.dtype))
            assigned.add(param.name)
    every = {p.name for p in net.collect_params().values()}
    assert assigned == every, "resattn parameters without a Caffe blob: %s" % sorted(
        every - assigned)[:10]
    return names


def _module_outputs(net, x):
    outs, hooks = [], []
    for s in range(1, 4):
        for block in net.features[s]:
            if isinstance(block, AttentionModule):
                hooks.append(block.register_forward_hook(
                    lambda block, inp, out: outs.append(out.asnumpy())))
    logits = net(mx.nd.array(x, dtype="float64")).asnumpy()
    for h in hooks:
        h.detach()
    return logits, outs


@pytest.fixture(scope="module", params=sorted(PROTOTXTS))
def pair(request):
    """(name, Caffe net, its random blobs, resattn net with those blobs)."""
    name = request.param
    caffe = _caffe(name)
    rng = np.random.RandomState(7)
    blobs = caffe.random_blobs(rng)
    caffe.calibrate(rng.uniform(-1, 1, (1, 3, 128, 128)), blobs, rng)
    net = get_model(name)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))  # BatchNorm widths are inferred
    # In float64 the comparison is exact to 1e-9: float32 rounding alone reaches 1e-4
    # through 92 layers of random weights, which would hide small errors.
    net.cast("float64")
    modules = _load_blobs(net, caffe, blobs)
    return name, caffe, blobs, net, modules


@pytest.mark.parametrize("size", [224, 200])
def test_official_variant_computes_the_prototxt(pair, size):
    name, caffe, blobs, net, modules = pair
    x = np.random.RandomState(size).uniform(-1, 1, (1, 3, size, size))
    ref = caffe.forward(x, blobs, keep=modules)
    logits, outs = _module_outputs(net, x)
    assert len(outs) == len(modules)
    for module, out in zip(modules, outs):
        assert out.shape == ref[module].shape, (module, out.shape, ref[module].shape)
        assert rel_diff(out, ref[module]) < TOL, module
    assert rel_diff(logits, ref["output"]) < TOL
    net.hybridize()
    try:
        assert rel_diff(net(mx.nd.array(x, dtype="float64")), ref["output"]) < TOL
    finally:
        net.hybridize(False)


@pytest.mark.parametrize("pair", ["attention56"], indirect=True)
def test_pad1_floor_pooling_would_fail_the_comparison(pair):
    """The comparison can fail: the same weights with 0.1's pooling (pad 1, floor rule,
    the 'gluoncv' pooling) but the official wiring are far from the prototxt."""
    name, caffe, blobs, net, _ = pair
    x = np.random.RandomState(224).uniform(-1, 1, (1, 3, 224, 224))
    ref = caffe.forward(x, blobs)["output"]
    assert rel_diff(_with_pad1_pooling(net)(mx.nd.array(x, dtype="float64")), ref) > 0.05


@pytest.mark.parametrize("name", sorted(PROTOTXTS))
def test_parameter_counts_are_the_prototxts(name):
    caffe = _caffe(name)
    net = get_model(name)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    trainable = sum(int(np.prod(p.shape)) for p in net.collect_params().values()
                    if p.grad_req != "null")
    assert trainable == caffe.num_params()
    assert model_config(name)["prototxt_params"] == round(caffe.num_params() / 1e6, 2)


def test_interpreter_pooling_is_caffes_rule():
    """The interpreter's own pooling, checked by hand: ceil rule, last window clipped."""
    x = np.arange(15.0).reshape(1, 1, 1, 15).repeat(3, axis=2)
    out = max_pool(x, 3, 2, 0)
    assert out.shape == (1, 1, 1, 7)  # ceil((3-3)/2)+1 = 1, ceil((15-3)/2)+1 = 7
    assert out[0, 0, 0].tolist() == [2, 4, 6, 8, 10, 12, 14]
    assert max_pool(np.zeros((1, 1, 16, 16)), 3, 2, 0).shape == (1, 1, 8, 8)  # floor: 7


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "v0_1_0", "official")


def _with_pad1_pooling(net):
    """Switch ``net``'s poolings to 0.1's (pad 1, floor rule)."""
    for block in [net.features[0][3]] + [m for _, m in net.attention_modules]:
        if isinstance(block, AttentionModule):
            block._pool = dict(block._pool, pad=(1, 1), pooling_convention="valid")
        else:
            block._kwargs = dict(block._kwargs, pad=(1, 1), pooling_convention="valid")
    return net


def test_official_files_of_0_1_load_and_only_the_pooling_changed():
    """attention56 written by 0.1.0 loads as it is; with 0.1's pooling put back it computes
    0.1.0's logits exactly, so the parameters mean what they meant."""
    from resattn.io import load_parameters
    expected = np.load(os.path.join(FIXTURES, "expected.npz"))
    net = get_model("attention56", width_mult=0.0625)
    load_parameters(net, os.path.join(FIXTURES, "attention56.params"))
    x = mx.nd.array(expected["x"])
    assert rel_diff(net(x), expected["attention56"]) > 1e-3  # the pooling did change
    assert rel_diff(_with_pad1_pooling(net)(x), expected["attention56"]) < 1e-5


def test_attentionnext_files_of_0_1_are_refused_with_the_reason():
    import functools

    import resattn
    from resattn.io import load_parameters
    path = os.path.join(FIXTURES, "attentionnext56.params")
    with pytest.raises(ValueError, match=r"pre-activation units .* since 0\.2 .* "
                                         r"unit=resattn\.ResNeXtUnit"):
        load_parameters(get_model("attentionnext56", width_mult=0.0625), path)
    # The way the message gives: 0.1's network, its numbers (with 0.1's pooling).
    net = get_model("attentionnext56", width_mult=0.0625, unit=resattn.ResNeXtUnit)
    assert isinstance(net._unit, functools.partial)  # width_mult's cardinality kept
    load_parameters(net, path)
    expected = np.load(os.path.join(FIXTURES, "expected.npz"))
    out = _with_pad1_pooling(net)(mx.nd.array(expected["x"]))
    assert rel_diff(out, expected["attentionnext56"]) < 1e-5


@pytest.mark.parametrize("name, smallest", [("attention56", 47), ("attention92", 47),
                                            ("attention92_cifar_paper", 6)])
def test_too_small_inputs_name_the_smallest_usable_one(name, smallest):
    net = get_model(name, width_mult=0.0625)
    net.initialize()
    assert net.min_input_size == smallest
    net(mx.nd.zeros((1, 3, smallest, smallest + 3)))
    with pytest.raises(ValueError, match=r"%dx%d input is too small .* smallest usable "
                                         r"input is %dx%d" % (smallest, smallest - 1,
                                                              smallest, smallest)):
        net(mx.nd.zeros((1, 3, smallest, smallest - 1)))
    # The gluoncv pooling runs at any size.
    small = get_model(name, width_mult=0.0625, variant="gluoncv")
    small.initialize()
    assert small.min_input_size == 1
    assert small(mx.nd.zeros((1, 3, 5, 5))).shape[0] == 1


def test_a_module_names_the_smallest_map_its_mask_can_pool():
    module = AttentionModule(16, stage=1)  # 3 poolings, each needs 3 pixels at least
    module.initialize()
    assert module.min_size == 12  # 12 -> 6 -> 3 -> 1; 11 -> 5 -> 2 -> refused
    module(mx.nd.zeros((1, 16, 12, 12)))
    with pytest.raises(ValueError, match=r"11x12 map is too small .* smallest usable map "
                                         r"is 12x12"):
        module(mx.nd.zeros((1, 16, 11, 12)))
