"""Export a trained network to ONNX, check it, and quantize it to INT8 for CPU inference.

1. ``resattn.deploy.export_onnx``: an ONNX file with dynamic batch, height
   and width (the soft masks resize to whatever size arrives);
2. ``resattn.deploy.check_onnx``: ONNX Runtime against MXNet at two sizes;
3. ``resattn.deploy.quantize`` (``--int8``): post-training INT8 calibrated on
   a few batches, compared with float32 on the test split, saved as an MXNet
   symbol file pair.

Guide: docs/deployment.md; tutorial: docs/tutorials/export_onnx.md.

    make demo
    python examples/export_onnx.py --params runs/demo/best.params -o demo.onnx --int8
"""
import argparse
import json
import os
import sys

import mxnet as mx

from resattn import get_model
from resattn.data import dataset_info, get_data_loader
from resattn.deploy import check_onnx, export_onnx, quantize
from resattn.io import load_parameters
from resattn.training import evaluate


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=None,
                   help="trained .params (model, widths, data set from its config.json); "
                        "without it a random network, to try the tools")
    p.add_argument("--model", default=None, help="default: from config.json")
    p.add_argument("--width-mult", type=float, default=None, help="default: from config.json")
    p.add_argument("--dataset", default=None,
                   help="calibration and test data (default: from config.json, else digits)")
    p.add_argument("-o", "--out", default="model.onnx", help="ONNX file to write")
    p.add_argument("--int8", action="store_true", help="also quantize to INT8 and compare")
    p.add_argument("--calib-batches", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--subset", type=int, default=None, help="first N test images only")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    run = {}
    if args.params:
        config = os.path.join(os.path.dirname(os.path.abspath(args.params)), "config.json")
        if os.path.isfile(config):
            with open(config) as f:
                run = json.load(f)
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
        print("no --params: exporting a randomly initialised %s" % model)
        net.initialize(mx.init.MSRAPrelu())
    size = info["input_size"]  # the data set's: what the network was trained on

    export_onnx(net, args.out, input_size=size)
    diffs = check_onnx(args.out, net, input_sizes=(size, (size + 8, size - 8)))
    print("wrote %s; ONNX Runtime vs MXNet, max relative difference: %s" % (
        args.out, ", ".join("%s %.2g" % ("x".join(map(str, s)), d) for s, d in diffs.items())))
    print("preprocessing the file expects: %dx%d RGB in [0, 1], minus mean %s, over std %s"
          % (size, size, tuple(round(m, 4) for m in info["mean"]),
             tuple(round(s, 4) for s in info["std"])))

    if args.int8:
        test = get_data_loader(dataset, False, args.batch_size, subset=args.subset)
        calib = get_data_loader(dataset, True, args.batch_size, augment=False, shuffle=True)
        qnet = quantize(net, calib, num_calib_batches=args.calib_batches)
        fp32, int8 = evaluate(net, test, classes=info["classes"]), \
            evaluate(qnet, test, classes=info["classes"])
        prefix = os.path.splitext(args.out)[0] + "-int8"
        qnet.export(prefix)
        print("INT8: top-1 %.4f (float32 %.4f) on %d test images; saved %s-symbol.json and "
              "%s-0000.params (load with mxnet.gluon.SymbolBlock.imports)"
              % (int8["top1"], fp32["top1"], int8["samples"], prefix, prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
