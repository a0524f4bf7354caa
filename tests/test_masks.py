import os

import matplotlib
import matplotlib.image
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd
from matplotlib.figure import Figure
from mxnet.gluon import nn

import resattn
from conftest import randomize_batchnorm
from resattn import ResidualAttentionNet
from resattn.masks import (Mask, MaskNet, box_auc, box_score, capture, capture_trunk,
                           class_channels, reduce_mask, reduce_masks, score_by_stage)
from resattn.viz import plot_masks, upsample


def _tiny(modules=(1, 1, 1), **kwargs):
    net = ResidualAttentionNet(modules=modules, widths=(8, 16, 32, 32), stages=(2, 3, 4),
                               stem="cifar", stem_channels=4, final_stride=1, classes=10,
                               **kwargs)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 16, 16)))
    randomize_batchnorm(net)
    return net


@pytest.fixture(scope="module")
def net():
    mx.random.seed(0)
    return _tiny(modules=(1, 2, 1))


def _x(n=2, h=33, w=27):
    return mx.nd.random.normal(shape=(n, 3, h, w))


def _stage_outputs(net, x):
    """Output of the stem and of each attention stage, by the normal forward."""
    outs = [net.features[0](x)]
    for s in range(1, 4):
        outs.append(net.features[s](outs[-1]))
    return outs


@pytest.mark.parametrize("modules", [(1, 1, 1), (1, 2, 1), (2, 0, 1)])
@pytest.mark.parametrize("size", [(32, 32), (33, 27)])
def test_capture_names_count_and_shapes(modules, size):
    net = _tiny(modules)
    x = _x(2, *size)
    logits, masks = capture(net, x)
    expected = ["stage%d.module%d" % (s, k + 1) for s in range(1, 4) for k in range(modules[s - 1])]
    assert [m.name for m in masks] == expected == [name for name, _ in net.attention_modules]
    assert len(masks) == sum(modules)
    outs = _stage_outputs(net, x)
    for m in masks:
        assert m.name == "stage%d.module%d" % (m.stage, m.index)
        assert isinstance(m.array, np.ndarray) and m.array.dtype == np.float32
        assert m.array.shape == outs[m.stage].shape
    assert logits.shape == (2, 10)


def test_mixed_masks_lie_in_unit_interval(net):
    _, masks = capture(net, _x())
    for m in masks:
        assert 0.0 <= m.array.min() and m.array.max() <= 1.0
        assert m.array.std() > 0


def test_logits_equal_the_normal_forward(net):
    x = _x()
    logits, _ = capture(net, x)
    np.testing.assert_allclose(logits, net(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_hybridized_and_imperative_capture_agree():
    net = _tiny((1, 2, 1))
    x = _x()
    ref_logits, ref = capture(net, x, hybridize=False)
    wrapper = net.__dict__["_resattn_mask_net"]
    assert wrapper._cached_op is None
    for _ in range(2):
        logits, got = capture(net, x, hybridize=True)
        assert wrapper._cached_op is not None
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
        for a, b in zip(ref, got):
            np.testing.assert_allclose(a.array, b.array, rtol=1e-5, atol=1e-5)
    # Hybridizing the wrapper leaves the network as it was.
    assert not net._active and not net.features[1][1]._active
    # A hybridized network: the default follows it; new input sizes work too.
    net.hybridize()
    y = net(x).asnumpy()
    logits, got = capture(net, x)
    np.testing.assert_allclose(logits, y, rtol=1e-5, atol=1e-5)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a.array, b.array, rtol=1e-5, atol=1e-5)
    _, other = capture(net, _x(1, 20, 24))
    assert other[0].array.shape == (1, 8, 20, 24)


def test_capture_leaves_the_network_untouched(net):
    x = _x()
    before = net(x).asnumpy()
    keys = list(net.collect_params().keys())
    children = list(net._children)
    capture(net, x, hybridize=True)
    assert list(net.collect_params().keys()) == keys
    assert list(net._children) == children
    assert isinstance(MaskNet(net).net, ResidualAttentionNet)
    np.testing.assert_array_equal(net(x).asnumpy(), before)


def test_capture_is_inference_mode_and_not_recorded(net):
    x = _x()
    ref_logits, ref = capture(net, x)
    stats = net.features[1][0].bn1.running_mean.data().asnumpy().copy()
    with autograd.record(train_mode=True):
        logits, masks = capture(net, x)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-6)
    np.testing.assert_allclose(masks[-1].array, ref[-1].array, rtol=1e-6)
    np.testing.assert_array_equal(net.features[1][0].bn1.running_mean.data().asnumpy(), stats)


def test_capture_accepts_numpy_input(net):
    x = _x()
    a, _ = capture(net, x)
    b, _ = capture(net, x.asnumpy())
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        capture(net, np.zeros((3, 32, 32), np.float32))


@pytest.mark.parametrize("name,shapes", [
    ("attention56", [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4)]),
    ("attention56_cifar", [(1, 8, 64, 64), (1, 16, 32, 32), (1, 32, 16, 16)])])
def test_capture_zoo_models(name, shapes):
    net = resattn.get_model(name, width_mult=1 / 16)
    net.initialize()
    logits, masks = capture(net, np.random.uniform(size=(1, 3, 64, 64)), hybridize=True)
    assert [m.name for m in masks] == ["stage1.module1", "stage2.module1", "stage3.module1"]
    assert [m.array.shape for m in masks] == shapes
    assert logits.shape == (1, net.classes)


def test_capture_rejects_other_blocks():
    with pytest.raises(ValueError, match="Dense"):
        capture(nn.Dense(3), mx.nd.zeros((1, 3, 8, 8)))
    plain = ResidualAttentionNet(modules=(0, 0, 0), widths=(8, 16, 32, 32), stem="cifar")
    with pytest.raises(ValueError, match="ResidualAttentionNet has no AttentionModule"):
        capture(plain, mx.nd.zeros((1, 3, 8, 8)))


def test_reductions_on_hand_made_masks():
    arr = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(reduce_mask(arr, "mean"), arr.mean(1))
    np.testing.assert_array_equal(reduce_mask(arr, "max"), arr[:, 2])
    np.testing.assert_array_equal(reduce_mask(Mask("a", 1, 1, arr), ("channel", 1)), arr[:, 1])
    np.testing.assert_array_equal(reduce_mask(arr, ("channels", [0, 2])),
                                  (arr[:, 0] + arr[:, 2]) / 2)
    per_image = reduce_mask(arr, ("channels", np.array([[0], [2]])))
    np.testing.assert_array_equal(per_image, np.stack([arr[0, 0], arr[1, 2]]))
    assert reduce_mask(mx.nd.array(arr), "mean").shape == (2, 2, 2)
    reduced = reduce_masks([Mask("stage1.module1", 1, 1, arr)] * 2, ["mean", ("channel", 0)])
    assert [r.array.shape for r in reduced] == [(2, 2, 2)] * 2
    assert reduced[0].name == "stage1.module1"


@pytest.mark.parametrize("how,message", [
    ("median", "'median'"), (("channel", 3), "got 3"), (("channel", -1), "got -1"),
    (("channel", 1.0), "got 1.0"), (("channels", [1, 5]), "got 5"),
    (("channels", np.zeros((3, 1), int)), r"\(3, 1\)"), (("pick", 1), "'pick'")])
def test_bad_reductions_raise(how, message):
    with pytest.raises(ValueError, match=message):
        reduce_mask(np.zeros((2, 3, 4, 4)), how)


def test_reduce_needs_four_dimensions():
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        reduce_mask(np.zeros((2, 4, 4)), "mean")
    with pytest.raises(ValueError, match="one reduction per mask"):
        reduce_masks([Mask("a", 1, 1, np.zeros((1, 2, 2, 2)))], ["mean", "max"])


def _finite_difference_weights(net, x, class_id, target, eps=1e-6):
    """mean(M_k * dy/dM_k) of module `target` by central differences.

    ``(y(M (1 + eps e_k)) - y(M (1 - eps e_k))) / (2 eps H W)``, with the
    module's output recomputed from Eq. 3 (ARL) and no autograd at all.
    """
    blocks = [net.features[0]] + [b for s in (1, 2, 3) for b in net.features[s]] \
        + [net.features[4], net.output]
    modules = [b for b in blocks if isinstance(b, resattn.AttentionModule)]
    start = blocks.index(modules[target])
    h = x
    for block in blocks[:start]:
        h = block(h)
    module = blocks[start]
    u = module.pre(h)
    trunk = module.trunk(u)
    mask = module.soft_mask(mx.nd, u, trunk).asnumpy()
    n, c = mask.shape[:2]
    scaled = np.repeat(mask[None, None], 2, axis=1).repeat(c, axis=0)  # (C, 2, N, C, H, W)
    for k in range(c):
        scaled[k, 0, :, k] *= 1 + eps
        scaled[k, 1, :, k] *= 1 - eps
    scaled = mx.nd.array(scaled.reshape((-1,) + mask.shape[1:]), dtype=x.dtype)
    h = module.post((1 + scaled) * mx.nd.tile(trunk, (2 * c, 1, 1, 1)))  # Eq. 3, ARL
    for block in blocks[start + 1:]:
        h = block(h)
    y = h[:, class_id].asnumpy().reshape(c, 2, n)
    return ((y[:, 0] - y[:, 1]) / (2 * eps) / np.prod(mask.shape[2:])).T


@pytest.mark.parametrize("hybridized", [False, True])
def test_class_channels_match_finite_differences(hybridized):
    net = _tiny((1, 2, 1))
    x = _x()
    single = class_channels(net, x, class_id=3, top_k=4)
    net.cast("float64")
    if hybridized:
        net.hybridize()
    x = x.astype("float64")
    y = net(x).asnumpy()
    result = class_channels(net, x, class_id=3, top_k=4)
    # float32 goes through oneDNN, whose inference-mode backward is wrong: it must agree.
    for a, b in zip(single, result):
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-3,
                                   atol=1e-4 * np.abs(b.weights).max())
    assert [r.name for r in result] == [name for name, _ in net.attention_modules]
    for i, r in enumerate(result):
        ref = _finite_difference_weights(net, x, 3, i)
        assert r.weights.shape == ref.shape
        # eps = 1e-5 already crosses ReLU kinks here; 1e-6 agrees to ~1e-9.
        np.testing.assert_allclose(r.weights, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
        assert r.channels.shape == (2, 4)
        np.testing.assert_array_equal(r.channels, np.argsort(-r.weights, axis=1)[:, :4])
    # The network is as it was: same outputs, running statistics in inference.
    np.testing.assert_array_equal(net(x).asnumpy(), y)
    assert not any(b._kwargs.get("use_global_stats") for b in _norms(net))


def _norms(net):
    found = []
    net.apply(lambda b: found.append(b) if isinstance(b, nn.BatchNorm) else None)
    return found


def test_class_channels_known_cases():
    net = _tiny()
    x = _x()
    weight = net.output.weight.data().asnumpy()
    bias = net.output.bias.data().asnumpy()
    weight[1], bias[1] = -weight[0], -bias[0]  # class 1 scores the opposite of class 0
    weight[2], bias[2] = 0, 0                  # class 2 ignores the features
    net.output.weight.set_data(mx.nd.array(weight))
    net.output.bias.set_data(mx.nd.array(bias))
    zero, neg, pos = (class_channels(net, x, c, top_k=2) for c in (2, 1, 0))
    for z, n, p in zip(zero, neg, pos):
        assert np.all(z.weights == 0)
        np.testing.assert_allclose(n.weights, -p.weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(n.channels[:, 0], np.argmin(p.weights, axis=1))
    # None: each image's predicted class; a per-image list is the same thing.
    logits, masks = capture(net, x)
    pred = logits.argmax(1)
    a, b = class_channels(net, x, None, 2), class_channels(net, x, list(pred), 2)
    for ra, rb, m in zip(a, b, masks):
        np.testing.assert_array_equal(ra.weights, rb.weights)
        reduced = reduce_mask(m, ("channels", ra.channels))
        assert reduced.shape == m.array.shape[:1] + m.array.shape[2:]


@pytest.mark.parametrize("kwargs,message", [
    (dict(class_id=10), "got 10"), (dict(class_id=[1, 2, 3]), r"\[1, 2, 3\]"),
    (dict(top_k=9), "got 9"), (dict(top_k=0), "got 0")])
def test_class_channels_bad_arguments(net, kwargs, message):
    with pytest.raises(ValueError, match=message):
        class_channels(net, _x(), **kwargs)


def test_box_score_known_masks():
    maps = np.full((2, 10, 12), 0.5)
    maps[:, 2:6, 3:9] = 1.0
    boxes = np.array([[3, 2, 9, 6], [3, 2, 9, 6]])
    assert box_score(maps, boxes) == 2.0
    assert box_score(np.full((2, 10, 12), 0.3), boxes) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(box_score(maps, boxes, per_image=True), [2.0, 2.0])
    # The same map at a quarter of the resolution, boxes in pixels of a 20x24 image.
    coarse = np.full((2, 5, 6), 0.5)
    coarse[:, 1:3, 1:4] = 1.0
    assert box_score(coarse, [[4, 4, 16, 12]] * 2, image_size=(20, 24)) == 2.0
    # A box cutting cells equals counting pixels of the nearest-neighbour upsampled map.
    rng = np.random.RandomState(0)
    small = rng.uniform(0.1, 1.0, (2, 3, 4))
    odd = np.array([[1, 2, 7, 5], [0, 1, 3, 8]])
    big = np.kron(small, np.ones((3, 3)))  # 9x12 image
    expected = []
    for m, (x0, y0, x1, y1) in zip(big, odd):
        inside = np.zeros(m.shape, bool)
        inside[y0:y1, x0:x1] = True
        expected.append(m[inside].mean() / m[~inside].mean())
    np.testing.assert_allclose(box_score(small, odd, (9, 12), per_image=True), expected)
    assert box_score(small, odd, (9, 12)) == pytest.approx(np.mean(expected))


@pytest.mark.parametrize("boxes,message", [
    (np.zeros((2, 3)), r"\(2, 3\)"), (np.zeros((3, 4)), r"\(3, 4\)"),
    ([[0, 0, 4, 4], [2, 2, 2, 3]], r"box 1 = \(2.0, 2.0, 2.0, 3.0\)"),
    ([[0, 0, 4, 4], [0, 0, 9, 3]], r"box 1 = \(0.0, 0.0, 9.0, 3.0\)"),
    ([[0, 0, 8, 6], [0, 0, 1, 1]], "whole")])
def test_box_score_bad_boxes(boxes, message):
    with pytest.raises(ValueError, match=message):
        box_score(np.ones((2, 6, 8)), boxes)


def test_score_by_stage_aggregates_box_scores(net):
    x = _x(3, 32, 32)
    boxes = np.array([[4, 4, 20, 20], [0, 8, 16, 32], [10, 2, 30, 12]])
    scores = score_by_stage(net, x, boxes)
    assert list(scores) == ["stage1", "stage2", "stage3"]
    _, masks = capture(net, x)
    per_module = {m.name: box_score(reduce_mask(m), boxes, (32, 32)) for m in masks}
    assert scores["stage2"] == pytest.approx(
        (per_module["stage2.module1"] + per_module["stage2.module2"]) / 2)
    assert scores["stage1"] == pytest.approx(per_module["stage1.module1"])
    by_module = score_by_stage(net, x, boxes, by="module", reduce="max")
    assert list(by_module) == list(per_module)
    # Batches, from an array or an iterable of (data, label) pairs, give the same scores.
    batched = score_by_stage(net, x, boxes, batch_size=2)
    pairs = score_by_stage(net, [(x[:1], None), (x[1:], None)], boxes)
    for other in (batched, pairs):
        for k in scores:
            assert other[k] == pytest.approx(scores[k], rel=1e-5)
    with pytest.raises(ValueError, match="more images than the 2 boxes"):
        score_by_stage(net, x, boxes[:2])
    with pytest.raises(ValueError, match="2 images but 3 boxes"):
        score_by_stage(net, x[:2], boxes)
    with pytest.raises(ValueError, match="'image'"):
        score_by_stage(net, x, boxes, by="image")


def test_upsample():
    maps = np.arange(6, dtype=float).reshape(1, 2, 3)
    np.testing.assert_allclose(upsample(maps, (2, 3)), maps)
    np.testing.assert_allclose(upsample(np.full((2, 3, 5), 0.7), (11, 4)), 0.7)
    up = upsample(np.array([[[0.0, 1.0]]]), (1, 4))
    np.testing.assert_allclose(up, [[[0.0, 0.25, 0.75, 1.0]]])
    assert upsample(np.zeros((2, 1, 1)), (5, 7)).shape == (2, 5, 7)


def _panel_means(png, rows, cols):
    height, width = png.shape[:2]
    return np.array([[png[r * height // rows:(r + 1) * height // rows,
                          c * width // cols:(c + 1) * width // cols, :3].mean(axis=(0, 1))
                      for c in range(cols)] for r in range(rows)])


def test_plot_masks_writes_a_png(tmp_path):
    backend = matplotlib.get_backend()
    image = np.full((16, 20, 3), 0.5)
    masks = [Mask("stage1.module1", 1, 1, np.zeros((1, 2, 16, 20), np.float32)),
             Mask("stage2.module1", 1, 1, np.ones((1, 2, 8, 10), np.float32)),
             Mask("stage3.module1", 1, 1, np.linspace(0, 1, 16).reshape(1, 1, 4, 4))]
    path = tmp_path / "masks.png"
    out = plot_masks(image, masks, path, title="test", vmin=0, vmax=1, panel_size=1.5, dpi=80)
    assert out == str(path)
    png = matplotlib.image.imread(str(path))
    assert png.shape[:2] == (round(80 * 1.5), round(80 * 1.5 * 4))
    means = _panel_means(png, 1, 4)[0]
    # Grey input, blue (0), red (1) and a mixed panel are all different.
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(means[i] - means[j]).max() > 0.02, (i, j, means)
    assert means[1][2] > means[1][0] and means[2][0] > means[2][2]  # blue vs red
    assert os.listdir(tmp_path) == ["masks.png"]
    assert matplotlib.get_backend() == backend


def test_plot_masks_rows_uint8_and_captured_masks(tmp_path, net, monkeypatch):
    x = _x(2, 24, 24)
    _, masks = capture(net, x)
    images = np.zeros((2, 24, 24, 3), np.uint8)
    images[1] = 255
    path = tmp_path / "rows.png"
    plot_masks(images, masks, path, reduce="max", dpi=50)
    png = matplotlib.image.imread(str(path))
    assert png.shape[:2] == (2 * 100, 5 * 100)
    means = _panel_means(png, 2, 5)
    assert np.abs(means[0, 0] - means[1, 0]).max() > 0.3  # black and white inputs
    # Atomic: a failed write leaves the old file and no temporary file behind.
    before = path.read_bytes()

    def failing_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_masks(images, masks, path, reduce=[("channel", 0)] * len(masks))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["rows.png"]


@pytest.mark.parametrize("image,message", [
    (np.zeros((3, 16, 16)), r"\(3, 16, 16\).*transpose"), (np.full((16, 16, 3), 2.0), r"\[2, 2\]"),
    (np.zeros((16, 16, 3), np.int32), "int32"), (np.zeros((3, 16, 16, 3)), "3 images")])
def test_plot_masks_bad_images(tmp_path, image, message):
    masks = [Mask("stage1.module1", 1, 1, np.zeros((1, 2, 4, 4)))]
    with pytest.raises(ValueError, match=message):
        plot_masks(image, masks, tmp_path / "x.png")
    assert not os.listdir(tmp_path)


def test_plot_masks_reduced_maps(tmp_path):
    maps = [Mask("stage1.module1", 1, 1, np.random.uniform(size=(1, 4, 4)))]
    plot_masks(np.zeros((8, 8, 3)), maps, tmp_path / "m.png", reduce=None)
    assert (tmp_path / "m.png").exists()
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        plot_masks(np.zeros((8, 8, 3)), maps, tmp_path / "m.png", reduce="mean")


# ----------------------------------------------------------------------------- any network
def _gluoncv():
    from resattn._compat import import_gluoncv
    try:
        return import_gluoncv()
    except ImportError as err:  # pragma: no cover
        pytest.skip("GluonCV is not installed: %s" % err)


def _states(net):
    from resattn._compat import has_cached_graph, is_hybridized, named_blocks
    return [(path, is_hybridized(b), has_cached_graph(b)) for path, b in named_blocks(net)
            if isinstance(b, nn.HybridBlock)]


def _pair():
    """Two attention modules in one HybridSequential."""
    seq = nn.HybridSequential()
    seq.add(resattn.AttentionModule(8, stage=3), resattn.AttentionModule(8, stage=4))
    return seq


def _custom():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), _pair(),
            nn.Conv2D(16, 3, strides=2, padding=1), nn.GlobalAvgPool2D(), nn.Dense(4))
    resattn.models.add_attention(net, ["3"], 32)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 16, 16)))
    randomize_batchnorm(net)
    return net


def test_capture_anywhere_names_by_path_and_matches_the_modules():
    net = _custom()
    x = _x(2, 19, 23)
    logits, masks = capture(net, x)
    assert [(m.name, m.stage, m.index) for m in masks] == [("2.0", 1, 1), ("2.1", 1, 2),
                                                           ("3.1", 2, 1)]
    np.testing.assert_allclose(logits, net(x).asnumpy(), rtol=1e-5, atol=1e-6)
    # Each mask is the module's own, on the output of what precedes it.
    with autograd.pause(train_mode=False):
        h = net[1](net[0](x))
        _, m0 = net[2][0].attend(mx.nd, h)
        _, m1 = net[2][1].attend(mx.nd, net[2][0](h))
        _, m2 = net[3][1].attend(mx.nd, net[3][0](net[2](h)))
    for mask, ref in zip(masks, (m0, m1, m2)):
        assert mask.array.dtype == np.float32
        np.testing.assert_allclose(mask.array, ref.asnumpy(), rtol=1e-5, atol=1e-6)
    assert [m.array.shape for m in masks] == [(2, 8, 19, 23)] * 2 + [(2, 16, 10, 12)]
    # The modules are as they were.
    for module in (net[2][0], net[2][1], net[3][1]):
        assert "hybrid_forward" not in module.__dict__


def test_capture_anywhere_is_inference_mode_and_keeps_hybridization():
    net = _custom()
    net[2].hybridize()
    x = _x(2, 16, 16)
    net(x)
    before = _states(net)
    assert ("2", True, True) in before and ("", False, False) in before
    stats = net[1].running_mean.data().asnumpy().copy()
    ref_logits, ref = capture(net, x)
    with autograd.record(train_mode=True):
        logits, masks = capture(net, x, hybridize=True)
    assert _states(net) == before
    np.testing.assert_array_equal(net[1].running_mean.data().asnumpy(), stats)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-6)
    for a, b in zip(masks, ref):
        np.testing.assert_allclose(a.array, b.array, rtol=1e-6)
    # A failing forward restores everything as well.
    with pytest.raises(mx.base.MXNetError):
        capture(net, _x(1, 8, 8)[:, :2])
    assert _states(net) == before and "hybrid_forward" not in net[2][0].__dict__


def test_capture_anywhere_repeated_module_and_score_by_stage():
    class Twice(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2D(8, 3, padding=1)
            self.att = resattn.AttentionModule(8, stage=3)
            self.out = nn.Dense(3)

        def hybrid_forward(self, F, x):
            return self.out(self.att(self.att(self.stem(x))))

    net = Twice()
    net.initialize()
    x = _x(2, 16, 16)
    logits, masks = capture(net, x)
    assert [(m.name, m.stage, m.index) for m in masks] == [("att", 1, 1), ("att#2", 1, 1)]
    np.testing.assert_allclose(logits, net(x).asnumpy(), rtol=1e-5, atol=1e-6)
    boxes = np.array([[2, 2, 10, 10], [0, 4, 8, 16]])
    assert list(score_by_stage(net, x, boxes)) == ["stage1"]
    assert list(score_by_stage(net, x, boxes, by="module")) == ["att", "att#2"]


def test_capture_extra_modules_in_a_residual_attention_net():
    # Still the layout (a module at the top level of the stem's sequence): stage names.
    net = _tiny((1, 1, 1))
    resattn.models.add_attention(net, ["features.0"], 16)
    net(mx.nd.zeros((1, 3, 16, 16)))
    _, masks = capture(net, _x(1, 16, 16))
    assert [m.name for m in masks] == ["stage0.module1", "stage1.module1", "stage2.module1",
                                       "stage3.module1"]
    # A module deeper down: every mask is named by its path.
    net = _tiny((1, 1, 1))
    resattn.models.add_attention(net, ["features.2.0"], 16)
    net(mx.nd.zeros((1, 3, 16, 16)))
    x = _x(1, 16, 16)
    logits, masks = capture(net, x)
    assert [(m.name, m.stage, m.index) for m in masks] == [
        ("features.1.1", 1, 1), ("features.2.0.1", 2, 1), ("features.2.1", 3, 1),
        ("features.3.1", 4, 1)]
    np.testing.assert_allclose(logits, net(x).asnumpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="outside the ResidualAttentionNet layout.*: "
                                         "features.2.0.1; capture"):
        MaskNet(net)
    with pytest.raises(ValueError, match="features.2.0.1"):
        class_channels(net, x, 0, top_k=2)


def test_capture_on_gluoncv_resnet_with_added_attention():
    gcv = _gluoncv()
    net = gcv.model_zoo.get_model("resnet18_v1b", classes=10)
    net.initialize(mx.init.Xavier())
    inserted = resattn.models.add_attention(net, ["layer2", "layer3"], (117, 131))
    net.hybridize()
    x = _x(2, 117, 131)
    shapes = {}
    handles = [child.register_forward_hook(
        lambda b, i, o, path=path: shapes.setdefault(path, o.shape))
        for path, child in (("layer2.1", net.layer2[0]), ("layer3.1", net.layer3[0]))]
    net.hybridize(False)
    net(x)
    for handle in handles:
        handle.detach()
    net.hybridize()
    y = net(x).asnumpy()
    before = _states(net)
    logits, masks = capture(net, x)
    assert [m.name for m in masks] == [p for p, _ in inserted] == ["layer2.1", "layer3.1"]
    assert [(m.stage, m.index) for m in masks] == [(1, 1), (2, 1)]
    assert [m.array.shape for m in masks] == [shapes["layer2.1"], shapes["layer3.1"]] \
        == [(2, 128, 15, 17), (2, 256, 8, 9)]
    np.testing.assert_allclose(logits, y, rtol=1e-4, atol=1e-4)
    assert _states(net) == before and before[0] == ("", True, True)
    np.testing.assert_array_equal(net(x).asnumpy(), y)


def test_capture_on_a_features_output_layout_keeps_stage_names():
    # GluonCV's CIFAR ResNet has the features/output layout: the stage names of 0.1 stay
    # ('stage{s}' with s the index in features), hybridized capture included.
    net = _gluoncv().model_zoo.get_model("cifar_resnet20_v2", classes=10)
    resattn.models.add_attention(net, ["features.2", "features.4"], 32)
    net.initialize()
    x = _x(1, 32, 32)
    y = net(x).asnumpy()
    for hybridize in (False, True):
        logits, masks = capture(net, x, hybridize=hybridize)
        assert [m.name for m in masks] == ["stage2.module1", "stage4.module1"]
        assert [m.array.shape for m in masks] == [(1, 16, 32, 32), (1, 64, 8, 8)]
        np.testing.assert_allclose(logits, y, rtol=1e-4, atol=1e-5)


def _pixel_auc(maps, boxes, factor):
    """By hand: every (inside, outside) pixel pair of the nearest-upsampled maps."""
    out = []
    for m, (x0, y0, x1, y1) in zip(np.kron(maps, np.ones((factor, factor))), boxes):
        inside = np.zeros(m.shape, bool)
        inside[y0:y1, x0:x1] = True
        a, b = m[inside][:, None], m[~inside][None, :]
        out.append(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))
    return np.array(out)


def test_box_auc_known_maps_and_pixel_pairs():
    maps = np.zeros((3, 6, 6))
    maps[0, 1:3, 1:3] = 1.0          # open on the box only: 1
    maps[1] = 1.0
    maps[1, 1:3, 1:3] = 0.0          # closed on the box only: 0
    boxes = np.array([[1, 1, 3, 3]] * 3)  # maps[2] constant: ties, 0.5
    np.testing.assert_allclose(box_auc(maps, boxes, per_image=True), [1.0, 0.0, 0.5])
    assert box_auc(maps, boxes) == pytest.approx(0.5)
    # Cells cut by the boxes, ties included: the pairs of pixels counted one by one.
    rng = np.random.RandomState(1)
    small = rng.randint(0, 4, (4, 3, 4)).astype(float)
    odd = np.array([[1, 2, 7, 5], [0, 1, 3, 8], [5, 0, 12, 9], [2, 2, 3, 3]])
    np.testing.assert_allclose(box_auc(small, odd, (9, 12), per_image=True),
                               _pixel_auc(small, odd, 3))
    # Only the order counts: a monotone change of the map keeps it, unlike the ratio.
    assert box_auc(np.exp(3 * small), odd, (9, 12)) == pytest.approx(
        box_auc(small, odd, (9, 12)))
    with pytest.raises(ValueError, match="whole"):
        box_auc(np.ones((1, 4, 4)), [[0, 0, 4, 4]])


def _trunks_by_hand(net, x):
    """Each module's T(x) (plain blocks: the output of unit p + t) by the normal forward."""
    found = []
    h = net.features[0](x)
    for s in range(1, 4):
        stage = net.features[s]
        h = stage[0](h)
        for child in list(stage)[1:]:
            if isinstance(child, resattn.AttentionModule):
                found.append(child.trunk(child.pre(h)).asnumpy())
                h = child(h)
            else:
                for i, unit in enumerate(child):
                    h = unit(h)
                    if i == net.p + net.t - 1:
                        found.append(h.asnumpy())
    return found


@pytest.mark.parametrize("attention", ["mixed", "none"])
def test_capture_trunk_matches_the_forward_by_hand(attention):
    mx.random.seed(3)
    net = _tiny(modules=(1, 2, 1), attention=attention, p=1, t=1)
    x = _x(2, 32, 32)
    logits, trunks = capture_trunk(net, x)
    np.testing.assert_allclose(logits, net(x).asnumpy(), rtol=1e-5, atol=1e-6)
    assert [(t.name, t.stage, t.index) for t in trunks] == [
        ("stage1.module1", 1, 1), ("stage2.module1", 2, 1), ("stage2.module2", 2, 2),
        ("stage3.module1", 3, 1)]
    for got, want in zip(trunks, _trunks_by_hand(net, x)):
        np.testing.assert_allclose(got.array, want, rtol=1e-5, atol=1e-6)
    # Hybridized, the same features, and the network stays hybridized.
    net.hybridize()
    net(x)
    again = capture_trunk(net, x).masks
    assert resattn._compat.is_hybridized(net)
    for a, b in zip(trunks, again):
        np.testing.assert_allclose(a.array, b.array, rtol=1e-5, atol=1e-6)


def test_score_by_stage_trunk_and_auc(net):
    x = _x(3, 32, 32)
    boxes = np.array([[4, 4, 20, 20], [0, 8, 16, 32], [10, 2, 30, 12]])
    _, trunks = capture_trunk(net, x)
    per_module = {t.name: box_score(np.abs(t.array).mean(axis=1), boxes, (32, 32))
                  for t in trunks}
    scores = score_by_stage(net, x, boxes, source="trunk")
    assert scores["stage2"] == pytest.approx(
        (per_module["stage2.module1"] + per_module["stage2.module2"]) / 2)
    _, masks = capture(net, x)
    auc = score_by_stage(net, x, boxes, score="auc", by="module")
    for m in masks:
        assert auc[m.name] == pytest.approx(box_auc(reduce_mask(m), boxes, (32, 32)))
    plain = _tiny(attention="none")
    assert list(score_by_stage(plain, x, boxes, source="trunk", score="auc")) == [
        "stage1", "stage2", "stage3"]
    with pytest.raises(ValueError, match="no AttentionModule"):
        score_by_stage(plain, x, boxes)
    with pytest.raises(ValueError, match="source must be one of 'mask', 'trunk', got 'T'"):
        score_by_stage(net, x, boxes, source="T")
    with pytest.raises(ValueError, match="score must be one of 'ratio', 'auc', got 'roc'"):
        score_by_stage(net, x, boxes, score="roc")
    with pytest.raises(ValueError, match="trunk capture needs a ResidualAttentionNet"):
        capture_trunk(nn.Dense(3), x)
