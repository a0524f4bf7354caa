import argparse
import os
import shutil
import subprocess
import sys

import pytest

from conftest import run_python
from resattn import __version__, list_models
from resattn.cli import COMMANDS, build_parser, exit_status, main, worker_exits_on_failure


def test_list_shows_every_model_with_paper_counts(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out
    line = next(l for l in out.splitlines() if l.startswith("attention56 "))
    assert "31.81" in line and "31.9" in line and "6.271" in line and "6.2" in line


def test_info_layer_table(capsys):
    assert main(["info", "attention56_cifar", "--input-size", "40x24", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert "features.1" in out and "output" in out
    assert "at input 3x40x24" in out


@pytest.mark.parametrize("argv,fragment", [
    (["info", "attention57"], "unknown model 'attention57'"),
    (["info", "attention56", "--input-size", "0"], "input size"),
    (["info", "attention56", "--depth", "0"], "--depth must be >= 1"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the package
def _subparser(name):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _choices(command, dest):
    return next(a.choices for a in _subparser(command)._actions if a.dest == dest)


def test_every_command_is_registered_in_help_order():
    build_parser()
    assert list(COMMANDS) == ["list", "info", "convert", "train", "eval", "predict", "masks",
                              "launch", "export", "quantize", "gluoncv"]


def test_choices_are_the_library_constants():
    from resattn.models import choices as models
    from resattn.training import config
    from resattn.training.launch import LAUNCHERS
    for command, dest, constant in [
            ("train", "kvstore", config.KVSTORES), ("train", "lr_mode", config.LR_MODES),
            ("train", "optimizer", config.OPTIMIZERS), ("train", "nonfinite", config.NONFINITE),
            ("train", "init", config.INITS), ("train", "dtype", config.DTYPES),
            ("train", "variant", models.VARIANTS), ("train", "learning", models.LEARNING_TYPES),
            ("eval", "variant", models.VARIANTS), ("export", "learning", models.LEARNING_TYPES),
            ("convert", "source", models.SOURCES), ("convert", "variant", models.VARIANTS),
            ("launch", "launcher", LAUNCHERS)]:
        assert _choices(command, dest) is constant, (command, dest)
    for command in ("train", "eval", "masks", "export", "quantize"):
        assert _choices(command, "attention") == models.ATTENTION_TYPES + ("none",)


def test_model_arguments_are_declared_once():
    dests = {"model", "width_mult", "variant", "attention", "learning"}
    for command in ("train", "eval", "masks", "export", "quantize"):
        actions = {a.dest: a for a in _subparser(command)._actions}
        assert dests <= set(actions), command
        assert actions["model"].required is (command == "train")
    assert "classes" in {a.dest for a in _subparser("export")._actions}


@pytest.mark.parametrize("err,status,line", [
    (ValueError("bad\nsecond line"), 2, "resattn train: error: bad"),
    (FileNotFoundError("gone"), 2, "resattn train: error: gone"),
    (ImportError(), 2, "resattn train: error: ImportError"),
    (KeyboardInterrupt(), 130, "resattn train: interrupted"),
    (SystemExit(3), 3, ""),
    (SystemExit(), 0, ""),
    (SystemExit("why"), 1, "why"),
    (RuntimeError("boom"), 1, None),
])
def test_exit_status(err, status, line):
    assert exit_status(err, "train") == (status, line)


def test_main_and_workers_map_failures_with_exit_status(monkeypatch, capsys):
    from resattn.cli import _base
    seen = []

    def spy(err, command):
        seen.append((type(err), command))
        return real(err, command)

    real = _base.exit_status
    monkeypatch.setattr(_base, "exit_status", spy)
    assert main(["info", "attention57"]) == 2
    exits = []
    monkeypatch.setattr(_base.os, "_exit", exits.append)
    with worker_exits_on_failure("train"):
        raise KeyboardInterrupt
    with worker_exits_on_failure("train"):
        raise ValueError("no data")
    assert exits == [130, 2]
    assert seen == [(ValueError, "info"), (KeyboardInterrupt, "train"), (ValueError, "train")]
    assert capsys.readouterr().err.splitlines()[-2:] == [
        "resattn train: interrupted", "resattn train: error: no data"]


def test_main_lets_unexpected_errors_through(monkeypatch):
    from resattn.cli import _base

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(_base.COMMANDS, "list", ("list", broken, lambda p: None))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["list"])


def test_building_the_parser_imports_no_mxnet():
    proc = run_python("-c", "import sys; from resattn.cli import build_parser; build_parser(); "
                         "assert 'mxnet' not in sys.modules, 'mxnet imported'")
    assert proc.returncode == 0, proc.stderr
    script = shutil.which("resattn", path=os.path.dirname(sys.executable)) or "resattn"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "quantize" in proc.stdout and "launch" in proc.stdout


@pytest.mark.parametrize("module", ["resattn", "resattn.cli"])
def test_python_m_runs_the_command_line(module):
    proc = run_python("-m", module, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "resattn " + __version__
    proc = run_python("-m", module, "info", "attention57")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resattn info: error: unknown model")
