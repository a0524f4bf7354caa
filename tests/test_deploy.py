"""Deployment: symbol and ONNX export, oneDNN fusion, INT8, BF16 and the export/quantize CLI."""
import json
import os

import mxnet as mx
import numpy as np
import pytest

from conftest import randomize_batchnorm, rel_diff
from resattn import deploy, get_model
from resattn.models import blocks
from resattn.cli import main
from resattn.io import assign_parameters, save_parameters

MODEL, WIDTH = "attention56_cifar", 1 / 16


def _onnxruntime():
    return pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install 'resattn[test]')")


@pytest.fixture(scope="module")
def weights():
    """Structural name -> array of a tiny network with non-trivial BatchNorm statistics."""
    mx.random.seed(0)
    net = get_model(MODEL, width_mult=WIDTH)
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 32, 32)))
    randomize_batchnorm(net)
    return {k: p.data().copy() for k, p in net._collect_params_with_prefix().items()}


def _net(weights):
    net = get_model(MODEL, width_mult=WIDTH)
    assign_parameters(net, weights)
    return net


def _x(*shape, seed=0):
    return mx.nd.array(np.random.RandomState(seed).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("hybridize", [False, True])
def test_matmul_resize_equals_operator(hybridize):
    # The soft mask resizes by matrix products; ONNX export traces the operator.
    class Resize(mx.gluon.HybridBlock):
        def hybrid_forward(self, F, x, like):
            return blocks._resize_like(F, x, like)

    block = Resize()
    if hybridize:
        block.hybridize()
    for src, dst in (((2, 3, 4, 7), (7, 13)), ((1, 2, 9, 9), (4, 5)), ((1, 2, 1, 1), (3, 2)),
                     ((1, 1, 5, 5), (1, 1))):
        x, like = _x(*src), mx.nd.zeros(src[:2] + dst)
        head = _x(*(src[:2] + dst), seed=1)
        outs, grads = [], []
        for fn in (block, lambda a, b: mx.nd.contrib.BilinearResize2D(a, like=b, mode="like")):
            x.attach_grad()
            with mx.autograd.record():
                out = fn(x, like)
            out.backward(head)
            outs.append(out.asnumpy())
            grads.append(x.grad.asnumpy())
        assert outs[0].shape == outs[1].shape == src[:2] + dst
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
        np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


def test_export_symbol_round_trip(weights, tmp_path):
    net = _net(weights)
    sym_path, params_path = deploy.export_symbol(net, tmp_path / "m", 32)
    assert sym_path.endswith("m-symbol.json") and params_path.endswith("m-0000.params")
    loaded = deploy.load_symbol(tmp_path / "m")
    # also the plain MXNet way, and at a size other than the traced one
    with pytest.warns(UserWarning, match="Cannot decide type"):  # MXNet's, harmless
        imported = mx.gluon.SymbolBlock.imports(sym_path, ["data"], params_path)
    for shape in ((2, 3, 32, 32), (1, 3, 24, 40)):
        x = _x(*shape)
        ref = net(x)
        assert rel_diff(loaded(x), ref) < 1e-5
        assert rel_diff(imported(x), ref) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-0000.params", "m-symbol.json"]


def test_load_symbol_names_missing_file(tmp_path):
    with pytest.raises(ValueError, match="nope-symbol.json"):
        deploy.load_symbol(tmp_path / "nope")


def test_onnx_matches_mxnet_at_two_sizes(weights, tmp_path):
    _onnxruntime()
    onnx = pytest.importorskip("onnx")
    net = _net(weights)
    path = deploy.export_onnx(net, tmp_path / "m.onnx", 32)
    model = onnx.load(path)
    ops = {n.op_type for n in model.graph.node}
    assert "Resize" in ops
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1] == 3
    assert not any(d.dim_value for i, d in enumerate(dims) if i != 1)  # N, H, W dynamic
    assert [i.name for i in model.graph.input] == ["data"]  # weights are initializers only
    diffs = deploy.check_onnx(path, net, input_sizes=(32, (40, 24)), rtol=1e-4)
    assert len(diffs) == 2 and max(diffs.values()) < 1e-4


def test_onnx_static_shapes(weights, tmp_path):
    _onnxruntime()
    onnx = pytest.importorskip("onnx")
    net = _net(weights)
    path = deploy.export_onnx(net, tmp_path / "s.onnx", (24, 16), dynamic=False)
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 24, 16]
    assert max(deploy.check_onnx(path, net, [(24, 16)], batch_size=1).values()) < 1e-4


def test_check_onnx_reports_mismatch(weights, tmp_path):
    _onnxruntime()
    net = _net(weights)
    path = deploy.export_onnx(net, tmp_path / "m.onnx", 32)
    other = _net({k: v * 1.5 if k.endswith("weight") else v for k, v in weights.items()})
    with pytest.raises(ValueError, match="rtol"):
        deploy.check_onnx(path, other, [32])


def test_optimize_keeps_outputs(weights, tmp_path):
    ref_net = _net(weights)
    net = deploy.optimize(_net(weights))
    for shape in ((2, 3, 32, 32), (3, 3, 24, 40)):
        x = _x(*shape)
        assert rel_diff(net(x), ref_net(x)) < 1e-4
    net.export(str(tmp_path / "fused"))
    ops = {n["op"] for n in json.load(open(tmp_path / "fused-symbol.json"))["nodes"]}
    assert "_sg_mkldnn_conv" in ops or "_sg_onednn_conv" in ops


def test_quantize_close_to_float32(weights):
    net = _net(weights)
    calib = [(_x(8, 3, 32, 32, seed=s), mx.nd.zeros(8)) for s in range(3)]
    qnet = deploy.quantize(net, calib, num_calib_batches=2)
    x = _x(4, 3, 32, 32, seed=5)
    ref, out = net(x).asnumpy(), qnet(x).asnumpy()
    assert out.shape == ref.shape and out.dtype == np.float32
    assert rel_diff(out, ref) < 0.25  # int8: loose
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("kwargs, match", [
    (dict(calib_mode="kl"), "calib_mode must be one of naive, entropy, none, got 'kl'"),
    (dict(quantized_dtype="int4"), "quantized_dtype must be one of auto, int8, uint8"),
    (dict(num_calib_batches=0), "num_calib_batches must be an integer >= 1, got 0"),
])
def test_quantize_rejects_bad_arguments(weights, kwargs, match):
    with pytest.raises(ValueError, match=match):
        deploy.quantize(_net(weights), [_x(2, 3, 32, 32)], **kwargs)


def test_quantize_rejects_empty_calibration(weights):
    with pytest.raises(ValueError, match="no batches"):
        deploy.quantize(_net(weights), [])


def test_bfloat16_close_to_float32(weights):
    net = _net(weights)
    bf16 = deploy.to_bfloat16(_net(weights), 32)
    x = _x(2, 3, 32, 32)
    out = bf16(x)
    assert out.dtype == np.float32
    assert rel_diff(out, net(x)) < 0.1  # bfloat16 keeps 8 bits of mantissa


@pytest.mark.parametrize("flags, says", [
    ({"avx512f", "avx512_bf16", "avx512_vnni"}, "AVX-512 BF16 but no Intel AMX"),
    ({"avx2"}, "neither Intel AMX nor AVX-512 BF16"),
    ({"avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}, "call resattn.deploy.enable_amx()"),
])
def test_bfloat16_warns_where_it_is_slower_than_float32(weights, monkeypatch, flags, says):
    from resattn.deploy import cpu
    monkeypatch.setattr(cpu, "_cpu_flags", lambda: set(flags))
    monkeypatch.setitem(cpu._AMX_STATE, "enabled", False)
    with pytest.warns(RuntimeWarning, match="to_bfloat16: this CPU has") as record:
        deploy.to_bfloat16(_net(weights), 32)
    message = str(record[0].message)
    assert says in message
    if "enable_amx" not in says:
        assert "deploy.optimize" in message and "deploy.quantize" in message


def test_bfloat16_on_amx_does_not_warn(weights, monkeypatch):
    import warnings
    from resattn.deploy import cpu
    monkeypatch.setitem(cpu._AMX_STATE, "enabled", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        deploy.to_bfloat16(_net(weights), 32)


def test_uninitialised_network_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="uninitialised parameters"):
        deploy.export_symbol(get_model(MODEL, width_mult=WIDTH), tmp_path / "m", 32)


def test_input_size_validation(weights, tmp_path):
    with pytest.raises(ValueError, match="input_size must be an int N or a pair"):
        deploy.export_symbol(_net(weights), tmp_path / "m", (1, 2, 3))


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def run_dir(weights, tmp_path):
    """A directory as `resattn train` leaves it: best.params and config.json."""
    save_parameters(_net(weights), tmp_path / "best.params")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model": MODEL, "model_kwargs": {"width_mult": WIDTH}, "seed": 0}))
    return tmp_path


def test_cli_export_symbol_uses_config(weights, run_dir, capsys):
    prefix = run_dir / "out" / "net"
    assert main(["export", "--params", str(run_dir / "best.params"), "--format", "symbol",
                 "-o", str(prefix)]) == 0
    assert "net-symbol.json" in capsys.readouterr().out
    x = _x(1, 3, 32, 32)
    assert rel_diff(deploy.load_symbol(prefix)(x), _net(weights)(x)) < 1e-5


def test_cli_export_onnx(weights, run_dir, capsys):
    _onnxruntime()
    path = run_dir / "net.onnx"
    assert main(["export", "--model", MODEL, "--width-mult", str(WIDTH), "--params",
                 str(run_dir / "best.params"), "--format", "onnx", "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert "checked in ONNX Runtime" in out and path.is_file()


def test_cli_quantize(run_dir, capsys):
    prefix = run_dir / "int8"
    assert main(["quantize", "--params", str(run_dir / "best.params"), "--calib-dataset",
                 "digits", "--calib-batches", "2", "--batch-size", "16", "-o", str(prefix),
                 "--eval"]) == 0
    out = capsys.readouterr().out
    assert "INT8, naive calibration on 2 batches of 16" in out
    assert "top1 float32" in out and "int8" in out
    qnet = deploy.load_symbol(prefix)
    assert qnet(_x(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("argv, message", [
    (["export", "--format", "tflite", "-o", "x"], "--format 'tflite': expected one of symbol, onnx"),
    (["quantize", "--calib-dataset", "digits", "--calib-mode", "kl", "-o", "x"],
     "--calib-mode 'kl': expected one of naive, entropy, none"),
    (["export", "--format", "symbol", "-o", "x", "--params", "missing.params"],
     "--params missing.params: no such file"),
])
def test_cli_errors_are_one_line(run_dir, capsys, argv, message):
    if "--params" not in argv:
        argv = argv + ["--params", str(run_dir / "best.params")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


_AMX_SCRIPT = """
import sys, numpy as np, mxnet as mx
from resattn import deploy, get_model
on = deploy.enable_amx() if sys.argv[1] == "amx" else False
mx.random.seed(0)
net = get_model("attention56_cifar", width_mult=1 / 16)
net.initialize(mx.init.MSRAPrelu())
x = mx.nd.array(np.random.RandomState(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
net(x)
out = [deploy.quantize(net, [x], 1)(x).asnumpy(), deploy.to_bfloat16(net)(x).asnumpy()]
np.save(sys.argv[2], np.stack(out))
print("AMX", on)
"""


def test_enable_amx_keeps_int8_and_bf16_results(tmp_path):
    # AMX must be enabled before oneDNN's first operator, so each run is a fresh process.
    import subprocess
    import sys
    from resattn.deploy.cpu import _AMX_FLAGS, _cpu_flags
    if not _AMX_FLAGS <= _cpu_flags():
        pytest.skip("this CPU has no Intel AMX")
    outs = []
    for mode in ("amx", "plain"):
        path = tmp_path / (mode + ".npy")
        env = {k: v for k, v in os.environ.items() if k != "DNNL_MAX_CPU_ISA"}
        proc = subprocess.run([sys.executable, "-c", _AMX_SCRIPT, mode, str(path)],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ("AMX True" if mode == "amx" else "AMX False") in proc.stdout
        outs.append(np.load(path))
    assert rel_diff(outs[0][0], outs[1][0]) < 1e-4  # INT8: integer arithmetic either way
    assert rel_diff(outs[0][1], outs[1][1]) < 2e-2  # BF16: accumulation order differs


def test_enable_amx_respects_an_explicit_isa(monkeypatch):
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert deploy.enable_amx() is False
    assert os.environ["DNNL_MAX_CPU_ISA"] == "AVX2"


def test_enable_amx_leaves_the_environment_alone(monkeypatch):
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    deploy.enable_amx()  # oneDNN already runs in this process: no effect, no residue
    assert "DNNL_MAX_CPU_ISA" not in os.environ


def test_cli_reads_the_classifier_size_from_the_weights(run_dir, capsys):
    net = get_model(MODEL, width_mult=WIDTH, classes=7)
    net.initialize()
    net(_x(1, 3, 32, 32))
    save_parameters(net, run_dir / "best.params")  # config.json names no classes
    prefix = run_dir / "seven"
    assert main(["export", "--params", str(run_dir / "best.params"), "--format", "symbol",
                 "-o", str(prefix)]) == 0
    assert deploy.load_symbol(prefix)(_x(2, 3, 32, 32)).shape == (2, 7)


def test_cli_names_an_unreadable_weight_file(run_dir, capsys):
    bad = run_dir / "best.params"
    bad.write_bytes(b"not an MXNet file")
    assert main(["export", "--params", str(bad), "--format", "symbol", "-o",
                 str(run_dir / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read %s as an MXNet parameter file" % bad in err
    assert len(err.splitlines()) == 1
