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
                                    "ResidualAttentionNet", "get_model", "list_models",
                                    "load_model", "PretrainedCfg", "model_config", "profile", "register_model", "__version__"}
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


def test_compat_block_walk_and_imperative():
    outer = nn.HybridSequential()
    inner = _small()
    outer.add(inner, nn.Dense(2))
    assert [path for path, _ in _compat.named_blocks(outer)] == ["", "0", "0.0", "0.1", "0.2",
                                                                 "1"]
    assert list(_compat.iter_blocks(outer)) == [b for _, b in _compat.named_blocks(outer)]
    outer.hybridize()
    with _compat.imperative(outer):
        assert not any(_compat.is_hybridized(b) for b in _compat.iter_blocks(outer))
    assert all(_compat.is_hybridized(b) for b in _compat.iter_blocks(outer))


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


def test_checks_import_neither_mxnet_nor_numpy():
    code = ("import sys, resattn._checks, resattn.data.registry\n"
            "assert not {'mxnet', 'numpy'} & set(sys.modules), sorted(sys.modules)\n")
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def _load_time_imports(tree):
    """The import statements that run when the module is loaded: those at module level,
    in ``if``/``try``/``with`` blocks and class bodies there, not those in functions."""
    import ast
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending.extend(child for child in ast.iter_child_nodes(node)
                           if isinstance(child, (ast.stmt, ast.excepthandler)))


def _import_graph():
    """``{module: {modules it imports at load time}}`` for every module of resattn.

    ``from P import x`` goes to ``P.x`` where that is a module, to the module a lazy
    package ``P`` takes ``x`` from (``_lazy.attach``), else to ``P``. A lazy package's
    own table is no edge: it imports nothing until a name is read.
    """
    import ast
    import importlib.util
    import pathlib
    root = pathlib.Path(resattn.__file__).parent
    trees, packages = {}, set()
    for path in sorted(root.rglob("*.py")):
        parts = ("resattn",) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        trees[".".join(parts)] = ast.parse(path.read_text(), str(path))
    lazy = {}  # {package: {name: module}}
    for package in packages:
        attach = {a.asname or a.name for node in trees[package].body
                  if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_lazy")
                  for a in node.names if a.name == "attach"}
        for node in ast.walk(trees[package]):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in attach \
                    and len(node.args) == 2 and isinstance(node.args[1], ast.Dict):
                table = ast.literal_eval(node.args[1])
                lazy[package] = {name: importlib.util.resolve_name(module, package)
                                 for module, names in table.items() for name in names}
                assert set(lazy[package].values()) <= set(trees), (package, table)
        assert package in lazy or not attach, "%s: its attach table was not found" % package

    def known(name):  # the module itself, or the innermost resattn module above it
        while name and name not in trees:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, tree in trees.items():
        package = module if module in packages else module.rpartition(".")[0]
        edges = graph.setdefault(module, set())
        for node in _load_time_imports(tree):
            if isinstance(node, ast.Import):
                edges.update(known(a.name) for a in node.names if a.name.startswith("resattn"))
                continue
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module
            if not base or base.split(".")[0] != "resattn":
                continue
            for alias in node.names:
                sub = base + "." + alias.name
                edges.add(sub if sub in trees else
                          lazy.get(base, {}).get(alias.name) or known(base))
        edges.discard(None)
        edges.discard(module)
    return graph


def test_no_import_cycles():
    """No module of resattn imports itself again at load time through others.

    Only load-time imports count (module level, also in ``if``/``try``); an import
    inside a function is the way to depend on a module that depends on this one.
    """
    graph = _import_graph()
    assert "resattn._compat" in graph["resattn._onednn"]  # the graph is what it should be
    state, stack, cycles = {}, [], []

    def visit(module):  # depth first; a module met again while on the stack closes a cycle
        state[module] = "open"
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                cycles.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
