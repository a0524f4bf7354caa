"""resattn from GluonCV: its import, its model table, its names, its scripts' calls."""
import os
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

import resattn
from conftest import randomize_batchnorm, rel_diff, run_python
from resattn import gluoncv as rg
from resattn.cli import main


def test_gluoncv_imports_beside_torch_2():
    torch = pytest.importorskip("torch")
    if int(torch.__version__.split(".")[0]) < 2:
        pytest.skip("the check only fails with torch>=2")
    plain = run_python("-c", "import gluoncv")
    assert plain.returncode != 0 and "torch" in plain.stderr  # what import_gluoncv avoids
    code = ("from resattn.gluoncv import import_gluoncv\ngcv = import_gluoncv()\n"
            "import gluoncv, torch\nassert gluoncv is gcv and torch.ones(1).item() == 1\n"
            "print(type(gcv.model_zoo.get_model('resnet18_v1b')).__name__)\n")
    ours = run_python("-c", code)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.strip() == "ResNetV1b"


def test_model_table_is_gluoncvs_and_register_adds_resattn_names():
    table = rg.model_table()
    assert table is rg.import_gluoncv().model_zoo.model_zoo._models
    rg.register()
    assert rg.register() == []  # idempotent
    get_model = rg.import_gluoncv().model_zoo.get_model
    for name in resattn.list_models():
        assert name in table
    net = get_model("attention56_cifar", classes=7)
    assert isinstance(net, resattn.ResidualAttentionNet) and net.classes == 7
    # GluonCV's own names still build GluonCV's models.
    assert type(get_model("resnet18_v1b")).__name__ == "ResNetV1b"
    assert type(get_model("cifar_residualattentionnet56")).__module__.startswith("gluoncv")
    with pytest.raises(ValueError, match="not resattn models: resnet18_v1b"):
        rg.register(["resnet18_v1b"])


def test_gluoncv_names_are_aliases_that_load_gluoncv_files(tmp_path):
    gcv = rg.import_gluoncv()
    mx.random.seed(1)
    theirs = gcv.model_zoo.get_model("cifar_residualattentionnet56", classes=10)
    theirs.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 32, 32))
    theirs(x)
    randomize_batchnorm(theirs, np.random.RandomState(2))
    path = str(tmp_path / "gluoncv.params")
    theirs.save_parameters(path)
    ours = resattn.get_model("cifar_residualattentionnet56", pretrained=path)  # no flags
    assert ours.features[1][1].variant == "gluoncv"
    assert rel_diff(theirs(x), ours(x)) < 1e-4
    assert resattn.model_config("residualattentionnet92")["variant"] == "gluoncv"
    with pytest.raises(ValueError, match=r"did you mean 'cifar_residualattentionnet56' "
                                         r"\(attention56_cifar\)"):
        resattn.get_model("cifar_residualattentionnet65")


def test_last_gamma_and_other_gluoncv_keywords():
    net = resattn.get_model("attention56_cifar", width_mult=1 / 16, last_gamma=True)
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 32, 32)))
    gammas = {k: p.data().asnumpy() for k, p in net.collect_params().items()
              if k.endswith("gamma")}
    last = [k for k in gammas if "_batchnorm2_" in k]
    assert last and all(not gammas[k].any() for k in last)
    assert all((gammas[k] == 1).all() for k in gammas if k not in last)
    with pytest.raises(ValueError, match="unknown keyword argument use_se; a zoo model "
                                         "accepts: .*last_gamma"):
        resattn.get_model("attention56", use_se=True)


SCRIPT = '''
"""Makes the calls GluonCV's classification scripts make (train_cifar10.py, train_imagenet.py)."""
import argparse
import os

import gluoncv as gcv
import mxnet as mx
from gluoncv.model_zoo import get_model
from gluoncv.utils import LRScheduler, LRSequential, TrainingHistory, makedirs
from mxnet import autograd, gluon


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--last-gamma", action="store_true")
    parser.add_argument("--save-dir", required=True)
    opt = parser.parse_args()
    context = [mx.cpu()]
    kwargs = {"ctx": context, "pretrained": False, "classes": 10}
    if opt.last_gamma:
        kwargs["last_gamma"] = True
    net = get_model(opt.model, **kwargs)
    net.cast("float32")
    if opt.teacher:
        teacher = get_model(opt.teacher, pretrained=False, classes=10, ctx=context)
        teacher.initialize(ctx=context)
    net.initialize(mx.init.MSRAPrelu(), ctx=context)
    for param in net.collect_params(".*beta|.*gamma|.*bias").values():
        param.wd_mult = 0.0
    net.hybridize(static_alloc=True, static_shape=True)
    schedule = LRSequential([LRScheduler("linear", base_lr=0, target_lr=0.1, nepochs=1,
                                         iters_per_epoch=2),
                             LRScheduler("cosine", base_lr=0.1, target_lr=0, nepochs=1,
                                         iters_per_epoch=2)])
    trainer = gluon.Trainer(net.collect_params(), "nag",
                            {"lr_scheduler": schedule, "wd": 1e-4, "momentum": 0.9})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history = TrainingHistory(["training-error"])
    data = mx.nd.random.uniform(shape=(4, 3, 32, 32))
    label = mx.nd.array([0, 1, 2, 3])
    for _ in range(2):
        xs = gluon.utils.split_and_load(data, ctx_list=context, batch_axis=0)
        ys = gluon.utils.split_and_load(label, ctx_list=context, batch_axis=0)
        with autograd.record():
            losses = [loss_fn(net(x), y) for x, y in zip(xs, ys)]
        for loss in losses:
            loss.backward()
        trainer.step(4)
    history.update([0.5])
    makedirs(opt.save_dir)
    path = os.path.join(opt.save_dir, "%s.params" % opt.model)
    net.save_parameters(path)
    trainer.save_states(path + ".states")
    again = get_model(opt.model, classes=10)
    again.load_parameters(path, ctx=context)
    print("trained %s, %s" % (type(net).__name__, type(teacher).__name__ if opt.teacher
                              else "no teacher"))


if __name__ == "__main__":
    main()
'''


def test_cli_runs_a_gluoncv_script_with_resattn_models(tmp_path, capsys):
    script = tmp_path / "train_like_gluoncv.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "params"
    argv = ["gluoncv", str(script), "--model", "attention56_cifar", "--teacher", "resnet18_v1b",
            "--last-gamma", "--save-dir", str(out)]
    assert main(argv) == 0
    assert "trained ResidualAttentionNet, ResNetV1b" in capsys.readouterr().out
    assert os.path.isfile(out / "attention56_cifar.params")
    assert sys.argv[0] != str(script)  # restored
    assert main(["gluoncv", str(script), "--bogus"]) == 2  # the script's own argparse exit
    assert main(["gluoncv", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
