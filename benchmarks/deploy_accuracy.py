#!/usr/bin/env python
"""Accuracy of resattn's CPU inference paths against float32 on a trained model.

Top-1 on the test split, its drop against float32 in points, and how often
each path's prediction equals float32's on every image of both splits (a
finer measure than top-1 on a few hundred test images), for: the oneDNN-fused
graph, INT8 ('naive' and 'entropy' calibration on a few training batches)
and BF16.

Usage, with the demo model of docs/deployment.md::

    resattn train --model attention56_cifar --width-mult 0.0625 --dataset digits \\
        --epochs 15 --batch-size 64 --warmup-epochs 1 --mixup-off-epochs 3 \\
        --out /tmp/deploy_demo --no-progress
    python benchmarks/deploy_accuracy.py --params /tmp/deploy_demo/best.params
"""
import argparse
import json
import sys
import warnings


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", required=True,
                   help=".params from `resattn train` (config.json beside it gives the model)")
    p.add_argument("--dataset", default=None, help="default: the run's dataset")
    p.add_argument("--calib-batches", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="calibration batch size")
    p.add_argument("--no-amx", action="store_true", help="leave Intel AMX off")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")

    import mxnet as mx
    import numpy as np

    from resattn import deploy, get_model
    from resattn.cli import saved_config
    from resattn.data import dataset_info, get_data_loader
    from resattn.io import load_parameters

    amx = False if args.no_amx else deploy.enable_amx()
    saved = saved_config(args.params)
    if not saved.get("model"):
        raise SystemExit("no config.json with a model name beside %s" % args.params)
    dataset = args.dataset or saved["dataset"]
    classes = dataset_info(dataset)["classes"]

    def fresh():
        net = get_model(saved["model"], classes=classes, **saved.get("model_kwargs", {}))
        load_parameters(net, args.params)
        return net

    def images(train):
        loader = get_data_loader(dataset, train, 128, augment=False, shuffle=False,
                                 last_batch="keep")
        xs, ys = zip(*[(x, y) for x, y in loader])
        return mx.nd.concat(*xs, dim=0), np.concatenate([y.asnumpy() for y in ys])

    test_x, test_y = images(False)
    train_x, _ = images(True)

    def logits(net, x):
        return np.concatenate([net(x[i:i + 128]).asnumpy().astype(np.float32)
                               for i in range(0, x.shape[0], 128)])

    def calib(seed=0):
        np.random.seed(seed)
        return get_data_loader(dataset, True, args.batch_size, augment=False, shuffle=True)

    reference = fresh()
    reference.hybridize(static_alloc=True)
    paths = {"float32": reference, "fused": deploy.optimize(fresh(), batch_size=128)}
    for mode in ("naive", "entropy"):
        paths["int8-%s" % mode] = deploy.quantize(fresh(), calib(), args.calib_batches,
                                                  calib_mode=mode)
    paths["bf16"] = deploy.to_bfloat16(fresh())
    ref_test, ref_train = logits(reference, test_x), logits(reference, train_x)
    ref_top1 = float((ref_test.argmax(1) == test_y).mean())
    rows = []
    for name, net in paths.items():
        out_test, out_train = logits(net, test_x), logits(net, train_x)
        top1 = float((out_test.argmax(1) == test_y).mean())
        agree = float(np.concatenate([out_test.argmax(1) == ref_test.argmax(1),
                                      out_train.argmax(1) == ref_train.argmax(1)]).mean())
        rel = float(np.abs(out_test - ref_test).max() / np.abs(ref_test).max())
        rows.append(dict(path=name, top1=top1, drop_points=100 * (ref_top1 - top1),
                         agreement=agree, max_rel_logit_diff=rel))
    n_all = test_x.shape[0] + train_x.shape[0]
    print("%s (%s) on %s: %d test images; agreement over all %d images; AMX %s; INT8 "
          "calibrated on %d batches of %d" % (saved["model"], saved.get("model_kwargs"),
                                              dataset, test_x.shape[0], n_all,
                                              "on" if amx else "off", args.calib_batches,
                                              args.batch_size))
    print("\n| path | top-1 | drop (points) | same prediction as float32 | max rel. logit diff |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print("| %s | %.2f%% | %.2f | %.2f%% | %.1e |" % (
            r["path"], 100 * r["top1"], r["drop_points"], 100 * r["agreement"],
            r["max_rel_logit_diff"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(model=saved["model"], dataset=dataset, amx=amx, rows=rows), f,
                      indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
