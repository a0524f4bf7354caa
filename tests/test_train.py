import json
import math
import os
import signal

import mxnet as mx
import numpy as np
import pytest

from resattn import get_model
from resattn import training as train
from resattn.training import trainer as train_loop
from resattn.data import dataset_info, get_data_loader
from resattn.io import read_weights_config
from conftest import run_cli

TINY = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset", "digits",
        "--subset", "96", "--batch-size", "32", "--warmup-epochs", "1", "--mixup-off-epochs", "1",
        "--no-progress", "--seed", "3"]


_run = run_cli


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("straight"))
    assert _run(TINY + ["--epochs", "2", "--out", out]) == 0
    return out


def test_train_writes_every_output(straight):
    files = set(os.listdir(straight))
    assert {"metrics.jsonl", "last.params", "last.states", "best.params", "best.states",
            "config.json", "curves.png", "train.log"} <= files
    rows = _metrics(straight)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert {"epoch", "train_loss", "val_loss", "val_top1", "lr", "img_per_s"} <= set(row)
        assert all(math.isfinite(v) for k, v in row.items() if k != "warnings")
        assert all(isinstance(w, str) for w in row.get("warnings", []))
    with open(os.path.join(straight, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["model"] == "attention56_cifar" and cfg["epochs"] == 2 and cfg["seed"] == 3
    assert cfg["model_kwargs"] == {"width_mult": 0.0625} and cfg["base_lr"] == 0.05
    for name in ("best", "last"):  # each .params travels with its config
        weights = read_weights_config(os.path.join(straight, name + ".params"))
        assert weights["model"] == "attention56_cifar"
        assert weights["arch"] == {"width_mult": 0.0625, "classes": 10}
        info = dataset_info("digits")
        assert weights["preprocessing"] == {"input_size": 32, "scale": 255.0,
                                            "mean": list(info["mean"]), "std": list(info["std"]),
                                            "crop_mode": "squash", "crop_pct": 0.875,
                                            "interpolation": "bilinear"}
        assert weights["class_names"] == [str(d) for d in range(10)]
        assert weights["provenance"]["dataset"] == "digits"
        assert weights["provenance"]["checkpoint"] == name
    with open(os.path.join(straight, "train.log")) as f:
        lines = f.read().splitlines()
    # A header (versions, threads, CPU), one line per epoch, and warnings under an epoch.
    assert lines[0].startswith("# resattn ") and "threads: " in lines[0]
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert all(line.startswith(("epoch ", "  warning: ")) for line in lines[1:])
    with open(os.path.join(straight, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_eval_reproduces_best_accuracy(straight, capsys):
    assert _run(["eval", "--params", os.path.join(straight, "best.params"),
                 "--dataset", "digits", "--subset", "96"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    best = max(r["val_top1"] for r in _metrics(straight))
    assert last == "top1 %.4f" % best


@pytest.mark.parametrize("interrupt_at,resume_point", [(3, (1, 0)), (5, (1, 2))])
def test_interrupt_then_resume_equals_straight(straight, tmp_path, monkeypatch, interrupt_at,
                                               resume_point):
    """Ctrl-C in the last batch of epoch 1 (1 epoch + resume 1) or in epoch 2's middle."""
    out = str(tmp_path)
    real_step = mx.gluon.Trainer.step
    calls = {"n": 0}

    def interrupting_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == interrupt_at:  # 3 batches per epoch
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(mx.gluon.Trainer, "step", interrupting_step)
    assert _run(TINY + ["--epochs", "2", "--out", out]) == 130
    monkeypatch.setattr(mx.gluon.Trainer, "step", real_step)
    meta = train.load_checkpoint(os.path.join(out, "last"), get_model(
        "attention56_cifar", width_mult=0.0625))
    assert (meta["epoch"], meta["batch"]) == resume_point
    assert [r["epoch"] for r in _metrics(out)] == [1]
    assert _run(TINY + ["--epochs", "2", "--out", out, "--resume"]) == 0
    a, b = _metrics(straight), _metrics(out)
    for key in ("train_loss", "val_loss", "val_top1", "lr"):
        assert a[-1][key] == pytest.approx(b[-1][key], rel=1e-5, abs=1e-7), key


def test_resume_with_other_settings_is_refused(straight, capsys):
    assert _run(TINY + ["--epochs", "2", "--out", straight, "--resume", "--lr", "0.3"]) == 2
    assert "different settings (lr)" in capsys.readouterr().err


def test_resume_ignores_how_the_network_was_initialised(straight, tmp_path):
    # A resumed run loads its parameters: --init and --zero-init-residual cannot matter, and
    # a checkpoint written before zero_init_residual existed still resumes.
    import shutil
    out = str(tmp_path / "copy")
    shutil.copytree(straight, out)
    assert _run(TINY + ["--epochs", "3", "--out", out, "--resume"]) == 2  # epochs do matter
    assert _run(TINY + ["--epochs", "2", "--out", out, "--resume", "--init", "xavier",
                        "--zero-init-residual"]) == 0


def test_lr_schedule_matches_gluoncv_formula():
    """Linear warm-up from 0 and cosine decay to 0, each over its iterations (GluonCV)."""
    cfg = train.TrainConfig(epochs=10, warmup_epochs=2, batch_size=128)
    sched = train.make_lr_scheduler(cfg, iters_per_epoch=5)
    base = 0.2  # 0.1 x 128 / 64
    for it in range(50):
        if it < 10:
            expected = base * it / 9
        else:
            expected = base * (1 + math.cos(math.pi * (it - 10) / 39)) / 2
        assert sched(it) == pytest.approx(expected, abs=1e-9)
    step = train.make_lr_scheduler(train.TrainConfig(
        epochs=10, warmup_epochs=0, lr=0.1, lr_mode="step", lr_steps=(4, 8)), 5)
    assert [round(step(i), 6) for i in (0, 19, 20, 39, 40)] == [0.1, 0.1, 0.01, 0.01, 0.001]
    single = train.make_lr_scheduler(train.TrainConfig(epochs=1, warmup_epochs=0, lr=0.1), 1)
    assert single(0) == 0.1


def test_label_smoothing_and_mixup_targets():
    labels = mx.nd.array([0, 2])
    t = train.smooth_labels(labels, 4, 0.1).asnumpy()
    np.testing.assert_allclose(t, [[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.925, 0.025]])
    np.testing.assert_allclose(t.sum(axis=1), 1, rtol=1e-6)
    x = mx.nd.array([[1.0], [3.0]])
    mx_x, mx_t = train.mixup_batch(x, train.smooth_labels(labels, 4, 0.0), 0.75)
    np.testing.assert_allclose(mx_x.asnumpy(), [[1.5], [2.5]])
    np.testing.assert_allclose(mx_t.asnumpy(), [[0.75, 0, 0.25, 0], [0.25, 0, 0.75, 0]])


def test_no_wd_on_bias_and_batchnorm(tmp_path):
    net = get_model("attention56_cifar", width_mult=0.0625)
    data = get_data_loader("digits", True, 32, subset=32)
    train.fit(net, data, data, str(tmp_path), epochs=1, warmup_epochs=0, mixup_alpha=0,
              progress=False, classes=10)
    mults = {k: p.wd_mult for k, p in net.collect_params().items()}
    assert all(v == 0 for k, v in mults.items() if k.endswith(("gamma", "beta", "bias")))
    assert all(v == 1 for k, v in mults.items() if k.endswith("weight"))


@pytest.mark.parametrize("argv,fragment", [
    (["--gpus", "0"], "MXNet sees 0 GPU"),
    (["--gpus", "x"], "comma-separated GPU ids"),
    (["--dtype", "float16"], "needs a GPU"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--warmup-epochs", "5", "--epochs", "2"], "warmup_epochs must be in [0, epochs=2)"),
    (["--lr-steps", "a,b"], "--lr-steps"),
    (["--dataset", "mnist"], "unknown dataset"),
])
def test_bad_training_arguments_exit_2(argv, fragment, tmp_path, capsys):
    assert _run(TINY + ["--epochs", "2", "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nonfinite_loss_keeps_last_good_checkpoint(tmp_path, monkeypatch, policy):
    out = str(tmp_path)
    net = get_model("attention56_cifar", width_mult=0.0625)
    data = get_data_loader("digits", True, 32, subset=64)  # 2 batches per epoch
    real, calls = train.smooth_labels, {"n": 0}

    def nan_from_epoch_2(*args):
        calls["n"] += 1
        return real(*args) * (float("nan") if calls["n"] > 2 else 1.0)

    monkeypatch.setattr(train_loop, "smooth_labels", nan_from_epoch_2)
    kw = dict(epochs=2, warmup_epochs=0, mixup_alpha=0, progress=False, classes=10,
              nonfinite=policy)
    if policy == "stop":
        with pytest.raises(train.NonFiniteLossError, match="non-finite loss nan at epoch 2"):
            train.fit(net, data, data, out, **kw)
        fresh = get_model("attention56_cifar", width_mult=0.0625)
        meta = train.load_checkpoint(os.path.join(out, "last"), fresh)
        assert (meta["epoch"], meta["batch"]) == (1, 0)
        assert all(np.isfinite(p.data().asnumpy()).all() for p in fresh.collect_params().values())
    else:
        history = train.fit(net, data, data, out, **kw)
        assert [r["skipped_batches"] for r in history] == [0, 2]
        assert math.isfinite(history[-1]["val_loss"])


def test_checkpoint_write_failure_keeps_previous(tmp_path, monkeypatch):
    net = get_model("attention56_cifar", width_mult=0.0625)
    data = get_data_loader("digits", True, 32, subset=32)
    out = str(tmp_path)
    train.fit(net, data, data, out, epochs=1, warmup_epochs=0, mixup_alpha=0, progress=False,
              classes=10)
    good = open(os.path.join(out, "last.params"), "rb").read()

    def disk_full(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mx.gluon.Block, "save_parameters", disk_full)
    with pytest.raises(OSError, match="No space"):
        train.save_checkpoint(os.path.join(out, "last"), net, None, {})
    assert open(os.path.join(out, "last.params"), "rb").read() == good
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    monkeypatch.undo()
    train.load_checkpoint(os.path.join(out, "last"), get_model("attention56_cifar",
                                                               width_mult=0.0625))


def test_existing_run_is_not_overwritten_by_accident(straight, capsys):
    before = open(os.path.join(straight, "last.params"), "rb").read()
    assert _run(TINY + ["--epochs", "2", "--out", straight]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert open(os.path.join(straight, "last.params"), "rb").read() == before


def _folder_dataset(root, classes=3, per_class=4):
    cv2 = pytest.importorskip("cv2")
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / ("class%d" % c)
            d.mkdir(parents=True)
            for i in range(per_class):
                img = np.full((20, 20, 3), 60 * c + 5 * i, dtype=np.uint8)
                cv2.imwrite(str(d / ("%d.png" % i)), img)
    return "imagefolder:%s" % root


@pytest.mark.parametrize("new_classes", [False, True])
def test_finetune_keeps_loaded_weights_and_replaces_a_foreign_classifier(
        straight, tmp_path, monkeypatch, new_classes):
    seen = {}

    def capture(net, *args, **kwargs):
        seen["reinit"] = kwargs["reinit"]
        seen["params"] = {k: None if p._data is None else p.data().asnumpy()
                          for k, p in net._collect_params_with_prefix().items()}
        return []

    monkeypatch.setattr(train, "fit", capture)
    dataset = _folder_dataset(tmp_path / "data") if new_classes else "digits"
    argv = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset",
            dataset, "--epochs", "2", "--warmup-epochs", "0", "--batch-size", "4",
            "--out", str(tmp_path / "ft"),
            "--finetune", os.path.join(straight, "best.params")]
    assert _run(argv) == 0
    saved = mx.nd.load(os.path.join(straight, "best.params"))
    assert seen["reinit"] is False
    for name, value in seen["params"].items():
        if name.startswith("output.") and new_classes:
            assert value is None  # left for fit to initialise for the 3 new classes
        else:
            np.testing.assert_array_equal(value, saved[name].asnumpy())


def test_finetune_missing_file(tmp_path, capsys):
    assert _run(TINY + ["--epochs", "2", "--out", str(tmp_path), "--finetune", "/no/f.params"]) == 2
    assert "--finetune /no/f.params: no such file" in capsys.readouterr().err


def test_setup_without_reinit_keeps_loaded_weights_silently():
    # Fine-tuning: parameters already loaded stay as they are, and MXNet's "already
    # initialized, ignoring" warning (one per parameter) is not shown to the user.
    import warnings
    net = get_model("attention56_cifar", width_mult=0.0625, classes=10)
    net.initialize(mx.init.Uniform(0.3))
    net(mx.nd.zeros((1, 3, 32, 32)))
    before = {k: p.data().asnumpy() for k, p in net.collect_params().items()}
    trainer = train.Trainer(net, train.TrainConfig(epochs=1, batch_size=2,
                                                         warmup_epochs=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.setup(4, reinit=False)
    assert not [w for w in caught if "already initialized" in str(w.message)]
    for k, p in net.collect_params().items():
        np.testing.assert_array_equal(p.data().asnumpy(), before[k], err_msg=k)
