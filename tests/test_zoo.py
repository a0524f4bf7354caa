import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd
from mxnet.gluon import nn

import resattn
from conftest import randomize_batchnorm, rel_diff

from resattn import get_model, list_models, profile
from resattn.models import _registry, get_spec, register_model, zoo

MODELS = list_models()
# Small widths keep every registered model fast enough for a unit test.
WIDTH = 1 / 16


def _other_size(size):
    return (size + 5, size - 3)  # odd and non-square


def test_registry_matches_spec_table_and_module_builders():
    assert MODELS == list(zoo.MODEL_SPECS)
    for name in MODELS:
        assert getattr(zoo, name).__name__ == name
        assert name in zoo.__all__
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("attention56")(lambda **kw: None)


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_hybrid(name):
    cfg = resattn.model_config(name)
    net = get_model(name, width_mult=WIDTH, classes=7)
    # A small initial scale keeps activations O(1) through 452 layers, so that
    # float32 rounding differences between the two execution paths stay small.
    net.initialize(mx.init.Xavier(magnitude=0.5))
    size = cfg["input_size"]
    batch = 2 if size <= 64 else 1
    x = mx.nd.random.normal(shape=(batch, 3, size, size))
    net(x)
    randomize_batchnorm(net)
    x2 = mx.nd.random.normal(shape=(batch, 3) + _other_size(size))
    imperative = [net(x), net(x2)]
    net.hybridize(static_alloc=True)
    hybrid = [net(x), net(x2)]
    for a, b in zip(imperative, hybrid):
        assert a.shape == (batch, 7)
        assert rel_diff(a, b) < 1e-4
    with autograd.record():
        loss = net(x2).sum()
    loss.backward()
    no_grad = [k for k, p in net._collect_params_with_prefix().items()
               if p.grad_req != "null" and not np.abs(p.grad().asnumpy()).sum() > 0]
    assert not no_grad, "parameters without gradient: %s" % no_grad[:5]


@pytest.mark.parametrize("name", MODELS)
def test_profile_counts_match_initialised_parameters(name):
    net = get_model(name, width_mult=WIDTH)
    size = resattn.model_config(name)["input_size"]
    prof = profile(net, size)
    net.initialize()
    net(mx.nd.zeros((1, 3, size, size)))
    real = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
    assert prof.params == real


def test_profile_macs_against_forward_hooks():
    """Multiply-accumulates recounted from the shapes seen in an imperative forward."""
    net = get_model("attention56_cifar", width_mult=WIDTH)
    net.initialize()
    expected = profile(net, (29, 35)).macs
    macs = []

    def hook(block, inputs, output):
        w = block.weight.shape
        if isinstance(block, nn.Conv2D):
            macs.append(output.size * w[1] * w[2] * w[3])
        else:
            macs.append(w[0] * w[1])

    for block in _walk(net):
        if isinstance(block, (nn.Conv2D, nn.Dense)):
            block.register_forward_hook(hook)
    net(mx.nd.zeros((1, 3, 29, 35)))
    assert expected == sum(macs) > 0


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)


@pytest.mark.parametrize("name,tol", [("attention56", 0.03), ("attention92", 0.03),
                                      ("attentionnext56", 0.03),
                                      ("attention92_cifar_paper", 0.10),
                                      ("attention236_cifar_paper", 0.10),
                                      ("attention452_cifar_paper", 0.10)])
def test_counts_close_to_paper(name, tol):
    cfg = resattn.model_config(name)
    prof = profile(get_model(name), cfg["input_size"])
    assert abs(prof.params / 1e6 / cfg["paper_params"] - 1) < tol
    if "paper_macs" in cfg:
        assert abs(prof.macs / 1e9 / cfg["paper_macs"] - 1) < tol


def test_depth_is_36m_plus_20():
    """Depth counts the weighted layers along the trunk path (paper, Sec. 4.1)."""
    for name, depth in [("attention56", 56), ("attention92", 92), ("attention128", 128),
                        ("attention164", 164), ("attention200", 200), ("attention236", 236)]:
        spec = zoo.MODEL_SPECS[name]
        units_per_module = 2 * spec["p"] + spec["t"]
        trunk_units = sum(spec["modules"]) * units_per_module + 3 + 3  # transitions + final
        assert 3 * trunk_units + 2 == depth


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean 'attention92_cifar'"):
        get_model("attention92_cifr")


def test_pretrained_without_published_weights_says_so():
    with pytest.raises(ValueError, match="no published weights for 'attention56'"):
        get_model("attention56", pretrained=True)


def test_pretrained_path(tmp_path):
    net = get_model("attention56_cifar", width_mult=WIDTH)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = tmp_path / "w.params"
    net.save_parameters(str(path))
    loaded = get_model("attention56_cifar", width_mult=WIDTH, pretrained=str(path))
    x = mx.nd.random.normal(shape=(1, 3, 32, 32))
    assert rel_diff(net(x), loaded(x)) == 0

    # pretrained=True loads a model's published weights; the second mechanism (a resattn
    # file named by ModelSpec.weights under ~/.mxnet/models) is gone: nothing used it.
    with pytest.raises(ValueError, match="no published weights for 'attention56_cifar'"):
        get_model("attention56_cifar", width_mult=WIDTH, pretrained=True, root=str(tmp_path))
    assert "weights" not in {f.name for f in __import__("dataclasses").fields(
        resattn.models.ModelSpec)}
    with pytest.raises(ValueError, match="no such file"):
        get_model("attention56_cifar", pretrained=str(tmp_path / "missing.params"))
    with pytest.raises(ValueError, match="pretrained must be"):
        get_model("attention56_cifar", pretrained=3)


def test_width_mult_validation():
    with pytest.raises(ValueError, match="width_mult"):
        get_model("attention56", width_mult=-1)


def test_model_config_has_preprocessing():
    cfg = resattn.model_config("attention92_cifar")
    assert cfg["input_size"] == 32 and len(cfg["mean"]) == 3 and cfg["variant"] == "gluoncv"
    assert "95.41" in cfg["published"]
    assert resattn.model_config("attention56")["variant"] == "official"


def test_spec_is_bound_at_registration():
    """Architecture, preprocessing and paper figures come from one ModelSpec per model."""
    for name in MODELS:
        spec, table = get_spec(name), zoo.MODEL_SPECS[name]
        assert spec.name == name and spec.builder is getattr(zoo, name)
        assert spec.input_size == table["input_size"] and spec.mean == table["mean"]
        assert all(spec.arch[k] == table[k] for k in ("modules", "widths", "p", "t", "r"))
        assert resattn.model_config(name) == spec.config()
    assert "95.41" in get_spec("attention92_cifar").published


@pytest.fixture
def custom_model(monkeypatch):
    """A builder registered by a user with only part of a spec; removed after the test."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._with_zoo()))

    @register_model
    def plain_cifar_test(classes=10, **kwargs):
        net = nn.HybridSequential()
        net.add(nn.Conv2D(8, 3, padding=1, in_channels=3), nn.GlobalAvgPool2D(),
                nn.Dense(classes, in_units=8))
        return net
    register_model("plain_cifar_test_32", input_size=32, classes=10,
                   mean=(0.5,) * 3, std=(0.25,) * 3)(plain_cifar_test)
    return "plain_cifar_test"


def test_a_builder_registered_without_spec_works_everywhere(custom_model, capsys):
    from resattn.cli import main
    assert custom_model in list_models()
    cfg = resattn.model_config(custom_model)
    assert cfg["input_size"] == 224 and cfg["classes"] == 1000 and cfg["published"] is None
    assert resattn.model_config("plain_cifar_test_32")["mean"] == (0.5, 0.5, 0.5)
    assert get_model(custom_model, classes=3).__class__.__name__ == "HybridSequential"
    assert main(["info", "plain_cifar_test_32"]) == 0
    assert "total params 314 " in capsys.readouterr().out
    with pytest.raises(ValueError, match="already registered"):
        register_model(custom_model)(lambda **kw: None)
    with pytest.raises(ValueError, match="unknown spec fields colour"):
        register_model("x", colour="red")
