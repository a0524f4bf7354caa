"""Checkpoints run no code, a run directory serves one run at a time, a NaN says what is true.

- ``.states`` files are data: version 2 holds no pickle; resattn 0.1's pickles load through
  a restricted unpickler that refuses every global but a few stand-ins, at the top level
  and inside MXNet's optimizer bytes;
- the run directory's lock: a second run (or ``--resume``) of a directory in use fails at
  once; a SIGKILLed holder (and its forked children) leaves nothing stuck;
- the non-finite-loss error names a checkpoint only when there is one.
"""
import builtins
import copyreg
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from mxnet.gluon import nn

from resattn import training as train
from resattn.io import load_parameters, sha1_file
from resattn.training import Trainer, TrainConfig
from resattn.training import checkpoint as ckpt
from resattn.training import legacy_states, rundir
from resattn.training import trainer as train_loop
from conftest import run_cli

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "v0_1_0")
FIXTURE_RUN = os.path.join(FIXTURES, "run")
#: The settings of the 0.1.0 fixture run (tests/fixtures/v0_1_0/make_fixtures.py).
FIXTURE_ARGV = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset",
                "digits", "--subset", "96", "--batch-size", "32", "--warmup-epochs", "1",
                "--mixup-off-epochs", "1", "--no-progress", "--seed", "3", "--epochs", "3"]
TINY = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset", "digits",
        "--subset", "96", "--batch-size", "32", "--epochs", "2", "--warmup-epochs", "1",
        "--mixup-off-epochs", "1", "--no-progress"]
CFG = dict(epochs=2, batch_size=8, warmup_epochs=0, mixup_alpha=0.0, mixup_off_epochs=0,
           lr=0.05)


_run = run_cli


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def fixture_run(tmp_path):
    """A copy of the run directory resattn 0.1.0 wrote (interrupted in epoch 2 of 3)."""
    out = str(tmp_path / "run")
    shutil.copytree(FIXTURE_RUN, out)
    return out


# ----------------------------------------------------------------------------- crafted files
class _Payload:
    """Unpickled by plain pickle, this calls ``func(*args)``: code from a data file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_payloads(marker):
    return {"os.system": _Payload(os.system, "touch %s" % marker),
            "exec": _Payload(builtins.exec, "open(%r, 'w').close()" % marker)}


def _fixture_payload():
    """The 0.1.0 fixture's last.states, unpickled by plain pickle (a file this test trusts)."""
    from resattn._compat import import_gluoncv
    import_gluoncv()  # the optimizer's GluonCV schedule
    with open(os.path.join(FIXTURE_RUN, "last.states"), "rb") as f:
        return pickle.load(f)


def _write_old_format(path, meta, trainer_bytes, params_sha1):
    """A .states file as resattn 0.1 wrote it: a pickle of meta, trainer bytes and SHA-1."""
    with open(path, "wb") as f:
        pickle.dump({"meta": meta, "trainer": trainer_bytes, "params_sha1": params_sha1}, f,
                    protocol=4)


def _craft(path, payload, where):
    """An otherwise valid 0.1 file with ``payload`` in its loop state ('top') or inside
    MXNet's optimizer bytes ('trainer')."""
    real = _fixture_payload()
    meta, trainer_bytes = dict(real["meta"]), real["trainer"]
    if where == "top":
        meta["history"] = [payload]
    else:
        states, optimizer = pickle.loads(trainer_bytes)
        states[0] = payload
        trainer_bytes = pickle.dumps((states, optimizer), protocol=4)
    _write_old_format(path, meta, trainer_bytes, real["params_sha1"])


@pytest.mark.parametrize("where", ["top", "trainer"])
@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_resume_refuses_a_crafted_states_file_and_runs_nothing(fixture_run, tmp_path, capsys,
                                                                where, kind):
    marker = str(tmp_path / "pwned")
    states = os.path.join(fixture_run, "last.states")
    _craft(states, _marker_payloads(marker)[kind], where)
    assert _run(FIXTURE_ARGV + ["--out", fixture_run, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("resattn train: error: %s is not a file resattn wrote" % states)
    assert ("posix.system" if kind == "os.system" else "builtins.exec") in line
    assert ("its optimizer state" if where == "trainer" else ": it asks") in line
    assert not os.path.exists(marker)
    # Nothing of the run was replaced on the way.
    assert _rows(os.path.join(fixture_run, "metrics.jsonl")) == _rows(
        os.path.join(FIXTURE_RUN, "metrics.jsonl"))


class _Opcodes:
    """A pickle written opcode by opcode (for what ``pickle.dumps`` cannot produce)."""

    @staticmethod
    def ext(code):
        return b"\x80\x04\x82" + bytes([code]) + b"."


def _abuse_payloads(marker):
    """Calls of allowed names with arguments that could be abused, and names never allowed."""
    return {
        "getattr": _Payload(getattr, (), "__class__"),
        "eval": _Payload(builtins.eval, "open(%r, 'w')" % marker),
        "open": _Payload(builtins.open, marker, "w"),
        "subprocess": _Payload(subprocess.call, ["touch", marker]),
        "ndarray_args": _Payload(mx.nd.NDArray, 1234),
        "ndarray_state": _NDArrayWithState({"handle": b"x", "extra": 1}),
        "ndarray_handle": _NDArrayWithState({"handle": "not bytes"}),
        "dtype_object": _Payload(np.dtype, "O"),
        "scalar_object": _Payload(np.core.multiarray.scalar, np.dtype("O"), "x"),
        "scalar_size": _Payload(np.core.multiarray.scalar, np.dtype("f8"), b"123"),
        "bytearray_size": _Payload(bytearray, 1 << 40),
        "optimizer_args": _Payload(mx.optimizer.NAG, 0.1),
        "schedule_args": _Payload(_gluoncv_schedule(), "constant"),
    }


def _gluoncv_schedule():
    from resattn._compat import import_gluoncv
    import_gluoncv()
    from gluoncv.utils.lr_scheduler import LRScheduler
    return LRScheduler


class _NDArrayWithState:
    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return mx.nd.NDArray, (None,), self.state


@pytest.mark.parametrize("where", ["top", "trainer"])
@pytest.mark.parametrize("name", sorted(_abuse_payloads("m")))
def test_restricted_unpickler_refuses_abuse_of_every_kind(tmp_path, where, name):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "last.states")
    _craft(path, _abuse_payloads(marker)[name], where)
    with pytest.raises(legacy_states.UnsafeCheckpointError,
                       match="is not a file resattn wrote") as err:
        ckpt.read_states(path)
    assert err.value.path == path and "\n" not in str(err.value)
    assert not os.path.exists(marker)


def test_restricted_unpickler_refuses_extensions_and_persistent_ids(tmp_path):
    path = str(tmp_path / "x.states")
    copyreg.add_extension("os", "system", 201)
    try:
        with open(path, "wb") as f:
            f.write(_Opcodes.ext(201))
        with pytest.raises(legacy_states.UnsafeCheckpointError, match="os.system"):
            ckpt.read_states(path)
    finally:
        copyreg.remove_extension("os", "system", 201)

    class WithPersistentIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "id" if obj == "secret" else None

    with open(path, "wb") as f:
        WithPersistentIds(f, protocol=4).dump({"meta": "secret", "trainer": None,
                                               "params_sha1": ""})
    with pytest.raises(legacy_states.UnsafeCheckpointError, match="persistent"):
        ckpt.read_states(path)


def test_the_allowlist_is_exactly_what_0_1_files_need():
    """Every global the fixture's pickles name (a trusted load records them), and no more."""
    real = _fixture_payload()

    class Recorder(pickle.Unpickler):
        def __init__(self, data):
            import io
            super().__init__(io.BytesIO(data))
            self.names = set()

        def find_class(self, module, name):
            self.names.add((module, name))
            return super().find_class(module, name)

    with open(os.path.join(FIXTURE_RUN, "last.states"), "rb") as f:
        outer = f.read()
    seen = {}
    for level, data in (("outer", outer), ("trainer", real["trainer"])):
        rec = Recorder(data)
        rec.load()
        seen[level] = rec.names
    assert seen["outer"] == {("numpy.core.multiarray", "scalar"), ("numpy", "dtype")}
    assert seen["trainer"] == {("mxnet.ndarray.ndarray", "NDArray"), ("builtins", "bytearray"),
                               ("mxnet.optimizer.optimizer", "NAG"),
                               ("gluoncv.utils.lr_scheduler", "LRSequential"),
                               ("gluoncv.utils.lr_scheduler", "LRScheduler")}
    for level in ("outer", "trainer"):
        assert seen[level] <= set(legacy_states.LEGACY_GLOBALS[level])
    extra = set(legacy_states.LEGACY_GLOBALS["trainer"]) - seen["trainer"] - seen["outer"]
    assert extra == {("numpy._core.multiarray", "scalar"), ("mxnet.optimizer.optimizer", "SGD"),
                     ("mxnet.optimizer.optimizer", "Adam")}
    assert not any(m in ("builtins", "os", "posix", "subprocess", "sys") and n != "bytearray"
                   for m, n in legacy_states.LEGACY_GLOBALS["trainer"])


# ----------------------------------------------------------------------------- 0.1 files
def _net():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1, in_channels=3), nn.BatchNorm(in_channels=4),
            nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(3, in_units=4))
    return net


def _data(n=24, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n, 3, 6, 6)).astype(np.float32)
    y = rng.randint(0, 3, n).astype(np.int32)
    x[np.arange(n), y % 3] += 1.0
    return gluon.data.DataLoader(gluon.data.ArrayDataset(mx.nd.array(x), y), batch_size=8,
                                 shuffle=False)


def _trainer(ctx, **overrides):
    trainer = Trainer(_net(), TrainConfig(**dict(CFG, **overrides)), classes=3, ctx=ctx)
    trainer.setup(iters_per_epoch=3)
    return trainer


def _updater_states(trainer):
    from resattn._compat import trainer_updaters
    return trainer_updaters(trainer)


def _flat(state):
    if state is None:
        return []
    if isinstance(state, (tuple, list)):
        return [a for s in state for a in _flat(s)]
    return [state.asnumpy()]


def test_0_1_fixture_restores_what_mxnet_itself_restores():
    """The restricted path gives the optimizer exactly what MXNet's Trainer.load_states
    (pickle, trusted here) gives it: arrays, update counts, schedule position."""
    from resattn import get_model
    from resattn._compat import import_gluoncv
    import_gluoncv()
    prefix = os.path.join(FIXTURE_RUN, "last")
    cfg = TrainConfig(epochs=3, batch_size=32, warmup_epochs=1, mixup_off_epochs=1, seed=3)
    ours = Trainer(get_model("attention56_cifar", width_mult=0.0625, classes=10), cfg)
    ours.setup(3, restore=True)
    meta = train.load_checkpoint(prefix, ours.net, ours.trainer)
    assert (meta["epoch"], meta["batch"]) == (1, 2)
    theirs = Trainer(get_model("attention56_cifar", width_mult=0.0625, classes=10), cfg)
    theirs.setup(3, restore=True)
    load_parameters(theirs.net, prefix + ".params")
    tmp = prefix + ".trusted.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(_fixture_payload()["trainer"])
        theirs.trainer.load_states(tmp)
    finally:
        os.remove(tmp)
    a, b = ours.trainer._optimizer, theirs.trainer._optimizer
    assert type(a) is type(b) and (a.num_update, a.begin_num_update) == (5, 0)
    assert a.num_update == b.num_update and a._index_update_count == b._index_update_count
    assert a._all_index_update_counts == b._all_index_update_counts
    assert a._index_update_count is a._all_index_update_counts[0]
    assert ours.trainer.learning_rate == theirs.trainer.learning_rate
    ua, ub = _updater_states(ours.trainer)[0], _updater_states(theirs.trainer)[0]
    assert sorted(ua.states) == sorted(ub.states) and len(ua.states) == 272
    for key in ua.states:
        for x, y in zip(_flat(ua.states[key]), _flat(ub.states[key])):
            np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- version 2
def _check_version_2(path):
    """Parse a version-2 .states file by its documented layout; it holds no pickle."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"RESATTN-STATES\n") and not data.startswith(b"\x80")
    pos = len(b"RESATTN-STATES\n")
    assert struct.unpack_from("<I", data, pos) == (2,)
    (size,) = struct.unpack_from("<Q", data, pos + 4)
    text = data[pos + 12:pos + 12 + size]
    doc = json.loads(text.decode("utf-8"))
    pos += 12 + size
    (size,) = struct.unpack_from("<Q", data, pos)
    blob = data[pos + 8:]
    assert len(blob) == size and hashlib.sha1(blob).hexdigest() == doc["arrays_sha1"]
    assert set(doc) == {"format", "version", "params_sha1", "arrays_sha1", "meta", "optimizer"}
    assert doc["params_sha1"] == sha1_file(path[:-len(".states")] + ".params")
    for pickle_mark in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        assert pickle_mark not in text
    if blob:  # MXNet's nd.save list format (magic 0x112), parsed, not unpickled
        assert blob[:8] == struct.pack("<Q", 0x112)
        assert isinstance(mx.nd.load_frombuffer(blob), dict)
    return doc


def _save_old_format(prefix, trainer, meta):
    """What resattn 0.1's save_checkpoint wrote (for comparison)."""
    trainer.net.save_parameters(prefix + ".params")
    tmp = prefix + ".trainer.tmp"
    trainer.trainer.save_states(tmp)
    with open(tmp, "rb") as f:
        trainer_bytes = f.read()
    os.remove(tmp)
    _write_old_format(prefix + ".states", meta, trainer_bytes, sha1_file(prefix + ".params"))


def _no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")
    for name in ("dumps", "dump", "loads", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


def _params(net):
    """Every device's copy of the parameters; running statistics only with one device (a
    checkpoint holds one copy of them, as Block.save_parameters writes)."""
    from resattn._compat import structured_params
    return {"%s@%d" % (k, i): d.asnumpy() for k, p in structured_params(net).items()
            for i, d in enumerate(p.list_data())
            if p.grad_req != "null" or len(p.list_data()) == 1}


@pytest.mark.parametrize("mode", ["1", "2-kvstore", "2-local"])
def test_version_2_holds_no_pickle_and_resumes_exactly_as_0_1_files(tmp_path, monkeypatch,
                                                                     mode):
    """Train an epoch, checkpoint it in both formats, train another; the straight run and
    both restored runs end with the same parameters and optimizer position. With two
    devices the kvstore runs the optimizer (its one updater) or each device has its own."""
    ctx = [mx.cpu(i) for i in range(int(mode[0]))]
    if mode == "2-local":
        monkeypatch.setenv("MXNET_UPDATE_ON_KVSTORE", "0")
    data = _data()
    mx.random.seed(5)
    straight = _trainer(ctx)
    straight.train_epoch(data, 0)
    straight.state.end_epoch({"val_top1": 0.5})
    meta = dict(straight.state.state_dict(), config=straight.config_dict(), workers=1)
    saved_lr = straight.trainer.learning_rate
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    with monkeypatch.context() as m:
        _no_pickle(m)
        ckpt.save_checkpoint(new, straight.net, straight.trainer, meta)
    _save_old_format(old, straight, meta)
    doc = _check_version_2(new + ".states")
    assert doc["optimizer"]["class"] == "NAG" and doc["optimizer"]["num_update"] == 3
    straight.train_epoch(data, 1)
    want = _params(straight.net)

    for prefix in (new, old):
        mx.random.seed(99)  # another initialisation: everything must come from the file
        resumed = _trainer(ctx)
        with monkeypatch.context() as m:
            if prefix == new:
                _no_pickle(m)  # not ours, and not MXNet's Updater.set_states either
            resumed.restore(prefix)
        assert resumed.state.state_dict() == {k: v for k, v in meta.items()
                                              if k not in ("config", "workers")}
        assert resumed.trainer._optimizer.num_update == 3
        assert resumed.trainer.learning_rate == saved_lr
        updaters = _updater_states(resumed.trainer)
        assert len(updaters) == (2 if mode == "2-local" else 1)
        if len(updaters) > 1:  # each device's updater has arrays of its own
            a, b = updaters[0].states, updaters[1].states
            assert sorted(a) == sorted(b) and all(a[k] is not b[k] for k in a)
        resumed.train_epoch(data, 1)
        got = _params(resumed.net)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg="%s %s" % (prefix, key))
        assert resumed.trainer._optimizer.num_update == straight.trainer._optimizer.num_update


def test_version_2_meta_round_trips_types_and_random_states_exactly(tmp_path):
    net = nn.Dense(2, in_units=2)
    net.initialize()
    np_state, py_state = np.random.get_state(), random.getstate()
    meta = {"epoch": 1, "best_top1": np.float64(0.1) + 0.2, "loss": float("nan"),
            "inf": float("-inf"), "config": {"lr_steps": (80, 120), "lr": None},
            "by_int": {3: "a", 4: [1.5, True]}, "tagged_like": {"__tuple__": 1},
            "rng": {"numpy": np_state, "python": py_state}}
    prefix = str(tmp_path / "x")
    ckpt.save_checkpoint(prefix, net, None, meta)
    back = ckpt.load_checkpoint(prefix, nn.Dense(2, in_units=2))
    assert back["config"]["lr_steps"] == (80, 120) and back["by_int"] == {3: "a", 4: [1.5, True]}
    assert back["best_top1"] == 0.1 + 0.2 and np.isnan(back["loss"]) and back["inf"] == -np.inf
    assert back["tagged_like"] == {"__tuple__": 1}
    assert back["rng"]["python"] == py_state
    np_back = back["rng"]["numpy"]
    assert np_back[0] == np_state[0] and np_back[2:] == np_state[2:]
    assert np_back[1].dtype == np_state[1].dtype and np.array_equal(np_back[1], np_state[1])
    random.setstate(back["rng"]["python"])
    np.random.set_state(np_back)
    assert ckpt.read_states(prefix + ".states")["optimizer"] is None
    with pytest.raises(TypeError, match="cannot hold"):
        ckpt.save_checkpoint(prefix, net, None, {"f": open})


def test_torn_version_2_file_falls_back_to_the_previous_one(tmp_path):
    net = nn.Dense(2, in_units=2)
    net.initialize()
    prefix = str(tmp_path / "x")
    ckpt.save_checkpoint(prefix, net, None, {"epoch": 1})
    shutil.copy(prefix + ".states", prefix + ".states.prev")
    with open(prefix + ".states", "r+b") as f:
        f.truncate(os.path.getsize(prefix + ".states") - 3)
    assert ckpt.load_checkpoint(prefix, nn.Dense(2, in_units=2))["epoch"] == 1
    os.remove(prefix + ".states.prev")
    with pytest.raises(ValueError, match="no matching .*torn"):
        ckpt.load_checkpoint(prefix, nn.Dense(2, in_units=2))


# ----------------------------------------------------------------------------- the lock
_HOLDER = r"""
import os, sys, time
from resattn.training.rundir import lock_run_dir
lock = lock_run_dir(sys.argv[1])
if sys.argv[2] == "fork":
    ready, told = os.pipe()
    child = os.fork()
    if child == 0:  # like a DataLoader worker: outlives a SIGKILLed parent
        # os.fork returns here only after the at-fork hooks have run in this child
        os.write(told, b"x")
        time.sleep(120)
        os._exit(0)
    os.read(ready, 1)  # the child is past fork: whatever it inherited is settled
    print("child", child, flush=True)
print("locked", flush=True)
time.sleep(120)
"""


def _hold_lock(out, mode="plain"):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, out, mode], stdout=subprocess.PIPE,
                            text=True)
    child = None
    for line in proc.stdout:
        if line.startswith("child"):
            child = int(line.split()[1])
        if line.strip() == "locked":
            return proc, child
    raise AssertionError("the lock holder did not start: %s" % proc.wait())


def test_second_run_on_a_locked_directory_fails_at_once_then_works_after_sigkill(
        fixture_run, capsys):
    holder, _ = _hold_lock(fixture_run)
    try:
        for extra in ([], ["--resume"]):
            tic = time.time()
            assert _run(FIXTURE_ARGV + ["--out", fixture_run] + extra) == 2
            assert time.time() - tic < 30
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1
            assert err[0].startswith("resattn train: error: %s is in use by another resattn "
                                     "train (pid %d, started " % (fixture_run, holder.pid))
            assert err[0].endswith("); wait for it, or use another --out")
        # Nothing of the running run was touched.
        with open(os.path.join(fixture_run, "config.json")) as a, \
                open(os.path.join(FIXTURE_RUN, "config.json")) as b:
            assert a.read() == b.read()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    # The kernel released the lock with the process: the run resumes and is written.
    assert _run(FIXTURE_ARGV + ["--out", fixture_run, "--resume"]) == 0
    assert [r["epoch"] for r in _rows(os.path.join(fixture_run, "metrics.jsonl"))] == [1, 2, 3]
    _check_version_2(os.path.join(fixture_run, "last.states"))
    ckpt.read_states(os.path.join(fixture_run, "best.states"))  # 0.1's or rewritten: it loads
    with open(os.path.join(fixture_run, ".lock")) as f:
        assert json.load(f)["pid"] == os.getpid()
    rundir.lock_run_dir(fixture_run).release()  # and fit gave it back at the end


def test_lock_in_process_and_of_a_sigkilled_parent_whose_child_lives_on(tmp_path, capsys):
    out = str(tmp_path / "out")
    lock = rundir.lock_run_dir(out)
    assert lock.held
    assert _run(TINY + ["--out", out]) == 2
    assert "is in use by another resattn train (pid %d" % os.getpid() in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "config.json"))
    with pytest.raises(rundir.RunDirInUseError):
        rundir.prepare_run_dir(out, overwrite=True)
    assert rundir.prepare_run_dir(out, writer=False) is None  # other workers take no lock
    lock.release()
    assert not lock.held
    lock.release()  # twice: nothing
    with rundir.prepare_run_dir(out) as again:
        assert again.held

    holder, child = _hold_lock(out, "fork")
    try:
        with pytest.raises(rundir.RunDirInUseError, match="pid %d" % holder.pid):
            rundir.lock_run_dir(out)
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        os.kill(child, 0)  # still alive, and holds no lock
        rundir.lock_run_dir(out).release()
    finally:
        for pid in (holder.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except (OSError, TypeError):
                pass


def test_run_directory_removes_the_temporaries_of_a_failed_write_and_releases(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(OSError, match="No space"):
        with rundir.run_directory(out) as lock:
            assert lock.held
            for name in ("last.params.new", "last.trainer.tmp", ".last.states.x.tmp"):
                open(os.path.join(out, name), "w").close()
            raise OSError(28, "No space left on device")
    assert os.listdir(out) == [".lock"]
    rundir.lock_run_dir(out).release()
    with rundir.run_directory(out, writer=False) as none:  # other workers: no lock
        assert none is None


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_run_that_fails_or_is_interrupted_releases_its_lock(tmp_path, error):
    out = str(tmp_path / "out")

    class Boom(train.Callback):
        def on_fit_start(self, trainer):
            with pytest.raises(rundir.RunDirInUseError):  # held while the run goes
                rundir.lock_run_dir(out)
            raise error("boom")

    with pytest.raises(error, match="boom"):
        train.fit(_net(), _data(), _data(), out, classes=3, progress=False, callbacks=[Boom()],
                  **CFG)
    rundir.lock_run_dir(out).release()


# ----------------------------------------------------------------------------- non-finite loss
def _nan_loss_from(monkeypatch, first_bad_call):
    real, calls = train.smooth_labels, {"n": 0}

    def smooth(*args):
        calls["n"] += 1
        return real(*args) * (float("nan") if calls["n"] >= first_bad_call else 1.0)

    monkeypatch.setattr(train_loop, "smooth_labels", smooth)


def test_nonfinite_before_any_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "out")
    _nan_loss_from(monkeypatch, 1)
    # The command line ends with one line and exit status 2, not a traceback.
    assert _run(TINY + ["--out", out]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    msg = lines[0]
    assert msg.startswith("resattn train: error: non-finite loss nan at epoch 1 batch 0; "
                          "stopped before this run wrote any checkpoint")
    assert "last.params" not in msg and "kept" not in msg
    for advice in ("--lr", "--warmup-epochs", "--nonfinite skip"):
        assert advice in msg
    assert not os.path.exists(os.path.join(out, "last.params"))
    rundir.lock_run_dir(out).release()  # released on the way out


def test_nonfinite_after_a_checkpoint_names_it(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    _nan_loss_from(monkeypatch, 4)  # 3 batches per epoch: epoch 2's first
    with pytest.raises(train.NonFiniteLossError) as err:
        train.fit(_net(), _data(), _data(seed=1), out, classes=3, progress=False, **CFG)
    msg = str(err.value)
    assert msg.startswith("non-finite loss nan at epoch 2 batch 0; stopped, the last good "
                          "checkpoint is kept: %s (after epoch 1)"
                          % os.path.join(out, "last.params"))
    assert "--nonfinite skip" in msg
    assert ckpt.load_checkpoint(os.path.join(out, "last"), _net())["epoch"] == 1
