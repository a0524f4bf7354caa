"""resattn.deploy.load_onnx: an exported file runs in each installed engine as MXNet runs it."""
import sys

import mxnet as mx
import numpy as np
import pytest

from conftest import randomize_batchnorm, rel_diff, run_python
from resattn import deploy, get_model

pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install 'resattn[deploy]')")


def _engine(name):
    pytest.importorskip(name, reason="%s is not installed (pip install -c constraints.txt "
                                     "'resattn[deploy]')" % name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 1/16-width Attention-56 with non-trivial BatchNorm statistics and its ONNX file."""
    mx.random.seed(0)
    net = get_model("attention56_cifar", width_mult=0.0625)
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 32, 32)))
    randomize_batchnorm(net)
    path = deploy.export_onnx(net, tmp_path_factory.mktemp("engines") / "tiny.onnx", 32)
    return net, path


@pytest.mark.parametrize("engine", deploy.ONNX_ENGINES)
def test_engine_matches_mxnet_at_two_sizes(exported, engine):
    _engine(engine)
    net, path = exported
    model = deploy.load_onnx(path, engine)
    assert (model.engine, model.precision) == (engine, "f32")
    rng = np.random.RandomState(0)
    for shape in ((3, 3, 32, 32), (2, 3, 40, 24)):  # one file, dynamic batch, H and W
        x = rng.standard_normal(shape).astype(np.float32)
        got = model(x)
        assert got.shape == (shape[0], 10)
        assert rel_diff(net(mx.nd.array(x)), got) < 1e-4


@pytest.mark.parametrize("engine", deploy.ONNX_ENGINES)
def test_engine_takes_a_thread_count(exported, engine):
    _engine(engine)
    model = deploy.load_onnx(exported[1], engine, threads=1)
    assert model.threads == 1
    assert model(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


@pytest.mark.parametrize("engine", deploy.ONNX_ENGINES)
def test_check_onnx_in_each_engine(exported, engine):
    _engine(engine)
    net, path = exported
    diffs = deploy.check_onnx(path, net, engine=engine)
    assert len(diffs) == 2 and max(diffs.values()) < 1e-4


def test_openvino_auto_precision_is_reported(exported):
    _engine("openvino")
    net, path = exported
    model = deploy.load_onnx(path, "openvino", precision="auto")
    # bf16 on CPUs with AVX-512 BF16 or AMX, f32 elsewhere: either way close to MXNet.
    assert model.precision in ("f32", "bf16")
    x = np.random.RandomState(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert rel_diff(net(mx.nd.array(x)), model(x)) < (5e-2 if model.precision == "bf16" else 1e-4)


def test_load_onnx_names_bad_arguments(exported, tmp_path):
    path = exported[1]
    with pytest.raises(ValueError, match="engine must be one of 'onnxruntime', 'openvino', "
                                         "got 'tensorrt'"):
        deploy.load_onnx(path, "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of 'f32', 'auto', got 'fp16'"):
        deploy.load_onnx(path, precision="fp16")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        deploy.load_onnx(path, threads=0)
    with pytest.raises(ValueError, match="no ONNX file at .*nope.onnx"):
        deploy.load_onnx(tmp_path / "nope.onnx")


@pytest.mark.parametrize("engine", deploy.ONNX_ENGINES)
def test_a_missing_engine_names_what_to_install(exported, engine, monkeypatch):
    monkeypatch.setitem(sys.modules, engine, None)  # `import engine` raises ImportError
    with pytest.raises(ImportError, match=r"needs the %s package: pip install %s==.*"
                                          r"resattn\[deploy\]" % (engine, engine)):
        deploy.load_onnx(exported[1], engine)


def test_importing_the_engines_starts_no_mxnet():
    result = run_python("-c", "import sys, resattn.deploy.engines\n"
                              "assert 'mxnet' not in sys.modules\n"
                              "assert not {'onnxruntime', 'openvino'} & set(sys.modules)\n")
    assert result.returncode == 0, result.stderr
