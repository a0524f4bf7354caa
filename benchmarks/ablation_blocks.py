#!/usr/bin/env python
"""What each speed change inside resattn's attention module gained, measured side by side.

Builds attention92_cifar three times, the soft mask traced as

* ``before``: the original ``F.sigmoid`` and ``contrib.BilinearResize2D``,
* ``sigmoid``: ``Activation(act_type='sigmoid')`` (oneDNN) instead,
* ``now``: that plus the resize as two small matrix products (the current code),

and times a training step or an inference batch of each, interleaved, reporting
the median wall time and the process CPU time per batch (CPU time is steadier
when other jobs share the machine). The older variants are rebuilt by swapping
two private hooks of :mod:`resattn.blocks` while the graphs are traced; the
parameters and the arithmetic are the same in all three.

Usage::

    python benchmarks/ablation_blocks.py --mode train      # or infer, fused
"""
import argparse
import os
import resource
import statistics
import sys
import time
import warnings

from _common import mxnet_step


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("train", "infer", "fused"), default="train")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=None, help="batches per timing (2 / 5)")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS (default: all CPUs of this process)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads or len(os.sched_getaffinity(0))))
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    warnings.filterwarnings("ignore")
    import mxnet as mx
    import numpy as np

    from resattn import deploy, get_model
    from resattn.models import blocks

    def op_resize(F, x, like):
        return F.contrib.BilinearResize2D(x, like=like, mode="like")

    def old_activate(self, F, z):
        return F.sigmoid(z)

    hooks = {"before": (op_resize, old_activate),
             "sigmoid": (op_resize, blocks.AttentionModule._activate),
             "now": (blocks._resize_like, blocks.AttentionModule._activate)}
    saved = (blocks._resize_like, blocks.AttentionModule._activate)
    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.standard_normal((32, 3, 32, 32)).astype(np.float32))
    y = mx.nd.array(rng.randint(0, 10, 32))
    steps = {}
    for name, (resize, activate) in hooks.items():
        blocks._resize_like, blocks.AttentionModule._activate = resize, activate
        try:
            mx.random.seed(0)
            net = get_model("attention92_cifar", width_mult=args.width_mult)
            net.initialize(mx.init.MSRAPrelu())
            net(x)
            if args.mode == "fused":
                net = deploy.optimize(net, 32, 32)
            else:
                net.hybridize(static_alloc=True, static_shape=True)
            step = mxnet_step(net, x, y if args.mode == "train" else None)
            step()  # traces the graph while the hooks are in place
        finally:
            blocks._resize_like, blocks.AttentionModule._activate = saved
        steps[name] = step
    iters = args.iters or (2 if args.mode == "train" else 5)
    wall = {n: [] for n in steps}
    cpu = {n: [] for n in steps}
    names = list(steps)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            steps[name]()
            c, t = cpu_seconds(), time.perf_counter()
            for _ in range(iters):
                steps[name]()
            wall[name].append((time.perf_counter() - t) / iters * 1e3)
            cpu[name].append((cpu_seconds() - c) / iters * 1e3)
    base = statistics.median(wall["before"])
    print("attention92_cifar x%g, batch 32, %s, OMP_NUM_THREADS=%s, medians of %d rounds"
          % (args.width_mult, args.mode, os.environ["OMP_NUM_THREADS"], args.rounds))
    print("| graph | ms/batch | img/s | vs before | CPU ms/batch |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        ms = statistics.median(wall[name])
        print("| %s | %.0f | %.1f | %.2fx | %.0f |" % (name, ms, 32e3 / ms, base / ms,
                                                     statistics.median(cpu[name])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
