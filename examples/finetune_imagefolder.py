"""Fine-tune a trained network on your own image folder.

Loads trained weights with ``resattn.load_model`` (a published tag such as
``seed-97.14``, a file from ``resattn train``, ``resattn convert`` or
``examples/load_pytorch_weights.py``) into the model they were trained as,
replaces the classifier with a new ``nn.Dense`` for your classes, and trains
on ``DATA/train/<class>/*.jpg`` with ``DATA/val/<class>/*.jpg`` for
validation (the ``imagefolder:DATA`` dataset: ImageNet-style crops at the
weights' input size, normalised with the weights' mean and std unless
``--dataset-stats``). ``best.params`` is written with its weight config, so
``resattn.load_model`` and ``resattn predict`` read it back with the class
names. Tutorial: docs/tutorials/finetune.md.

    python examples/finetune_imagefolder.py --data ~/flowers \\
        --checkpoint seed-97.14 --epochs 10 --out runs/flowers
"""
import argparse
import json
import os
import sys
import time

import mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import nn

from resattn import get_model, load_model
from resattn.data import dataset_info, get_data_loader
from resattn.io import save_weights
from resattn.training import evaluate, get_context


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train/<class>/ and val/<class>/")
    p.add_argument("--model", default=None,
                   help="the checkpoint's model; needed only for a .params file without a "
                        "config (default: the weights'; attention92_cifar from scratch)")
    p.add_argument("--checkpoint", default=None, metavar="PARAMS|TAG",
                   help="resattn .params file or published tag (`resattn list --pretrained`) "
                        "to start from (none: train from scratch)")
    p.add_argument("--checkpoint-classes", type=int, default=None,
                   help="classes of the checkpoint's classifier, where nothing else says")
    p.add_argument("--width-mult", type=float, default=None,
                   help="as the checkpoint was built (default: the weights' config says)")
    p.add_argument("--image-size", type=int, default=None,
                   help="default: the weights' input size")
    p.add_argument("--dataset-stats", action="store_true",
                   help="normalise with the dataset's mean and std, not the weights'")
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
    kwargs = {} if args.width_mult is None else {"width_mult": args.width_mult}
    if args.checkpoint:
        # The model, its arguments and preprocessing from the weights' config (or the run's
        # config.json); every name and shape is checked.
        net = load_model(args.checkpoint, model=args.model, ctx=ctx,
                         classes=args.checkpoint_classes, **kwargs)
    else:
        net = get_model(args.model or "attention92_cifar", **kwargs)
        net.initialize(mx.init.MSRAPrelu(), ctx=ctx)
    cfg = net.pretrained_cfg
    size = args.image_size or cfg.input_size
    mean, std = info["mean"], info["std"]
    if not cfg.is_default and not args.dataset_stats:
        mean, std = cfg.normalization()  # the new data as the weights expect it
    print("%s: %s px, mean %s, std %s" % (cfg.tag or cfg.file or cfg.model, size,
                                          tuple(round(m, 4) for m in mean),
                                          tuple(round(v, 4) for v in std)), flush=True)
    arch = dict(cfg.arch, **kwargs)
    replace_classifier(net, info["classes"], ctx)
    if args.freeze_features:
        for param in net.features.collect_params().values():
            param.grad_req = "null"
    net.hybridize(static_alloc=True)

    train_data = get_data_loader(name, True, args.batch_size, num_workers=args.num_workers,
                                 image_size=size, normalize=(mean, std), last_batch="keep")
    val_data = get_data_loader(name, False, args.batch_size, num_workers=args.num_workers,
                               image_size=size, normalize=(mean, std))
    steps = args.epochs * len(train_data)
    trainer = gluon.Trainer(
        [p for p in net.collect_params().values() if p.grad_req != "null"], "nag",
        {"learning_rate": args.lr, "momentum": 0.9, "wd": args.wd,
         "lr_scheduler": mx.lr_scheduler.CosineScheduler(max(steps, 1), base_lr=args.lr)})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(dict(vars(args), model=cfg.model, model_kwargs=kwargs,
                       classes=info["classes"], dataset=name), f, indent=2)
    train_dir = os.path.join(os.path.expanduser(args.data), "train")
    synsets = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    # What resattn.load_model reads back: the model, its arguments and the preprocessing of
    # the validation images (the imagefolder dataset's shorter-side resize and centre crop).
    weights_config = dict(
        arch=dict(arch, classes=info["classes"]),
        preprocessing=cfg.replace(input_size=size, scale=255.0, mean=mean, std=std,
                                  crop_mode="center", crop_pct=0.875,
                                  interpolation="bilinear").preprocessing(),
        class_names=synsets,
        provenance={"finetuned_from": args.checkpoint, "dataset": name})
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
            save_weights(net, os.path.join(args.out, "best.params"), cfg.model,
                         **weights_config)
    print("best val top-1 %.4f; %s holds the fine-tuned network (label i = class folder i "
          "in sorted order: %s)" % (best, os.path.join(args.out, "best.params"),
                                    ", ".join(synsets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
