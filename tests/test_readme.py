"""Every command and snippet of README.md, run as printed.

Python blocks run each in a fresh namespace, in a folder holding the files they name
(``cat.png``, ``ship.jpg``, ``gluoncv_a56.params``) and a weight cache already holding the
published tags they load (converted files of random weights, recorded under the tags'
blob ids: this machine cannot download the real ones). Shell commands run in a
subprocess, exactly as printed, offline: those that need the internet or CIFAR-10 must
end with the one-line error designed for it (exit status 2, no traceback), the others
must succeed. ``make demo`` and ``make test`` are what CI runs (``.ci/run``), and the
``pip install`` lines are checked against the extras of pyproject.toml.
"""
import os
import re
import shlex
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as _f:
    README = _f.read()


def _blocks(lang):
    return re.findall(r"^```%s\n(.*?)^```" % lang, README, flags=re.S | re.M)


def _commands():
    """Every shell command of the README (continuation lines joined, comments dropped)."""
    out = []
    for block in _blocks("bash"):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("  #")[0].split(" # ")[0].strip()
            if cmd:
                out.append(re.sub(r"\s+", " ", cmd))
    return out


#: What each command must do offline here: (exit status, a fragment of its output).
OFFLINE = "cannot be downloaded"
EXPECTED = [
    ("make ", None),  # CI runs these (.ci/run)
    ("pip install", None),  # checked against pyproject.toml
    ("resattn train --model attention92_cifar --dataset cifar10", (2, "CIFAR-10")),
    ("resattn eval --params runs/a92/best.params", (2, "no such file")),
    ("resattn list --pretrained", (0, "seed-97.14*")),
    ("resattn eval --pretrained seed-97.14 --dataset cifar10", (2, "CIFAR-10")),
    ("resattn predict --pretrained seed-97.14 cat.png ship.jpg", (0, "ship.jpg: ")),
    ("resattn convert --model attention92_cifar --source pytorch",
     (0, "pixels / 255, mean (0.0, 0.0, 0.0), std (1.0, 1.0, 1.0)")),
    ("resattn eval --params a92.params --dataset cifar10", (2, "CIFAR-10")),
    ("resattn gluoncv train_cifar10.py", (2, "train_cifar10.py")),
    ("resattn export --params runs/demo/best.params --format onnx", (0, "checked in ONNX")),
    ("resattn export --params runs/demo/best.params --format symbol", (0, "demo-symbol.json")),
    ("resattn quantize --params runs/demo/best.params", (0, "top1 float32")),
    ("resattn launch -n 2 -s 1", (0, "best val_top1")),
    ("resattn launch -n 8 -s 2 --launcher ssh -H hosts.txt", (2, "hosts.txt")),
]


def _expected(cmd):
    for prefix, outcome in EXPECTED:
        if cmd.startswith(prefix):
            return outcome
    raise AssertionError("README command without an expectation in test_readme.py: %s" % cmd)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The files the README's commands and snippets name, and a cache with the tags."""
    cv2 = pytest.importorskip("cv2")
    torch = pytest.importorskip("torch")
    from conftest import randomize_batchnorm
    from refimpl.legacy_torch import write_legacy_torch
    from resattn import get_model
    from resattn.data import dataset_info
    from resattn.io import save_weights
    from resattn.models import weights as W
    from resattn.models.convert import foreign_names
    from resattn.models import fetch_weights
    d = tmp_path_factory.mktemp("readme")
    rng = np.random.RandomState(0)
    cv2.imwrite(str(d / "cat.png"), rng.randint(0, 255, (48, 40, 3), dtype=np.uint8))
    cv2.imwrite(str(d / "ship.jpg"), rng.randint(0, 255, (30, 50, 3), dtype=np.uint8))
    # A GluonCV file of cifar_residualattentionnet56 and the reference's legacy pickle.
    a56 = get_model("attention56_cifar", variant="gluoncv")
    a56.initialize(mx.init.Xavier())
    a56(mx.nd.zeros((1, 3, 32, 32)))
    names = foreign_names(a56, "gluoncv")
    arrays = {names[k]: p.data() for k, p in a56._collect_params_with_prefix().items()}
    arrays["fc.weight"] = arrays["fc.weight"].reshape((10, -1, 1, 1))
    mx.nd.save(str(d / "gluoncv_a56.params"), arrays)
    a92 = get_model("attention92_cifar")
    a92.initialize(mx.init.MSRAPrelu())
    a92(mx.nd.zeros((1, 3, 32, 32)))
    randomize_batchnorm(a92)
    params = a92._collect_params_with_prefix()
    state = {}
    for name, foreign in foreign_names(a92, "pytorch").items():
        state[foreign] = torch.from_numpy(params[name].data().asnumpy())
    write_legacy_torch(state, str(d / "model_92_sgd.pkl"))
    # The cache: converted files under the published tags (as fetch_weights leaves them).
    home = d / "home"
    os.environ["RESATTN_HOME"] = str(home)
    for tag in ("seed-97.14", "pytorch-95.4"):
        entry = W.get_weights(tag)
        path = home / "weights" / ("%s-%s.resattn.params" % (entry.tag, entry.blob[:8]))
        save_weights(a92, str(path), entry.model, arch=entry.arch,
                     preprocessing=entry.pretrained_cfg.preprocessing(), class_names=entry.class_names,
                     provenance=entry.provenance())
        assert fetch_weights(tag) == str(path)
    # runs/demo/best.params, as `make demo` leaves it (a tiny network, with its config).
    demo = get_model("attention56_cifar", width_mult=0.0625)
    demo.initialize(mx.init.Xavier())
    demo(mx.nd.zeros((1, 3, 32, 32)))
    info = dataset_info("digits")
    save_weights(demo, str(d / "runs" / "demo" / "best.params"), "attention56_cifar",
                 arch={"width_mult": 0.0625, "classes": 10},
                 preprocessing={"input_size": 32, "scale": 255.0, "mean": list(info["mean"]),
                                "std": list(info["std"])}, class_names=info["class_names"])
    yield d
    del os.environ["RESATTN_HOME"]


def test_every_command_has_an_expectation():
    commands = _commands()
    assert len(commands) >= 15
    for cmd in commands:
        _expected(cmd)


def test_pip_lines_name_real_extras():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    lines = [c for c in _commands() if c.startswith("pip install")]
    assert lines
    for cmd in lines:
        extras = re.fullmatch(r"pip install 'resattn\[([\w,]+)\]'", cmd).group(1).split(",")
        for extra in extras:
            assert re.search(r"^%s = \[" % extra, pyproject, flags=re.M), extra
    assert '"mxnet==1.9.1"' in pyproject and '"mxnet-cu112==1.9.1"' in pyproject


def test_ci_runs_make_test_and_make_demo():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        script = f.read()
    assert "make test" in script and "make demo" in script


def _env(folder):
    env = dict(os.environ, RESATTN_HOME=str(folder / "home"), MXNET_HOME=str(folder / "mx"),
               MPLBACKEND="Agg")
    # Offline, whatever the machine: downloads go to a port nothing listens on.
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[key] = "http://127.0.0.1:9"
    env.pop("RESATTN_MIRROR", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.parametrize("cmd", [c for c in _commands() if _expected(c) is not None])
def test_command_runs_as_printed(folder, cmd):
    status, fragment = _expected(cmd)
    argv = shlex.split(cmd)
    assert argv[0] == "resattn"
    proc = subprocess.run([sys.executable, "-m", "resattn"] + argv[1:], cwd=str(folder),
                          env=_env(folder), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode == status, out[-3000:]
    assert fragment in out, out[-3000:]
    if status == 2:  # one line: resattn CMD: error: ...
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("resattn "), proc.stderr


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_runs_as_printed(folder, index, monkeypatch):
    monkeypatch.chdir(folder)
    block = _blocks("python")[index]
    namespace = {"__name__": "readme_block_%d" % index}
    exec(compile(block, "README.md python block %d" % (index + 1), "exec"), namespace)
