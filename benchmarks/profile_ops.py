#!/usr/bin/env python
"""Top operators of an Attention-92 (CIFAR) training step or inference batch, from MXNet's profiler.

``--imagenet`` profiles Attention-56 at 224 px, batch 8 (GluonCV's
``residualattentionnet56``), the ImageNet-size case of ``bench_throughput.py``.

Operator bulking is switched off (``MXNET_EXEC_BULK_EXEC_TRAIN=0``,
``MXNET_EXEC_BULK_EXEC_INFERENCE=0``) so that every operator is timed on its
own; that costs a little speed, so use ``bench_throughput.py`` for throughput.

Usage::

    python benchmarks/profile_ops.py --impl resattn --mode train
    python benchmarks/profile_ops.py --impl gluoncv --mode train
    python benchmarks/profile_ops.py --impl resattn --mode fused --top 12
    python benchmarks/profile_ops.py --imagenet --impl gluoncv --mode infer
"""
import argparse
import os
import sys
import warnings

from _common import WORKLOADS, mxnet_step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=("resattn", "gluoncv"), default="resattn")
    p.add_argument("--mode", choices=("train", "infer", "fused", "int8", "bf16"),
                   default="train", help="fused/int8/bf16: resattn.deploy paths (resattn only)")
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--imagenet", action="store_true",
                   help="Attention-56 at 224 px, batch 8, instead of Attention-92 CIFAR")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS (default: all CPUs of this process)")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads or len(os.sched_getaffinity(0)))
    os.environ["MXNET_EXEC_BULK_EXEC_TRAIN"] = "0"
    os.environ["MXNET_EXEC_BULK_EXEC_INFERENCE"] = "0"
    warnings.filterwarnings("ignore")
    import mxnet as mx
    import numpy as np
    from mxnet import profiler

    from resattn import deploy, get_model
    from resattn._compat import import_gluoncv

    if args.impl == "gluoncv" and args.mode not in ("train", "infer"):
        raise SystemExit("--mode %s is a resattn.deploy path; GluonCV has train and infer"
                         % args.mode)
    amx = deploy.enable_amx() if args.mode in ("int8", "bf16") else False
    rng = np.random.RandomState(0)
    work = WORKLOADS["imagenet" if args.imagenet else "cifar"]
    batch, size = work["batch"], work["size"]
    x = mx.nd.array(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    y = mx.nd.array(rng.randint(0, work["classes"], batch))
    if args.impl == "resattn":
        net = get_model(work["model"])
    else:
        net = import_gluoncv().model_zoo.get_model(work["gluoncv"])
    net.initialize(mx.init.MSRAPrelu())
    net(x)
    if args.mode == "fused":
        net = deploy.optimize(net, size, batch)
    elif args.mode == "int8":
        net = deploy.quantize(net, [x], 1)
    elif args.mode == "bf16":
        net = deploy.to_bfloat16(net, size)
    else:
        net.hybridize(static_alloc=True, static_shape=True)
    step = mxnet_step(net, x, y if args.mode == "train" else None)
    step()
    step()
    # The profiler writes (and at exit replaces) its trace file: never point it at
    # os.devnull, which it would turn into a regular file for every process on the machine.
    import shutil
    import tempfile
    trace_dir = tempfile.mkdtemp(prefix="resattn-profile-")
    profiler.set_config(profile_all=True, aggregate_stats=True,
                        filename=os.path.join(trace_dir, "profile.json"))
    profiler.set_state("run")
    for _ in range(args.steps):
        step()
    mx.nd.waitall()
    profiler.set_state("stop")
    table = profiler.dumps(reset=True, format="json")
    profiler.dump(finished=True)  # the trace now, not at exit: then the folder can go
    shutil.rmtree(trace_dir, ignore_errors=True)
    import json
    stats = json.loads(table)["Time"]["operator"]
    ops = sorted(((name, s["Total"] / args.steps, s["Count"] // args.steps)
                  for name, s in stats.items()), key=lambda r: -r[1])
    total = sum(t for _, t, _ in ops)
    print("%s %s, %s, batch %d, %d px, OMP_NUM_THREADS=%s%s: %.0f ms of operator "
          "time per %s" % (args.impl, args.mode, work["model"], batch, size,
                           os.environ["OMP_NUM_THREADS"],
                           ", AMX" if amx else "", total,
                           "step" if args.mode == "train" else "batch"))
    print("\n| operator | calls | ms | share |")
    print("|---|---:|---:|---:|")
    for name, ms, calls in ops[:args.top]:
        print("| %s | %d | %.1f | %.0f%% |" % (name.replace("_", r"\_"), calls, ms,
                                               100 * ms / total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
