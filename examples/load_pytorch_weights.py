"""Use published weights in resattn: a tag, or a file of the PyTorch reference or the seed.

With a tag (``resattn list --pretrained``) the file is downloaded once into
the cache and verified by its git blob id; a local file (the PyTorch
reference's ``model_92_sgd.pkl``, a seed ``.param``) is converted into a
resattn ``.params`` with its config beside it, the same as ``resattn convert``.
Either way the config says how the weights want their input: the PyTorch
reference's were trained on ``pixels / 255`` and nothing else, the seed's on
``pixels / 255`` normalised with the *ImageNet* mean and std; this script
applies it, as ``resattn eval`` and ``resattn predict`` do.
Tutorial: docs/tutorials/pytorch_weights.md.

    python examples/load_pytorch_weights.py pytorch-95.4 --image cat.png   # a tag
    python examples/load_pytorch_weights.py model_92_sgd.pkl -o a92.params \
        --eval-cifar10 --gpus 0                      # expect top-1 about 0.954
"""
import argparse
import sys

import mxnet as mx
import numpy as np

import resattn
from resattn.data import create_transform, resolve_data_config
from resattn.data.images import read_image
from resattn.models import convert_file, list_weights
from resattn.training import get_context


def eval_cifar10(net, ctx, root=None, subset=None, batch_size=128):
    """Top-1 on the CIFAR-10 test set with the weights' preprocessing (downloads CIFAR-10)."""
    from resattn.data import get_data_loader
    from resattn.training import evaluate
    loader = get_data_loader("cifar10", False, batch_size, root=root, subset=subset,
                             normalize=net.pretrained_cfg.normalization())
    return evaluate(net, loader, ctx, classes=10)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", help="a published tag (pytorch-95.4, seed-97.14, ...) or a file")
    p.add_argument("-o", "--out", default=None,
                   help="resattn .params file to write (needed for a file)")
    p.add_argument("--source", default="pytorch", help="format of a file: pytorch or seed")
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
    if args.weights in [w.tag for w in list_weights()]:
        weights = args.weights  # downloaded, verified and converted once
    else:
        if not args.out:
            raise SystemExit("-o/--out is needed to convert a file")
        # Read with torch.load(weights_only=True): a file that carries code is refused.
        # Any missing, unexpected or misshaped parameter is named in a ValueError.
        weights = convert_file(args.model, args.weights, args.source, args.out)
        print("wrote %s and its config %s.json" % (weights, weights))
    ctx = get_context(args.gpus)
    net = resattn.load_model(weights, ctx=ctx[0])  # model, arch and preprocessing from the config
    cfg = net.pretrained_cfg
    size = cfg.input_size if isinstance(cfg.input_size, tuple) else (cfg.input_size,) * 2
    print("preprocessing: %dx%d, pixels / %g, mean %s, std %s" % (
        size + (cfg.scale, list(cfg.mean), list(cfg.std))))
    net.hybridize(static_alloc=True)

    if args.image:
        transform = create_transform(**resolve_data_config(model=net))
        x = mx.nd.array(np.stack([transform(read_image(p)) for p in args.image]), ctx=ctx[0])
        probs = mx.nd.softmax(net(x)).asnumpy()
        for image, p in zip(args.image, probs):
            top = np.argsort(-p)[:3]
            print("%s: %s" % (image, ", ".join("%s %.3f" % (cfg.class_names[k], p[k])
                                              for k in top)))
    if args.eval_cifar10:
        res = eval_cifar10(net, ctx, args.data_root, args.subset)
        print("CIFAR-10 test (%d images, the weights' preprocessing): top-1 %.4f top-5 %.4f "
              "loss %.4f" % (res["samples"], res["top1"], res["top5"], res["loss"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
