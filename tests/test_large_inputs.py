"""Inputs of 2048 pixels and more: MXNet 1.9.1's oneDNN 1x1-convolution crash and its workaround.

oneDNN 2.4.4 (MXNet 1.9.1) dies with SIGFPE creating a 1x1 convolution whose
blocking estimate ``OH * nb_os * G * nb_oc`` wraps to 0 in 32 bits (see
``resattn/_onednn.py``): ``2 v2(H) + v2(W) + v2(D) >= 32``. Every
MXNet call that could crash runs in a subprocess.
"""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from resattn._onednn import conv1x1_crashes

#: Measured on MXNet 1.9.1 / oneDNN 2.4.4, Xeon with AVX-512 and AMX (brgconv_1x1:avx512_core):
#: (N, C_in, C_out, H, W, stride) -> crashed. The formula predicts every one.
MEASURED = [
    ((1, 2, 2, 2048, 2048, 1), True),      # the shape: 2*11 + 11 = 33
    ((1, 1, 1, 2048, 1024, 1), True),      # 22 + 10 = 32
    ((2, 1, 1, 2048, 1024, 1), True),      # the batch size does not matter
    ((1, 1, 1, 4096, 1024, 1), True),      # 24 + 10
    ((1, 1, 1, 1024, 4096, 1), True),      # 20 + 12
    ((1, 1, 1, 2048, 3072, 1), True),      # 22 + 10 (3072 = 3 * 2**10)
    ((1, 1, 1, 4194304, 1, 1), True),      # 44
    ((1, 8, 16, 2048, 2048, 1), True),
    ((1, 1, 64, 1024, 1024, 1), True),     # 20 + 10 + v2(nb_oc = 64/16) = 32
    ((1, 16, 256, 1024, 1024, 1), True),   # 30 + v2(16)
    ((1, 1, 512, 512, 512, 1), True),      # 27 + v2(32)
    ((1, 1, 1, 2047, 2048, 1), False),
    ((1, 1, 1, 2049, 2048, 1), False),
    ((1, 2, 2, 2896, 2896, 1), False),     # 2896 = 16 * 181: 12
    ((1, 1, 1, 3072, 2048, 1), False),     # 20 + 11 = 31: H and W are not symmetric
    ((1, 1, 1, 1, 4194304, 1), False),     # 22: H = 1 takes 2 v2(H) away
    ((1, 1, 1, 1024, 1024, 1), False),     # 30
    ((4, 1, 1, 1024, 1024, 1), False),     # N * H * W = 2**22 but 30 again
    ((1, 64, 1, 1024, 1024, 1), False),    # input channels do not count
    ((1, 1, 32, 1024, 1024, 1), False),    # 30 + v2(2) = 31
    ((1, 1, 48, 1024, 1024, 1), False),    # blocks 48, 32, 16: nb_oc 1, 2, 3 -> 31
    ((1, 1, 128, 512, 512, 1), False),     # 27 + 3
    ((1, 16, 256, 512, 512, 1), False),    # 27 + 4
    ((1, 1, 1, 4096, 4096, 2), False),     # a stride in H takes another path
]

CONV = textwrap.dedent("""
    import sys
    import mxnet as mx
    for spec in sys.argv[1:]:
        n, c, o, h, w, s = map(int, spec.split(","))
        x = mx.nd.ones((n, c, h, w))
        y = mx.nd.Convolution(x, mx.nd.ones((o, c, 1, 1)), kernel=(1, 1), stride=(s, s),
                              num_filter=o, no_bias=True)
        y.wait_to_read()
        print("ok", spec, flush=True)
""")


def _run(code, *args, env=None, timeout=300):
    full_env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code] + [str(a) for a in args],
                          capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.mark.parametrize("shape, crashed", MEASURED, ids=lambda v: "x".join(map(str, v))
                         if isinstance(v, tuple) else str(v))
def test_formula_matches_measurements(shape, crashed):
    n, c, o, h, w, s = shape
    assert conv1x1_crashes((n, c, h, w), o, s) is crashed


@pytest.fixture(scope="module")
def affected():
    """Whether this machine's MXNet dies on the issue's bare 1x1 convolution."""
    r = _run(CONV, "1,2,2,2048,2048,1")
    if r.returncode == 0:
        pytest.skip("the bare 1x1 convolution on (1, 2, 2048, 2048) does not crash here: the "
                    "bug needs oneDNN's brgconv_1x1:avx512_core (an AVX-512 CPU, MKLDNN on, "
                    "DNNL_MAX_CPU_ISA not capped below AVX512_CORE), so it is CPU-dependent")
    assert r.returncode == -signal.SIGFPE, (r.returncode, r.stderr[-2000:])
    return True


def test_bare_conv_crashes_where_predicted(affected):
    # One process per crash (the first kills it); the crash comes before any data is read.
    for shape in [(1, 1, 1, 2048, 1024, 1), (1, 1, 64, 1024, 1024, 1)]:
        assert dict(MEASURED)[shape]
        r = _run(CONV, ",".join(map(str, shape)))
        assert r.returncode == -signal.SIGFPE, (shape, r.returncode, r.stderr[-2000:])
    safe = [",".join(map(str, s)) for s, crashed in MEASURED if not crashed]
    r = _run(CONV, *safe)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert r.stdout.count("ok") == len(safe)


FORWARD = textwrap.dedent("""
    import sys
    import numpy as np
    import mxnet as mx
    import resattn
    from resattn import _onednn

    name, variant, out = sys.argv[1], sys.argv[2], sys.argv[5]
    h, w = int(sys.argv[3]), int(sys.argv[4])
    net = resattn.get_model(name, width_mult=0.03125, variant=variant)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))  # finishes deferred initialisation
    rng = np.random.RandomState(0)
    for pname, p in sorted(net.collect_params().items()):
        if pname.endswith("running_var") or pname.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, p.shape)
        elif pname.endswith(("running_mean", "beta", "bias")):
            value = rng.normal(0, 0.1, p.shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(p.shape[1:])), p.shape)
        p.set_data(mx.nd.array(value))
    x = mx.nd.array(np.random.RandomState(1).normal(size=(1, 3, h, w)))
    modes = sys.argv[6].split(",")
    results = {"imperative": net(x).asnumpy()} if "imperative" in modes else {}
    if "hybridized" in modes:
        small = mx.nd.ones((2, 3, 32, 32))
        expected_small = net(small).asnumpy()
        net.hybridize()
        assert _onednn.graph_would_crash(net, x), "the graph was expected to meet the crash"
        results["hybridized"] = net(x).asnumpy()  # the first hybridized call
        # It left the cached graph that ordinary sizes run and export writes.
        assert not _onednn.graph_would_crash(net, small)
        np.testing.assert_allclose(net(small).asnumpy(), expected_small, rtol=1e-5, atol=1e-5)
        net.export(out + "-net", epoch=0)
        params = mx.nd.load(out + "-net-0000.params")
        assert len(params) == len(net.collect_params().keys()), sorted(params)[:3]
    np.savez(out, **results)
""")


# A hybridized call at these sizes runs the imperative code too (the graph would crash),
# so 2048x2048 checks the hybridized path alone and keeps the file's time down.
@pytest.mark.parametrize("variant, height, width, modes",
                         [("gluoncv", 2048, 2048, "hybridized"),
                          ("official", 2048, 1024, "imperative,hybridized")])
def test_zoo_forward_at_crashing_sizes(affected, tmp_path, variant, height, width, modes):
    # attention56_cifar keeps the input size through stage 1: its 1x1 convolutions see
    # 2048x2048 (2048x1024), where oneDNN dies without the workaround.
    assert conv1x1_crashes((1, 4, height, width), 1)
    got, ref = tmp_path / "got.npz", tmp_path / "ref.npz"
    r = _run(FORWARD, "attention56_cifar", variant, height, width, got, modes)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    r = _run(FORWARD, "attention56_cifar", variant, height, width, ref, "imperative",
             env={"MXNET_MKLDNN_ENABLED": "0"})
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    expected = np.load(ref)["imperative"]
    results = np.load(got)
    scale = np.abs(expected).max()
    assert sorted(results.files) == sorted(modes.split(","))
    for mode in results.files:
        assert np.abs(results[mode] - expected).max() <= 1e-4 * scale, mode
