"""Hostile command lines: unbounded counts, unwritable outputs, absurd sizes, corrupt files,
settings that were silently ignored, and the README's distributed example as printed.

Every refusal is one line ``resattn CMD: error: ...`` with exit status 2 that names the
value. The tests run as root here, which may write into read-only directories, so a
read-only file system and a full disk are simulated (``tempfile``/``os.fsync`` raising
EROFS/ENOSPC), besides a path under a regular file (ENOTDIR) and a directory as the output
(EISDIR); one test fills a real tmpfs where it can mount one.
"""
import errno
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import mxnet as mx
import pytest

import resattn.data
from resattn import get_model
from resattn import training as train
from resattn.cli import main
from resattn.io import MAX_INPUT_SIDE, WriteError, atomic_write, save_parameters, write_json
from resattn.models.zoo import MAX_WIDTH_MULT
from resattn.training import launch
from resattn.training.config import max_loader_workers

MODEL, WIDTH = "attention56_cifar", 0.0625


def _train_argv(epochs=1):
    return ["train", "--model", MODEL, "--width-mult", str(WIDTH), "--dataset", "digits",
            "--subset", "32", "--batch-size", "32", "--epochs", str(epochs), "--warmup-epochs",
            "0", "--mixup-alpha", "0", "--no-progress"]


TRAIN = _train_argv()


def _run(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``resattn ARGV`` in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err, command, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("resattn %s: error: " % command), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
    return lines[0]


def _leftovers(folder):
    """Temporary files anywhere under ``folder``."""
    found = []
    for root, dirs, files in os.walk(str(folder)):
        found += [os.path.join(root, n) for n in files + dirs
                  if n.endswith((".tmp", ".new")) or n.startswith(".export.")]
    return found


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A directory as `resattn train` leaves it, for a tiny network: best.params, config.json."""
    folder = tmp_path_factory.mktemp("run")
    net = get_model(MODEL, width_mult=WIDTH)
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 32, 32)))
    save_parameters(net, folder / "best.params")
    (folder / "config.json").write_text(json.dumps(
        {"model": MODEL, "model_kwargs": {"width_mult": WIDTH}, "seed": 0, "dataset": "digits"}))
    return folder


@pytest.fixture(scope="module")
def foreign_weights(tmp_path_factory):
    """A small full-width resattn file for `resattn convert --source resattn`."""
    path = tmp_path_factory.mktemp("foreign") / "paper.params"
    net = get_model("attention92_cifar_paper")
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(str(path))
    return path


# ----------------------------------------------------------------------------- unbounded
@pytest.mark.parametrize("counts", [["-n", "1000000000"], ["-n", "2", "-s", "1000000000"]])
def test_launch_refuses_a_billion_processes_at_once_without_allocating(counts, tmp_path):
    """Before: 1e9 tasks were planned (~280 MB/s) before anything was said. In a process of
    its own, with 1 GiB of address space, so that a regression fails instead of swapping."""
    limit = 1 << 30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "resattn", "launch"] + counts +
                          ["--", "echo", "hi"], capture_output=True, text=True, timeout=120,
                          preexec_fn=cap, cwd=str(tmp_path))
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    _one_line(proc.stderr, "launch", "1000000000", "at most %d" % launch.process_limit()[0])
    assert not proc.stdout and not os.listdir(str(tmp_path))
    assert elapsed < 15, elapsed  # an interpreter start and the parser: well under a second


def test_plan_checks_the_size_before_building_anything():
    tracemalloc.start()
    try:
        for workers, servers in ((launch.MAX_PROCESSES, 1), (1, launch.MAX_PROCESSES)):
            with pytest.raises(ValueError, match="one launch starts at most"):
                launch.plan(["echo"], workers, servers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, peak  # nothing per process was built
    most = launch.process_limit()[0]
    assert most <= launch.MAX_PROCESSES
    assert len(launch.plan(["echo"], most - 2, 1)) == most  # as many as may run: planned


def test_launch_cap_follows_the_open_file_and_process_limits(monkeypatch, capsys):
    real = resource.getrlimit
    limits = {resource.RLIMIT_NOFILE: (100, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits.get(which, real(which)))
    assert launch.process_limit()[0] == 100 - 32
    code, out, err = _run(["launch", "-n", "70", "--", "echo"], capsys)
    assert code == 2
    _one_line(err, "launch", "-n/--num-workers 70", "at most 68", "ulimit -n 100")
    limits[resource.RLIMIT_NPROC] = (50, 50)
    limits[resource.RLIMIT_NOFILE] = (4096, 4096)
    most, why = launch.process_limit()
    assert most == 25 and "ulimit -u 50" in why  # a process and a thread here each


class _Reached(BaseException):
    """Raised where a refused command line would have started the expensive part."""


@pytest.fixture
def no_loader(monkeypatch):
    """Building a data loader (which forks --num-workers processes) is a failure here, not a
    fork bomb, should the bound regress."""
    def refuse(*args, **kwargs):
        raise _Reached("a data loader was built")
    monkeypatch.setattr(resattn.data, "get_data_loader", refuse)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_loader_workers_are_bounded(command, capsys, tmp_path, run_dir, no_loader):
    cap = max_loader_workers()
    argv = (TRAIN + ["--out", str(tmp_path / "o")] if command == "train" else
            ["eval", "--params", str(run_dir / "best.params"), "--dataset", "digits"])
    code, out, err = _run(argv + ["--num-workers", "100000"], capsys)
    assert code == 2
    _one_line(err, command, "--num-workers 100000", "the %d data-loading processes" % cap,
              "per CPU")
    code, out, err = _run(argv + ["--num-workers", "-1"], capsys)
    assert code == 2
    _one_line(err, command, "--num-workers must be an integer >= 0")
    assert not os.listdir(str(tmp_path))


# ----------------------------------------------------------------------------- unwritable outputs
def _command(kind, out, run_dir, foreign_weights):
    params = str(run_dir / "best.params")
    return {
        "export": ["export", "--params", params, "--format", "symbol", "-o", out],
        "quantize": ["quantize", "--params", params, "--calib-dataset", "digits",
                     "--calib-batches", "1", "--batch-size", "8", "-o", out],
        "convert": ["convert", "--model", "attention92_cifar_paper", "--source", "resattn",
                    str(foreign_weights), "-o", out],
        "masks": ["masks", "--params", params, "--dataset", "digits", "--index", "0",
                  "-o", out],
        "train": TRAIN + ["--out", out],
    }[kind]


@pytest.fixture
def small_calibration(monkeypatch):
    """Calibration loaders of 48 images: quantize takes a second, not a minute."""
    real = resattn.data.get_data_loader

    def loader(*args, **kwargs):
        kwargs.setdefault("subset", 48)
        return real(*args, **kwargs)
    monkeypatch.setattr(resattn.data, "get_data_loader", loader)


@pytest.mark.parametrize("kind", ["train", "export", "quantize", "convert", "masks"])
def test_output_under_a_regular_file(kind, tmp_path, capsys, run_dir, foreign_weights,
                                     small_calibration):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = str(blocker / "sub" / "out")
    code, _, err = _run(_command(kind, out, run_dir, foreign_weights), capsys)
    assert code == 2
    _one_line(err, kind, "cannot write %s" % out, "%s is a file, not a directory" % blocker)
    assert sorted(os.listdir(str(tmp_path))) == ["file"]


@pytest.mark.parametrize("kind", ["train", "export", "quantize", "convert", "masks"])
def test_output_that_is_a_directory(kind, tmp_path, capsys, run_dir, foreign_weights,
                                    small_calibration):
    out = tmp_path / "out"
    if kind == "train":  # --out is a directory: a regular file is what cannot be one
        out.write_text("x")
        named, why = str(out), "it is a file, not a directory"
    else:
        taken = out.parent / (out.name + "-symbol.json") if kind in ("export", "quantize") \
            else out
        taken.mkdir()
        named, why = str(taken), "it is a directory"
    code, _, err = _run(_command(kind, str(out), run_dir, foreign_weights), capsys)
    assert code == 2
    _one_line(err, kind, "cannot write %s: %s" % (named, why))
    assert not _leftovers(tmp_path)


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """``tmp_path/ro`` behaves as a read-only file system: creating anything in it fails."""
    ro = str(tmp_path / "ro")
    os.mkdir(ro)

    def inside(path):
        path = os.path.abspath(os.fspath(path))
        return path == ro or path.startswith(ro + os.sep)

    def refuse(real):
        def call(*args, **kwargs):
            target = kwargs.get("dir") or (args[0] if args else None)
            if target is not None and inside(target):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(target))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(tempfile, "mkstemp", refuse(tempfile.mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse(tempfile.mkdtemp))
    monkeypatch.setattr(os, "makedirs", refuse(os.makedirs))
    return ro


@pytest.mark.parametrize("kind", ["train", "export", "quantize", "convert", "masks"])
def test_read_only_file_system(kind, read_only, capsys, run_dir, foreign_weights,
                               small_calibration):
    out = os.path.join(read_only, "sub", "out")
    code, _, err = _run(_command(kind, out, run_dir, foreign_weights), capsys)
    assert code == 2
    _one_line(err, kind, "cannot write %s" % out, "Read-only file system")
    assert not os.listdir(read_only)


def _fsync_fails(monkeypatch, when, code=errno.ENOSPC):
    """``os.fsync`` raises ``code`` for the files ``when(path)`` picks (as a full disk does:
    delayed allocation reports ENOSPC at fsync)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name the file being synced")
    real = os.fsync

    def fsync(fd):
        if when(os.readlink("/proc/self/fd/%d" % fd)):
            raise OSError(code, os.strerror(code))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # Epoch 1 writes its checkpoints; epoch 2's `last` fails halfway: its .params is
    # written (as last.params.new), then the disk is full for its .states.
    _fsync_fails(monkeypatch, lambda path: os.path.basename(path).startswith(".last.states.")
                 and os.path.exists(str(out / "last.states.prev")))
    argv = _train_argv(epochs=2) + ["--out", str(out)]
    code, _, err = _run(argv, capsys)
    assert code == 2
    _one_line(err, "train", "cannot write %s" % (out / "last.states"),
              "No space left on device")
    assert not _leftovers(tmp_path)
    net = get_model(MODEL, width_mult=WIDTH)
    meta = train.load_checkpoint(str(out / "last"), net)
    assert meta["epoch"] == 1  # the epoch-1 pair survives and resumes
    assert (out / "best.params").is_file()


def test_disk_full_in_atomic_writes_leaves_no_temporary(tmp_path, monkeypatch):
    _fsync_fails(monkeypatch, lambda path: path.startswith(str(tmp_path)))
    target = tmp_path / "settings.json"
    with pytest.raises(WriteError, match="cannot write %s: No space left on device" % target) \
            as info:
        write_json(target, {"a": 1})
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert not os.listdir(str(tmp_path))


def test_mxnet_write_failure_names_the_file(tmp_path, monkeypatch):
    """MXNet's own writer reports a full disk as 'FileStream.Write incomplete', no errno."""
    arrays = {"x": mx.nd.zeros((64, 1024))}  # 256 KiB: more than one stdio buffer

    def write(tmp):
        mx.nd.save("/dev/full", arrays)  # a real failing write, wherever the temp is
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(WriteError, match="cannot write .*m.params: MXNet could not finish"):
        atomic_write(tmp_path / "m.params", write)
    monkeypatch.setattr("resattn.io._free_bytes", lambda directory: 0)
    with pytest.raises(WriteError, match="cannot write .*m.params: No space left on device"):
        atomic_write(tmp_path / "m.params", write)
    assert not os.listdir(str(tmp_path))


def test_export_into_a_full_tmpfs(tmp_path, capsys, run_dir):
    """A real full disk, where this process may mount a 64 KiB tmpfs (root on Linux)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = str(disk / "net")
        code, _, err = _run(["export", "--params", str(run_dir / "best.params"), "--format",
                             "symbol", "-o", out], capsys)
        assert code == 2
        _one_line(err, "export", "cannot write %s" % out, "No space left on device")
        assert not os.listdir(str(disk))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ----------------------------------------------------------------------------- absurd values
@pytest.mark.parametrize("value", ["inf", "1e9", "30", "nan", "-inf"])
def test_width_mult_is_bounded_before_anything_is_created(value, tmp_path, capsys,
                                                          captured_fit):
    out = tmp_path / "o"
    argv = TRAIN[:3] + ["--width-mult=" + value] + TRAIN[5:] + ["--out", str(out)]
    code, _, err = _run(argv, capsys)
    assert code == 2
    _one_line(err, "train", "width_mult must be a number in (0, %g]" % MAX_WIDTH_MULT)
    assert not out.exists()
    with pytest.raises(ValueError, match="width_mult must be a number in"):
        get_model(MODEL, width_mult=float(value))


@pytest.mark.parametrize("argv", [
    ["export", "--params", "{run}/best.params", "--format", "symbol", "-o", "{tmp}/m"],
    ["masks", "--params", "{run}/best.params", "{tmp}/img.png", "-o", "{tmp}/m.png"],
    ["info", MODEL],
])
@pytest.mark.parametrize("size", ["100000", "32x100000"])
def test_input_size_is_bounded(argv, size, run_dir, tmp_path, capsys):
    argv = [a.format(run=run_dir, tmp=tmp_path) for a in argv] + ["--input-size", size]
    code, _, err = _run(argv, capsys)
    assert code == 2
    line = _one_line(err, argv[0], "input size %s is too large" % size,
                     "at most %d pixels per side" % MAX_INPUT_SIDE)
    if size == "100000":
        assert "112 GiB" in line  # what one 3-channel float32 image of that size takes
    assert not os.listdir(str(tmp_path))


@pytest.mark.parametrize("command", ["export", "eval"])
def test_flipped_byte_in_a_parameter_name_names_the_file(command, run_dir, tmp_path, capsys):
    data = bytearray((run_dir / "best.params").read_bytes())
    data[data.index(b"features") + 2] = 0xFF  # no longer UTF-8
    bad = tmp_path / "flipped.params"
    bad.write_bytes(bytes(data))
    argv = {"export": ["export", "--params", str(bad), "--model", MODEL, "--width-mult",
                       str(WIDTH), "--format", "symbol", "-o", str(tmp_path / "m")],
            "eval": ["eval", "--params", str(bad), "--model", MODEL, "--width-mult",
                     str(WIDTH), "--dataset", "digits", "--subset", "8"]}[command]
    code, _, err = _run(argv, capsys)
    assert code == 2
    _one_line(err, command, "cannot read %s as an MXNet parameter file" % bad,
              "UnicodeDecodeError")


# ----------------------------------------------------------------------------- silently wrong
@pytest.mark.parametrize("kind", ["export", "quantize", "convert", "info"])
@pytest.mark.parametrize("classes", ["0", "-3"])
def test_classes_must_be_positive(kind, classes, run_dir, foreign_weights, tmp_path, capsys):
    argv = ["info", MODEL] if kind == "info" else _command(kind, str(tmp_path / "o"), run_dir,
                                                          foreign_weights)
    code, _, err = _run(argv + ["--classes", classes], capsys)
    assert code == 2
    _one_line(err, kind, "classes must be an integer >= 1, got %s" % classes)
    assert not os.listdir(str(tmp_path))


def test_quantize_reports_the_batches_it_used(run_dir, tmp_path, capsys, small_calibration):
    code, out, err = _run(["quantize", "--params", str(run_dir / "best.params"),
                           "--calib-dataset", "digits", "--calib-batches", "5", "--batch-size",
                           "32", "-o", str(tmp_path / "int8")], capsys)
    assert code == 0, err
    assert "calibration on 2 batches of 32, all the digits training split has (48 images), " \
           "not the 5 asked for" in out, out
    assert "on 5 batches" not in out


@pytest.fixture
def captured_fit(monkeypatch):
    """`resattn train` up to fit: what fit was given, instead of training."""
    calls = []

    def fit(net, train_data, val_data, out_dir, **kwargs):
        calls.append(dict(kwargs, net=net, train_data=train_data, out_dir=out_dir))
        return []
    monkeypatch.setattr(train, "fit", fit)
    return calls


def test_config_model_kwargs_are_applied_and_flags_override(tmp_path, capsys, captured_fit):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model_kwargs": {"width_mult": WIDTH, "attention": "spatial"},
                                  "epochs": 2}))
    base = ["train", "--model", MODEL, "--dataset", "digits", "--subset", "32",
            "--batch-size", "16", "--config", str(config), "--out", str(tmp_path / "o")]
    code, _, err = _run(base, capsys)
    assert code == 0, err
    call = captured_fit[-1]
    assert call["extra_config"]["model_kwargs"] == {"width_mult": WIDTH, "attention": "spatial"}
    assert call["weights_config"]["arch"]["width_mult"] == WIDTH
    assert call["config"].epochs == 2

    def count(net):
        net.initialize()
        net(mx.nd.zeros((1, 3, 32, 32)))
        return sum(p.data().size for p in net.collect_params().values())
    # The network built is the config's thin one (before: the full-width default).
    assert count(call["net"]) == count(get_model(MODEL, width_mult=WIDTH, attention="spatial"))
    code, _, err = _run(base + ["--width-mult", "0.125", "--attention", "mixed"], capsys)
    assert code == 0, err
    assert captured_fit[-1]["extra_config"]["model_kwargs"] == {"width_mult": 0.125,
                                                                "attention": "mixed"}


def test_a_runs_own_config_json_is_accepted(tmp_path, capsys, captured_fit):
    here = os.path.dirname(os.path.abspath(__file__))
    saved = json.load(open(os.path.join(here, "fixtures", "v0_1_0", "run", "config.json")))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(saved))
    code, out, err = _run(["train", "--model", MODEL, "--dataset", "digits", "--config",
                           str(config), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    call = captured_fit[-1]
    cfg = call["config"]
    for key in ("epochs", "batch_size", "seed", "warmup_epochs", "mixup_off_epochs"):
        assert getattr(cfg, key) == saved[key], key
    assert call["extra_config"]["model_kwargs"] == saved["model_kwargs"]
    assert call["extra_config"]["subset"] == saved["subset"]
    assert len(call["train_data"]) == saved["subset"] // saved["batch_size"]
    note = next(line for line in out.splitlines() if line.startswith("--config"))
    assert "ignored: base_lr, classes, ctx, workers, global_batch_size" in note


def test_config_keys_still_checked(tmp_path, capsys, captured_fit, no_loader):
    for text, fragment in [('{"nonsense": 1}', "unknown keys nonsense"),
                           ('{"model_kwargs": [1]}', "model_kwargs must be a JSON object"),
                           ('{"model_kwargs": {"classes": 3}}', "may not set classes"),
                           ('{"model_kwargs": {"width_mult": 1e9}}', "width_mult must be"),
                           ('{"syncbn": "yes"}', "syncbn must be true or false"),
                           ('{"num_workers": 100000}', "--num-workers 100000")]:
        config = tmp_path / "c.json"
        config.write_text(text)
        argv = TRAIN[:3] + TRAIN[5:]  # no --width-mult: the file's applies
        code, _, err = _run(argv + ["--config", str(config), "--out", str(tmp_path / "o")],
                            capsys)
        assert code == 2, text
        _one_line(err, "train", fragment)
    assert not captured_fit and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- README
def test_short_runs_get_a_warm_up_that_fits(tmp_path, capsys, captured_fit):
    # The README's distributed example, in one process (no --kvstore dist_sync here).
    argv = ["train", "--model", MODEL, "--width-mult", "0.0625", "--dataset", "digits",
            "--batch-size", "32", "--epochs", "3", "--out", str(tmp_path / "dist")]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert captured_fit[-1]["config"].warmup_epochs == 2
    assert "warm-up: 2 epochs, not the recipe's 5, which do not fit in --epochs 3" in out
    code, out, err = _run(argv[:-2] + ["--epochs", "8", "--out", str(tmp_path / "long")],
                          capsys)
    assert code == 0 and captured_fit[-1]["config"].warmup_epochs == 5 and "warm-up" not in out
    code, _, err = _run(argv + ["--warmup-epochs", "5"], capsys)  # explicit: still an error
    assert code == 2
    _one_line(err, "train", "warmup_epochs must be in [0, epochs=3)")
