#!/usr/bin/env python
"""Throughput of Residual Attention Networks on CPU: resattn, GluonCV, PyTorch, ONNX engines.

Training step (forward, loss, backward, SGD update) and inference, in
images/s, of Attention-92 for CIFAR (batch 32, 32x32; ``--imagenet``:
Attention-56 at 224x224, batch 8) for

* resattn ``attention92_cifar`` / ``attention56`` (float32, hybridized with
  static memory), plus the inference paths of :mod:`resattn.deploy`:
  oneDNN-fused, INT8, BF16;
* GluonCV ``cifar_residualattentionnet92`` / ``residualattentionnet56``
  (same architecture, same settings; also with the same oneDNN fusion, for
  reference);
* a PyTorch model of the same architecture written below (CPU, eager), whose
  outputs are checked against resattn's with copied weights before timing;
* resattn's network exported to ONNX (:func:`resattn.deploy.export_onnx`)
  and run in ONNX Runtime and in OpenVINO (float32,
  :func:`resattn.deploy.load_onnx`), checked against MXNet's outputs first.

Each implementation runs in two thread settings, each case in a fresh
process started with its own environment:

* ``user``: as a user has it. The environment without its OpenMP, KMP,
  MKL/OpenBLAS thread and MXNet thread variables, so each library picks its
  own default: ``import resattn`` sets ``OMP_NUM_THREADS`` to the physical
  cores (it does so before MXNet starts; ``resattn-mxnet-first`` imports MXNet
  first, and resattn reaches the running MXNet), GluonCV gets MXNet's default of
  half the logical CPUs, PyTorch and the ONNX engines their own defaults.
* ``tuned``: the same environment with ``OMP_NUM_THREADS`` = physical cores
  before any library is imported (and that many threads passed to the ONNX
  engines, which do not read the variable).

Within a setting the cases run interleaved (one timed run of each per
round, the order rotating); the table gives medians over rounds, the ratios
to GluonCV and PyTorch of the same setting, and each figure as a share of
this machine's float32 peak: the fastest of a large oneDNN 3x3 convolution
(``mx.nd.Convolution``), an sgemm through ``mx.nd.dot`` and a NumPy matrix
product, each timed in a fresh process on every physical core, with a
training step counted as three forward passes.

Usage::

    python benchmarks/bench_throughput.py                 # Attention-92 CIFAR, both settings
    python benchmarks/bench_throughput.py --quick         # 1/4 widths, tuned only, 1 round
    python benchmarks/bench_throughput.py --imagenet      # Attention-56, 224 px, batch 8
    python benchmarks/bench_throughput.py --settings user --only resattn:train,gluoncv:train
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

from _common import WORKLOADS, describe_machine, mxnet_step

#: Thread settings, in the order they run (see the module docstring).
SETTINGS = ("user", "tuned")
#: (implementation, mode) pairs, in the order of the table.
ALL_CASES = ("resattn:train", "resattn-mxnet-first:train", "gluoncv:train", "pytorch:train",
             "resattn:infer", "resattn-mxnet-first:infer", "gluoncv:infer", "pytorch:infer",
             "resattn-fused:infer", "resattn-int8:infer", "resattn-bf16:infer",
             "gluoncv-fused:infer", "onnxruntime:infer", "openvino:infer")
#: The ONNX engines, each the package it needs.
ENGINES = ("onnxruntime", "openvino")
#: The float32 kernels whose best rate is the peak.
PEAK_KERNELS = ("conv", "dot", "numpy")
#: A case whose outputs differ from resattn's by more than this is not timed.
MAX_REL_DIFF = 1e-3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: widths x1/4, 1 round, fewer iterations, tuned setting only")
    p.add_argument("--imagenet", action="store_true",
                   help="Attention-56 at 224x224, batch 8 (against GluonCV's "
                        "residualattentionnet56), instead of Attention-92 for CIFAR")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds per setting (default 5; --imagenet 3)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; --imagenet 8")
    p.add_argument("--size", type=int, default=None, help="input side (default 32; --imagenet 224)")
    p.add_argument("--train-iters", type=int, default=None,
                   help="timed steps per run (default 3; --imagenet 2)")
    p.add_argument("--infer-iters", type=int, default=None,
                   help="timed batches per run (default 6; --imagenet 3)")
    p.add_argument("--width-mult", type=float, default=None, help="scale all widths (1)")
    p.add_argument("--only", default=None,
                   help="comma-separated subset of: " + ", ".join(ALL_CASES))
    p.add_argument("--settings", default=None,
                   help="comma-separated subset of: %s (default both; --quick: tuned)"
                        % ", ".join(SETTINGS))
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the tuned setting and of the peak measurement "
                        "(default: the physical cores this process may run on)")
    p.add_argument("--no-amx", action="store_true",
                   help="do not let oneDNN use Intel AMX for the INT8 and BF16 paths")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    setup = WORKLOADS["imagenet" if args.imagenet else "cifar"]
    defaults = dict(batch_size=setup["batch"], size=setup["size"])
    if args.quick:
        defaults.update(rounds=1, train_iters=1, infer_iters=2, width_mult=0.25,
                        settings="tuned")
    elif args.imagenet:
        defaults.update(rounds=3, train_iters=2, infer_iters=3, width_mult=1.0,
                        settings=",".join(SETTINGS))
    else:
        defaults.update(rounds=5, train_iters=3, infer_iters=6, width_mult=1.0,
                        settings=",".join(SETTINGS))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("rounds", "batch_size", "size", "train_iters", "infer_iters"):
        if getattr(args, key) < 1:
            p.error("--%s must be at least 1, got %d" % (key.replace("_", "-"),
                                                         getattr(args, key)))
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1, got %d (the 'user' setting is the one that "
                "leaves the thread count to each library)" % args.threads)
    cases = ALL_CASES if args.only is None else tuple(args.only.split(","))
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        p.error("unknown --only entries %s; valid: %s" % (unknown, ", ".join(ALL_CASES)))
    args.cases = tuple(c for c in ALL_CASES if c in cases)
    settings = tuple(args.settings.split(","))
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        p.error("unknown --settings entries %s; valid: %s" % (unknown, ", ".join(SETTINGS)))
    args.settings = tuple(s for s in SETTINGS if s in settings)
    args.setup = setup
    return args


# ----------------------------------------------------------------------------- PyTorch model
def torch_model(widths=(128, 256, 512, 1024), stem_channels=32, modules=(1, 2, 3),
                stages=(2, 3, 4), classes=10, stem="cifar", variant="gluoncv", final_stride=1):
    """A Residual Attention Network in PyTorch, module for module as resattn builds it.

    Attribute names and nesting follow resattn's structural parameter names
    (``features.1.1.mask_head.2.weight``), so weights copy over one to one.
    The defaults are ``attention92_cifar``; ``stem='imagenet'``,
    ``variant='official'``, ``stages=(1, 2, 3)``, ``final_stride=2`` and
    ``modules=(1, 1, 1)`` give ``attention56`` (the ImageNet layout).

    Parameters
    ----------
    stem : {'cifar', 'imagenet'}
        3x3/1 convolution, or 7x7/2 convolution and 3x3/2 max-pooling.
    variant : {'gluoncv', 'official'}
        Mask wiring and pooling, as :class:`resattn.AttentionModule`'s
        ``variant``: 'gluoncv' pools with pad 1 (floor) and adds the down-path
        feature and the trunk output to the upsampled maps; 'official' pools
        with pad 0 and Caffe's ceil rule and adds only the skip units' outputs.
    """
    import torch
    from torch import nn
    import torch.nn.functional as F

    if stem not in ("cifar", "imagenet"):
        raise ValueError("stem must be 'cifar' or 'imagenet', got %r" % (stem,))
    if variant not in ("gluoncv", "official"):
        raise ValueError("variant must be 'gluoncv' or 'official', got %r" % (variant,))
    official = variant == "official"

    def max_pool(x):
        return F.max_pool2d(x, 3, 2, 0, ceil_mode=True) if official else F.max_pool2d(x, 3, 2, 1)

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

    def resize_like(x, like):
        return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)

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
                    feat = self.mask_down[level](max_pool(feat))
                    down.append(feat)
                for level in reversed(range(self.num_pools - 1)):
                    feat = resize_like(feat, down[level])
                    if not official:
                        feat = feat + down[level]
                    feat = self.mask_up[level](feat + self.mask_skip[level](down[level]))
                feat = resize_like(feat, trunk)
                if not official:
                    feat = feat + trunk
            return torch.sigmoid(self.mask_head(feat))

        def forward(self, x):
            x = self.pre(x)
            trunk = self.trunk(x)
            return self.post((1 + self.soft_mask(x, trunk)) * trunk)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if stem == "imagenet":
                first = [nn.Conv2d(3, stem_channels, 7, 2, 3, bias=False),
                         nn.BatchNorm2d(stem_channels), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 0, ceil_mode=True) if official
                         else nn.MaxPool2d(3, 2, 1)]
            else:
                first = [nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(stem_channels), nn.ReLU()]
            layers = [nn.Sequential(*first)]
            in_ch = stem_channels
            for i in range(3):
                layers.append(nn.Sequential(Unit(widths[i], 1 if i == 0 else 2, in_ch),
                                            *[Module(widths[i], stages[i])
                                              for _ in range(modules[i])]))
                in_ch = widths[i]
            layers.append(nn.Sequential(Unit(widths[3], final_stride, in_ch), Unit(widths[3]),
                                        Unit(widths[3]), nn.BatchNorm2d(widths[3]), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten()))
            self.features = nn.Sequential(*layers)
            self.output = nn.Linear(widths[3], classes)

        def forward(self, x):
            return self.output(self.features(x))

    return Net()


# ----------------------------------------------------------------------------- environments
def _is_thread_variable(name):
    """Whether ``name`` sets a thread count or threading policy that the libraries read."""
    return (name.startswith(("OMP_", "GOMP_", "KMP_"))
            or name in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RESATTN_AUTO_THREADS")
            or (name.startswith("MXNET_") and "THREAD" in name))


def setting_env(setting, threads, environ=None):
    """The environment a worker of ``setting`` starts with.

    'user': ``environ`` without any thread variable (:func:`_is_thread_variable`),
    so every library picks its own default at import; 'tuned': the same with
    ``OMP_NUM_THREADS=threads``.
    """
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if not _is_thread_variable(k)}
    if setting == "tuned":
        env["OMP_NUM_THREADS"] = str(threads)
    elif setting != "user":
        raise ValueError("setting must be one of %s, got %r" % (", ".join(SETTINGS), setting))
    return env


# ----------------------------------------------------------------------------- workers
def _spawn(spec, env):
    """Start this file as a worker process for ``spec`` (a JSON-able dict) in ``env``."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                             json.dumps(spec)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)


def _channel():
    """``(send, receive)`` for a worker: its real stdout becomes the reply channel, and
    fd 1 goes to stderr so that whatever the libraries print cannot corrupt a reply."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def receive():
        line = sys.stdin.readline()
        return json.loads(line) if line.strip() else None
    return send, receive


def _openmp_threads():
    """Threads of the process's OpenMP runtime (libgomp), or None where none is loaded."""
    import ctypes
    try:
        return int(ctypes.CDLL("libgomp.so.1").omp_get_max_threads())
    except (OSError, AttributeError):
        return None


def _peak_worker(kind, quick):
    """GFLOP/s of one float32 kernel, best of several repeats, in this fresh process."""
    import numpy as np
    repeats = 3 if quick else 7
    rng = np.random.RandomState(0)
    if kind == "numpy":
        n = 2048
        a, b = (rng.rand(n, n).astype(np.float32) for _ in range(2))

        def run():
            a @ b
        shapes = [("NumPy float32 matmul %d^2 (%s)" % (n, np.__version__), 2 * n ** 3, run)]
    elif kind == "dot":
        import mxnet as mx
        n = 2048
        a, b = (mx.nd.array(rng.rand(n, n).astype(np.float32)) for _ in range(2))

        def run():
            mx.nd.dot(a, b).wait_to_read()
        shapes = [("mx.nd.dot float32 %d^2" % n, 2 * n ** 3, run)]
    elif kind == "conv":
        import mxnet as mx
        shapes = []
        # (batch, channels in = out, side): large enough that the layout reorders
        # around each call cost under 2% of it.
        for batch, channels, side in ([(8, 128, 28)] if quick
                                      else [(16, 256, 28), (32, 128, 56)]):
            x = mx.nd.array(rng.standard_normal((batch, channels, side, side))
                            .astype(np.float32))
            w = mx.nd.array(rng.standard_normal((channels, channels, 3, 3))
                            .astype(np.float32) * 0.05)

            def run(x=x, w=w, channels=channels):
                mx.nd.Convolution(data=x, weight=w, kernel=(3, 3), pad=(1, 1),
                                  num_filter=channels, no_bias=True).wait_to_read()
            shapes.append(("oneDNN 3x3 convolution N%d C=K=%d %dx%d" % (batch, channels, side,
                                                                          side),
                           2 * batch * channels * channels * 9 * side * side, run))
    else:
        raise ValueError("peak kernel must be one of %s, got %r" % (", ".join(PEAK_KERNELS),
                                                                     kind))
    best = None
    for what, flops, run in shapes:
        run()  # warm-up: primitive creation, first-touch of the buffers
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        gflops = flops / min(times) / 1e9
        if best is None or gflops > best["gflops"]:
            best = dict(gflops=gflops, what=what)
    best["omp_threads"] = _openmp_threads() if kind != "numpy" else None
    return best


def measure_peak(threads, quick, log):
    """The float32 peak: each of :data:`PEAK_KERNELS` in a fresh process on ``threads``.

    Returns
    -------
    dict
        ``{kernel: {'gflops', 'what'}}`` plus ``'best'``: the fastest kernel's name.
    """
    env = setting_env("tuned", threads)
    result = {}
    for kind in PEAK_KERNELS:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak", kind] +
                              (["--quick"] if quick else []), env=env, capture_output=True,
                              text=True, timeout=600)
        if proc.returncode:
            raise SystemExit("peak measurement (%s) failed:\n%s" % (kind, proc.stderr[-2000:]))
        result[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["best"] = max(PEAK_KERNELS, key=lambda k: result[k]["gflops"])
    log("peak on %d threads: %s" % (threads, "; ".join(
        "%s %.1f GFLOP/s" % (result[k]["what"], result[k]["gflops"]) for k in PEAK_KERNELS)))
    return result


def _data(batch, size):
    import numpy as np
    rng = np.random.RandomState(0)
    return (rng.standard_normal((batch, 3, size, size)).astype(np.float32),
            rng.randint(0, 10, batch))


def _mxnet_step(spec, info):
    """Build one MXNet case in this (worker) process and return its step function."""
    impl, mode = spec["name"].split(":")
    # The import order a user's script has: resattn first (it sets OMP_NUM_THREADS
    # where unset, before MXNet starts), GluonCV's users import MXNet through GluonCV;
    # 'resattn-mxnet-first' imports MXNet before resattn, as the README's first snippet
    # and GluonCV scripts do (resattn then reaches the running MXNet).
    if impl.startswith("gluoncv"):
        import mxnet as mx
        from resattn._compat import import_gluoncv
        gluoncv = import_gluoncv()
    elif impl == "resattn-mxnet-first":
        import mxnet as mx
        import resattn  # noqa: F401
    else:
        import resattn  # noqa: F401
        import mxnet as mx
    import numpy as np

    from resattn import deploy, get_model
    info["omp_num_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    info["amx"] = deploy.enable_amx() if spec["amx"] else False  # before the first operator
    batch, size = spec["batch"], spec["size"]
    x_np, y_np = _data(batch, size)
    x, y = mx.nd.array(x_np), mx.nd.array(y_np)
    if impl.startswith("gluoncv"):
        net = gluoncv.model_zoo.get_model(spec["gluoncv_model"])
    else:
        net = get_model(spec["model"], width_mult=spec["width_mult"])
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
    step = mxnet_step(net, x, None if mode == "infer" else y, wd=1e-4)
    info["threads"] = _openmp_threads()
    return step


def _torch_step(spec, info):
    """Build the PyTorch case, check it against resattn's outputs, return its step."""
    import numpy as np
    import torch
    data = np.load(spec["weights"])
    net = torch_model(widths=tuple(int(w) for w in data["widths"]), stem_channels=int(data["stem"]),
                      modules=tuple(int(m) for m in data["modules"]),
                      stages=tuple(int(s) for s in data["stages"]), classes=int(data["classes"]),
                      stem=str(data["stem_kind"]), variant=str(data["variant"]),
                      final_stride=int(data["final_stride"]))
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
    x_np, y_np = _data(spec["batch"], spec["size"])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np).long()
    net.train()  # batch statistics, as resattn's reference output was computed
    with torch.no_grad():
        got = net(torch.from_numpy(data["ref_x"])).numpy()
    ref = data["ref_out"]
    info.update(rel_diff=float(np.abs(got - ref).max() / np.abs(ref).max()),
                rel_diff_of="resattn, same weights, batch statistics",
                version="torch " + torch.__version__, threads=torch.get_num_threads(),
                omp_num_threads_env=os.environ.get("OMP_NUM_THREADS"))
    if spec["name"].endswith(":infer"):
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


def _engine_step(spec, info):
    """Load the exported ONNX file into an engine, check it against MXNet, return its step."""
    import numpy as np

    from resattn.deploy.engines import load_onnx
    engine = spec["name"].split(":")[0]
    model = load_onnx(spec["onnx"], engine, threads=spec["engine_threads"], precision="f32")
    ref = np.load(spec["onnx_ref"])
    got = model(ref["x"])
    info.update(rel_diff=float(np.abs(got - ref["out"]).max() / np.abs(ref["out"]).max()),
                rel_diff_of="MXNet, same ONNX-exported network, inference mode",
                version="%s %s" % (engine, importlib.import_module(engine).__version__),
                threads=model.threads or "default", precision=model.precision,
                omp_num_threads_env=os.environ.get("OMP_NUM_THREADS"))
    x = _data(spec["batch"], spec["size"])[0]

    def step():
        model(x)
    return step


def _worker_main(spec_json):
    """A case's own process: build it, then time ``iters`` steps whenever asked."""
    warnings.filterwarnings("ignore")
    send, receive = _channel()
    spec = json.loads(spec_json)
    info = {}
    impl = spec["name"].split(":")[0]
    try:
        if impl == "pytorch":
            step = _torch_step(spec, info)
        elif impl in ENGINES:
            step = _engine_step(spec, info)
        else:
            step = _mxnet_step(spec, info)
        step()
    except BaseException as err:  # report, do not hang the parent
        send({"error": "%s: %s" % (type(err).__name__, err)})
        return 1
    send(info)
    while True:
        iters = receive()
        if not iters:
            return 0
        step()  # warm-up after the other processes ran
        start = time.perf_counter()
        for _ in range(iters):
            step()
        send({"img_s": iters * spec["batch"] / (time.perf_counter() - start)})


class Case:
    """One (implementation, mode) in one setting, in its own process; ``run(iters)`` appends
    images/s to ``rates``.

    Each worker is a fresh interpreter (``subprocess``, not ``fork``) started
    with its setting's environment, so every library reads its thread
    variables at import as it would in a user's process. Separate processes
    also keep the libraries from disturbing each other: with MXNet's libgomp
    loaded first, PyTorch shares it and its results were occasionally wrong
    (1 run in 6); and a second OpenMP thread team in an MXNet process (any
    large copy run from Python's thread starts one) makes libgomp stop
    spinning between operators, which cost the INT8 and BF16 paths ~20%.
    """

    def __init__(self, name, setting, spec, env):
        self.name, self.setting, self.rates = name, setting, []
        self.proc = _spawn(dict(spec, name=name), env)
        self.info = self._receive()
        if "error" in self.info:
            self.close()
            raise SystemExit("%s (%s) failed to start: %s" % (name, setting, self.info["error"]))

    def _receive(self):
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("%s (%s): the worker exited with status %s before answering (its "
                             "error is above)" % (self.name, self.setting, self.proc.wait()))
        return json.loads(line)

    def run(self, iters):
        self.proc.stdin.write("%d\n" % iters)
        self.proc.stdin.flush()
        self.rates.append(self._receive()["img_s"])

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("0\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------- references
def _references(args, workdir, need_torch, need_onnx):
    """Files the workers check against, from one resattn network with random weights.

    ``weights``: its parameters, layout and a batch-statistics output for the
    PyTorch model to match; ``onnx`` and ``onnx_ref``: the network exported
    to ONNX and its MXNet inference-mode output on the same input.
    """
    import mxnet as mx
    import numpy as np
    from mxnet import autograd

    from resattn import deploy, get_model
    from resattn._compat import structured_params
    from resattn.models import get_spec
    ref = get_model(args.setup["model"], width_mult=args.width_mult)
    ref.initialize(mx.init.MSRAPrelu())
    x_np = _data(2 if args.imagenet else 8, args.size)[0]
    paths = {}
    if need_torch:
        layout = dict(get_spec(args.setup["model"]).arch)
        with autograd.train_mode():
            # Batch statistics: in inference mode a randomly initialised network's
            # activations grow ~4x per module, and float rounding with them.
            ref_out = ref(mx.nd.array(x_np)).asnumpy()
        paths["weights"] = os.path.join(workdir, "weights.npz")
        np.savez(paths["weights"], ref_x=x_np, ref_out=ref_out, widths=np.array(ref.widths),
                 stem=ref.features[0][0].weight.shape[0], stem_kind=ref.stem,
                 variant=ref.variant, modules=np.array(ref.modules_per_stage),
                 stages=np.array(ref.stages), classes=ref.classes,
                 final_stride=layout["final_stride"],
                 **{"param:" + k: p.data().asnumpy()
                    for k, p in structured_params(ref).items()})
    if need_onnx:
        paths["onnx"] = deploy.export_onnx(ref, os.path.join(workdir, "model.onnx"), args.size)
        paths["onnx_ref"] = os.path.join(workdir, "onnx_ref.npz")
        np.savez(paths["onnx_ref"], x=x_np, out=ref(mx.nd.array(x_np)).asnumpy())
    return paths


def _available(args, log):
    """The cases of ``args.cases`` that can run here; logs one line for each one dropped."""
    skipped = {}
    for name in args.cases:
        impl = name.split(":")[0]
        if impl.startswith("gluoncv"):
            if args.width_mult != 1.0:
                skipped[name] = "GluonCV's model has fixed widths (--width-mult %g)" \
                                % args.width_mult
            elif args.size != args.setup["size"]:
                skipped[name] = ("GluonCV's %s resizes its masks to fixed sizes and runs at "
                                 "%d px only (--size %d)" % (args.setup["gluoncv"],
                                                             args.setup["size"], args.size))
        elif impl == "pytorch" and importlib.util.find_spec("torch") is None:
            skipped[name] = "PyTorch is not installed (pip install 'resattn[torch]')"
        elif impl in ENGINES:
            for package in ("onnx", impl):
                if importlib.util.find_spec(package) is None:
                    skipped[name] = ("%s is not installed (pip install -c constraints.txt "
                                     "'resattn[deploy]')" % package)
                    break
    for name, why in skipped.items():
        log("skipping %s: %s" % (name, why))
    return tuple(c for c in args.cases if c not in skipped), skipped


def _run_setting(setting, args, spec, env, log):
    """Start every case of one setting, time them interleaved, close them; the Cases."""
    cases = []
    try:
        for name in args.cases:
            log("starting %s (%s)" % (name, setting))
            cases.append(Case(name, setting, spec, env))
            diff = cases[-1].info.get("rel_diff")
            if diff is not None:
                log("%s vs %s: max relative difference %.2e" % (
                    name, cases[-1].info["rel_diff_of"], diff))
                if not diff <= MAX_REL_DIFF:
                    raise SystemExit("%s does not match resattn (max relative difference %.2e "
                                     "> %g); not timing it" % (name, diff, MAX_REL_DIFF))
        for case in cases:  # warm-up round, not recorded (allocators, primitive caches)
            case.run(1)
            case.rates.clear()
        for r in range(args.rounds):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for case in order:
                case.run(args.train_iters if case.name.endswith(":train")
                         else args.infer_iters)
            log("%s round %d/%d: %s" % (setting, r + 1, args.rounds, ", ".join(
                "%s %.1f" % (c.name, c.rates[-1]) for c in cases)))
    finally:
        for case in cases:
            case.close()
    return cases


def _rows(cases, flops, peak):
    """Table rows of one setting: medians, ratios within the setting, share of peak."""
    medians = {c.name: statistics.median(c.rates) for c in cases}
    rows = []
    for c in cases:
        impl, mode = c.name.split(":")
        rate = medians[c.name]
        row = dict(case=c.name, setting=c.setting, img_s=rate, runs=c.rates,
                   share_of_peak=rate * flops * (3 if mode == "train" else 1) / 1e9 / peak)
        for other in ("gluoncv", "pytorch"):
            key = "%s:%s" % (other, mode)
            if key in medians and impl != other:
                row["vs_" + other] = rate / medians[key]
        for key in ("threads", "omp_num_threads_env", "rel_diff", "precision", "version"):
            if c.info.get(key) is not None:
                row[key] = c.info[key]
        rows.append(row)
    return rows


def _print_report(result, args):
    peak = result["peak"]
    print("peak: %.0f GFLOP/s, %s (fastest of: %s; OMP_NUM_THREADS=%d, fresh process each%s)"
          % (result["peak_gflops"], peak[peak["best"]]["what"], "; ".join(
              "%s %.0f" % (peak[k]["what"], peak[k]["gflops"]) for k in PEAK_KERNELS),
             result["tuned_threads"], ", best of before and after the runs"
             if result["peak_after"] else ""))
    print("settings: user = the environment without thread variables (removed here: %s); "
          "tuned = OMP_NUM_THREADS=%d set before import, and %d engine threads"
          % (", ".join("%s=%s" % kv for kv in sorted(result["removed_variables"].items()))
             or "none were set", result["tuned_threads"], result["tuned_threads"]))
    print("%s x%g, batch %d, %dx%d, %.3f GMAC/image, medians of %d rounds per setting; load "
          "average at the end %s\n" % (
              result["model"], args.width_mult, args.batch_size, args.size, args.size,
              result["macs_per_image"] / 1e9, args.rounds, "n/a" if result["loadavg_end"] is None
              else "%.1f %.1f %.1f" % tuple(result["loadavg_end"])))
    print("| case | setting | img/s | vs GluonCV | vs PyTorch | share of peak | threads "
          "| max rel. diff | runs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in result["rows"]:
        print("| %s | %s | %.1f | %s | %s | %.0f%% | %s | %s | %s |" % (
            row["case"], row["setting"], row["img_s"],
            "%.2fx" % row["vs_gluoncv"] if "vs_gluoncv" in row else "-",
            "%.2fx" % row["vs_pytorch"] if "vs_pytorch" in row else "-",
            100 * row["share_of_peak"], row.get("threads", "-"),
            "%.1e" % row["rel_diff"] if "rel_diff" in row else "-",
            " ".join("%.1f" % v for v in row["runs"])))
    if result["tuned_vs_user"]:
        print("\n| case | tuned / user |\n|---|---:|")
        for name, ratio in result["tuned_vs_user"].items():
            print("| %s | %.2fx |" % (name, ratio))
    for name, why in result["skipped"].items():
        print("not run: %s: %s" % (name, why))


def main(argv=None):
    args = parse_args(argv)
    # Before anything imports resattn (which sets OMP_NUM_THREADS where unset).
    removed = {k: v for k, v in os.environ.items() if _is_thread_variable(k)}
    warnings.filterwarnings("ignore")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    print(describe_machine(), flush=True)
    import tempfile

    import mxnet as mx
    import numpy as np

    from resattn import get_model, profile
    from resattn._threads import describe_cpu, physical_cores
    threads = args.threads or physical_cores()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load_start is not None and load_start[0] >= 0.5:
        log("note: load average %.1f before the run, on %d physical cores: other processes "
            "compete for the CPUs (a spinning OpenMP team that loses a core waits at every "
            "barrier), so compare figures only within this run" % (load_start[0],
                                                                   physical_cores()))
    args.cases, skipped = _available(args, log)
    if not args.cases:
        raise SystemExit("no case can run here (see the notes above)")
    macs = profile(get_model(args.setup["model"], width_mult=args.width_mult), args.size).macs
    peak_before = measure_peak(threads, args.quick, log)
    by_setting = {}
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as workdir:
        refs = _references(args, workdir, any(c.startswith("pytorch") for c in args.cases),
                           any(c.split(":")[0] in ENGINES for c in args.cases))
        spec = dict(refs, batch=args.batch_size, size=args.size, width_mult=args.width_mult,
                    amx=not args.no_amx, model=args.setup["model"],
                    gluoncv_model=args.setup["gluoncv"])
        for setting in args.settings:
            by_setting[setting] = _run_setting(
                setting, args, dict(spec, engine_threads=threads if setting == "tuned" else None),
                setting_env(setting, threads), log)
    peak_after = None if args.quick else measure_peak(threads, False, log)
    peak = peak_before if peak_after is None else {
        k: max(peak_before[k], peak_after[k], key=lambda v: v["gflops"]) for k in PEAK_KERNELS}
    peak["best"] = max(PEAK_KERNELS, key=lambda k: peak[k]["gflops"])
    peak_gflops = peak[peak["best"]]["gflops"]
    rows = [row for setting in args.settings
            for row in _rows(by_setting[setting], 2 * macs, peak_gflops)]
    tuned_vs_user = {}
    if set(SETTINGS) <= set(args.settings):
        medians = {(r["case"], r["setting"]): r["img_s"] for r in rows}
        tuned_vs_user = {c: medians[(c, "tuned")] / medians[(c, "user")] for c in args.cases}
    all_cases = [c for s in by_setting.values() for c in s]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = dict(
        machine=describe_machine(), cpu=describe_cpu(), physical_cores=physical_cores(),
        logical_cpus=os.cpu_count(), peak_gflops=peak_gflops, peak=peak,
        peak_before=peak_before, peak_after=peak_after, tuned_threads=threads,
        settings=list(args.settings), removed_variables=removed,
        model=args.setup["model"], gluoncv_model=args.setup["gluoncv"],
        imagenet=args.imagenet, batch=args.batch_size, size=args.size,
        width_mult=args.width_mult, rounds=args.rounds, macs_per_image=macs,
        mxnet=mx.__version__, numpy=np.__version__,
        amx=any(c.info.get("amx") for c in all_cases), loadavg_start=load_start,
        loadavg_end=load, rows=rows,
        tuned_vs_user=tuned_vs_user, skipped=skipped)
    _print_report(result, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker_main(sys.argv[2]))
    if sys.argv[1:2] == ["--peak"]:
        print(json.dumps(_peak_worker(sys.argv[2], "--quick" in sys.argv[3:])))
        sys.exit(0)
    main()
