"""The Trainer's pieces on their own: TrainState, train_step, validate, callbacks."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from mxnet.gluon import nn

from resattn.training import (Callback, NonFiniteLossError, Trainer, TrainConfig, TrainState,
                              evaluate)

CFG = dict(epochs=2, batch_size=8, warmup_epochs=0, mixup_alpha=0.0, mixup_off_epochs=0,
           lr=0.05)


def _net():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1, in_channels=3), nn.BatchNorm(in_channels=4),
            nn.Activation("relu"),
            nn.GlobalAvgPool2D(), nn.Dense(3, in_units=4))
    return net


def _data(n=24, seed=0, batch_size=8):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n, 3, 6, 6)).astype(np.float32)
    y = rng.randint(0, 3, n).astype(np.int32)
    x[np.arange(n), y % 3] += 1.0  # learnable: the label's channel is brighter
    return gluon.data.DataLoader(gluon.data.ArrayDataset(mx.nd.array(x), y),
                                 batch_size=batch_size, shuffle=False)


def _trainer(callbacks=(), **overrides):
    trainer = Trainer(_net(), TrainConfig(**dict(CFG, **overrides)), classes=3,
                      callbacks=list(callbacks))
    trainer.setup(iters_per_epoch=3)
    return trainer


def _weights(net):
    """Trained parameters (running statistics move with every forward pass in training mode)."""
    return {k: p.data().asnumpy().copy() for k, p in net.collect_params().items()
            if p.grad_req != "null"}


def test_train_state_round_trip_and_epoch_boundaries():
    state = TrainState()
    state.start_epoch(0)
    state.batch, state.seen, state.loss_sum, state.skipped = 2, 16, 3.5, 1
    saved = state.state_dict()
    assert saved == {"epoch": 0, "batch": 2, "best_top1": -1.0, "history": [],
                     "partial": {"seen": 16, "loss_sum": 3.5, "skipped": 1}}
    again = TrainState()
    again.load_state_dict(saved)
    assert again == state
    again.start_epoch(0)  # resuming in the middle keeps the partial sums
    assert (again.batch, again.seen) == (2, 16)
    assert again.end_epoch({"val_top1": 0.5}) is True
    assert (again.epoch, again.batch, again.seen, again.best_top1) == (1, 0, 0, 0.5)
    assert again.state_dict()["partial"] is None
    assert again.end_epoch({"val_top1": 0.25}) is False and again.best_top1 == 0.5


def test_train_step_updates_parameters_and_partial_sums():
    trainer = _trainer()
    batch = next(iter(_data()))
    before = _weights(trainer.net)
    result = trainer.train_step(batch)
    assert result.stepped and result.samples == 8 and not result.stop
    assert np.isfinite(result.loss) and result.loss > 0
    assert (trainer.state.seen, trainer.state.loss_sum) == (8, result.loss)
    after = _weights(trainer.net)
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_train_step_mixup_changes_the_loss():
    plain = _trainer()
    mixed = _trainer()
    for a, b in zip(plain.net.collect_params().values(), mixed.net.collect_params().values()):
        b.set_data(a.data())
    batch = next(iter(_data()))
    assert plain.train_step(batch).loss != pytest.approx(mixed.train_step(batch, 0.3).loss)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_train_step_non_finite_loss(policy):
    trainer = _trainer(nonfinite=policy)
    weight = trainer.net[-1].weight
    weight.set_data(weight.data() * np.nan)  # every logit NaN
    batch = next(iter(_data()))
    before = _weights(trainer.net)
    if policy == "stop":
        with pytest.raises(NonFiniteLossError, match="non-finite loss"):
            trainer.train_step(batch)
    else:
        result = trainer.train_step(batch)
        assert not result.stepped and trainer.state.skipped == 1 and trainer.state.seen == 0
    after = _weights(trainer.net)
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)


def test_validate_is_evaluate():
    trainer = _trainer()
    val, stop = trainer.validate(_data(seed=1))
    assert not stop
    assert val == evaluate(trainer.net, _data(seed=1), classes=3)
    assert val["samples"] == 24 and 0 <= val["top1"] <= 1


class _Recorder(Callback):
    def __init__(self, stop_after=None):
        self.events, self.stop_after = [], stop_after

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer, epoch, total_batches):
        self.events.append("epoch_start %d/%d" % (epoch, total_batches))

    def on_batch_end(self, trainer, epoch, batch):
        self.events.append("batch %d.%d" % (epoch, batch))
        if self.stop_after == (epoch, batch):
            self.stop_requested = True

    def on_epoch_end(self, trainer, row, improved):
        self.events.append("epoch_end %d %s" % (row["epoch"], improved))

    def on_interrupt(self, trainer):
        self.events.append("interrupt %d.%d" % (trainer.state.epoch, trainer.state.batch))

    def on_fit_end(self, trainer):
        self.events.append("fit_end")


def test_fit_calls_every_hook_in_order(tmp_path):
    rec = _Recorder()
    trainer = Trainer(_net(), TrainConfig(**CFG), classes=3, callbacks=[rec])
    history = trainer.fit(_data(), _data(seed=1))
    assert [r["epoch"] for r in history] == [1, 2]
    assert rec.events[:6] == ["fit_start", "epoch_start 0/3", "batch 0.0", "batch 0.1",
                              "batch 0.2", "epoch_end 1 True"]
    assert rec.events[-1] == "fit_end" and len(rec.events) == 1 + 2 * 5 + 1
    assert (trainer.state.epoch, trainer.state.batch) == (2, 0)


def test_a_callback_can_stop_the_run_between_batches():
    rec = _Recorder(stop_after=(1, 0))
    trainer = Trainer(_net(), TrainConfig(**CFG), classes=3, callbacks=[rec])
    history = trainer.fit(_data(), _data(seed=1))  # early stopping: fit returns
    assert rec.events[-2:] == ["interrupt 1.1", "fit_end"]
    assert trainer.state.state_dict()["partial"]["seen"] == 8
    assert len(history) == 1 and history is trainer.state.history


def test_an_interruption_raises_after_the_callbacks():
    class CtrlC(_Recorder):
        interrupt = True
    rec = CtrlC(stop_after=(0, 1))
    trainer = Trainer(_net(), TrainConfig(**CFG), classes=3, callbacks=[rec])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_data(), _data(seed=1))
    assert rec.events[-2:] == ["interrupt 0.2", "fit_end"] and not trainer.state.history


def test_a_stop_at_the_end_of_an_epoch():
    class StopAtEpochEnd(_Recorder):
        def on_epoch_end(self, trainer, row, improved):
            super().on_epoch_end(trainer, row, improved)
            self.stop_requested = True
    rec = StopAtEpochEnd()
    trainer = Trainer(_net(), TrainConfig(**dict(CFG, epochs=3)), classes=3, callbacks=[rec])
    assert len(trainer.fit(_data(), _data(seed=1))) == 1
    assert rec.events[-2:] == ["interrupt 1.0", "fit_end"]


# ----------------------------------------------------------------------------- zero init
def _units(net):
    from resattn.models.blocks import _PostActBottleneck, _PreActBottleneck
    from resattn._compat import named_children
    found, stack = [], [net]
    while stack:
        block = stack.pop()
        if isinstance(block, (_PreActBottleneck, _PostActBottleneck)):
            found.append(block)
        stack.extend(child for _, child in named_children(block))
    return found


def _branch_ends(net):
    """The parameter zero_init_residual zeroes in each unit, as arrays."""
    return [(u.conv3.weight if u.preactivation else u.bn3.gamma).data().asnumpy()
            for u in _units(net)]


@pytest.mark.parametrize("unit", ["ResidualUnit", "PostActResidualUnit"])
def test_zero_init_residual_makes_every_unit_start_as_the_identity(unit):
    import resattn
    from resattn.models import blocks
    net = resattn.get_model("attention56_cifar", width_mult=0.0625, classes=10,
                            unit=getattr(blocks, unit), variant="official")
    trainer = Trainer(net, TrainConfig(**dict(CFG, zero_init_residual=True)), classes=10)
    trainer.setup(iters_per_epoch=3)
    x = mx.nd.array(np.random.RandomState(0).normal(size=(2, 3, 32, 32)))
    net(x)
    ends = _branch_ends(net)
    assert len(ends) == 27 and all((e == 0).all() for e in ends)
    # Nothing else: every BatchNorm scale of a pre-activation network still starts at one,
    # all but the 27 last ones of a post-activation network.
    gammas = [p.data().asnumpy() for n, p in net.collect_params().items() if n.endswith("gamma")]
    zeros = sum(int((g == 0).all()) for g in gammas)
    assert zeros == (0 if unit == "ResidualUnit" else 27)
    assert sum(int((g == 1).all()) for g in gammas) == len(gammas) - zeros
    # A unit without projection is then the identity (pre-activation) or relu of it (post).
    one = [u for u in _units(net) if not u.has_projection][0]
    z = mx.nd.array(np.random.RandomState(1).normal(size=(2, one.in_channels, 8, 8)))
    expected = z if one.preactivation else mx.nd.relu(z)
    np.testing.assert_allclose(one(z).asnumpy(), expected.asnumpy(), atol=1e-6)


def test_zero_init_residual_is_off_by_request_and_never_touches_loaded_weights():
    import resattn
    net = resattn.get_model("attention56_cifar", width_mult=0.0625, classes=10)
    trainer = Trainer(net, TrainConfig(**dict(CFG, zero_init_residual=False)), classes=10)
    trainer.setup(iters_per_epoch=3)
    net(mx.nd.ones((1, 3, 32, 32)))
    assert all((e != 0).any() for e in _branch_ends(net))
    # Fine-tuning (reinit=False) keeps what the network holds.
    before = [e.copy() for e in _branch_ends(net)]
    trainer = Trainer(net, TrainConfig(**dict(CFG, zero_init_residual=True)), classes=10)
    trainer.setup(iters_per_epoch=3, reinit=False)
    assert all((a == b).all() for a, b in zip(before, _branch_ends(net)))


def _grads_after_a_step(block, x, init=None):
    """|grad| of each parameter of a residual block in the second of two SGD steps on ``x``."""
    from mxnet import autograd
    block.initialize(mx.init.MSRAPrelu())
    block(x)
    if init is not None:
        init(block)
    trainer = gluon.Trainer(block.collect_params(), "sgd", {"learning_rate": 0.1})
    for _ in range(2):
        with autograd.record():
            out = block(x)
            loss = ((out - 1) ** 2).mean()
        loss.backward()
        grads = {name: float(p.grad().abs().sum().asscalar())
                 for name, p in block.collect_params().items() if p.grad_req != "null"}
        trainer.step(1)
    return grads


def test_a_zero_scale_before_a_relu_kills_the_branch_gluoncv_and_resattn_alike():
    """GluonCV's own pre-activation BottleneckV2 with last_gamma=True: its last BatchNorm
    feeds a ReLU at exactly 0, whose derivative is 0, so no parameter of the branch ever
    gets a gradient. resattn's ResidualUnit(last_gamma=True) is the same, which is why
    zero_init_residual zeroes a pre-activation unit's last convolution instead: after the
    first step every parameter of the branch learns."""
    from resattn._compat import import_gluoncv
    import_gluoncv()
    from gluoncv.model_zoo.resnet import BottleneckV2
    from resattn.models.blocks import ResidualUnit, zero_init_residual
    x = mx.nd.array(np.random.RandomState(0).normal(size=(2, 16, 6, 6)))
    theirs = _grads_after_a_step(BottleneckV2(16, 1, in_channels=16, last_gamma=True), x)
    assert len(theirs) == 9 and all(v == 0 for v in theirs.values()), theirs
    same = _grads_after_a_step(ResidualUnit(16, in_channels=16, last_gamma=True), x)
    assert len(same) == 9 and all(v == 0 for v in same.values()), same
    ours = _grads_after_a_step(ResidualUnit(16, in_channels=16), x, init=zero_init_residual)
    assert len(ours) == 9 and all(v > 0 for v in ours.values()), ours


def _initial_weights(seed, draws=0, **overrides):
    """A demo-size network's weights as Trainer.setup and the first forward pass leave them."""
    import resattn
    net = resattn.get_model("attention56_cifar", width_mult=0.0625, classes=10)
    trainer = Trainer(net, TrainConfig(**dict(CFG, seed=seed, **overrides)), classes=10)
    trainer.setup(iters_per_epoch=3)
    # Whatever the process drew before the first forward pass (deferred initialisation).
    mx.random.seed(1234 + draws)
    mx.nd.random.uniform(shape=(draws + 1,)).wait_to_read()
    net(mx.nd.zeros((1, 3, 32, 32)))
    return [p.data().asnumpy().copy() for p in net.collect_params().values()]


def test_the_initial_weights_follow_the_seed_and_nothing_else():
    first = _initial_weights(0)
    # Another network object (other parameter names), another generator state: same weights.
    again = _initial_weights(0, draws=7)
    assert len(first) == len(again)
    assert all((a == b).all() for a, b in zip(first, again))
    other = _initial_weights(1)
    random = [i for i, (a, b) in enumerate(zip(first, other)) if not (a == b).all()]
    # Every convolution and dense weight differs; constants (BN, biases, the 27 branch ends
    # zero_init_residual zeroes) do not.
    weights = [i for i, a in enumerate(first) if a.ndim in (2, 4) and a.size > 1]
    zeroed = [i for i in weights if not first[i].any()]
    assert len(zeroed) == 27
    assert random == [i for i in weights if i not in zeroed] and len(random) > 60
    # Still MSRAPrelu (factor 'avg', slope 0.25): std = sqrt(2 / 1.0625 / ((fan_in + fan_out) / 2)).
    for i in random:
        shape = first[i].shape
        field = np.prod(shape[2:]) if len(shape) == 4 else 1
        expected = np.sqrt(2.0 / 1.0625 / ((shape[0] + shape[1]) * field / 2.0))
        if first[i].size >= 1000:
            assert abs(first[i].std() / expected - 1) < 0.1, (i, first[i].shape)
