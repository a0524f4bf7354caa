"""GluonCV's dense models on a resattn backbone: each fits synthetic boxes or masks.

Every model is built by its documented function in resattn.gluoncv, is GluonCV's own class,
and trains here through GluonCV's own target generators and losses (the loops are those of
GluonCV's training scripts) on a tiny backbone (width 1/16), 1-2 synthetic images: coloured
rectangles of two classes on noise, their boxes and their masks. The loss must be finite and
fall; the backbone's soft masks are captured and drawn for each model.
"""
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

import resattn
from resattn.io import save_parameters

from conftest import randomize_batchnorm, rel_diff

from resattn import gluoncv as rg
TINY = {"width_mult": 1 / 16}
CLASSES = ["red", "green"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: What each model's fit measured: name -> (first loss, last loss, seconds, steps).
MEASURED = {}


@pytest.fixture(scope="module")
def gcv():
    try:
        return rg.import_gluoncv()
    except ImportError as err:  # pragma: no cover
        pytest.skip("GluonCV is not installed: %s" % err)


def shapes(n=2, size=320, seed=0):
    """``n`` images (H, W, 3) uint8 with 1-2 filled rectangles each; their labels
    (k, 5) = x0, y0, x1, y1, class and class masks (H, W), 0 the background."""
    rng = np.random.RandomState(seed)
    images, labels, masks = [], [], []
    for _ in range(n):
        img = (rng.rand(size, size, 3) * 60).astype(np.uint8)
        mask = np.zeros((size, size), np.float32)
        boxes = []
        for _ in range(rng.randint(1, 3)):
            w, h = rng.randint(size // 5, size // 2, 2)
            x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
            cls = rng.randint(0, 2)
            img[y0:y0 + h, x0:x0 + w] = ((230, 40, 40), (40, 230, 40))[cls]
            mask[y0:y0 + h, x0:x0 + w] = cls + 1
            boxes.append([x0, y0, x0 + w, y0 + h, cls])
        images.append(img)
        labels.append(np.array(boxes, np.float32))
        masks.append(mask)
    return images, labels, masks


def tensor(img):
    """GluonCV's ``to_tensor`` and ``normalize`` with ImageNet statistics."""
    return mx.nd.image.normalize(mx.nd.image.to_tensor(mx.nd.array(img, dtype="uint8")),
                                 mean=MEAN, std=STD)


def padded(labels, width=5):
    """Labels of several images as one (N, max boxes, width) array padded with -1."""
    out = np.full((len(labels), max(len(b) for b in labels), width), -1, np.float32)
    for i, b in enumerate(labels):
        out[i, :len(b)] = b[:, :width]
    return mx.nd.array(out)


def fit(name, model, step, steps, lr, optimizer="sgd"):
    """``steps`` updates of ``model`` with ``step()`` (recording, returning the loss)."""
    opts = {"learning_rate": lr}
    if optimizer == "sgd":
        opts.update(momentum=0.9, wd=1e-4)
    trainer = gluon.Trainer(model.collect_params(), optimizer, opts)
    model.hybridize(static_alloc=True)
    history, start = [], time.time()
    for _ in range(steps):
        with autograd.record():
            loss = step()
        loss.backward()
        trainer.step(1)
        history.append(float(loss.asscalar()))
    seconds = time.time() - start
    MEASURED[name] = (history[0], history[-1], seconds, steps)
    print("%s: loss %.4g -> %.4g in %d steps, %.1f s" % (name, history[0], history[-1], steps,
                                                         seconds))
    assert np.isfinite(history).all(), history
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    assert last < 0.6 * first, history
    return history


def masks_drawn(model, image, tmp_path):
    """The backbone's soft masks for ``image``, captured through the dense model and drawn."""
    from resattn.viz import plot_masks
    cap = rg.capture_masks(model, tensor(image).expand_dims(0))
    assert [m.name for m in cap.masks] == ["stage1.module1", "stage2.module1", "stage3.module1"]
    for mask in cap.masks:
        assert np.isfinite(mask.array).all() and 0 <= mask.array.min() <= mask.array.max() <= 1
    path = plot_masks(image, cap.masks, str(tmp_path / "masks.png"), dpi=30)
    assert (tmp_path / "masks.png").stat().st_size > 0 and path
    return cap


def _shares_backbone(model, module_path):
    """The dense model's blocks at ``module_path`` are the resattn network's own."""
    net = rg.backbone_of(model)
    block = model
    for part in module_path.split("."):
        block = block[int(part)] if part.isdigit() else getattr(block, part)
    return block is net.features[1]


# ----------------------------------------------------------------------------- detection
def test_faster_rcnn_fits(gcv, tmp_path):
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform
    from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
    det = rg.faster_rcnn("attention56", CLASSES, norm="batch", short=320, max_size=320,
                         backbone_kwargs=TINY, rpn_train_pre_nms=500, rpn_train_post_nms=128,
                         num_sample=32, rpn_test_pre_nms=500, rpn_test_post_nms=50)
    assert isinstance(det, FasterRCNN) and _shares_backbone(det, "features.1")
    assert det._strides == 16 and det.top_features[0] is rg.backbone_of(det).features[4][0]
    images, labels, _ = shapes(2)
    # GluonCV's transform runs its RPNTargetGenerator on the network's anchors.
    transform = FasterRCNNDefaultTrainTransform(320, 320, det, flip_p=0.0, ashape=det.ashape)
    batches = [transform(mx.nd.array(im, dtype="uint8"), lab) for im, lab in zip(images, labels)]
    rpn_cls_loss = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
    rpn_box_loss = gluon.loss.HuberLoss(rho=1 / 9.)
    rcnn_cls_loss, rcnn_box_loss = gluon.loss.SoftmaxCrossEntropyLoss(), gluon.loss.HuberLoss()
    counter = iter(range(10 ** 6))

    def step():  # GluonCV's train_faster_rcnn.py ForwardBackwardTask
        img, bbox, rpn_cls, rpn_box, rpn_mask = batches[next(counter) % 2]
        rpn_cls_t = mx.nd.array(rpn_cls[0]).reshape((1, -1))
        rpn_box_t = mx.nd.array(rpn_box[0]).reshape((1, -1, 4))
        rpn_box_m = mx.nd.array(rpn_mask[0]).reshape((1, -1, 4))
        gt_box, gt_label = mx.nd.array(bbox[None, :, :4]), mx.nd.array(bbox[None, :, 4:5])
        cls_pred, box_pred, _, _, _, rpn_score, rpn_pred, _, cls_t, box_t, box_m, _ = \
            det(img.expand_dims(0), gt_box, gt_label)
        num_rpn_pos = (rpn_cls_t >= 0).sum()
        rpn_score = rpn_score.squeeze(axis=-1)
        loss = rpn_cls_loss(rpn_score, rpn_cls_t, rpn_cls_t >= 0) * rpn_cls_t.size / num_rpn_pos
        loss = loss + rpn_box_loss(rpn_pred, rpn_box_t, rpn_box_m) * rpn_pred.size / num_rpn_pos
        num_pos = (cls_t >= 0).sum()
        loss = loss + rcnn_cls_loss(cls_pred, cls_t, cls_t.expand_dims(-1) >= 0) \
            * cls_t.size / num_pos
        loss = loss + rcnn_box_loss(box_pred, box_t, box_m) * box_pred.size / num_pos
        return loss.sum()

    fit("faster_rcnn", det, step, 24, 0.01)
    cap = masks_drawn(det, images[0], tmp_path)
    ids, scores, boxes = cap.outputs
    assert ids.shape[:2] == scores.shape[:2] == boxes.shape[:2] and boxes.shape[-1] == 4


def test_ssd_fits(gcv, tmp_path):
    from gluoncv.loss import SSDMultiBoxLoss
    from gluoncv.model_zoo.ssd.ssd import SSD
    from gluoncv.model_zoo.ssd.target import SSDTargetGenerator
    from gluoncv.nn.feature import FeatureExpander
    det = rg.ssd("attention56", CLASSES, base_size=320, backbone_kwargs=TINY)
    assert isinstance(det, SSD) and isinstance(det.features, FeatureExpander)
    # The expander's base features are the stage outputs; its parameters the backbone's own.
    net = rg.backbone_of(det)
    ours = {p.name: p for p in net.collect_params().values()}
    theirs = det.features.collect_params()
    shared = [n for n in theirs.keys() if n in ours]
    assert shared and all(theirs[n] is ours[n] for n in shared)
    assert len(det.class_predictors) == 2 + 4  # stage3, head + GluonCV's 4 extra layers
    from resattn.models.features import ResidualAttentionFeatures
    probe = mx.nd.random.normal(shape=(1, 3, 96, 128))
    with autograd.pause(train_mode=False):
        expanded = det.features(probe)
        for got, ref in zip(expanded[:2], ResidualAttentionFeatures(net, (3, 4))(probe)):
            assert got.shape == ref.shape and rel_diff(got, ref) < 1e-5
    images, labels, _ = shapes(2)
    x = mx.nd.stack(*[tensor(im) for im in images])
    gt = padded(labels)
    targets = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2))
    loss_fn = SSDMultiBoxLoss()

    def step():  # GluonCV's train_ssd.py
        cls_preds, box_preds, anchors = det(x)
        with autograd.pause():
            cls_t, box_t, _ = targets(anchors, cls_preds, gt.slice_axis(axis=-1, begin=0, end=4),
                                      gt.slice_axis(axis=-1, begin=4, end=5))
        sum_loss, _, _ = loss_fn(cls_preds, box_preds, cls_t, box_t)
        return mx.nd.add_n(*sum_loss).mean()

    fit("ssd", det, step, 24, 0.01)
    ids, scores, boxes = masks_drawn(det, images[0], tmp_path).outputs
    assert boxes.shape == (1, 100, 4)


def test_yolov3_fits(gcv, tmp_path):
    from gluoncv.model_zoo.yolo.yolo3 import YOLOV3
    from gluoncv.model_zoo.yolo.yolo_target import YOLOV3PrefetchTargetGenerator
    det = rg.yolov3("attention56", CLASSES, backbone_kwargs=TINY)
    assert isinstance(det, YOLOV3) and _shares_backbone(det, "stages.0.1")
    # Stem to stage2 (stride 8), stage3 (16), the head's 3 units and BN-ReLU (32).
    assert [len(s) for s in det.stages] == [3, 1, 5]
    images, labels, _ = shapes(2)
    x = mx.nd.stack(*[tensor(im) for im in images])
    # As GluonCV's YOLO3DefaultTrainTransform: anchors and offsets of a training-mode pass.
    fake = mx.nd.zeros((1, 3, 320, 320))
    with autograd.train_mode():
        _, anchors, offsets, feat_maps, _, _, _, _ = det(fake)
    generator = YOLOV3PrefetchTargetGenerator(num_class=len(CLASSES))
    targets = [generator(fake, feat_maps, anchors, offsets, mx.nd.array(b[None, :, :4]),
                         mx.nd.array(b[None, :, 4:5])) for b in labels]
    targets = [mx.nd.concat(*[t[k] for t in targets], dim=0) for k in range(5)]
    gt_boxes = padded(labels, 4)

    def step():  # GluonCV's train_yolo3.py: the network returns YOLOV3Loss's terms
        obj, center, scale, cls = det(x, gt_boxes, *targets)
        return (obj + center + scale + cls).mean()

    fit("yolov3", det, step, 24, 0.001)
    ids, scores, boxes = masks_drawn(det, images[0], tmp_path).outputs
    assert boxes.shape[-1] == 4


def test_center_net_fits(gcv, tmp_path):
    from gluoncv.loss import HeatmapFocalLoss, MaskedL1Loss
    from gluoncv.model_zoo.center_net.center_net import CenterNet
    from gluoncv.model_zoo.center_net.deconv_resnet import DeconvResnet
    from gluoncv.model_zoo.center_net.target_generator import CenterNetTargetGenerator
    det = rg.center_net("attention56", CLASSES, backbone_kwargs=TINY)
    assert isinstance(det, CenterNet) and isinstance(det.base_network, DeconvResnet)
    assert _shares_backbone(det, "base_network.base_network.1")
    # Three GluonCV deconvolution blocks (conv-BN-ReLU, deconv-BN-ReLU) take /32 to /4.
    assert len(det.base_network.deconv) == 3 * 6
    size = 192
    images, labels, _ = shapes(2, size)
    x = mx.nd.stack(*[tensor(im) for im in images])
    generator = CenterNetTargetGenerator(len(CLASSES), size // 4, size // 4)
    targets = [generator(b[:, :4] / 4.0, b[:, 4]) for b in labels]
    heatmap, wh, wh_mask, reg, reg_mask = [mx.nd.stack(*[t[k] for t in targets])
                                           for k in range(5)]
    heatmap_loss = HeatmapFocalLoss(from_logits=True)
    wh_loss, reg_loss = MaskedL1Loss(weight=0.1), MaskedL1Loss(weight=1.0)

    def step():  # GluonCV's train_center_net.py
        hm_pred, wh_pred, reg_pred = det(x)
        return (heatmap_loss(hm_pred, heatmap) + wh_loss(wh_pred, wh, wh_mask)
                + reg_loss(reg_pred, reg, reg_mask)).mean()

    fit("center_net", det, step, 16, 1e-3, optimizer="adam")
    masks_drawn(det, images[0], tmp_path)


# ----------------------------------------------------------------------------- segmentation
@pytest.mark.parametrize("kind,size,steps", [("fcn", 320, 24), ("pspnet", 160, 12),
                                             ("deeplabv3", 160, 12)])
def test_segmentation_fits(gcv, tmp_path, kind, size, steps):
    from gluoncv.loss import MixSoftmaxCrossEntropyLoss
    from gluoncv.model_zoo import DeepLabV3, FCN, PSPNet
    seg = getattr(rg, kind)("attention56", 3, crop_size=size, backbone_kwargs=TINY)
    assert isinstance(seg, {"fcn": FCN, "pspnet": PSPNet, "deeplabv3": DeepLabV3}[kind])
    # The dilated network: c3 and c4 at stride 8, as GluonCV's dilated ResNets.
    info = seg.backbone.feature_info
    assert info.reduction() == [8, 8] and info.get_dicts(keys=["dilation"]) == [
        {"dilation": 2}, {"dilation": 4}]
    images, _, masks = shapes(2, size)
    x = mx.nd.stack(*[tensor(im) for im in images])
    y = mx.nd.array(np.stack(masks))
    loss_fn = MixSoftmaxCrossEntropyLoss(aux=True)

    def step():  # GluonCV's train.py for segmentation
        return loss_fn(*seg(x), y).mean()

    fit(kind, seg, step, steps, 0.01)
    out = masks_drawn(seg, images[0], tmp_path).outputs
    assert out[0].shape == (1, 3, size, size)
    assert seg.predict(tensor(images[1]).expand_dims(0)).shape == (1, 3, size, size)


def test_cifar_backbone_runs_at_its_own_stride(gcv):
    """A CIFAR model never downsamples in its stem: total stride 4, no dilation needed."""
    from gluoncv.loss import MixSoftmaxCrossEntropyLoss
    seg = rg.fcn("attention92_cifar", 3, crop_size=64, backbone_kwargs={"width_mult": 1 / 32})
    assert seg.backbone.feature_info.reduction() == [4, 4]
    images, _, masks = shapes(1, 64)
    with autograd.record():
        loss = MixSoftmaxCrossEntropyLoss(aux=True)(*seg(tensor(images[0]).expand_dims(0)),
                                                    mx.nd.array(masks[0][None]))
    loss.backward()
    assert np.isfinite(loss.asnumpy()).all()
    det = rg.yolov3("attention92_cifar", CLASSES, backbone_kwargs={"width_mult": 1 / 32})
    assert [int(o._stride) for o in det.yolo_outputs] == [4, 2, 1]  # deepest first
    ids, _, boxes = det(tensor(images[0]).expand_dims(0))
    assert boxes.shape[-1] == 4


# ----------------------------------------------------------------------------- weights
def _checkpoint(tmp_path):
    """A run directory as `resattn train` leaves it: best.params and config.json."""
    import json
    run = tmp_path / "run"
    run.mkdir()
    net = resattn.get_model("attention56", **TINY)
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 64, 64)))
    randomize_batchnorm(net)
    save_parameters(net, str(run / "best.params"))
    (run / "config.json").write_text(json.dumps(
        {"model": "attention56", "dataset": "cluttered-digits", "model_kwargs": TINY}))
    return net, str(run / "best.params")


def _structured(net):
    from resattn._compat import structured_params
    return {k: p.data().asnumpy() for k, p in structured_params(net).items()}


def test_checkpoint_initialises_a_frozen_faster_rcnn(gcv, tmp_path):
    source, path = _checkpoint(tmp_path)
    det = rg.faster_rcnn("attention56", CLASSES, pretrained=path, short=320, max_size=320)
    net = rg.backbone_of(det)
    assert det.pretrained_cfg.file == path
    before = _structured(net)
    expected = _structured(source)
    assert all(np.array_equal(before[k], expected[k]) for k in expected)
    # GluonCV's fine-tuning BatchNorm: running statistics used in training, scale and shift fixed.
    norms = [b for b in net.features[1].collect_params().values() if b.name.endswith("gamma")]
    assert norms and all(p.grad_req == "null" for p in norms)
    assert all(bn._kwargs["use_global_stats"] for bn in _all_batchnorms(net))
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform
    images, labels, _ = shapes(1)
    img, bbox, rpn_cls, _, _ = FasterRCNNDefaultTrainTransform(
        320, 320, det, flip_p=0.0, ashape=det.ashape)(mx.nd.array(images[0], dtype="uint8"),
                                                     labels[0])
    trainer = gluon.Trainer(det.collect_train_params(), "sgd", {"learning_rate": 0.1})
    with autograd.record():
        out = det(img.expand_dims(0), mx.nd.array(bbox[None, :, :4]),
                  mx.nd.array(bbox[None, :, 4:5]))
        loss = out[0].sum() + out[1].sum() + out[5].sum() + out[6].sum()
    loss.backward()
    trainer.step(1)
    after = _structured(net)
    stats = [k for k in before if k.endswith(("running_mean", "running_var", "gamma", "beta"))]
    assert stats and all(np.array_equal(after[k], before[k]) for k in stats)
    convs = [k for k in before if k.endswith("conv2.weight")]
    assert any(not np.array_equal(after[k], before[k]) for k in convs)


def _all_batchnorms(net):
    from resattn._compat import iter_blocks
    return [b for b in iter_blocks(net) if isinstance(b, nn.BatchNorm)]


def test_loaded_network_with_synchronised_batchnorm(gcv, tmp_path):
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    source, path = _checkpoint(tmp_path)
    loaded = resattn.load_model(path)  # the run's config.json gives model and widths
    x = mx.nd.random.normal(shape=(1, 3, 96, 96))
    ref = loaded.forward_features(x).asnumpy()
    seg = rg.fcn(loaded, 3, norm="sync", num_devices=1, output_stride=32, crop_size=96)
    net = rg.backbone_of(seg)
    assert net is loaded
    norms = _all_batchnorms(net)
    assert norms and all(isinstance(b, SyncBatchNorm) for b in norms)
    expected = _structured(source)
    assert all(np.array_equal(_structured(net)[k], v) for k, v in expected.items())
    with autograd.pause(train_mode=False):
        assert rel_diff(net.forward_features(x), ref) < 1e-5
    with autograd.record():
        out = seg(x)
        loss = out[0].sum()
    loss.backward()
    assert np.isfinite(out[0].asnumpy()).all()
    assert np.isfinite(net.features[1][0].conv2.weight.grad().asnumpy()).all()


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_bad_value_and_the_allowed_ones(gcv):
    with pytest.raises(ValueError, match="norm must be one of 'batch', 'frozen', 'sync'.*'group'"):
        rg.backbone("attention56", norm="group")
    with pytest.raises(ValueError, match="width_mult given with a network"):
        rg.backbone(resattn.get_model("attention56", **TINY), width_mult=0.5)
    with pytest.raises(ValueError, match="output_stride must be one of 4, 8, 16, 32"):
        rg.fcn("attention56", 3, output_stride=2, backbone_kwargs=TINY)
    with pytest.raises(ValueError, match="strides double.*strides \\[4, 16, 32\\]"):
        rg.yolov3("attention56", CLASSES, out_indices=(1, 3, 4), backbone_kwargs=TINY)
    with pytest.raises(ValueError, match="norm='sync' is not available"):
        rg.ssd("attention56", CLASSES, norm="sync", backbone_kwargs=TINY)
    with pytest.raises(ValueError, match="needs 3 deconvolutions"):
        rg.center_net("attention56", CLASSES, deconv_filters=(16,), backbone_kwargs=TINY)
    with pytest.raises(ValueError, match="num_devices must be a positive int"):
        rg.sync_batchnorm(nn.BatchNorm(), 0)
    with pytest.raises(ValueError, match="backbone_of"):
        rg.backbone_of(nn.Dense(3))


def test_backbone_page_runs_as_written(gcv, tmp_path, monkeypatch, capsys):
    """docs/backbone.md: its Python blocks run in order, as printed (one namespace)."""
    import os
    from test_docs import DOCS, _python_blocks
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "backbone_page"}
    blocks = _python_blocks(os.path.join(DOCS, "backbone.md"))
    assert len(blocks) >= 8
    for i, block in enumerate(blocks):
        exec(compile(block, "docs/backbone.md block %d" % (i + 1), "exec"), namespace)
    out = capsys.readouterr().out
    assert "[16, 32, 64, 128] [4, 8, 16, 32]" in out and "True" in out
    assert "FasterRCNN 16" in out and "(1, 3, 192, 192)" in out
    assert (tmp_path / "fcn_masks.png").is_file()
