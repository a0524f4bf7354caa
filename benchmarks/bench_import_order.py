#!/usr/bin/env python
"""A 3x3 convolution whatever the import order: MXNet first, resattn first, threads by hand.

Each case runs in a fresh process with no thread variable set (but the ``by hand`` case,
``OMP_NUM_THREADS`` = physical cores), the cases interleaved over ``--rounds`` rounds;
the table gives the median GFLOP/s of ``mx.nd.Convolution`` (batch 32, 64 -> 64
channels, 56x56) and each case's ratio to the threads set by hand.

Usage::

    python benchmarks/bench_import_order.py --rounds 5
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import describe_machine

#: case -> (the imports, in order, before the convolution; whether OMP_NUM_THREADS is set).
CASES = {
    "OMP_NUM_THREADS by hand": ("import mxnet as mx", True),
    "resattn, then MXNet": ("import resattn\nimport mxnet as mx", False),
    "MXNet, then resattn": ("import mxnet as mx\nimport resattn", False),
    "MXNet, an operator, then resattn": (
        "import mxnet as mx\nmx.nd.ones((2,)).asnumpy()\nimport resattn", False),
    "MXNet alone (its default)": ("import mxnet as mx", False),
}

TIMED = """
import json, time
{imports}
x = mx.nd.random.uniform(shape=(32, 64, 56, 56))
w = mx.nd.random.uniform(shape=(64, 64, 3, 3))
def conv():
    return mx.nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=64, no_bias=True)
for _ in range(3):
    conv().wait_to_read()
n, start = {iters}, time.perf_counter()
for _ in range(n):
    y = conv()
y.wait_to_read()
print(json.dumps(2 * 32 * 64 * 64 * 9 * 56 * 56 * n / (time.perf_counter() - start) / 1e9))
"""


def run_case(imports, by_hand, cores, iters):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "KMP_", "MKL_", "OPENBLAS_NUM", "MXNET_OMP"))
           and k != "RESATTN_AUTO_THREADS"}
    if by_hand:
        env["OMP_NUM_THREADS"] = str(cores)
    proc = subprocess.run([sys.executable, "-c", TIMED.format(imports=imports, iters=iters)],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args(argv)
    from resattn._threads import physical_cores
    cores = physical_cores()
    print(describe_machine())
    rates = {name: [] for name in CASES}
    names = list(CASES)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            rates[name].append(run_case(CASES[name][0], CASES[name][1], cores, args.iters))
    base = statistics.median(rates["OMP_NUM_THREADS by hand"])
    print("\n| imports | GFLOP/s (median of %d) | vs threads by hand |\n|---|---:|---:|"
          % args.rounds)
    for name in names:
        rate = statistics.median(rates[name])
        print("| %s | %.1f | %.2fx |" % (name, rate, rate / base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
