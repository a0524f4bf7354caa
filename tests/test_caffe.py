"""variant='official' against the authors' own Caffe deploy files.

The prototxts are read and run by tests/caffe_ref.py (its own parser and a
NumPy interpreter, independent of resattn); every Caffe blob is mapped onto
one resattn parameter (a blob or a parameter left over fails), and logits and
each attention module's output are compared at 224 and at 200 pixels, where
Caffe's pooling rule gives other map sizes than pad-1 floor pooling would
(a 50-pixel map pools to 25, 12, 6 instead of 25, 13, 7).
"""
import copy
import json
import os

import mxnet as mx
import numpy as np
import pytest

from caffe_ref import REF_DIR, CaffeNet, _pool_out, max_pool
from conftest import rel_diff
from resattn import get_model, model_config
from resattn.models.blocks import (MAX_STAGE, AttentionModule, _max_pool, _pool_kwargs,
                                   _PostActBottleneck, _PreActBottleneck, mask_pool_size)

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
    _assign(net, mapper, blobs)
    return names


def _assign(net, mapper, blobs):
    """Set every parameter of ``net`` from the Caffe blob ``mapper`` pairs it with."""
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
    blocks = [net.features[0][3]] + [m for _, m in net.attention_modules]
    saved = [dict(b.__dict__) for b in blocks]
    try:
        assert rel_diff(_with_pad1_pooling(net)(mx.nd.array(x, dtype="float64")), ref) > 0.05
    finally:  # the network is the fixture's, shared with the other tests
        for block, attrs in zip(blocks, saved):
            for key in ("_pool", "_kwargs"):
                if key in attrs:
                    setattr(block, key, attrs[key])


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


@pytest.mark.parametrize("name, smallest", [("attention56", 31), ("attention92", 31),
                                            ("attentionnext56", 31),
                                            ("attention92_cifar_paper", 4)])
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
    module = AttentionModule(16, stage=1)  # 3 poolings, each needs 2 pixels at least
    module.initialize()
    assert module.min_size == 8  # 8 -> 4 -> 2 -> 1; 7 -> 3 -> 1 -> nothing
    module(mx.nd.zeros((1, 16, 8, 8)))
    with pytest.raises(ValueError, match=r"7x8 map is too small .* smallest usable map "
                                         r"is 8x8"):
        module(mx.nd.zeros((1, 16, 7, 8)))


# The smallest maps. Caffe pools down to 2 pixels (ceil((2 - 3) / 2) + 1 = 1, the window
# clipped to the map), so a mask of n poolings runs from 2**n pixels on: 16 -> 8 -> 4 -> 2
# -> 1 at stage 0, 8 -> 4 -> 2 -> 1 at stage 1. The prototxts hold modules of 3, 2 and 1
# poolings (AttentionA, B, C); _module_prototxt writes the authors' scheme for any number,
# and is checked to write their own modules exactly.

def _module_prototxt(m, inp, channels, pools, input_dim=None):
    """Deploy text of a pre-activation attention module (p=1, t=2, r=1) of ``pools``
    poolings in the prototxts' scheme and names: ``m`` reads blob ``inp`` (its BN-ReLU,
    ``inp/bn``, included) and ends in the Eltwise ``m``."""
    out = []

    def layer(name, kind, bottoms, top=None, **groups):
        body = ["\tname: %r" % name, "\ttype: %r" % kind]
        body += ["\tbottom: %r" % b for b in bottoms] + ["\ttop: %r" % (top or name)]
        for group, fields in groups.items():
            body.append("\t%s {" % group)
            body += ["\t\t%s: %s" % (k, str(v).lower() if isinstance(v, bool) else v)
                     for k, v in fields.items()]
            body.append("\t}")
        out.append("layer{\n%s\n}\n" % "\n".join(body).replace("'", '"'))
        return top or name

    def bn(blob):
        layer(blob + "/bn", "BN", [blob], bn_param={"frozen": True})
        return layer(blob + "/bn/relu", "ReLU", [blob + "/bn"], blob + "/bn")

    def conv(name, bottom, num_output, kernel):
        return layer(name, "Convolution", [bottom], convolution_param=dict(
            num_output=num_output, pad=kernel // 2, kernel_size=kernel, stride=1,
            bias_term=False))

    def unit(prefix, blob, activated=None):
        b = prefix + "/branch1/"
        y = conv(b + "conv1_1x1", activated or bn(blob), channels // 4, 1)
        y = conv(b + "conv2_3x3", bn(y), channels // 4, 3)
        y = conv(b + "conv3_1x1", bn(y), channels, 1)
        return layer(prefix, "Eltwise", [y, blob], eltwise_param={"operation": "SUM"})

    res1 = unit(m + "/trunk/res1", inp)
    trunk = unit(m + "/trunk/res3", unit(m + "/trunk/res2", res1))
    down, feat = [], res1
    for level in range(1, pools + 1):
        d = "%s/mask/down_sample/" % m
        feat = layer(d + "pool%d_3x3_s2" % level, "Pooling", [feat], pooling_param=dict(
            pool="MAX", kernel_size=3, stride=2))
        feat = unit(d + "res%d_1" % level, feat)
        if level == pools:
            feat = unit(d + "res%d_2" % level, feat)
        down.append(feat)
    for level in range(pools - 1, 0, -1):
        up = layer("%s/mask/up_sample/interp_%d" % (m, level + 1), "Interp",
                   [feat, down[level - 1]])
        skip = unit("%s/mask/skip/res%d" % (m, level), down[level - 1])
        feat = layer("%s/mask/up_sample%d" % (m, level), "Eltwise", [skip, up],
                     eltwise_param={"operation": "SUM"})
        feat = unit("%s/mask/up_sample/res%d_1" % (m, level), feat)
    feat = layer("%s/mask/up_sample/interp_1" % m, "Interp", [feat, trunk])
    feat = conv(m + "/mask/linear_1", bn(feat), channels, 1)
    feat = conv(m + "/mask/linear_2", bn(feat), channels, 1)
    mask = layer(m + "/mask", "Sigmoid", [feat])
    res = layer(m + "_residual", "Eltwise", [trunk, mask], eltwise_param={"operation": "PROD"})
    fusion = layer(m + "/fusion", "Eltwise", [res, trunk], eltwise_param={"operation": "SUM"})
    unit(m, fusion)
    head = ""
    if input_dim is not None:
        head = 'name: "%s"\ninput: "%s"\n%s\n' % (m, inp, "\n".join(
            "input_dim: %d" % d for d in input_dim))
    return head + "\n".join(out)


def _canonical(layer):
    return json.dumps(layer.msg, sort_keys=True)


@pytest.mark.parametrize("m, inp, channels, pools", [
    ("AttentionA_1", "pre_res_1", 256, 3), ("AttentionB_1", "pre_res_2", 512, 2),
    ("AttentionC_1", "pre_res_3", 1024, 1)])
def test_module_prototxt_writes_the_authors_modules(m, inp, channels, pools):
    """The generator below is the authors' scheme: it writes Attention-56's three kinds of
    module layer for layer (names, bottoms, tops, every parameter)."""
    authors = [layer for layer in _caffe("attention56").layers
               if layer.name in (inp + "/bn", inp + "/bn/relu", m, m + "_residual")
               or (layer.name.startswith(m + "/") and layer.name not in (m + "/bn",
                                                                          m + "/bn/relu"))]
    ours = CaffeNet('input: "%s"\n' % inp + _module_prototxt(m, inp, channels, pools)).layers
    assert sorted(map(_canonical, ours)) == sorted(map(_canonical, authors))
    assert len(ours) == len(authors) > 50


def _caffe_module(stage, shape, seed=0):
    """(the Caffe module of ``4 - stage`` poolings on ``shape``, its calibrated blobs)."""
    caffe = CaffeNet(_module_prototxt("AttentionA_1", "data", shape[1], MAX_STAGE - stage,
                                      input_dim=shape))
    rng = np.random.RandomState(seed)
    blobs = caffe.random_blobs(rng)
    # 16 samples: the BN statistics of 1- and 2-pixel maps need more than a pair.
    caffe.calibrate(rng.uniform(-1, 1, (16,) + tuple(shape[1:])), blobs, rng)
    return caffe, blobs


def _official_module(stage, caffe, blobs, shape):
    module = AttentionModule(shape[1], stage=stage)
    module.initialize()
    module(mx.nd.zeros((1,) + tuple(shape[1:2]) + (16, 16)))  # BatchNorm widths
    module.cast("float64")
    mapper = _Mapper(caffe)
    mapper.module(module, "AttentionA_1")
    _assign(module, mapper, blobs)
    return module


@pytest.mark.parametrize("stage, size", [
    (1, (8, 8)), (0, (16, 16)), (2, (4, 4)), (3, (2, 2)),  # the smallest map of each stage
    (1, (8, 13)), (0, (17, 16)), (2, (5, 4)), (3, (2, 7)),  # one side at its smallest
    (1, (15, 12)), (0, (23, 19))])  # maps where the last pooling clips a 3-pixel map
def test_official_module_computes_caffe_down_to_its_smallest_map(stage, size):
    shape = (2, 16) + size
    caffe, blobs = _caffe_module(stage, shape)
    module = _official_module(stage, caffe, blobs, shape)
    assert module.min_size == 2 ** (MAX_STAGE - stage) <= min(size)
    x = np.random.RandomState(1).uniform(-1, 1, shape)
    ref = caffe.forward(x, blobs, keep=["AttentionA_1/mask"])
    mask, ref = ref["AttentionA_1/mask"], ref["output"]
    assert ref.shape == shape
    assert ((mask > 0.01) & (mask < 0.99)).mean() > 0.5  # the mask shows in the output
    out = module(mx.nd.array(x, dtype="float64"))
    assert rel_diff(out, ref) < TOL
    module.hybridize()
    assert rel_diff(module(mx.nd.array(x, dtype="float64")), ref) < TOL


@pytest.mark.parametrize("stage, smallest", [(0, 16), (1, 8), (2, 4), (3, 2)])
def test_a_map_below_the_smallest_is_refused_naming_it(stage, smallest):
    module = AttentionModule(16, stage=stage)
    module.initialize()
    assert module.min_size == smallest
    for hybrid in (False, True):
        module.hybridize(hybrid)
        assert module(mx.nd.zeros((1, 16, smallest, smallest + 1))).shape[2] == smallest
        with pytest.raises(ValueError, match=r"%dx%d map is too small .* smallest usable map "
                                             r"is %dx%d" % (smallest + 1, smallest - 1,
                                                            smallest, smallest)):
            module(mx.nd.zeros((1, 16, smallest + 1, smallest - 1)))
    # Caffe's own rule says the same: one pixel less and the chain reaches an empty map.
    size = smallest - 1
    for _ in range(MAX_STAGE - stage):
        size = _pool_out(size, 3, 2, 0)
    assert size == 0


@pytest.mark.parametrize("size", [(31, 31), (31, 44)])
def test_official_networks_compute_the_prototxt_at_the_smallest_input(pair, size):
    """31 pixels, the smallest input of the ImageNet models: the stages see 8, 4 and 2
    pixels, each mask's last pooling a 2-pixel map. Every module is the prototxt's (the
    authors' 7x7 average pooling needs a 7-pixel map, so the comparison stops there)."""
    name, caffe, blobs, net, modules = pair
    assert net.min_input_size == 31
    x = np.random.RandomState(31).uniform(-1, 1, (1, 3) + size)
    last = max(i for i, layer in enumerate(caffe.layers) if modules[-1] in layer.tops)
    upto = copy.copy(caffe)
    upto.layers = caffe.layers[:last + 1]
    ref = upto.forward(x, blobs, keep=modules)
    assert ref[modules[-1]].shape[2:] == (2, -(-size[1] // 16))
    logits, outs = _module_outputs(net, x)
    for module, out in zip(modules, outs):
        assert out.shape == ref[module].shape, module
        assert rel_diff(out, ref[module]) < TOL, module
    net.hybridize()
    try:
        assert rel_diff(net(mx.nd.array(x, dtype="float64")), logits) < TOL
    finally:
        net.hybridize(False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mask_pooling_is_caffes_and_0_2s_where_both_run(dtype):
    """The official mask pooling against the interpreter's (Caffe's rule, clipped windows)
    at 2 to 12 pixels, and against MXNet's own ceil-rule pooling, bit for bit, where that
    runs (3 pixels on); the gradients too. Values repeat, so ties are met."""
    pool = _pool_kwargs("official")
    rng = np.random.RandomState(0)

    class Pool(mx.gluon.HybridBlock):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def hybrid_forward(self, F, x):
            return _max_pool(F, x, pool, clip=self.clip)

    def run(block, x, hybrid):
        block.hybridize(hybrid)
        x = mx.nd.array(x, dtype=dtype)
        x.attach_grad()
        with mx.autograd.record():
            y = block(x)
        y.backward(mx.nd.arange(y.size, dtype=dtype).reshape(y.shape))
        return y.asnumpy(), x.grad.asnumpy()

    with pytest.raises(mx.MXNetError, match="kernel size"):  # why _max_pool pads
        mx.nd.Pooling(mx.nd.zeros((1, 1, 2, 2)), pool_type="max", **pool).wait_to_read()
    for hybrid in (False, True):
        clipped, plain = Pool(True), Pool(False)
        for h in range(2, 13):
            for w in (2, 3, 4, 7, 12):
                x = rng.randint(-3, 4, (2, 3, h, w)).astype(dtype)
                y, grad = run(clipped, x, hybrid)
                assert y.shape[2:] == (mask_pool_size(h, "official", clipped=True),
                                       mask_pool_size(w, "official", clipped=True))
                assert (y == max_pool(x, 3, 2, 0)).all(), (h, w)
                if h >= 3 and w >= 3:
                    y0, grad0 = run(plain, x, hybrid)
                    assert (y == y0).all() and (grad == grad0).all(), (h, w)


def test_official_pool_size_is_caffes_rule():
    for size in range(1, 80):
        assert mask_pool_size(size, "official", clipped=True) == max(_pool_out(size, 3, 2, 0), 0)
        # A plain MXNet pooling (the ImageNet stem's) refuses the 2-pixel map.
        assert mask_pool_size(size, "official") == (0 if size == 2 else
                                                    max(_pool_out(size, 3, 2, 0), 0))
