"""Use the PyTorch reference's CIFAR-10 weights in resattn.

The public PyTorch implementation (tengshaofeng/ResidualAttentionNetwork-
pytorch) publishes ``model_92_sgd.pkl``, a ``state_dict`` of its
``ResidualAttentionModel_92_32input_update`` (95.4% on CIFAR-10). This script
converts it into a resattn ``.params`` file for ``attention92_cifar``, the
same as ``resattn convert --model attention92_cifar --source pytorch
model_92_sgd.pkl -o OUT``, then classifies images with it.

That model was trained on images scaled to [0, 1] *without* mean/std
normalisation, so its inputs here are ``pixels / 255`` and nothing else: the
CIFAR-10 mean and std of ``model_config('attention92_cifar')`` would cost
it most of its accuracy. Tutorial: docs/tutorials/pytorch_weights.md.

    python examples/load_pytorch_weights.py model_92_sgd.pkl -o a92-pytorch.params
    python examples/load_pytorch_weights.py model_92_sgd.pkl -o a92-pytorch.params \\
        --eval-cifar10 --gpus 0                      # expect top-1 about 0.954
    python examples/load_pytorch_weights.py model_92_sgd.pkl -o a92-pytorch.params \\
        --image cat.png --image ship.jpg
"""
import argparse
import sys

import mxnet as mx
import numpy as np

from resattn import get_model
from resattn.models.convert import convert_file
from resattn.io import load_parameters
from resattn.training import get_context

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def to_unit_range(images):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]: the reference's only preprocessing."""
    return np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2) / 255.0)


def read_images(paths, size=32):
    import cv2
    images = []
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("cannot read image %s" % path)
        images.append(cv2.resize(img[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(images)


def eval_cifar10(net, ctx, root=None, subset=None, batch_size=128):
    """Top-1 on the CIFAR-10 test set with [0, 1] inputs (downloads CIFAR-10 on first use)."""
    from mxnet import gluon
    from resattn.training import evaluate
    kwargs = {} if root is None else {"root": root}
    test = gluon.data.vision.CIFAR10(train=False, **kwargs)
    if subset:
        test = gluon.data.SimpleDataset([test[i] for i in range(min(subset, len(test)))])
    test = test.transform_first(
        lambda img: mx.nd.array(to_unit_range(img.asnumpy()[None])[0]))
    loader = gluon.data.DataLoader(test, batch_size=batch_size)
    return evaluate(net, loader, ctx, classes=10)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", help="PyTorch state_dict, e.g. model_92_sgd.pkl")
    p.add_argument("-o", "--out", required=True, help="resattn .params file to write")
    p.add_argument("--model", default="attention92_cifar")
    p.add_argument("--image", action="append", default=[], help="classify this image file")
    p.add_argument("--eval-cifar10", action="store_true",
                   help="top-1 on the CIFAR-10 test set (downloads it)")
    p.add_argument("--data-root", default=None, help="where CIFAR-10 is stored")
    p.add_argument("--subset", type=int, default=None, help="first N test images only")
    p.add_argument("--gpus", default="", help="e.g. 0 (default: CPU)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Loaded with torch.load(weights_only=True): a file that carries code is refused.
    # Any missing, unexpected or misshaped parameter is named in a ValueError.
    convert_file(args.model, args.weights, "pytorch", args.out)
    print("wrote %s" % args.out)

    ctx = get_context(args.gpus)
    net = get_model(args.model)  # variant='gluoncv', the reference's mask wiring
    load_parameters(net, args.out, ctx=ctx[0])
    net.hybridize(static_alloc=True)

    if args.image:
        x = mx.nd.array(to_unit_range(read_images(args.image)), ctx=ctx[0])
        probs = mx.nd.softmax(net(x)).asnumpy()
        for path, p in zip(args.image, probs):
            top = np.argsort(-p)[:3]
            print("%s: %s" % (path, ", ".join("%s %.3f" % (CIFAR10_CLASSES[k], p[k])
                                              for k in top)))
    if args.eval_cifar10:
        res = eval_cifar10(net, ctx, args.data_root, args.subset)
        print("CIFAR-10 test (%d images, inputs in [0, 1]): top-1 %.4f top-5 %.4f loss %.4f"
              % (res["samples"], res["top1"], res["top5"], res["loss"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
