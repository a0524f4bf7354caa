"""Build your own network from resattn's blocks.

A small classifier with two attention stages, written as any Gluon
HybridBlock: ``ResidualUnit`` transitions, one ``AttentionModule`` per stage
(the mask depth set by ``stage``), a pooled head. It keeps the zoo's
``features`` / ``output`` split, so mask capture, profiling and training work
on it unchanged. Tutorial: docs/tutorials/custom_network.md.

    python examples/custom_network.py                      # build, profile, check
    python examples/custom_network.py --epochs 3           # and train on digits
    python examples/custom_network.py --attention spatial --variant gluoncv
"""
import argparse
import os
import sys
import tempfile

import mxnet as mx
from mxnet.gluon import nn

from resattn import ATTENTION_TYPES, VARIANTS, AttentionModule, ResidualUnit, profile


class TwoStageAttentionNet(nn.HybridBlock):
    """Stem, two attention stages, a pooled classifier.

    Stage 1 works at the input resolution with a mask of ``4 - 2 = 2``
    poolings; stage 2 halves the resolution (a stride-2 unit) and doubles the
    width, with a mask of one pooling: the deeper the stage, the smaller the
    feature map and the shallower its hourglass, as in the paper's Table 1.
    """

    def __init__(self, classes=10, width=32, attention="mixed", variant="official", **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        with self.name_scope():
            self.features = nn.HybridSequential()
            self.features.add(nn.Conv2D(width, 3, padding=1, use_bias=False, in_channels=3))
            stage1 = nn.HybridSequential()
            stage1.add(ResidualUnit(width, in_channels=width),
                       AttentionModule(width, stage=2, attention=attention, variant=variant))
            stage2 = nn.HybridSequential()
            stage2.add(ResidualUnit(2 * width, stride=2, in_channels=width),
                       AttentionModule(2 * width, stage=3, attention=attention, variant=variant))
            head = nn.HybridSequential()
            head.add(nn.BatchNorm(), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Flatten())
            self.features.add(stage1, stage2, head)
            self.output = nn.Dense(classes, in_units=2 * width)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=32, help="channels of stage 1 (multiple of 4)")
    p.add_argument("--attention", choices=ATTENTION_TYPES, default="mixed")
    p.add_argument("--variant", choices=VARIANTS, default="official")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=0, help="train on digits for N epochs (0: no)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--subset", type=int, default=None, help="use the first N digits only")
    p.add_argument("--out", default=None, help="training outputs (default: a temporary folder)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    net = TwoStageAttentionNet(classes=10, width=args.width, attention=args.attention,
                               variant=args.variant)
    print(profile(net, args.input_size).table(depth=2))

    net.initialize(mx.init.MSRAPrelu())
    x = mx.nd.random.uniform(shape=(2, 3, args.input_size, args.input_size + 5))
    imperative = net(x)
    net.hybridize()
    hybrid = net(x)
    diff = float((imperative - hybrid).abs().max().asscalar())
    print("non-square input %s -> logits %s; imperative vs hybridized max diff %.2g"
          % (x.shape, hybrid.shape, diff))

    from resattn.masks import capture
    _, masks = capture(net, x)
    for mask in masks:
        print("%s: soft mask %s, values in [%.3f, %.3f]"
              % (mask.name, mask.array.shape, mask.array.min(), mask.array.max()))

    if args.epochs:
        from resattn.data import get_data_loader
        from resattn.training import fit
        train = get_data_loader("digits", True, args.batch_size, subset=args.subset)
        val = get_data_loader("digits", False, args.batch_size, subset=args.subset)
        out = args.out or tempfile.mkdtemp(prefix="custom_network_")
        # Few epochs: no warm-up and no mixup, the rest is the package's recipe.
        history = fit(net, train, val, out, epochs=args.epochs, batch_size=args.batch_size,
                      warmup_epochs=0, mixup_alpha=0.0, progress=False)
        print("after %d epoch(s): val top-1 %.4f; outputs in %s"
              % (args.epochs, history[-1]["val_top1"], os.path.abspath(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
