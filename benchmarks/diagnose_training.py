#!/usr/bin/env python
"""What goes wrong inside a small run that fails: measurements at every step of its start.

Trains ``make demo``'s recipe (or the flags given) with resattn's own
``Trainer`` and, after chosen steps, copies the parameters into an
imperative probe network and measures, on one fixed test batch:

* the loss in training mode (batch statistics) and in evaluation mode
  (running statistics): a gap between them is a BatchNorm mismatch;
* for every BatchNorm, how far the batch's statistics are from the running
  ones (``|mean_b - mean_r| / sqrt(var_r)`` and ``var_b / var_r``, worst
  channel), in training mode;
* for every attention module, the RMS of its input and output, the soft
  mask's mean and the share of saturated mask values (below 0.01 or above 0.99);
* the global norm of the last gradient and of the parameters.

One JSON row per probe goes to ``OUT/probes.jsonl`` and the metrics of the
run to ``OUT/metrics.jsonl`` (the run is a normal ``resattn`` run).

Usage::

    python benchmarks/diagnose_training.py --seed 0 --out runs/diagnose/seed0
    python benchmarks/diagnose_training.py --seed 0 --attention none --out runs/diagnose/plain0
"""
import argparse
import json
import math
import os
import sys

from _common import describe_machine


def _probe_steps(iters_per_epoch, epochs, first):
    steps = set(range(1, first + 1))
    steps.update(range(first, iters_per_epoch * epochs + 1, max(1, iters_per_epoch // 2)))
    return steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--attention", default="mixed", help="mixed, channel, spatial or none")
    p.add_argument("--learning", default="arl")
    p.add_argument("--width-mult", type=float, default=0.0625)
    p.add_argument("--model", default="attention56_cifar")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--last-gamma", action="store_true",
                   help="the model's last_gamma=True: each unit's last BatchNorm scale at zero")
    p.add_argument("--zero-init-residual", action="store_true",
                   help="the trainer's zero_init_residual: each unit's branch starts at zero")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--mixup-off-epochs", type=int, default=3)
    p.add_argument("--first-steps", type=int, default=30, help="probe each of these steps")
    p.add_argument("--subset", type=int, default=None, help="only the first N images")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(describe_machine(), flush=True)

    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon

    import resattn
    from resattn.data import dataset_info, get_data_loader
    from resattn._compat import iter_blocks
    from resattn.models.blocks import AttentionModule
    from resattn.training import Callback, TrainConfig, default_callbacks, fit

    info = dataset_info(args.dataset)
    classes = info["classes"]
    kwargs = dict(width_mult=args.width_mult, classes=classes, learning=args.learning)
    kwargs["attention"] = args.attention
    if args.last_gamma:
        kwargs["last_gamma"] = True
    net = resattn.get_model(args.model, **kwargs)
    probe = resattn.get_model(args.model, **kwargs)
    probe.initialize()
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, warmup_epochs=args.warmup_epochs,
                      mixup_off_epochs=args.mixup_off_epochs, seed=args.seed, lr=args.lr,
                      zero_init_residual=args.zero_init_residual)
    train = get_data_loader(args.dataset, True, cfg.batch_size, seed=cfg.seed, subset=args.subset)
    val = get_data_loader(args.dataset, False, cfg.batch_size, seed=cfg.seed, subset=args.subset)
    x, y = next(iter(val))
    probe(x)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    steps = _probe_steps(len(train), cfg.epochs, args.first_steps)

    bn_stats, mod_stats = {}, {}

    def bn_hook(block, inputs, output):
        data = inputs[0]
        mean = data.mean(axis=(0, 2, 3))
        var = ((data - mean.reshape((1, -1, 1, 1))) ** 2).mean(axis=(0, 2, 3))
        rm, rv = block.running_mean.data(), block.running_var.data()
        shift = (mx.nd.abs(mean - rm) / mx.nd.sqrt(rv + 1e-5)).max().asscalar()
        ratio = (var / (rv + 1e-5))
        bn_stats[block.name] = (float(shift), float(ratio.max().asscalar()),
                                float(ratio.min().asscalar()))

    def module_hook(block, inputs, output):
        out, mask = block.attend(mx.nd, inputs[0])
        m = mask.asnumpy()
        mod_stats[block.name] = {
            "in_rms": float(np.sqrt((inputs[0].asnumpy() ** 2).mean())),
            "out_rms": float(np.sqrt((out.asnumpy() ** 2).mean())),
            "mask_mean": float(m.mean()), "mask_std": float(m.std()),
            "mask_saturated": float(((m < 0.01) | (m > 0.99)).mean())}

    modules = []
    for block in iter_blocks(probe):
        if isinstance(block, gluon.nn.BatchNorm):
            block.register_forward_hook(bn_hook)
        elif isinstance(block, AttentionModule):
            block.register_forward_hook(module_hook)
            modules.append(block.name)

    class Probe(Callback):
        def __init__(self):
            self.rows, self.step = [], 0
            self.path = os.path.join(args.out, "probes.jsonl")

        def on_batch_end(self, trainer, epoch, batch):
            self.step += 1
            if self.step not in steps:
                return
            src = trainer.net.collect_params()
            grad_sq = param_sq = 0.0
            for (name, param), (_, target) in zip(sorted(src.items()),
                                                  sorted(probe.collect_params().items())):
                data = param.data()
                target.set_data(data)
                param_sq += float((data ** 2).sum().asscalar())
                if param.grad_req != "null":
                    grad_sq += float((param.grad() ** 2).sum().asscalar())
            row = {"step": self.step, "epoch": epoch + 1, "batch": batch,
                   "lr": trainer.trainer.learning_rate,
                   "grad_norm": math.sqrt(grad_sq), "param_norm": math.sqrt(param_sq)}
            bn_stats.clear()
            mod_stats.clear()
            with autograd.train_mode():  # batch statistics, as training sees them
                row["loss_train_mode"] = float(loss_fn(probe(x), y).mean().asscalar())
            shifts = sorted(bn_stats.values(), key=lambda v: -v[0])
            row["bn_worst_mean_shift"] = shifts[0][0] if shifts else None
            row["bn_worst_var_ratio"] = max((v[1] for v in bn_stats.values()), default=None)
            row["bn_smallest_var_ratio"] = min((v[2] for v in bn_stats.values()), default=None)
            row["bn_worst"] = max(bn_stats, key=lambda k: bn_stats[k][0]) if bn_stats else None
            row["modules_train_mode"] = dict(mod_stats)
            mod_stats.clear()
            # That pass moved the probe's running statistics: copy them back.
            for (name, param), (_, target) in zip(sorted(src.items()),
                                                  sorted(probe.collect_params().items())):
                target.set_data(param.data())
            logits = probe(x)
            row["loss_eval_mode"] = float(loss_fn(logits, y).mean().asscalar())
            row["top1_eval_mode"] = float((logits.argmax(axis=1) == y.astype("float32"))
                                          .mean().asscalar())
            row["modules_eval_mode"] = dict(mod_stats)
            self.rows.append(row)
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    os.makedirs(args.out, exist_ok=True)
    if os.path.exists(os.path.join(args.out, "probes.jsonl")):
        os.remove(os.path.join(args.out, "probes.jsonl"))
    callbacks = default_callbacks(args.out, progress=False) + [Probe()]
    history = fit(net, train, val, args.out, config=cfg, classes=classes, overwrite=True,
                  progress=False, callbacks=callbacks)
    for r in history:
        print("epoch %d train_loss %.3f val_loss %.3g val_top1 %.4f" % (
            r["epoch"], r["train_loss"], r["val_loss"], r["val_top1"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
