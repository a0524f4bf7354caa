"""A run that fails says so: the rules of run_health, and what `resattn train` prints and logs."""
import json
import math
import os

import pytest

from resattn.training import HealthCheck, run_health
from resattn.training.callbacks import HEALTH_ADVICE
from conftest import run_cli

CHANCE = math.log(10)


def _row(epoch, train_loss, val_loss, val_top1):
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_top1": val_top1}


# What the failing and healthy demo runs of docs/attention.md's study looked like.
HEALTHY = [_row(1, 2.1, 1.9, 0.35), _row(2, 1.6, 1.2, 0.62), _row(3, 1.3, 0.5, 0.86)]
STUCK = [_row(1, 2.31, 2.35, 0.10), _row(2, 2.30, 9.1, 0.10), _row(3, 2.31, 4.1e7, 0.10)]
SPIKE = [_row(1, 2.0, 1.5, 0.55), _row(2, 1.7, 78.0, 0.30), _row(3, 1.4, 0.6, 0.86)]


def _kinds(history, **kw):
    return [kind for kind, _ in run_health(history, 10, **kw)]


def test_a_healthy_run_has_no_problem_at_any_epoch():
    for end in range(1, len(HEALTHY) + 1):
        assert run_health(HEALTHY[:end], 10) == []
    assert run_health([], 10) == []


def test_stuck_at_chance_from_the_second_epoch_on():
    assert _kinds(STUCK[:1]) == []  # the first epoch may be warm-up
    assert _kinds(STUCK[:1], min_epochs=1) == ["stuck"]
    assert _kinds(STUCK[:2]) == ["stuck", "diverged"]
    text = dict(run_health(STUCK, 10))["stuck"]
    assert "after 3 epochs" in text and "2.310" in text and "chance %.3f" % CHANCE in text
    # Still at chance in loss but clearly above chance in accuracy: not stuck.
    assert _kinds([_row(3, 2.2, 2.0, 0.45)]) == []


def test_evaluation_loss_above_three_times_chance_or_not_finite_diverges():
    assert _kinds(SPIKE[:2]) == ["diverged"]
    assert _kinds(SPIKE) == []  # it recovered
    assert _kinds([_row(2, 1.0, 3 * CHANCE - 0.01, 0.7)]) == []
    assert _kinds([_row(2, 1.0, float("nan"), 0.7)]) == ["diverged"]
    assert "4.1e+07" in dict(run_health(STUCK, 10))["diverged"]


def test_collapse_below_half_the_best():
    history = HEALTHY + [_row(4, 1.2, 2.0, 0.42)]
    assert _kinds(history) == ["collapsed"]
    assert "0.4200 at epoch 4 from 0.8600 at epoch 3" in dict(run_health(history, 10))["collapsed"]
    assert _kinds(HEALTHY + [_row(4, 1.2, 1.0, 0.44)]) == []  # above half of 0.86
    # A best that was itself near chance does not count.
    assert _kinds([_row(1, 2.0, 2.2, 0.25), _row(2, 1.9, 2.2, 0.11)]) == []


def test_other_class_counts_scale_chance():
    from resattn.training.callbacks import near_chance
    assert [near_chance(c) for c in (2, 10, 100)] == pytest.approx([0.55, 0.19, 0.02])
    assert [k for k, _ in run_health([_row(3, 0.69, 0.7, 0.6)], 2)] == []
    assert [k for k, _ in run_health([_row(3, 0.69, 0.7, 0.5)], 2)] == ["stuck"]
    assert [k for k, _ in run_health([_row(3, 4.6, 4.6, 0.01)], 100)] == ["stuck"]


class _FakeTrainer:
    def __init__(self, history):
        self.state = type("S", (), {"history": history})()
        self.classes = 10


def test_health_check_marks_the_row_and_prints_advice(capsys):
    cb = HealthCheck()
    history = [dict(r) for r in STUCK]
    cb.on_epoch_end(_FakeTrainer(history), history[-1], False)
    assert [k for k, _ in cb.problems] == ["stuck", "diverged"]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("warning: ") for line in out)
    assert HEALTH_ADVICE["stuck"] in out[0]
    assert history[-1]["warnings"] == [line[len("warning: "):] for line in out]
    healthy = [dict(r) for r in HEALTHY]
    cb.on_epoch_end(_FakeTrainer(healthy), healthy[-1], True)
    assert cb.problems == [] and "warnings" not in healthy[-1]
    assert capsys.readouterr().out == ""


TINY = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset", "digits",
        "--subset", "96", "--batch-size", "32", "--epochs", "3", "--warmup-epochs", "1",
        "--mixup-off-epochs", "1", "--no-progress"]


def test_a_run_that_cannot_learn_ends_with_failed_in_the_summary_and_the_log(tmp_path, capsys):
    out = str(tmp_path / "run")
    # A learning rate of 1e-9 leaves the initial network in place: chance at every epoch.
    assert _run(TINY + ["--lr", "1e-9", "--out", out]) == 0
    printed = capsys.readouterr().out
    failed = [line for line in printed.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1 and "stuck at chance after 3 epochs" in failed[0], printed
    assert HEALTH_ADVICE["stuck"] in failed[0]
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert "warnings" not in rows[0] and any("stuck" in w for w in rows[-1]["warnings"])
    with open(os.path.join(out, "train.log")) as f:
        log = f.read()
    assert "  warning: training is stuck at chance after 3 epochs" in log


_run = run_cli


def test_image_size_trains_at_that_size_and_is_recorded(tmp_path):
    out = str(tmp_path / "run")
    assert _run(TINY + ["--out", out, "--epochs", "2", "--image-size", "24"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["image_size"] == 24
    with open(os.path.join(out, "best.params.json")) as f:
        assert json.load(f)["preprocessing"]["input_size"] == 24


@pytest.mark.parametrize("size", ["0", "7", "9000"])
def test_image_size_is_bounded(tmp_path, size, capsys):
    out = tmp_path / "run"
    assert _run(TINY + ["--out", str(out), "--image-size", size]) == 2
    assert "--image-size must be an integer from 8 to 8192 pixels, got %s" % size in \
        capsys.readouterr().err
    assert not out.exists()


def test_the_loss_curve_reads_at_every_epoch(tmp_path):
    """An epoch-1 evaluation loss of 20 beside later losses of 0.05: a log axis, so that the
    later epochs do not sit flat at the bottom; ordinary runs keep a linear one."""
    from resattn.viz import loss_scale, plot_curves
    spike = [dict(_row(1, 2.3, 19.9, 0.1), val_top5=0.5), dict(_row(2, 0.4, 0.05, 0.98),
                                                               val_top5=1.0)]
    assert loss_scale(spike) == "log"
    assert loss_scale(HEALTHY) == "linear"
    assert loss_scale([_row(1, 2.0, float("nan"), 0.1)]) == "linear"
    plot_curves(spike + [dict(_row(3, float("inf"), 0.04, 0.99), val_top5=1.0)],
                str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_the_default_rule_waits_out_warm_up_and_wants_persistence(capsys):
    """make demo's healthy start (an evaluation spike at epoch 1, chance at epoch 2, then
    learning) warns at no epoch; a run that stays at chance is still caught, once the
    grace after warm-up is over and the problem held two epochs running."""
    from resattn.training.callbacks import GRACE_EPOCHS, PERSIST_EPOCHS
    config = type("C", (), {"warmup_epochs": 1})()
    demo = [_row(1, 2.36, 19.9, 0.10), _row(2, 2.25, 2.6, 0.12), _row(3, 1.2, 0.9, 0.70),
            _row(4, 0.6, 0.3, 0.93), _row(5, 0.4, 0.2, 0.96)]
    stuck = [_row(e, 2.31, 2.35, 0.10) for e in range(1, 7)]
    for history, warned_from in ((demo, None), (stuck, 1 + GRACE_EPOCHS)):
        cb = HealthCheck(verbose=False)
        for end in range(1, len(history) + 1):
            trainer = _FakeTrainer([dict(r) for r in history[:end]])
            trainer.config = config
            cb.on_epoch_end(trainer, trainer.state.history[-1], False)
            expect = warned_from is not None and end >= max(warned_from, PERSIST_EPOCHS)
            assert bool(cb.problems) == expect, (end, cb.problems)
    assert capsys.readouterr().out == ""
    # A loss that is not finite is said at once, grace or not.
    assert _kinds([_row(1, float("nan"), float("nan"), 0.1)], min_epochs=5, persist=3) == [
        "diverged"]
