#!/usr/bin/env python
"""Throughput of Attention-92 (CIFAR) on CPU: resattn vs GluonCV vs PyTorch.

Training step (forward, loss, backward, SGD update) and inference, in
images/s at batch 32 and 32x32 inputs, for

* resattn ``attention92_cifar`` (float32, hybridized with static memory),
  plus the inference paths of :mod:`resattn.deploy`: oneDNN-fused, INT8, BF16;
* GluonCV ``cifar_residualattentionnet92`` (same architecture, same settings;
  also with the same oneDNN fusion, for reference);
* a PyTorch model of the same architecture written below (CPU, eager), whose
  outputs are checked against resattn's with copied weights before timing.

The implementations run interleaved (one timed run of each per round, the
order rotating), and the table gives medians over rounds, the ratios to
GluonCV and PyTorch, and each figure as a share of this machine's peak: the
float32 FLOP rate of a large NumPy matrix product, with a training step
counted as three forward passes.

Usage::

    python benchmarks/bench_throughput.py                 # full run, ~10 min on 2 cores
    python benchmarks/bench_throughput.py --quick         # 1/4 widths, 1 round, ~1 min
    python benchmarks/bench_throughput.py --json out.json --rounds 7
"""
import argparse
import atexit
import json
import os
import platform
import statistics
import sys
import time
import warnings

from _common import mxnet_step


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: widths x1/4, 1 round, fewer iterations")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=32, help="input side")
    p.add_argument("--train-iters", type=int, default=None, help="timed steps per run (3)")
    p.add_argument("--infer-iters", type=int, default=None, help="timed batches per run (6)")
    p.add_argument("--width-mult", type=float, default=None, help="scale all widths (1)")
    p.add_argument("--only", default=None,
                   help="comma-separated subset of: " + ", ".join(ALL_CASES))
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for MXNet and PyTorch, set before either is "
                        "imported (default: physical cores; 0 leaves the environment and "
                        "MXNet's own default, which is half the logical CPUs)")
    p.add_argument("--no-amx", action="store_true",
                   help="do not let oneDNN use Intel AMX for the INT8 and BF16 paths")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        defaults = dict(rounds=1, train_iters=1, infer_iters=2, width_mult=0.25)
    else:
        defaults = dict(rounds=5, train_iters=3, infer_iters=6, width_mult=1.0)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    cases = ALL_CASES if args.only is None else tuple(args.only.split(","))
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        p.error("unknown --only entries %s; valid: %s" % (unknown, ", ".join(ALL_CASES)))
    args.cases = tuple(c for c in ALL_CASES if c in cases)
    return args


#: (implementation, mode) pairs, in the order of the table.
ALL_CASES = ("resattn:train", "gluoncv:train", "pytorch:train",
             "resattn:infer", "gluoncv:infer", "pytorch:infer",
             "resattn-fused:infer", "resattn-int8:infer", "resattn-bf16:infer",
             "gluoncv-fused:infer")


# ----------------------------------------------------------------------------- PyTorch model
def torch_model(widths=(128, 256, 512, 1024), stem_channels=32, modules=(1, 2, 3),
                stages=(2, 3, 4), classes=10):
    """Attention-92 for CIFAR in PyTorch, module for module as resattn builds it.

    Attribute names and nesting follow resattn's structural parameter names
    (``features.1.1.mask_head.2.weight``), so weights copy over one to one.
    """
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Unit(nn.Module):
        def __init__(self, channels, stride=1, in_channels=0):
            super().__init__()
            in_ch, width = in_channels or channels, channels // 4
            self.bn1 = nn.BatchNorm2d(in_ch)
            self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, channels, 1, bias=False)
            self.proj = (nn.Conv2d(in_ch, channels, 1, stride, bias=False)
                         if stride != 1 or in_ch != channels else None)

        def forward(self, x):
            pre = F.relu(self.bn1(x))
            out = self.conv3(F.relu(self.bn3(self.conv2(F.relu(self.bn2(self.conv1(pre)))))))
            return out + (self.proj(pre) if self.proj is not None else x)

    def units(channels, n):
        return nn.Sequential(*[Unit(channels) for _ in range(n)])

    class Module(nn.Module):
        def __init__(self, channels, stage, p=1, t=2, r=1):
            super().__init__()
            self.num_pools = 4 - stage
            levels = max(self.num_pools, 1)
            self.pre = units(channels, p)
            self.trunk = units(channels, t)
            self.mask_down = nn.Sequential(*[units(channels, 2 * r if i == levels - 1 else r)
                                             for i in range(levels)])
            self.mask_skip = units(channels, levels - 1)
            self.mask_up = nn.Sequential(*[units(channels, r) for _ in range(levels - 1)])
            self.mask_head = nn.Sequential(
                nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False))
            self.post = units(channels, p)

        def soft_mask(self, x, trunk):
            if self.num_pools == 0:
                feat = self.mask_down[0](x)
            else:
                down, feat = [], x
                for level in range(self.num_pools):
                    feat = self.mask_down[level](F.max_pool2d(feat, 3, 2, 1))
                    down.append(feat)
                for level in reversed(range(self.num_pools - 1)):
                    feat = F.interpolate(feat, size=down[level].shape[2:], mode="bilinear",
                                         align_corners=True) + down[level]
                    feat = self.mask_up[level](feat + self.mask_skip[level](down[level]))
                feat = F.interpolate(feat, size=trunk.shape[2:], mode="bilinear",
                                     align_corners=True) + trunk
            return torch.sigmoid(self.mask_head(feat))

        def forward(self, x):
            x = self.pre(x)
            trunk = self.trunk(x)
            return self.post((1 + self.soft_mask(x, trunk)) * trunk)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Sequential(nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False),
                                    nn.BatchNorm2d(stem_channels), nn.ReLU())]
            in_ch = stem_channels
            for i in range(3):
                layers.append(nn.Sequential(Unit(widths[i], 1 if i == 0 else 2, in_ch),
                                            *[Module(widths[i], stages[i])
                                              for _ in range(modules[i])]))
                in_ch = widths[i]
            layers.append(nn.Sequential(Unit(widths[3], 1, in_ch), Unit(widths[3]),
                                        Unit(widths[3]), nn.BatchNorm2d(widths[3]), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten()))
            self.features = nn.Sequential(*layers)
            self.output = nn.Linear(widths[3], classes)

        def forward(self, x):
            return self.output(self.features(x))

    return Net()


# ----------------------------------------------------------------------------- timing
def peak_gflops(n=2048, repeats=7):
    """float32 GFLOP/s of an n x n NumPy matrix product (best of ``repeats``)."""
    import numpy as np
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times) / 1e9


def physical_cores():
    """Cores (not hyper-threads) this process may run on, from sysfs topology."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        base = "/sys/devices/system/cpu/cpu%d/topology/" % cpu
        try:
            with open(base + "physical_package_id") as f, open(base + "core_id") as g:
                cores.add((f.read().strip(), g.read().strip()))
        except OSError:
            return len(os.sched_getaffinity(0))
    return len(cores) or 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _data(batch, size):
    import numpy as np
    rng = np.random.RandomState(0)
    return (rng.standard_normal((batch, 3, size, size)).astype(np.float32),
            rng.randint(0, 10, batch))


def _mxnet_step(name, batch, size, width_mult, amx, info):
    """Build one MXNet case in this (worker) process and return its step function."""
    import mxnet as mx
    import numpy as np

    from resattn import deploy, get_model
    from resattn._compat import import_gluoncv

    info["amx"] = deploy.enable_amx() if amx else False  # before the first operator
    x_np, y_np = _data(batch, size)
    x, y = mx.nd.array(x_np), mx.nd.array(y_np)
    impl, mode = name.split(":")
    if impl.startswith("gluoncv"):
        net = import_gluoncv().model_zoo.get_model("cifar_residualattentionnet92")
    else:
        net = get_model("attention92_cifar", width_mult=width_mult)
    net.initialize(mx.init.MSRAPrelu())
    net(x)
    if impl.endswith("-fused"):
        if impl.startswith("gluoncv"):  # the same fusion resattn.deploy.optimize applies
            net.hybridize()
            net.optimize_for(x, backend=deploy.fusion_backend(), static_alloc=True,
                             static_shape=True)
        else:
            net = deploy.optimize(net, size, batch)
    elif impl.endswith("-int8"):
        calib = [mx.nd.array(np.random.RandomState(s).standard_normal(x.shape)
                             .astype(np.float32)) for s in (1, 2)]
        net = deploy.quantize(net, calib, 2)
    elif impl.endswith("-bf16"):
        net = deploy.to_bfloat16(net, size)
    else:
        net.hybridize(static_alloc=True, static_shape=True)
    return mxnet_step(net, x, None if mode == "infer" else y, wd=1e-4)


def _torch_step(name, batch, size, weights_path, info):
    """Build the PyTorch case, check it against resattn's outputs, return its step."""
    import numpy as np
    import torch
    data = np.load(weights_path)
    widths = tuple(int(w) for w in data["widths"])
    net = torch_model(widths=widths, stem_channels=int(data["stem"]))
    rename = {"gamma": "weight", "beta": "bias"}
    state = {}
    for key in data.files:
        if key.startswith("param:"):
            head, _, leaf = key[6:].rpartition(".")
            state["%s.%s" % (head, rename.get(leaf, leaf))] = torch.from_numpy(data[key])
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError("weight copy failed: missing %s, unexpected %s" % (missing, unexpected))
    x_np, y_np = _data(batch, size)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np).long()
    net.train()  # batch statistics, as resattn's reference output was computed
    with torch.no_grad():
        got = net(torch.from_numpy(data["ref_x"])).numpy()
    ref = data["ref_out"]
    info.update(pytorch_vs_resattn_rel_diff=float(np.abs(got - ref).max() / np.abs(ref).max()),
                torch=torch.__version__, torch_threads=torch.get_num_threads())
    if name.endswith(":infer"):
        net.eval()

        def step():
            with torch.inference_mode():
                net(x)
        return step
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    ce = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        ce(net(x), y).backward()
        opt.step()
    return step


def _worker(conn, name, batch, size, width_mult, amx, weights_path):
    """A case's own process: build it, then time ``iters`` steps whenever asked."""
    warnings.filterwarnings("ignore")
    info = {}
    try:
        if name.startswith("pytorch"):
            step = _torch_step(name, batch, size, weights_path, info)
        else:
            step = _mxnet_step(name, batch, size, width_mult, amx, info)
        step()
    except BaseException as err:  # report, do not hang the parent
        conn.send({"error": "%s: %s" % (type(err).__name__, err)})
        return
    conn.send(info)
    while True:
        iters = conn.recv()
        if iters is None:
            return
        step()  # warm-up after the other processes ran
        start = time.perf_counter()
        for _ in range(iters):
            step()
        conn.send(iters * batch / (time.perf_counter() - start))


class Case:
    """One (implementation, mode) in its own process; ``run(iters)`` appends images/s.

    Separate processes keep the libraries from disturbing each other: with
    MXNet's libgomp loaded first, PyTorch shares it and its results were
    occasionally wrong (1 run in 6); and a second OpenMP thread team in an
    MXNet process (any large copy run from Python's thread starts one) makes
    libgomp stop spinning between operators, which cost the INT8 and BF16
    paths ~20%.
    """

    def __init__(self, name, args, weights_path=None):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.name, self.rates = name, []
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, daemon=True, args=(
            child, name, args.batch_size, args.size, args.width_mult, not args.no_amx,
            weights_path))
        self.proc.start()
        self.info = self.conn.recv()
        if "error" in self.info:
            raise SystemExit("%s failed to start: %s" % (name, self.info["error"]))

    def run(self, iters):
        self.conn.send(iters)
        self.rates.append(self.conn.recv())

    def close(self):
        self.conn.send(None)
        self.proc.join(30)


def _reference_weights(args):
    """resattn weights and a batch-statistics output for the PyTorch model to match."""
    import tempfile

    import mxnet as mx
    import numpy as np
    from mxnet import autograd

    from resattn import get_model
    from resattn._compat import structured_params
    ref = get_model("attention92_cifar", width_mult=args.width_mult)
    ref.initialize(mx.init.MSRAPrelu())
    x_np = _data(8, args.size)[0]
    with autograd.train_mode():
        # Batch statistics: in inference mode a randomly initialised network's
        # activations grow ~4x per module, and float rounding with them.
        ref_out = ref(mx.nd.array(x_np)).asnumpy()
    path = os.path.join(tempfile.mkdtemp(prefix="bench_torch_"), "weights.npz")
    np.savez(path, ref_x=x_np, ref_out=ref_out, widths=np.array(ref.widths),
             stem=ref.features[0][0].weight.shape[0],
             **{"param:" + k: p.data().asnumpy()
                for k, p in structured_params(ref).items()})
    return path


def main(argv=None):
    args = parse_args(argv)
    if args.threads is None:
        args.threads = physical_cores()
    if args.threads:
        # MXNet reads this once, when imported; without it MXNet 1.9 uses half the
        # logical CPUs (it assumes two hyper-threads per core): 1 thread on 2 cores.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    warnings.filterwarnings("ignore")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import mxnet as mx
    import numpy as np

    from resattn import get_model, profile
    if args.width_mult != 1.0:
        dropped = [c for c in args.cases if c.startswith("gluoncv")]
        if dropped:
            log("GluonCV's model has fixed widths: skipping %s at --width-mult %g"
                % (", ".join(dropped), args.width_mult))
        args.cases = tuple(c for c in args.cases if not c.startswith("gluoncv"))
    info = {"macs_per_image": profile(get_model("attention92_cifar",
                                                width_mult=args.width_mult), args.size).macs}
    peak = peak_gflops()
    log("peak: %.1f GFLOP/s (NumPy float32 matmul 2048^2); OMP_NUM_THREADS=%s"
        % (peak, os.environ.get("OMP_NUM_THREADS")))
    weights = _reference_weights(args) if any(c.startswith("pytorch") for c in args.cases) \
        else None
    cases = []
    for name in args.cases:
        log("starting %s" % name)
        cases.append(Case(name, args, weights))
        atexit.register(cases[-1].close)
        info.update(cases[-1].info)
    amx = any(c.info.get("amx") for c in cases)
    if "pytorch_vs_resattn_rel_diff" in info:
        log("PyTorch model vs resattn, same weights: max relative difference %.2e"
            % info["pytorch_vs_resattn_rel_diff"])
        if info["pytorch_vs_resattn_rel_diff"] > 1e-3:
            raise SystemExit("the PyTorch model does not match resattn; not timing it")
    for case in cases:  # warm-up round, not recorded (allocators, primitive caches)
        case.run(1)
        case.rates.clear()
    for r in range(args.rounds):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for case in order:
            case.run(args.train_iters if case.name.endswith(":train") else args.infer_iters)
        log("round %d/%d: %s" % (r + 1, args.rounds, ", ".join(
            "%s %.1f" % (c.name, c.rates[-1]) for c in cases)))
    peak_after = peak_gflops()
    peak = max(peak, peak_after)
    medians = {c.name: statistics.median(c.rates) for c in cases}
    flops = 2 * info["macs_per_image"]
    rows = []
    for c in cases:
        impl, mode = c.name.split(":")
        rate = medians[c.name]
        share = rate * flops * (3 if mode == "train" else 1) / 1e9 / peak
        vs = {}
        for other in ("gluoncv", "pytorch"):
            key = "%s:%s" % (other, mode)
            if key in medians and not impl.startswith(other):
                vs[other] = rate / medians[key]
        rows.append(dict(case=c.name, img_s=rate, runs=c.rates, share_of_peak=share, **{
            "vs_" + k: v for k, v in vs.items()}))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    info.pop("amx", None)
    result = dict(machine=cpu_model(), cores=os.cpu_count(), peak_gflops=peak,
                  peak_gflops_after=peak_after, loadavg_end=load, batch=args.batch_size,
                  size=args.size, width_mult=args.width_mult, rounds=args.rounds,
                  mxnet=mx.__version__, numpy=np.__version__,
                  omp_num_threads=os.environ.get("OMP_NUM_THREADS"), amx=amx, rows=rows,
                  **info)
    print("machine: %s, %d cores, %s threads, AMX %s; peak %.0f GFLOP/s (best of before and "
          "after the runs); load average at the end %s"
          % (result["machine"], result["cores"], args.threads or "default",
             "on" if amx else "off", peak, "n/a" if load is None else "%.1f %.1f %.1f" % load))
    print("attention92_cifar x%g, batch %d, %dx%d, %.3f GMAC/image, medians of %d rounds\n"
          % (args.width_mult, args.batch_size, args.size, args.size,
             info["macs_per_image"] / 1e9, args.rounds))
    print("| case | img/s | vs GluonCV | vs PyTorch | share of peak | runs |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print("| %s | %.1f | %s | %s | %.0f%% | %s |" % (
            row["case"], row["img_s"],
            "%.2fx" % row["vs_gluoncv"] if "vs_gluoncv" in row else "-",
            "%.2fx" % row["vs_pytorch"] if "vs_pytorch" in row else "-",
            100 * row["share_of_peak"], " ".join("%.1f" % v for v in row["runs"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
