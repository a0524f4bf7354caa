"""The package's structure: lazy imports, old module paths, file helpers, the MXNet shim."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from conftest import run_python
import resattn
from resattn import _compat, io


def test_importing_the_package_and_the_choices_starts_no_mxnet():
    code = ("import sys, resattn, resattn.models.choices, resattn.training.config, "
            "resattn.deploy.choices, resattn.training.launch, resattn.io\n"
            "assert 'mxnet' not in sys.modules, sorted(m for m in sys.modules if 'mx' in m)\n"
            "resattn.AttentionModule\n"
            "assert 'mxnet' in sys.modules\n")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_no_exported_name_is_shadowed_by_a_submodule():
    """Importing a submodule sets the package attribute of its name: no function may share it."""
    import importlib
    import pkgutil
    for package in ("resattn", "resattn.models", "resattn.data", "resattn.training",
                    "resattn.masks", "resattn.deploy"):
        pkg = importlib.import_module(package)
        modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
        assert not modules & set(pkg.__all__), (package, modules & set(pkg.__all__))
        for name in modules:
            importlib.import_module(package + "." + name)
    assert callable(resattn.profile) and callable(resattn.masks.capture)
    assert resattn.training.fit.__module__ == "resattn.training.trainer"


def test_top_level_names():
    assert set(resattn.__all__) >= {"AttentionModule", "ResidualUnit", "ResNeXtUnit",
                                    "ResidualAttentionNet", "get_model", "get_model_list",
                                    "model_config", "profile", "register_model", "__version__"}
    from resattn.models import blocks
    assert resattn.AttentionModule is blocks.AttentionModule
    assert resattn.VARIANTS == ("official", "gluoncv")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        resattn.nothing


@pytest.mark.parametrize("old,new", [("resattn.train", "resattn.training"),
                                     ("resattn.zoo", "resattn.models.zoo"),
                                     ("resattn.convert", "resattn.models.convert"),
                                     ("resattn.blocks", "resattn.models.blocks"),
                                     ("resattn.launch", "resattn.training.launch")])
def test_module_paths_of_0_1_still_import_with_a_warning(old, new):
    code = ("import warnings, importlib\nwarnings.simplefilter('error')\n"
            "try:\n    importlib.import_module(%r)\nexcept DeprecationWarning as w:\n"
            "    assert %r in str(w), w\nelse:\n    raise SystemExit('no warning')\n"
            "warnings.simplefilter('ignore')\n"
            "assert importlib.import_module(%r) is importlib.import_module(%r)\n"
            % (old, new, old, new))
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_parse_size_and_input_shape():
    assert io.parse_size("32") == 32 and io.parse_size("45x37") == (45, 37)
    assert io.parse_size("45,37") == (45, 37)
    for bad in ("0", "x", "3x4x5", "-2", ""):
        with pytest.raises(ValueError, match="input size must be N or HxW"):
            io.parse_size(bad)
    assert io.input_shape(32) == (1, 3, 32, 32)
    assert io.input_shape((45, 37), batch_size=2) == (2, 3, 45, 37)
    assert io.input_shape((1, 9, 9), allow_channels=True) == (1, 1, 9, 9)
    for bad in (0, True, (3, 4, 5), "32", (4, 0), (32,)):
        with pytest.raises(ValueError, match="input_size must be an int N or a pair"):
            io.input_shape(bad)
    with pytest.raises(ValueError, match="batch_size"):
        io.input_shape(8, batch_size=0)


def test_mismatch_report():
    assert io.mismatch_report() == ""
    text = io.mismatch_report(["a", "b"], [], ["c: expected (1,), got (2,)"])
    assert text == "2 missing: a, b; 1 wrong shape: c: expected (1,), got (2,)"
    many = io.mismatch_report(unexpected=["k%d" % i for i in range(25)])
    assert many.startswith("25 unexpected: k0, k1") and many.endswith("... and 5 more")


def test_read_params_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        io.read_params(str(tmp_path / "missing.params"))
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"not a parameter file")
    with pytest.raises(ValueError, match="cannot read .*bad.params as an MXNet parameter file"):
        io.read_params(str(bad))
    listed = tmp_path / "list.params"
    mx.nd.save(str(listed), [mx.nd.zeros(2)])
    with pytest.raises(ValueError, match="unnamed list"):
        io.read_params(str(listed))
    named = tmp_path / "named.params"
    mx.nd.save(str(named), {"arg:w": mx.nd.ones(2), "aux:m": mx.nd.zeros(1), "b": mx.nd.ones(3)})
    assert sorted(io.read_params(str(named))) == ["b", "m", "w"]


def test_sha1_file_is_git_independent_sha1(tmp_path):
    import hashlib
    path = tmp_path / "f"
    data = bytes(range(256)) * 10000
    path.write_bytes(data)
    assert io.sha1_file(str(path)) == hashlib.sha1(data).hexdigest()


# ---------------------------------------------------------------------------- _compat
# Each private MXNet attribute resattn relies on, checked against the installed MXNet.

def _small():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(2, 1, in_channels=1), nn.BatchNorm(in_channels=2), nn.Dropout(0.5))
    net.initialize()
    return net


def test_compat_structured_params_and_load():
    net = _small()
    params = _compat.structured_params(net)
    assert sorted(params) == ["0.bias", "0.weight", "1.beta", "1.gamma", "1.running_mean",
                              "1.running_var"]
    _compat.load_param_data(params["0.bias"], mx.nd.array([3.0, 4.0]), mx.cpu())
    assert params["0.bias"].data().asnumpy().tolist() == [3.0, 4.0]
    assert sorted(_compat.structured_params(net[1], "bn")) == [
        "bn.beta", "bn.gamma", "bn.running_mean", "bn.running_var"]


def test_compat_hybridization_flags_and_cached_graph():
    net = _small()
    assert not _compat.is_hybridized(net)
    _compat.set_hybridized(net, True)
    assert _compat.is_hybridized(net) and not _compat.is_hybridized(net[0])
    net(mx.nd.zeros((1, 1, 2, 2)))
    assert _compat.has_cached_graph(net)
    _compat.clear_cached_graph(net)
    assert not _compat.has_cached_graph(net)


def test_compat_batchnorm_and_dropout_flags():
    net = _small()
    assert _compat.batchnorm_global_stats(net[1]) is False
    assert _compat.batchnorm_global_stats(net[1], True) is False
    assert _compat.batchnorm_global_stats(net[1]) is True
    assert _compat.batchnorm_global_stats(net[0]) is None
    assert _compat.dropout_rate(net[2], 0.0) == 0.5 and _compat.dropout_rate(net[2]) == 0.0
    with mx.autograd.record():  # rate 0: dropout is the identity even in training mode
        x = mx.nd.ones((1, 2, 2, 2))
        assert np.array_equal(net[2](x).asnumpy(), x.asnumpy())


def test_compat_set_active_keeps_the_cached_graph():
    net = _small()
    net.hybridize()
    net(mx.nd.zeros((1, 1, 2, 2)))
    assert _compat.set_active(net, False) is True and not _compat.is_hybridized(net)
    assert _compat.has_cached_graph(net)
    assert _compat.set_active(net, True) is False and _compat.is_hybridized(net)


def test_compat_named_children_and_set_child():
    net = _small()
    assert [name for name, _ in _compat.named_children(net)] == ["0", "1", "2"]
    new = nn.Dropout(0.1)
    _compat.set_child(net, "2", new)
    assert net[2] is new
    with pytest.raises(KeyError):
        _compat.set_child(net, "9", new)


def test_compat_settle_trainer_puts_parameters_on_the_kvstore():
    net = _small()
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", kvstore="local")
    _compat.settle_trainer(trainer)
    assert trainer._kv_initialized and not trainer._params_to_init


def test_compat_onnx_entry_points():
    pytest.importorskip("onnx")
    assert callable(_compat.onnx_get_inputs())
    assert hasattr(_compat.onnx_graph(), "registry_")


def test_no_private_mxnet_calls_outside_compat():
    """Private MXNet attributes are reached through resattn._compat alone."""
    import pathlib
    import re
    root = pathlib.Path(resattn.__file__).parent
    pattern = re.compile(r"\._(collect_params_with_prefix|load_init|init_kvstore|kv_initialized|"
                         r"params_to_init|init_params|clear_cached_op|cached_op|active|flags|"
                         r"kwargs\b|rate|cached_graph|get_graph|build_cache|children\.)\b")
    hits = [("%s:%d" % (p.relative_to(root), i), line.strip())
            for p in root.rglob("*.py") if p.name != "_compat.py"
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line) and "self._" not in line]
    assert not hits, hits
