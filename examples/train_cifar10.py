"""Train a zoo model on CIFAR-10 with the seed's recipe, from Python.

The same run as ``resattn train --model attention92_cifar --dataset cifar10
--out runs/a92``: Nesterov SGD, 0.1 x batch/64 with 5 warm-up epochs then
cosine decay, mixup off for the last 20 epochs, no weight decay on biases and
BatchNorm, MSRAPrelu initialisation, 220 epochs (the defaults of
``resattn.training.TrainConfig``; provenance in docs/training.md). CIFAR-10
downloads on first use (Gluon's downloader). Tutorial:
docs/tutorials/train_cifar10.md.

    python examples/train_cifar10.py --gpus 0 --cutout 16 --out runs/a92   # the real run
    python examples/train_cifar10.py --dataset digits --epochs 1 \\
        --width-mult 0.0625 --subset 64 --out /tmp/tiny             # a smoke test
"""
import argparse
import sys

from resattn import get_model
from resattn.data import dataset_info, get_data_loader
from resattn.training import TrainConfig, fit, get_context


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="attention92_cifar")
    p.add_argument("--dataset", default="cifar10",
                   help="cifar10, cifar100, digits (offline), ... (see resattn.data.DATASETS)")
    p.add_argument("--data-root", default=None, help="where CIFAR is stored or downloaded")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=int, default=220)
    p.add_argument("--batch-size", type=int, default=64, help="per step, over all devices")
    p.add_argument("--lr", type=float, default=None, help="default 0.1 x batch/64")
    p.add_argument("--warmup-epochs", type=int, default=5,
                   help="linear warm-up; capped at epochs - 1 for very short runs")
    p.add_argument("--cutout", type=int, default=0, help="cutout square side (0: off)")
    p.add_argument("--gpus", default="", help="e.g. 0,1 (default: CPU)")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--width-mult", type=float, default=1.0, help="scale every width")
    p.add_argument("--subset", type=int, default=None, help="first N images only")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.params")
    p.add_argument("--overwrite", action="store_true", help="start again in an OUT that has a run")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         warmup_epochs=min(args.warmup_epochs, args.epochs - 1))
    ctx = get_context(args.gpus)
    info = dataset_info(args.dataset)
    net = get_model(args.model, classes=info["classes"], width_mult=args.width_mult)

    data_kw = dict(num_workers=args.num_workers, subset=args.subset, seed=config.seed)
    if args.data_root:
        data_kw["root"] = args.data_root
    train_data = get_data_loader(args.dataset, True, config.batch_size, cutout=args.cutout,
                                 **data_kw)
    val_data = get_data_loader(args.dataset, False, config.batch_size, **data_kw)

    extra = {"model": args.model, "dataset": args.dataset, "cutout": args.cutout,
             "model_kwargs": {"width_mult": args.width_mult}, "subset": args.subset}
    history = fit(net, train_data, val_data, args.out, config=config, ctx=ctx,
                  classes=info["classes"], resume=args.resume, overwrite=args.overwrite,
                  progress=not args.no_progress, extra_config=extra)
    best = max(history, key=lambda row: row["val_top1"])
    print("best val_top1 %.4f at epoch %d; checkpoints, metrics.jsonl and curves.png in %s"
          % (best["val_top1"], best["epoch"], args.out))
    print("evaluate with: resattn eval --params %s/best.params --dataset %s"
          % (args.out, args.dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
