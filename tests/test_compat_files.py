"""Files resattn 0.1.0 wrote still load and give the same numbers (tests/fixtures/v0_1_0).

The fixtures were written by resattn 0.1.0 itself (make_fixtures.py there
says how): a run directory interrupted in the middle of epoch 2 of 3, the
metrics 0.1.0 wrote when it resumed that run, random weights under
GluonCV's names, the resattn file 0.1.0 converted them into, and logits.
"""
import json
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

from conftest import run_python
from resattn import get_model
from resattn.io import load_parameters
from resattn.models.convert import load_params
from resattn.training import TrainConfig, TrainState, load_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "v0_1_0")
RUN = os.path.join(FIXTURES, "run")
WIDTH = 0.0625


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _expected():
    return np.load(os.path.join(FIXTURES, "expected.npz"))


def test_params_files_load_and_compute_the_same_logits():
    expected = _expected()
    for name, path in (("best", os.path.join(RUN, "best.params")),
                       ("converted", os.path.join(FIXTURES, "converted.params"))):
        net = get_model("attention56_cifar", width_mult=WIDTH)
        load_parameters(net, path)
        got = net(mx.nd.array(expected["x"])).asnumpy()
        np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_conversion_gives_the_file_0_1_0_wrote():
    foreign = dict(np.load(os.path.join(FIXTURES, "foreign.npz")))
    net = load_params(get_model("attention56_cifar", width_mult=WIDTH), foreign, "gluoncv")
    saved = mx.nd.load(os.path.join(FIXTURES, "converted.params"))
    ours = {k: p.data().asnumpy() for k, p in net.collect_params().items()}
    assert len(saved) == len(ours)
    from resattn._compat import structured_params
    for key, param in structured_params(net).items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key].asnumpy(), err_msg=key)


def test_checkpoint_states_load_into_train_state():
    meta = load_checkpoint(os.path.join(RUN, "last"), get_model("attention56_cifar",
                                                                width_mult=WIDTH))
    state = TrainState()
    state.load_state_dict(meta)
    assert (state.epoch, state.batch) == (1, 2) and len(state.history) == 1
    assert state.seen == 64 and state.loss_sum > 0
    assert state.state_dict()["partial"] == meta["partial"]
    with open(os.path.join(RUN, "config.json")) as f:
        saved = json.load(f)
    fields = {k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__}
    rebuilt = dict(TrainConfig(**fields).__dict__, lr_steps=list(TrainConfig(**fields).lr_steps))
    # Settings added since 0.1.0 only decide how a new run initialises its network
    # (zero_init_residual): a resumed run ignores them, and 0.1.0's config lacks them.
    from resattn.training.config import INIT_ONLY_FIELDS
    added = set(rebuilt) - set(meta["config"])
    assert added <= set(INIT_ONLY_FIELDS), added
    assert {k: v for k, v in rebuilt.items() if k not in added} \
        == dict(meta["config"], lr_steps=list(meta["config"]["lr_steps"]))


def test_run_directory_resumes_to_what_0_1_0_computed(tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(RUN, out)
    argv = ["train", "--model", "attention56_cifar", "--width-mult", str(WIDTH), "--dataset",
            "digits", "--subset", "96", "--batch-size", "32", "--warmup-epochs", "1",
            "--mixup-off-epochs", "1", "--no-progress", "--seed", "3", "--epochs", "3",
            "--out", out, "--resume"]
    # In a process of its own: a run started later in the same process would be
    # initialised from the random state this one leaves (seeding happens per epoch).
    # With the one thread 0.1.0 had on the fixture's 2-core machine (MXNet's default, half
    # the logical CPUs): the thread count changes how oneDNN splits its sums.
    proc = run_python("-m", "resattn", *argv, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    want, got = _rows(os.path.join(FIXTURES, "resumed_metrics.jsonl")), \
        _rows(os.path.join(out, "metrics.jsonl"))
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(want, got):
        # Another CPU's kernels round differently (oneDNN picks AVX-512, AMX or VNNI
        # kernels by CPU): a few ulps per step, which the resumed epoch 2 keeps within
        # 1e-3; a further epoch of training (epoch 3, at chance level for this tiny
        # network) amplifies them to about 0.5% on some CPUs (0.39% seen between an
        # AMD EPYC and an Intel Xeon).
        rel = 1e-3 if a["epoch"] <= 2 else 2e-2
        for key in ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "skipped_batches"):
            assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-6), (a["epoch"], key)
