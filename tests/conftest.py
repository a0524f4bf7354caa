import os
import subprocess
import sys

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs pytest -n auto: the test processes share the cores, and an OpenMP
    # team of one per process keeps a spinning thread that lost its core from stalling every
    # barrier (docs/performance.md, "Threads"). Set before MXNet starts; subprocesses inherit.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    np.random.seed(0)


def randomize_batchnorm(net, rng=None):
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    rng = np.random.RandomState(1) if rng is None else rng
    for name, param in net.collect_params().items():
        shape = param.shape
        if name.endswith("running_var"):
            param.set_data(mx.nd.array(rng.uniform(0.5, 1.5, shape)))
        elif name.endswith("running_mean"):
            param.set_data(mx.nd.array(rng.normal(0, 0.1, shape)))
        elif name.endswith("gamma"):
            param.set_data(mx.nd.array(rng.uniform(0.8, 1.2, shape)))
        elif name.endswith("beta"):
            param.set_data(mx.nd.array(rng.normal(0, 0.1, shape)))


@pytest.fixture
def server():
    """A loopback HTTP server (:mod:`loopback`): ``server.files[path] = bytes`` serves them at
    ``server.base + path``; faults are switched on per path."""
    from loopback import serve
    site = serve()
    yield site
    site.stop()


def run_python(*args, timeout=120, env=None):
    """``python ARGS...`` in a fresh interpreter (this one's), output captured as text;
    ``env`` adds variables to this process's environment."""
    return subprocess.run([sys.executable] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def rel_diff(a, b):
    a = a.asnumpy() if hasattr(a, "asnumpy") else np.asarray(a)
    b = b.asnumpy() if hasattr(b, "asnumpy") else np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def run_cli(argv):
    """``resattn ARGV`` in this process: its exit status (argparse's SystemExit included)."""
    from resattn.cli import main
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def tiny_weights(path, class_names=None):
    """A tiny Attention-56 (width / 16) of random weights saved at ``path`` with its weight
    config (the model's default preprocessing); returns the network."""
    import mxnet as mx

    import resattn
    from resattn.io import save_weights
    net = resattn.get_model("attention56_cifar", width_mult=0.0625)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    save_weights(net, str(path), "attention56_cifar", arch={"width_mult": 0.0625, "classes": 10},
                 preprocessing=net.pretrained_cfg.preprocessing(), class_names=class_names)
    return net
