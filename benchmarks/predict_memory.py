#!/usr/bin/env python
"""Peak memory of ``resattn predict`` against the number of images: it must not grow with them.

Writes N random PNG images (32x32 by default) and a tiny Attention-56 weight file, then runs
``resattn predict --format json`` in a fresh process on 1 image and on N, and prints each
peak resident set size (``ru_maxrss`` of the child), the difference and the seconds taken.

Usage::

    python benchmarks/predict_memory.py --images 2000
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from _common import describe_machine


def peak_rss(argv):
    """``(peak resident MiB, seconds, stdout lines)`` of ``python -m resattn ARGV``."""
    code = ("import resource, runpy, sys; sys.argv = ['resattn'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('resattn', run_name='__main__')\n"
            "except SystemExit as e:\n    status = e.code\n"
            "sys.stderr.write('peak_kib %d\\n' % resource.getrusage(resource.RUSAGE_SELF)"
            ".ru_maxrss)\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code] + argv, capture_output=True, text=True)
    took = time.perf_counter() - start
    peak = [line for line in proc.stderr.splitlines() if line.startswith("peak_kib")]
    if not peak:
        raise SystemExit("resattn predict failed:\n" + proc.stderr[-2000:])
    return int(peak[-1].split()[1]) / 1024.0, took, len(proc.stdout.splitlines())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    import cv2
    import mxnet as mx
    import numpy as np

    import resattn
    from resattn.io import save_weights
    print(describe_machine())
    with tempfile.TemporaryDirectory() as d:
        net = resattn.get_model("attention56_cifar", width_mult=0.0625)
        net.initialize(mx.init.Xavier())
        net(mx.nd.zeros((1, 3, 32, 32)))
        weights = os.path.join(d, "w.params")
        save_weights(net, weights, "attention56_cifar",
                     arch={"width_mult": 0.0625, "classes": 10},
                     preprocessing=net.pretrained_cfg.preprocessing())
        folder = os.path.join(d, "images")
        os.mkdir(folder)
        rng = np.random.RandomState(0)
        for i in range(args.images):
            cv2.imwrite(os.path.join(folder, "%05d.png" % i),
                        rng.randint(0, 255, (args.size, args.size, 3), dtype=np.uint8))
        base = ["predict", "--params", weights, "--format", "json", "--batch-size",
                str(args.batch_size)]
        one = peak_rss(base + [os.path.join(folder, "00000.png")])
        many = peak_rss(base + [folder])
    print("images  peak RSS (MiB)  seconds  results")
    print("%6d  %14.0f  %7.1f  %7d" % ((1,) + one))
    print("%6d  %14.0f  %7.1f  %7d" % ((args.images,) + many))
    print("difference: %.0f MiB for %d more images (%s px, batch %d)"
          % (many[0] - one[0], args.images - 1, args.size, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
