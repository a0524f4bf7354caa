"""`make demo`: train a small Residual Attention Network offline, evaluate it, draw its masks.

Runs entirely on data shipped with scikit-learn (the UCI handwritten digits,
upscaled to 32x32), so it needs no download and finishes in a few minutes on
two CPU cores:

1. ``resattn train`` Attention-56 (CIFAR layout, widths / 16) for 15 epochs;
2. ``resattn eval`` on the saved ``best.params`` (reproduces the logged top-1);
3. ``resattn masks`` draws the soft masks of four test digits.
"""
import argparse
import json
import os
import sys
import time

from resattn.cli import main as resattn

MODEL = ["--model", "attention56_cifar", "--width-mult", "0.0625"]


def run(argv):
    print("$ resattn " + " ".join(argv), flush=True)
    code = resattn(argv)
    if code:
        sys.exit(code)


def demo(out, epochs):
    tic = time.time()
    run(["train"] + MODEL + ["--dataset", "digits", "--epochs", str(epochs), "--batch-size", "64",
                             "--warmup-epochs", "1", "--mixup-off-epochs", "3", "--out", out,
                             "--overwrite"])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        best = max((json.loads(line) for line in f), key=lambda r: r["val_top1"])
    run(["eval", "--params", os.path.join(out, "best.params"), "--dataset", "digits"])
    masks = os.path.join(out, "masks.png")
    run(["masks", "--params", os.path.join(out, "best.params"), "--dataset", "digits",
         "--index", "0", "1", "2", "3", "-o", masks])
    print("\nbest test top-1 %.4f (epoch %d) in %.0f s" % (best["val_top1"], best["epoch"],
                                                          time.time() - tic))
    print("outputs in %s:" % os.path.abspath(out))
    for name in ("metrics.jsonl", "train.log", "config.json", "best.params", "last.params",
                 "curves.png", "masks.png"):
        print("  " + os.path.join(out, name))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    demo(args.out, args.epochs)
