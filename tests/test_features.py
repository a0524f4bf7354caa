"""Feature extraction, timm's way: get_model(..., features_only=True), feature_info, dilation."""
import os
import re

import mxnet as mx
import numpy as np
import pytest

import resattn
from resattn._compat import structured_params
from resattn.io import load_parameters, save_parameters
from resattn.models.features import (FEATURE_NAMES, ResidualAttentionFeatures, dilate,
                                     feature_info, output_strides)

from conftest import randomize_batchnorm, rel_diff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 1 / 16
#: The two models the issue names, with their widths at full size.
FULL_CHANNELS = {"attention56": [64, 256, 512, 1024, 2048],
                 "attention92_cifar": [32, 128, 256, 512, 1024]}
STRIDES = {"attention56": [4, 4, 8, 16, 32], "attention92_cifar": [1, 1, 2, 4, 4]}


def _features(name, out_indices=None, **kwargs):
    net = resattn.get_model(name, width_mult=TINY, features_only=True, out_indices=out_indices,
                            **kwargs)
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 64, 64)))  # the deferred shapes
    return net


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name,out_indices", [("attention56", (1, 2, 3, 4)),
                                              ("attention56", None),
                                              ("attention92_cifar", (0, 2, 4)),
                                              ("attention92_cifar", (-2, -1))])
@pytest.mark.parametrize("hybridize", [False, True])
def test_outputs_match_feature_info(name, out_indices, hybridize):
    net = _features(name, out_indices)
    if hybridize:
        net.hybridize()
    info = net.feature_info
    indices = tuple(range(5)) if out_indices is None else tuple(i % 5 for i in out_indices)
    assert info.out_indices == indices == net.out_indices
    assert [d["name"] for d in info] == [FEATURE_NAMES[i] for i in indices]
    assert info.reduction() == [STRIDES[name][i] for i in indices]
    for size in ((224, 224), (199, 251)):
        outs = net(mx.nd.random.normal(shape=(2, 3) + size))
        assert isinstance(outs, list) and len(outs) == len(info)
        assert [o.shape for o in outs] == info.shapes(size, batch_size=2)
        assert [o.shape[1] for o in outs] == info.channels()
        for out in outs:
            assert np.isfinite(out.asnumpy()).all()
    # At 224 px every stride divides the input: the side is 224 / reduction.
    assert [s[2:] for s in info.shapes(224)] == [(224 // r, 224 // r) for r in info.reduction()]


@pytest.mark.parametrize("name", sorted(FULL_CHANNELS))
def test_full_size_feature_info_and_graph_shapes(name):
    """At full width, without computing: feature_info and the traced graph's shapes agree."""
    net = resattn.get_model(name, features_only=True)
    assert net.feature_info.channels() == FULL_CHANNELS[name]
    assert net.feature_info.reduction() == STRIDES[name]
    outs = net(mx.sym.var("data"))
    for size in ((224, 224), (199, 251)):
        _, shapes, _ = mx.sym.Group(outs).infer_shape(data=(1, 3) + size)
        assert [tuple(s) for s in shapes] == net.feature_info.shapes(size)


@pytest.mark.parametrize("name", resattn.list_models())
def test_every_zoo_model_gives_its_features(name):
    """Every zoo model, features_only, traced as hybridization traces it: the shapes of all
    five outputs at 224 px and at an odd size are feature_info's."""
    net = resattn.get_model(name, features_only=True)
    outs = mx.sym.Group(net(mx.sym.var("data")))
    assert len(outs.list_outputs()) == 5
    for size in ((224, 224), (199, 251)):
        _, shapes, _ = outs.infer_shape(data=(2, 3) + size)
        assert [tuple(s) for s in shapes] == net.feature_info.shapes(size, batch_size=2)


def test_feature_info_is_timms():
    net = resattn.get_model("attention56", width_mult=TINY, features_only=True,
                            out_indices=(2, 4))
    info = net.feature_info
    assert info.get_dicts(keys=["module", "num_chs", "reduction"]) == [
        {"module": "features.2", "num_chs": 32, "reduction": 8},
        {"module": "features.4.4", "num_chs": 128, "reduction": 32}]
    assert info.channels(-1) == 128 and info.reduction(0) == 8
    assert info.module_name() == ["features.2", "features.4.4"]
    # features.4.4 is the head's last block before its global pooling (BN-ReLU's ReLU).
    head = net.classifier.features[4]
    assert isinstance(head[4], mx.gluon.nn.Activation)
    assert isinstance(head[5], mx.gluon.nn.GlobalAvgPool2D)
    assert "stage2: 32 ch, /8" in repr(net)
    # The classifier describes all five blocks.
    assert net.classifier.feature_info.channels() == [4, 16, 32, 64, 128]
    # Post-activation units end in ReLU: the head has no BN-ReLU, its last unit is the output.
    nxt = resattn.get_model("attentionnext56", width_mult=0.25)
    assert nxt.feature_info.module_name(-1) == "features.4.2"


def test_outputs_are_the_classifiers_own():
    """Shared blocks: the outputs are the classifier's intermediate maps, its logits follow."""
    feat = _features("attention56_cifar", (1, 2, 3, 4))
    net = feat.classifier
    randomize_batchnorm(net)
    x = mx.nd.random.normal(shape=(2, 3, 32, 40))
    outs = feat(x)
    h = x
    for i in range(4):
        h = net.features[i](h)
        if i >= 1:
            assert rel_diff(outs[i - 1], h) == 0
    assert rel_diff(outs[-1], net.forward_features(x)) == 0
    assert rel_diff(net.forward_head(outs[-1]), net(x)) < 1e-6
    pooled = net.forward_head(outs[-1], pre_logits=True)
    assert pooled.shape == (2, net.widths[3])
    assert rel_diff(pooled, outs[-1].mean(axis=(2, 3))) < 1e-5
    # Same Parameter objects, same structural names (the classifier's minus output.*).
    ours, theirs = structured_params(feat), structured_params(net)
    assert set(ours) == {k for k in theirs if not k.startswith("output.")}
    assert all(ours[k] is theirs[k] for k in ours)
    # The classifier's masks come with its usual names.
    from resattn.masks import capture
    assert [m.name for m in capture(net, x).masks] == ["stage1.module1", "stage2.module1",
                                                       "stage3.module1"]


def test_weights_load_into_feature_networks(tmp_path):
    source = resattn.get_model("attention56_cifar", width_mult=TINY)
    source.initialize(mx.init.MSRAPrelu())
    source(mx.nd.zeros((1, 3, 32, 32)))
    randomize_batchnorm(source)
    path = str(tmp_path / "a56.params")
    save_parameters(source, path)
    x = mx.nd.random.normal(shape=(1, 3, 33, 47))
    expected = source.forward_features(x)
    # get_model(..., pretrained=PATH): the classifier loads, the feature network shares it.
    feat = resattn.get_model("attention56_cifar", width_mult=TINY, features_only=True,
                             out_indices=(3, 4), pretrained=path)
    assert isinstance(feat, ResidualAttentionFeatures)
    assert feat.pretrained_cfg.file == path and feat.pretrained_cfg.model == "attention56_cifar"
    assert rel_diff(feat(x)[-1], expected) == 0
    # A classifier's file loads into a feature network: the names match but output.*.
    other = _features("attention56_cifar")
    with pytest.raises(ValueError, match="ignore=\\('output.weight', 'output.bias'\\)"):
        load_parameters(other, path)
    load_parameters(other, path, ignore=("output.weight", "output.bias"))
    assert rel_diff(other(x)[-1], expected) == 0
    # And a feature network's own file back into a classifier's features.
    save_parameters(other, str(tmp_path / "feat.params"))
    back = resattn.get_model("attention56_cifar", width_mult=TINY)
    back.initialize()
    load_parameters(back, str(tmp_path / "feat.params"), ignore=("output.weight", "output.bias"))
    assert rel_diff(back.forward_features(x), expected) == 0


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("out_indices,match", [
    ((1, 5), "5 is not a block index; allowed are 0..4 .*0 stem, 1 stage1.*4 head"),
    ((-6,), "-6 is not a block index"),
    ((2, 1), "strictly increasing"),
    ((1, 1), "strictly increasing"),
    ((), "at least one block"),
    (("stage1",), "'stage1' is not a block index"),
    ((1.0,), "1.0 is not a block index"),
    (3.5, "sequence of block indices"),
])
def test_bad_out_indices_are_named(out_indices, match):
    with pytest.raises(ValueError, match=match):
        resattn.get_model("attention56", features_only=True, out_indices=out_indices)


def test_out_indices_without_features_only_is_refused():
    with pytest.raises(ValueError, match="features_only=True"):
        resattn.get_model("attention56", out_indices=(1, 2))
    assert feature_info(resattn.get_model("attention56"), 3).channels() == [1024]
    with pytest.raises(ValueError, match="expects a ResidualAttentionNet"):
        ResidualAttentionFeatures(mx.gluon.nn.HybridSequential())


def test_too_small_or_wrong_inputs_fail_early():
    net = _features("attention56", (1,))
    assert net.min_input_size == net.classifier.min_input_size == 31
    with pytest.raises(ValueError, match="too small .* smallest usable input is 31x31"):
        net(mx.nd.zeros((1, 3, 30, 40)))
    with pytest.raises(ValueError, match="channels-last"):
        net(mx.nd.zeros((1, 64, 64, 3)))


# ----------------------------------------------------------------------------- classifier API
def test_reset_classifier():
    net = resattn.get_model("attention56_cifar", width_mult=TINY)
    net.initialize(mx.init.MSRAPrelu())
    x = mx.nd.random.normal(shape=(2, 3, 32, 32))
    features = net.forward_features(x)
    assert net.reset_classifier(3) is net
    assert net(x).shape == (2, 3) and net.classes == 3
    assert structured_params(net)["output.weight"].shape == (3, net.widths[3])
    net.hybridize()
    net(x)
    net.reset_classifier(0)  # timm's reset_classifier(0): pooled features, no classifier
    assert rel_diff(net(x), net.forward_head(features, pre_logits=True)) < 1e-6
    assert not [k for k in structured_params(net) if k.startswith("output.")]
    net.reset_classifier(7)
    assert net(x).shape == (2, 7)
    with pytest.raises(ValueError, match="classes must be an integer >= 0.*got -1"):
        net.reset_classifier(-1)
    # Before initialisation the new classifier waits for initialize() with the rest.
    fresh = resattn.get_model("attention56_cifar", width_mult=TINY).reset_classifier(4)
    fresh.initialize()
    assert fresh(x).shape == (2, 4)


def test_reset_classifier_drops_class_names_that_no_longer_fit():
    net = resattn.get_model("attention92_cifar", width_mult=TINY)
    cfg = net.pretrained_cfg.replace(class_names=tuple("c%d" % i for i in range(10)))
    object.__setattr__(net, "pretrained_cfg", cfg)
    net.reset_classifier(10)
    assert net.pretrained_cfg.class_names == cfg.class_names
    net.reset_classifier(2)
    assert net.pretrained_cfg.class_names is None


# ----------------------------------------------------------------------------- dilation
def test_dilation_is_exact_on_the_trunk_path():
    """A trous: with no soft mask (attention='none') the dilated map, sampled every
    `stride removed` pixels, is the undilated one."""
    net = resattn.get_model("attention56", width_mult=TINY, attention="none")
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 64, 64)))
    randomize_batchnorm(net)
    x = mx.nd.random.normal(shape=(1, 3, 96, 128))
    before = net.forward_features(x).asnumpy()
    assert output_strides(net) == [4, 8, 16, 32]
    assert dilate(net, 8) == (1, 1, 1, 2, 4)
    after = net.forward_features(x).asnumpy()
    assert after.shape[2:] == (12, 16) and before.shape[2:] == (3, 4)
    np.testing.assert_allclose(after[:, :, ::4, ::4], before, rtol=1e-4, atol=1e-4)
    assert dilate(net, 32) == (1,) * 5  # undone
    np.testing.assert_allclose(net.forward_features(x).asnumpy(), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,stride,reductions", [
    ("attention56", 8, [4, 4, 8, 8, 8]), ("attention56", 16, [4, 4, 8, 16, 16]),
    ("attention92_cifar", 2, [1, 1, 2, 2, 2])])
def test_dilated_networks_keep_feature_info_exact(name, stride, reductions):
    feat = _features(name)
    dilate(feat.classifier, stride)
    info = feat.feature_info
    assert info.reduction() == reductions
    assert info.get_dicts(keys=["dilation"])[-1]["dilation"] == STRIDES[name][-1] // stride
    feat.hybridize()
    for size in ((96, 96), (99, 125)):
        outs = feat(mx.nd.random.normal(shape=(1, 3) + size))
        assert [o.shape for o in outs] == info.shapes(size)
    # The classifier still classifies (its global pooling sees a larger map).
    assert feat.classifier(mx.nd.zeros((1, 3, 64, 64))).shape == (1, feat.classifier.classes)


def test_bad_output_stride_names_the_allowed_ones():
    net = resattn.get_model("attention92_cifar", width_mult=TINY)
    with pytest.raises(ValueError, match="output_stride must be one of 1, 2, 4 .*got 8"):
        dilate(net, 8)
    with pytest.raises(ValueError, match="one of 4, 8, 16, 32"):
        dilate(resattn.get_model("attention56", width_mult=TINY), 2)


# ----------------------------------------------------------------------------- export
def test_symbol_export_has_every_output(tmp_path):
    from resattn.deploy.export import export_symbol, load_symbol
    feat = _features("attention56", (1, 2, 4))
    randomize_batchnorm(feat.classifier)
    sym_path, _ = export_symbol(feat, str(tmp_path / "feat"), input_size=64)
    assert len(mx.sym.load(sym_path).list_outputs()) == 3
    block = load_symbol(str(tmp_path / "feat"))
    x = mx.nd.random.normal(shape=(2, 3, 71, 97))
    for got, ref in zip(block(x), feat(x)):
        assert got.shape == ref.shape and rel_diff(got, ref) < 1e-5


def test_onnx_export_has_every_output(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from resattn.deploy.export import check_onnx, export_onnx
    feat = _features("attention92_cifar", (2, 3, 4))
    randomize_batchnorm(feat.classifier)
    path = export_onnx(feat, str(tmp_path / "feat.onnx"), input_size=32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.shape[1] for o in session.get_outputs()] == feat.feature_info.channels()
    diffs = check_onnx(path, feat, input_sizes=(32, (41, 27)), rtol=1e-4)
    assert set(diffs) == {(2, 3, 32, 32), (2, 3, 41, 27)}
    x = np.random.RandomState(0).standard_normal((1, 3, 41, 27)).astype(np.float32)
    outs = session.run(None, {session.get_inputs()[0].name: x})
    assert [o.shape for o in outs] == feat.feature_info.shapes((41, 27))


# ----------------------------------------------------------------------------- the docs table
def _table_rows():
    with open(os.path.join(ROOT, "docs", "backbone.md"), encoding="utf-8") as f:
        text = f.read()
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `(\w+)` \|(.*)\|\s*$", text, flags=re.M)}


def _cells(name):
    net = resattn.get_model(name)
    info = net.feature_info
    return ["%d, /%d, %dx%d" % (c, r, s[2], s[3])
            for c, r, s in zip(info.channels(), info.reduction(), info.shapes(224))]


def test_docs_feature_table_is_every_zoo_model():
    """docs/backbone.md's table: every zoo model's outputs at 224 px, as feature_info says."""
    rows = _table_rows()
    assert sorted(rows) == sorted(resattn.list_models())
    for name in resattn.list_models():
        cells = [c.strip() for c in rows[name].split("|")]
        assert cells == _cells(name), name
