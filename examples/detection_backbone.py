"""Detect digits with GluonCV's Faster R-CNN on a trained Residual Attention Network.

End to end, on data this machine has (the synthetic cluttered digits):

1. classify: ``resattn train`` trains the classifier on ``cluttered-digits`` (one digit
   among clutter per canvas), unless ``--checkpoint`` gives one (a run's ``best.params``
   or a published tag);
2. detect: ``resattn.gluoncv.faster_rcnn`` puts that network into GluonCV's
   ``FasterRCNN`` (its stem and attention stages as ``features``, its head as
   ``top_features``), BatchNorm frozen as GluonCV fine-tunes it, and trains it with
   GluonCV's transform, target generators and losses on scenes of ``--grid`` x ``--grid``
   cluttered-digit tiles with their boxes;
3. evaluate: GluonCV's VOC07 mAP on held-out scenes, and a picture of the detections
   over each attention module's soft mask. Tutorial: docs/tutorials/detection.md.

    python examples/detection_backbone.py --out runs/detect                 # CPU, minutes
    python examples/detection_backbone.py --checkpoint runs/detect/classifier/best.params \\
        --detect-epochs 8 --out runs/detect2                                # reuse step 1
"""
import argparse
import os
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

import resattn
from resattn import gluoncv as rg
from resattn.data.synthetic import ClutteredDigits
from resattn.viz import plot_masks

DIGITS = [str(d) for d in range(10)]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="attention56", help="zoo model of the classifier")
    p.add_argument("--width-mult", type=float, default=0.25)
    p.add_argument("--tile", type=int, default=64,
                   help="side of one cluttered-digit canvas, for the classifier and the scenes")
    p.add_argument("--grid", type=int, default=4, help="tiles per side of a detection scene")
    p.add_argument("--checkpoint", default=None,
                   help="classifier to start from (best.params of a run, or a tag); "
                        "default: train one first")
    p.add_argument("--classify-epochs", type=int, default=10)
    p.add_argument("--classify-images", type=int, default=None,
                   help="first N training digits (default all 1437)")
    p.add_argument("--batch-size", type=int, default=64, help="of the classifier's training")
    p.add_argument("--norm", choices=rg.NORMS, default="frozen",
                   help="BatchNorm of the backbone while detecting (GluonCV: frozen)")
    p.add_argument("--detect-epochs", type=int, default=6)
    p.add_argument("--train-scenes", type=int, default=64)
    p.add_argument("--val-scenes", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--draw", type=int, default=2, help="validation scenes to draw")
    p.add_argument("--out", required=True)
    return p


def classify(args):
    """``resattn train`` on cluttered digits; the path of its best.params."""
    from resattn.cli import main as cli
    out = os.path.join(args.out, "classifier")
    subset = [] if args.classify_images is None else ["--subset", str(args.classify_images)]
    code = cli(["train", "--model", args.model, "--width-mult", str(args.width_mult),
                "--dataset", "cluttered-digits", "--image-size", str(args.tile),
                "--epochs", str(args.classify_epochs), "--batch-size", str(args.batch_size),
                "--mixup-alpha", "0", "--num-workers", "0", "--no-progress", "--overwrite",
                "--out", out] + subset)
    if code:
        raise SystemExit(code)
    return os.path.join(out, "best.params")


def scenes(train, count, grid, tile, seed=0):
    """``count`` scenes (H, W, 3) uint8 of ``grid`` x ``grid`` cluttered-digit tiles, with
    their labels (k, 5): x0, y0, x1, y1 (pixels, ends exclusive) and the digit."""
    digits = ClutteredDigits(train=train, seed=seed, canvas=tile,
                             subset=min(count * grid * grid, 10000 if train else 2000))
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(count):
        image = np.zeros((grid * tile, grid * tile, 3), np.float32)
        labels = []
        for k, i in enumerate(rng.choice(len(digits), grid * grid, replace=False)):
            y, x = divmod(k, grid)
            image[y * tile:(y + 1) * tile, x * tile:(x + 1) * tile] = digits.raw_image(i)
            x0, y0, x1, y1 = digits.boxes[i]
            labels.append([x0 + x * tile, y0 + y * tile, x1 + x * tile, y1 + y * tile,
                           digits[i][1]])
        out.append(((image * 255).round().astype(np.uint8), np.array(labels, np.float32)))
    return out


def train_detector(det, data, epochs, lr, mean, std):
    """GluonCV's Faster R-CNN training (train_faster_rcnn.py), one image per step."""
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform
    size = data[0][0].shape[0]
    transform = FasterRCNNDefaultTrainTransform(size, size, det, mean=mean, std=std,
                                                ashape=det.ashape)
    rpn_cls_loss = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
    rpn_box_loss = gluon.loss.HuberLoss(rho=1 / 9.)
    rcnn_cls_loss, rcnn_box_loss = gluon.loss.SoftmaxCrossEntropyLoss(), gluon.loss.HuberLoss()
    trainer = gluon.Trainer(det.collect_train_params(), "sgd",
                            {"learning_rate": lr, "momentum": 0.9, "wd": 1e-4})
    det.hybridize(static_alloc=True)
    history = []
    for epoch in range(epochs):
        losses = []
        for image, labels in data:
            img, bbox, rpn_cls, rpn_box, rpn_mask = transform(mx.nd.array(image, dtype="uint8"),
                                                              labels)
            rpn_cls_t = mx.nd.array(rpn_cls[0]).reshape((1, -1))
            rpn_box_t = mx.nd.array(rpn_box[0]).reshape((1, -1, 4))
            rpn_box_m = mx.nd.array(rpn_mask[0]).reshape((1, -1, 4))
            with autograd.record():
                cls_pred, box_pred, _, _, _, rpn_score, rpn_pred, _, cls_t, box_t, box_m, _ = \
                    det(img.expand_dims(0), mx.nd.array(bbox[None, :, :4]),
                        mx.nd.array(bbox[None, :, 4:5]))
                rpn_score = rpn_score.squeeze(axis=-1)
                num_rpn_pos = (rpn_cls_t >= 0).sum()
                rpn_loss = (rpn_cls_loss(rpn_score, rpn_cls_t, rpn_cls_t >= 0) * rpn_cls_t.size
                            + rpn_box_loss(rpn_pred, rpn_box_t, rpn_box_m) * rpn_pred.size) \
                    / num_rpn_pos
                num_pos = (cls_t >= 0).sum()
                rcnn_loss = (rcnn_cls_loss(cls_pred, cls_t, cls_t.expand_dims(-1) >= 0)
                             * cls_t.size + rcnn_box_loss(box_pred, box_t, box_m)
                             * box_pred.size) / num_pos
                loss = rpn_loss.sum() + rcnn_loss.sum()
            loss.backward()
            trainer.step(1)
            losses.append(float(loss.asscalar()))
        history.append(float(np.mean(losses)))
        print("detection epoch %d: loss %.4f" % (epoch + 1, history[-1]), flush=True)
    return history


def _normalised(image, mean, std):
    x = mx.nd.image.to_tensor(mx.nd.array(image, dtype="uint8"))
    return mx.nd.image.normalize(x, mean=mean, std=std).expand_dims(0)


def evaluate(det, data, mean, std):
    """GluonCV's VOC07 mAP at IoU 0.5 on ``data``."""
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric
    metric = VOC07MApMetric(iou_thresh=0.5, class_names=DIGITS)
    for image, labels in data:
        ids, scores, boxes = rg.capture_masks(det, _normalised(image, mean, std)).outputs
        metric.update(boxes, ids, scores, labels[None, :, :4], labels[None, :, 4:5])
    return metric.get()[1][-1]


def _boxes_drawn(image, boxes, colour=(255, 255, 0)):
    out = image.copy()
    h, w = out.shape[:2]
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        x0, x1 = np.clip([x0, x1 - 1], 0, w - 1)
        y0, y1 = np.clip([y0, y1 - 1], 0, h - 1)
        out[y0:y1 + 1, [x0, x1]] = colour
        out[[y0, y1], x0:x1 + 1] = colour
    return out


def draw(det, data, mean, std, path, threshold=0.5):
    """The detections (score > ``threshold``) of each scene over the backbone's soft masks."""
    images, masks = [], []
    for image, _ in data:
        cap = rg.capture_masks(det, _normalised(image, mean, std))
        ids, scores, boxes = [o[0].asnumpy() for o in cap.outputs]
        keep = (scores[:, 0] > threshold) & (ids[:, 0] >= 0)
        images.append(_boxes_drawn(image, boxes[keep]))
        masks.append(cap.masks)
    joined = [m._replace(array=np.concatenate([ms[k].array for ms in masks]))
              for k, m in enumerate(masks[0])]
    return plot_masks(np.stack(images), joined, path,
                      title="Faster R-CNN detections (yellow) over the soft masks")


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rg.import_gluoncv()
    start = time.time()
    checkpoint = args.checkpoint or classify(args)
    classifier = resattn.load_model(checkpoint)
    cfg = classifier.pretrained_cfg
    print("classifier: %s from %s (%.0f s)" % (cfg.model, checkpoint, time.time() - start))
    size = args.grid * args.tile
    det = rg.faster_rcnn(classifier, DIGITS, norm=args.norm, short=size, max_size=size,
                         rpn_train_post_nms=512, rpn_test_post_nms=100, num_sample=64)
    train = scenes(True, args.train_scenes, args.grid, args.tile)
    val = scenes(False, args.val_scenes, args.grid, args.tile, seed=1)
    print("scenes: %d train, %d validation, %dx%d px, %d digits each; backbone strides %s"
          % (len(train), len(val), size, size, args.grid ** 2,
             rg.backbone_of(det).feature_info.reduction()))
    mean, std = tuple(cfg.mean), tuple(cfg.std)
    before = evaluate(det, val, mean, std)
    history = train_detector(det, train, args.detect_epochs, args.lr, mean, std)
    after = evaluate(det, val, mean, std)
    print("detection loss %.4f -> %.4f; VOC07 mAP@0.5 %.3f -> %.3f (%.0f s)"
          % (history[0], history[-1], before, after, time.time() - start))
    det.save_parameters(os.path.join(args.out, "faster_rcnn.params"))
    path = draw(det, val[:max(args.draw, 1)], mean, std,
                os.path.join(args.out, "detections.png"))
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
