"""Fine-tune a trained network on your own image folder.

Loads a resattn checkpoint (from ``resattn train``, ``resattn convert`` or
``examples/load_pytorch_weights.py``) into the model it was trained as,
replaces the classifier with a new ``nn.Dense`` for your classes, and trains
on ``DATA/train/<class>/*.jpg`` with ``DATA/val/<class>/*.jpg`` for
validation (the ``imagefolder:DATA`` dataset, ImageNet preprocessing at the
model's input size). Tutorial: docs/tutorials/finetune.md.

    python examples/finetune_imagefolder.py --data ~/flowers \\
        --model attention92_cifar --checkpoint attention92_cifar-pytorch.params \\
        --checkpoint-classes 10 --epochs 10 --out runs/flowers
"""
import argparse
import json
import os
import sys
import time

import mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import nn

from resattn import get_model, model_config
from resattn.data import dataset_info, get_data_loader
from resattn.io import load_parameters, save_parameters
from resattn.training import evaluate, get_context


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train/<class>/ and val/<class>/")
    p.add_argument("--model", default="attention92_cifar", help="the checkpoint's model")
    p.add_argument("--checkpoint", default=None,
                   help="resattn .params to start from (none: train from scratch)")
    p.add_argument("--checkpoint-classes", type=int, default=10,
                   help="classes of the checkpoint's classifier")
    p.add_argument("--width-mult", type=float, default=1.0, help="as the checkpoint was built")
    p.add_argument("--image-size", type=int, default=None, help="default: the model's input")
    p.add_argument("--freeze-features", action="store_true",
                   help="train the new classifier only")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01,
                   help="a tenth of the from-scratch rate: the features are already trained")
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--gpus", default="", help="e.g. 0 (default: CPU)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--out", required=True, help="writes best.params, config.json, log")
    return p


def replace_classifier(net, classes, ctx):
    """A new, initialised ``nn.Dense`` head for ``classes``; the features are kept."""
    with net.name_scope():
        net.output = nn.Dense(classes, in_units=net.widths[3])
    net.output.initialize(mx.init.Xavier(), ctx=ctx)
    net.classes = classes


def main(argv=None):
    args = build_parser().parse_args(argv)
    ctx = get_context(args.gpus)
    name = "imagefolder:" + args.data
    info = dataset_info(name)
    size = args.image_size or model_config(args.model)["input_size"]

    net = get_model(args.model, classes=args.checkpoint_classes, width_mult=args.width_mult)
    if args.checkpoint:
        load_parameters(net, args.checkpoint, ctx=ctx)  # every name and shape is checked
    else:
        net.initialize(mx.init.MSRAPrelu(), ctx=ctx)
    replace_classifier(net, info["classes"], ctx)
    if args.freeze_features:
        for param in net.features.collect_params().values():
            param.grad_req = "null"
    net.hybridize(static_alloc=True)

    train_data = get_data_loader(name, True, args.batch_size, num_workers=args.num_workers,
                                 image_size=size, last_batch="keep")
    val_data = get_data_loader(name, False, args.batch_size, num_workers=args.num_workers,
                               image_size=size)
    steps = args.epochs * len(train_data)
    trainer = gluon.Trainer(
        [p for p in net.collect_params().values() if p.grad_req != "null"], "nag",
        {"learning_rate": args.lr, "momentum": 0.9, "wd": args.wd,
         "lr_scheduler": mx.lr_scheduler.CosineScheduler(max(steps, 1), base_lr=args.lr)})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(dict(vars(args), model_kwargs={"width_mult": args.width_mult},
                       classes=info["classes"], dataset=name), f, indent=2)
    best = -1.0
    for epoch in range(args.epochs):
        tic, seen, total = time.time(), 0, 0.0
        for data, label in train_data:
            xs = gluon.utils.split_and_load(data, ctx, even_split=False)
            ys = gluon.utils.split_and_load(label, ctx, even_split=False)
            with autograd.record():
                losses = [loss_fn(net(x), y) for x, y in zip(xs, ys)]
            autograd.backward(losses)
            trainer.step(data.shape[0])
            seen += data.shape[0]
            total += sum(float(l.sum().asscalar()) for l in losses)
        val = evaluate(net, val_data, ctx, info["classes"])
        line = ("epoch %d/%d train_loss %.4f val_top1 %.4f val_loss %.4f (%.1fs)"
                % (epoch + 1, args.epochs, total / max(seen, 1), val["top1"], val["loss"],
                   time.time() - tic))
        print(line, flush=True)
        with open(os.path.join(args.out, "finetune.log"), "a") as log:
            log.write(line + "\n")
        if val["top1"] > best:
            best = val["top1"]
            save_parameters(net, os.path.join(args.out, "best.params"))
    train_dir = os.path.join(os.path.expanduser(args.data), "train")
    synsets = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    print("best val top-1 %.4f; %s holds the fine-tuned network (label i = class folder i "
          "in sorted order: %s)" % (best, os.path.join(args.out, "best.params"),
                                    ", ".join(synsets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
