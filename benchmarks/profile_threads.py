#!/usr/bin/env python
"""How many OpenMP threads, and which wait policy, on this machine: measured, not assumed.

Each case runs in a fresh process (MXNet reads ``OMP_NUM_THREADS`` and
libgomp reads ``OMP_WAIT_POLICY`` once, at import) and times training steps
and inference batches of two networks side by side:

* ``tiny``: make demo's Attention-56 / 16 (30.7k parameters), batch 64 at
  32 px, where every operator is small and threading overhead dominates;
* ``a92``: Attention-92 for CIFAR at full width, batch 32, where the
  convolutions dominate.

Thread counts: 1 and every physical core of this process
(:func:`resattn._threads.physical_cores`); wait policies: libgomp's default
(spin, then sleep) and ``PASSIVE`` (sleep at once). With ``--busy`` each
case is also run next to one busy-looping process, as on a machine shared
with another job: a spinning OpenMP team whose threads lose their core to
another process waits at every barrier.

Usage::

    python benchmarks/profile_threads.py               # both networks, quiet and busy
    python benchmarks/profile_threads.py --nets tiny --steps 30
"""
import argparse
import json
import os
import subprocess
import sys
import time

from _common import describe_machine

CHILD = r"""
import json, os, resource, sys, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
import mxnet as mx
from _common import mxnet_step
import resattn
net_name, mode, steps = sys.argv[2], sys.argv[3], int(sys.argv[4])
if net_name == "tiny":
    net, batch, size = resattn.get_model("attention56_cifar", width_mult=0.0625, classes=10), 64, 32
else:
    net, batch, size = resattn.get_model("attention92_cifar", classes=10), 32, 32
net.initialize(mx.init.MSRAPrelu())
net.hybridize(static_alloc=True)
x = mx.nd.random.uniform(shape=(batch, 3, size, size))
y = mx.nd.array([i % 10 for i in range(batch)])
step = mxnet_step(net, x, y if mode == "train" else None)
for _ in range(3):
    step()
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu0, tic = usage.ru_utime + usage.ru_stime, time.perf_counter()
for _ in range(steps):
    step()
wall = time.perf_counter() - tic
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"img_per_s": batch * steps / wall,
                  "cpu_per_wall": (usage.ru_utime + usage.ru_stime - cpu0) / wall}))
"""


def busy_loop():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(net, mode, steps, threads, policy):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(__file__), net, mode,
                          str(steps)], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", nargs="+", default=["tiny", "a92"], choices=["tiny", "a92"])
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--steps", type=int, default=None, help="per case (tiny 30, a92 5)")
    p.add_argument("--busy", action="store_true", help="also next to one busy process")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    from resattn._threads import physical_cores
    cores = physical_cores()
    print(describe_machine(), flush=True)
    thread_counts = sorted({1, cores})
    results = []
    print("| net | mode | load | threads | wait policy | img/s | CPU s per s |")
    print("|---|---|---|---:|---|---:|---:|")
    for net in args.nets:
        steps = args.steps or (30 if net == "tiny" else 5)
        for mode in args.modes:
            for load in (["quiet", "busy"] if args.busy else ["quiet"]):
                hog = busy_loop() if load == "busy" else None
                try:
                    if hog:
                        time.sleep(0.5)
                    for threads in thread_counts:
                        for policy in ("default", "PASSIVE"):
                            r = measure(net, mode, steps, threads, policy)
                            results.append(dict(r, net=net, mode=mode, load=load,
                                                threads=threads, policy=policy))
                            print("| %s | %s | %s | %d | %s | %.1f | %.2f |" % (
                                net, mode, load, threads, policy, r["img_per_s"],
                                r["cpu_per_wall"]), flush=True)
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": describe_machine(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
