"""See what a trained network attends to: capture, plot and score its soft masks.

Runs a network on a few test images, captures the soft mask ``M(x)`` of
every attention module (``resattn.masks.capture``), reduces each to one map
per image and draws them over the images (``resattn.viz.plot_masks``), as
in the paper's Fig. 1. On ``cluttered-digits``, whose digit boxes are known,
it also prints how much more open each stage's mask is on the digit than
around it. Tutorial: docs/tutorials/masks.md.

    make demo                                     # trains a model into runs/demo
    python examples/visualize_masks.py --params runs/demo/best.params \\
        --dataset cluttered-digits --index 0 1 2 3 -o masks.png
    python examples/visualize_masks.py --params runs/demo/best.params \\
        --dataset cluttered-digits --reduce class -o class_masks.png
"""
import argparse
import json
import os
import sys

import mxnet as mx
import numpy as np

from resattn import get_model
from resattn.data import dataset_info, get_dataset
from resattn.io import load_parameters
from resattn.masks import capture, class_channels, reduce_mask, score_by_stage
from resattn.viz import plot_masks


def saved_run(params):
    """The ``config.json`` that ``resattn train`` wrote beside ``params``, or {}."""
    path = os.path.join(os.path.dirname(os.path.abspath(params)), "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=None,
                   help="trained .params (model and widths are read from its config.json); "
                        "without it the network is random, to try the tools")
    p.add_argument("--model", default=None, help="default: from config.json")
    p.add_argument("--width-mult", type=float, default=None, help="default: from config.json")
    p.add_argument("--dataset", default=None,
                   help="test split to draw from (default: from config.json, else digits)")
    p.add_argument("--index", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--reduce", choices=("mean", "max", "class"), default="mean",
                   help="channel mean, channel max, or the mean over the 8 channels that "
                        "matter most for each image's predicted class")
    p.add_argument("-o", "--out", default="masks.png")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    run = saved_run(args.params) if args.params else {}
    model = args.model or run.get("model") or "attention56_cifar"
    dataset = args.dataset or run.get("dataset") or "digits"
    kwargs = dict(run.get("model_kwargs", {}))
    if args.width_mult is not None:
        kwargs["width_mult"] = args.width_mult
    info = dataset_info(dataset)
    net = get_model(model, classes=info["classes"], **kwargs)
    if args.params:
        load_parameters(net, args.params)
    else:
        print("no --params: drawing the masks of a randomly initialised %s" % model)
        net.initialize(mx.init.MSRAPrelu())

    data = get_dataset(dataset, train=False)
    x = mx.nd.stack(*[data[i][0] for i in args.index])
    if hasattr(data, "raw_image"):  # cluttered-digits: the canvas before normalisation
        images = np.stack([data.raw_image(i) for i in args.index])
    else:
        chw = x.asnumpy().transpose(0, 2, 3, 1)
        images = np.clip(chw * np.asarray(info["std"]) + np.asarray(info["mean"]), 0, 1)

    logits, masks = capture(net, x)
    if args.reduce == "class":
        ranked = class_channels(net, x, top_k=8)  # per image, for its predicted class
        how = [("channels", r.channels) for r in ranked]
    else:
        how = args.reduce
    labels = [int(data[i][1]) for i in args.index]
    title = "%s on %s: predicted %s, true %s" % (
        model, dataset, logits.argmax(axis=1).tolist(), labels)
    plot_masks(images, masks, args.out, reduce=how, title=title)
    print("wrote %s (%d images x %d modules)" % (args.out, len(args.index), len(masks)))
    for mask in masks:
        print("%s: mask %s, channel-mean map in [%.3f, %.3f]" % (
            mask.name, mask.array.shape, reduce_mask(mask).min(), reduce_mask(mask).max()))

    if hasattr(data, "boxes"):
        scores = score_by_stage(net, x, data.boxes[args.index])
        print("mask mean inside the digit box / outside (1 = no preference): "
              + ", ".join("%s %.3f" % kv for kv in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
