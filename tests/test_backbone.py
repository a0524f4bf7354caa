"""add_attention: attention modules inside existing networks (custom and GluonCV)."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

from conftest import randomize_batchnorm
from resattn import AttentionModule, ResNeXtUnit
from resattn._compat import has_cached_graph, is_hybridized, named_children, structured_params
from resattn.models import add_attention
from resattn.models.backbone import default_num_pools


@pytest.fixture(scope="module")
def gcv():
    from resattn._compat import import_gluoncv
    try:
        return import_gluoncv()
    except ImportError as err:  # pragma: no cover
        pytest.skip("GluonCV is not installed: %s" % err)


def _tiny(widths=(8, 16), initialize=True):
    """conv (stride 1) -> conv (stride 2) -> pool -> dense."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(widths[0], 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            nn.Conv2D(widths[1], 3, strides=2, padding=1), nn.GlobalAvgPool2D(), nn.Dense(5))
    if initialize:
        net.initialize(mx.init.Xavier())
    return net


def _new_params(modules):
    return [p for _, m in modules for p in m.collect_params().values()]


@pytest.mark.parametrize("side,pools", [(224, 3), (112, 3), (56, 3), (55, 2), (28, 2),
                                        (27, 1), (14, 1), (13, 0), (7, 0), (6, 0), (1, 0)])
def test_default_num_pools_is_the_papers_rule(side, pools):
    assert default_num_pools(side, side) == pools
    assert default_num_pools(side, 1000) == default_num_pools(1000, side) == pools
    assert pools == int(np.clip(np.floor(np.log2(side / 7)), 0, 3))


@pytest.mark.parametrize("size,pools", [(56, (3, 2)), ((29, 61), (2, 1)), (14, (1, 0))])
def test_widths_and_pools_are_inferred(size, pools):
    net = _tiny()
    inserted = add_attention(net, ["0", "3"], size)
    assert [path for path, _ in inserted] == ["0.1", "3.1"]
    assert [m.channels for _, m in inserted] == [8, 16]
    assert [m.num_pools for _, m in inserted] == list(pools)
    assert [m.stage for _, m in inserted] == [4 - n for n in pools]
    assert net[0][1] is inserted[0][1] and isinstance(net[0][0], nn.Conv2D)
    assert net(mx.nd.zeros((2, 3, 20, 24))).shape == (2, 5)


def test_options_reach_the_modules():
    net = _tiny((32, 64))
    inserted = add_attention(net, "3", 56, p=0, t=1, r=2, attention="spatial", learning="nal",
                             variant="gluoncv", num_pools=[None], unit=ResNeXtUnit)
    module = inserted[0][1]
    assert (module.p, module.t, module.r) == (0, 1, 2)
    assert (module.attention, module.learning, module.variant) == ("spatial", "nal", "gluoncv")
    assert module.num_pools == 2 and isinstance(module.trunk[0], ResNeXtUnit)
    inserted = add_attention(_tiny(), ["0", "3"], 56, num_pools=[4, None])
    assert [m.num_pools for _, m in inserted] == [4, 2]
    inserted = add_attention(_tiny(), ["0", "3"], 56, num_pools=1)
    assert [m.num_pools for _, m in inserted] == [1, 1]


def test_initialised_network_gets_initialised_modules():
    net = _tiny()
    x = mx.nd.random.normal(shape=(2, 3, 16, 16))
    before = net(x).asnumpy()
    inserted = add_attention(net, ["0", "3"], 32, init=mx.init.Uniform(0.01))
    for param in _new_params(inserted):
        assert param.list_ctx() == [mx.cpu()]
        data = param.data().asnumpy()  # initialised, no deferred shape left
        if param.name.endswith("weight"):
            assert 0 < np.abs(data).max() <= 0.01
    assert not np.allclose(net(x).asnumpy(), before)


def test_uninitialised_network_is_initialised_later():
    net = _tiny(initialize=False)
    inserted = add_attention(net, ["0", "3"], 32)
    for param in _new_params(inserted):
        with pytest.raises(RuntimeError, match="not been initialized"):
            param.list_ctx()
    net.initialize(mx.init.Xavier())
    assert net(mx.nd.zeros((1, 3, 16, 16))).shape == (1, 5)


def test_names_are_unique_and_structural(tmp_path):
    net = _tiny()
    add_attention(net, ["0", "3"], 32)
    add_attention(net, ["0"], 32)  # again, on the already wrapped child
    names = list(net.collect_params().keys())
    assert len(names) == len(set(names))
    structural = sorted(structured_params(net))
    assert "0.0.0.weight" in structural and "0.1.trunk.0.conv1.weight" in structural
    assert "0.0.1.pre.0.bn1.gamma" in structural and "3.1.mask_head.2.weight" in structural


def test_cifar_resnet_runs_hybridized_trains_saves_and_loads(gcv, tmp_path):
    def build():
        net = gcv.model_zoo.get_model("cifar_resnet20_v2", classes=10)
        inserted = add_attention(net, ["features.2", "features.3", "features.4"], 32)
        net.initialize(mx.init.Xavier())
        net(mx.nd.zeros((1, 3, 32, 32)))
        return net, inserted

    net, inserted = build()
    assert [p for p, _ in inserted] == ["features.2.1", "features.3.1", "features.4.1"]
    assert [m.channels for _, m in inserted] == [16, 32, 64]
    assert [m.num_pools for _, m in inserted] == [2, 1, 0]
    randomize_batchnorm(net)
    x = mx.nd.random.normal(shape=(2, 3, 32, 32))
    ref = net(x).asnumpy()
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), ref, rtol=1e-4, atol=1e-4)
    # One training step: every new parameter receives a gradient and moves.
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    new = [p for p in _new_params(inserted) if p.grad_req != "null"]
    old = [p.data().asnumpy().copy() for p in new]
    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(x), mx.nd.array([1, 7]))
    loss.backward()
    for p in new:
        assert np.abs(p.grad().asnumpy()).max() > 0, p.name
    trainer.step(2)
    assert all(not np.array_equal(p.data().asnumpy(), o) for p, o in zip(new, old))
    # Saved parameters load into another network modified the same way.
    path = str(tmp_path / "net.params")
    net.save_parameters(path)
    other, _ = build()
    other.load_parameters(path)
    np.testing.assert_allclose(other(x).asnumpy(), net(x).asnumpy(), rtol=1e-5, atol=1e-5)


def test_hybridized_network_runs_the_new_modules(gcv):
    net = gcv.model_zoo.get_model("cifar_resnet20_v2", classes=10)
    net.initialize()
    net.hybridize()
    x = mx.nd.random.normal(shape=(1, 3, 24, 20))
    before = net(x).asnumpy()
    assert has_cached_graph(net)
    inserted = add_attention(net, "features.3", 32)
    module = inserted[0][1]
    assert not has_cached_graph(net)  # rebuilt with the module at the next call
    assert is_hybridized(net.features[3]) and is_hybridized(module)
    seen = []
    after = net(x).asnumpy()
    assert not np.allclose(after, before)
    net.hybridize(False)
    handle = module.register_forward_hook(lambda b, i, o: seen.append(o.shape))
    np.testing.assert_allclose(net(x).asnumpy(), after, rtol=1e-4, atol=1e-4)
    handle.detach()
    assert seen == [(1, 32, 12, 10)]


def test_plain_block_network_needs_initialised_parameters():
    class Net(gluon.Block):
        def __init__(self):
            super().__init__()
            self.body = _tiny(initialize=False)[:4]
            self.head = nn.Dense(3)

        def forward(self, x):
            return self.head(self.body(x).mean(axis=(2, 3)))

    net = Net()
    with pytest.raises(ValueError, match="initialise"):
        add_attention(net, "body.3", 32)
    net.initialize()
    inserted = add_attention(net, "body.3", 32)
    assert [(p, m.channels, m.num_pools) for p, m in inserted] == [("body.3.1", 16, 1)]
    assert net(mx.nd.zeros((1, 3, 8, 8))).shape == (1, 3)


@pytest.mark.parametrize("after,message", [
    ("layer2", r"no child path 'layer2' \(the network has no child 'layer2'\); the child "
               r"paths there are: 0, 1, 2, 3, 4, 5"),
    ("3.conv", r"no child path '3.conv' \(3 has no child 'conv'\); the child paths there are: "
               r"none"),
    ("5", r"'5' outputs a 2-D array \(1, 5\)"),
    (["0", "0"], "'0' more than once"),
    ([], "at least one"),
    ("0..1", "dotted child path"),
])
def test_bad_paths(after, message):
    net = _tiny()
    with pytest.raises(ValueError, match=message):
        add_attention(net, after, 32)


def test_nested_bad_path_lists_that_level(gcv):
    net = gcv.model_zoo.get_model("cifar_resnet20_v2")
    with pytest.raises(ValueError, match=r"features has no child '9'\); the child paths there "
                                         r"are: features.0, features.1, .*, features.8$"):
        add_attention(net, "features.9", 32)
    with pytest.raises(ValueError, match="'output' outputs a 2-D array"):
        add_attention(net, "output", 32)


def test_errors_leave_the_network_unchanged():
    net = _tiny((8, 18))
    children = [type(c) for c in net]
    with pytest.raises(ValueError, match="18 channels, not a multiple of 4"):
        add_attention(net, ["0", "3"], 32)
    with pytest.raises(ValueError, match="'5' outputs a 2-D"):
        add_attention(net, ["0", "5"], 32)
    with pytest.raises(ValueError, match="0..4, got 5"):
        add_attention(net, ["0"], 32, num_pools=[5])
    with pytest.raises(ValueError, match="attention must be one of"):
        add_attention(net, ["0"], 32, attention="soft")
    with pytest.raises(ValueError, match="one entry per path"):
        add_attention(net, ["0"], 32, num_pools=[1, 2])
    with pytest.raises(ValueError, match="input_size"):
        add_attention(net, ["0"], (32,))
    assert [type(c) for c in net] == children
    # A unit that takes 18 channels is fine.
    inserted = add_attention(net, ["3"], 32, unit=lambda c, **kw: ResNeXtUnit(
        c, cardinality=3, width_ratio=0.5, **kw))
    assert inserted[0][1].channels == 18


def test_resnet18_v1b_odd_size(gcv):
    net = gcv.model_zoo.get_model("resnet18_v1b", classes=10)
    net.initialize(mx.init.Xavier())
    inserted = add_attention(net, ["layer2", "layer3"], (117, 131))
    assert [(p, m.channels, m.num_pools) for p, m in inserted] == [
        ("layer2.1", 128, 1), ("layer3.1", 256, 0)]
    assert isinstance(net.layer2[1], AttentionModule)
    assert net.layer2 is dict(named_children(net))["layer2"]
    x = mx.nd.random.normal(shape=(1, 3, 117, 131))
    ref = net(x).asnumpy()
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), ref, rtol=1e-4, atol=1e-4)
