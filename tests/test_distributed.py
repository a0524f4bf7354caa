"""Distributed training: `resattn launch`, the dist kvstore path of `fit`, `--syncbn`.

The jobs run on 127.0.0.1 only (1 scheduler, 1 server, 2 workers), with hard timeouts, and
each test checks that no process it started, nor anything those started, survives.
"""
import glob
import importlib.util
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import mxnet as mx
import numpy as np
import pytest

from resattn import training as train
from resattn.training import distributed, launch
from resattn.cli import main

PY = sys.executable
CLI = [PY, "-m", "resattn.cli"]
TINY = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset", "digits",
        "--subset", "128", "--batch-size", "32", "--warmup-epochs", "0", "--mixup-alpha", "0",
        "--no-progress", "--kvstore", "dist_sync"]
PID_LINE = re.compile(r"^\[launch\] (scheduler|server \d+|worker \d+): pid (\d+)")


# ----------------------------------------------------------------------------- helpers
def _processes():
    """{pid: (state, process group, session)} of every process, from /proc."""
    table = {}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        table[int(path.split("/")[2])] = (fields[0], int(fields[2]), int(fields[3]))
    return table


def _survivors(pids, wait=5.0):
    """Live processes that are one of ``pids`` or in their groups or sessions."""
    deadline = time.monotonic() + wait
    while True:
        alive = [pid for pid, (state, group, session) in _processes().items()
                 if state != "Z" and (pid in pids or group in pids or session in pids)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _kill(pids):
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _default_sigint():
    """In the child before exec: SIGINT as a terminal gives it. A shell starts background jobs
    with SIGINT ignored, Python then installs no KeyboardInterrupt handler, and the Ctrl-C
    tests would test nothing but that (``nohup make test &``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Launcher:
    """`resattn launch ...` in a subprocess, its output collected line by line."""

    def __init__(self, args, cwd=None, env=None):
        self.lines, self.started = [], time.monotonic()
        self.proc = subprocess.Popen(CLI + ["launch"] + args, cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=_default_sigint)
        self.errors = []
        self.readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                        for stream, into in ((self.proc.stdout, self.lines),
                                             (self.proc.stderr, self.errors))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def stderr(self):
        return "\n".join(self.errors)

    @property
    def pids(self):
        found = {}
        for line in list(self.lines):
            m = PID_LINE.match(line)
            if m:
                found[m.group(1)] = int(m.group(2))
        return found

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("gave up waiting for %s; output:\n%s" % (what, self.output[-3000:]))
            time.sleep(0.2)

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail("resattn launch still running after %d s; output:\n%s"
                        % (timeout, self.output[-3000:]))
        for reader in self.readers:
            reader.join(timeout=10)
        return self.proc.returncode

    def close(self):
        _kill([self.proc.pid] + list(self.pids.values()))
        self.proc.wait(timeout=30)

    @property
    def output(self):
        return "\n".join(self.lines) + "\n" + self.stderr


def _launch_job(args, timeout=150, **kwargs):
    job = Launcher(args, **kwargs)
    code = job.wait(timeout)
    return job, code


def _params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# A worker that trains `resattn train` as usual, then saves its own parameters under its
# kvstore rank and uses an output directory of its own, so that the test can tell which
# worker wrote what.
WORKER_HOOK = r'''
import os
import sys

import resattn.training as train

base = sys.argv[1]
real_fit = train.fit


def fit(net, *args, **kwargs):
    history = real_fit(net, *args, **kwargs)
    net.save_parameters(os.path.join(base, "rank%d.params" % kwargs["rank"]))
    return history


train.fit = fit
from resattn.cli import main  # noqa: E402

out = os.path.join(base, "out-%d" % os.getpid())
sys.exit(main(sys.argv[2:] + ["--out", out]))
'''


# ----------------------------------------------------------------------------- dist_sync job
@pytest.fixture(scope="module")
def sync_job(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("sync"))
    hook = os.path.join(base, "hook.py")
    with open(hook, "w") as f:
        f.write(WORKER_HOOK)
    tic = time.monotonic()
    job, code = _launch_job(["-n", "2", "-s", "1", "--timeout", "140", "--",
                             PY, hook, base] + TINY + ["--epochs", "3"])
    job.seconds = time.monotonic() - tic
    job.base = base
    print("dist_sync job: %.1f s" % job.seconds)
    assert code == 0, job.output[-4000:]
    return job


def test_sync_job_loss_falls_and_all_workers_agree(sync_job):
    outs = [d for d in glob.glob(os.path.join(sync_job.base, "out-*"))]
    assert len(outs) == 1, "only rank 0 writes (and creates its --out): %s" % outs
    rows = _metrics(outs[0])
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(r["workers"] == 2 for r in rows)
    losses = [r["train_loss"] for r in rows]
    print("train_loss per epoch:", losses)
    assert losses[-1] < losses[0] - 0.05, losses
    a = _params(os.path.join(sync_job.base, "rank0.params"))
    b = _params(os.path.join(sync_job.base, "rank1.params"))
    assert a.keys() == b.keys() and any(k.endswith("running_mean") for k in a)
    for key in a:  # weights and BatchNorm statistics, bit for bit
        assert np.array_equal(a[key], b[key]), key
    last = _params(os.path.join(outs[0], "last.params"))
    assert all(np.array_equal(a[k], last[k]) for k in a)


def test_sync_job_rank0_writes_everything_and_config_says_global_batch(sync_job):
    out = glob.glob(os.path.join(sync_job.base, "out-*"))[0]
    assert {"metrics.jsonl", "last.params", "last.states", "best.params", "best.states",
            "config.json", "curves.png", "train.log"} <= set(os.listdir(out))
    rank0_pid = int(out.rsplit("-", 1)[1])
    assert rank0_pid in sync_job.pids.values()
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert (cfg["kvstore"], cfg["workers"], cfg["batch_size"], cfg["global_batch_size"]) == \
        ("dist_sync", 2, 32, 64)
    assert cfg["base_lr"] == pytest.approx(0.1)  # 0.1 x 64 / 64: the global batch
    shards = [l for l in sync_job.lines if "worker rank" in l]
    assert len(shards) == 2 and all("2 batches of 32" in l for l in shards)


def test_sync_job_leaves_nothing_running(sync_job):
    pids = set(sync_job.pids.values())
    assert len(pids) == 4
    assert _survivors(pids) == []
    assert "[launch] done: 2 worker(s)" in sync_job.output


# ----------------------------------------------------------------------------- exact steps
STEP_SCRIPT = r'''
import sys

import mxnet as mx
import numpy as np
from mxnet import gluon

from resattn.training import create_kvstore, fit


def data():
    rng = np.random.RandomState(0)
    return (rng.normal(size=(64, 3, 4, 4)).astype("float32"),
            rng.randint(0, 4, size=64).astype("float32"))


def network():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(16, activation="relu", in_units=48), gluon.nn.Dense(4, in_units=16))
    return net


SETTINGS = dict(classes=4, epochs=2, warmup_epochs=0, mixup_alpha=0, progress=False)

if __name__ == "__main__":
    out = sys.argv[1]
    kv = create_kvstore("dist_sync")
    x, y = data()
    part = slice(kv.rank, None, kv.num_workers)
    shard = gluon.data.DataLoader(gluon.data.ArrayDataset(x[part], y[part]), batch_size=8)
    net = network()
    mx.random.seed(0)
    fit(net, shard, shard, out, kvstore=kv, batch_size=8, **SETTINGS)
    net.save_parameters("%s/rank%d.params" % (out, kv.rank))
'''


def test_dist_sync_step_equals_one_process_on_the_global_batch(tmp_path):
    """2 workers x batch 8 take the same steps as one process with batch 16 (no BatchNorm):
    gradients are summed and divided by the global batch, lr=None scales with the global
    batch, and the reported train and validation numbers are those of all the data."""
    script = tmp_path / "steps.py"
    script.write_text(STEP_SCRIPT)
    out = str(tmp_path / "dist")
    job, code = _launch_job(["-n", "2", "--timeout", "100", "--", PY, str(script), out],
                            timeout=120)
    assert code == 0, job.output[-4000:]
    assert _survivors(set(job.pids.values())) == []

    spec = importlib.util.spec_from_file_location("steps", str(script))
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    x, y = steps.data()
    whole = mx.gluon.data.DataLoader(mx.gluon.data.ArrayDataset(x, y), batch_size=16)
    net = steps.network()
    mx.random.seed(0)
    reference = train.fit(net, whole, whole, str(tmp_path / "one"), batch_size=16,
                          **steps.SETTINGS)
    one = {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}
    rank0, rank1 = (_params(os.path.join(out, "rank%d.params" % r)) for r in (0, 1))
    assert one.keys() == rank0.keys()
    for key in one:
        np.testing.assert_allclose(rank0[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
        assert np.array_equal(rank0[key], rank1[key]), key
    for dist_row, one_row in zip(_metrics(out), reference):
        for key in ("train_loss", "val_loss", "val_top1", "lr"):
            assert dist_row[key] == pytest.approx(one_row[key], rel=1e-5), key


# ----------------------------------------------------------------------------- failures
def test_killed_worker_stops_the_job_and_is_named(tmp_path):
    out = str(tmp_path / "out")
    job = Launcher(["-n", "2", "-s", "1", "--grace", "5", "--timeout", "140", "--"]
                   + CLI + TINY + ["--epochs", "100", "--out", out])
    try:
        job.wait_for(lambda: os.path.exists(os.path.join(out, "metrics.jsonl"))
                     and len(_metrics(out)) >= 1, 120, "the first epoch")
        victim = job.pids["worker 1"]
        os.kill(victim, signal.SIGKILL)
        tic = time.monotonic()
        code = job.wait(60)
        took = time.monotonic() - tic
    finally:
        if job.proc.poll() is None:
            job.close()
    print("launcher exit %.1f s after kill -9 of worker 1" % took)
    assert code == 1
    last = job.stderr.strip().splitlines()[-1]
    assert last == "resattn launch: error: worker 1 (pid %d) was killed by SIGKILL" % victim
    assert took < 60
    assert _survivors(set(job.pids.values())) == []
    assert len(_metrics(out)) < 100


def test_ctrl_c_stops_every_worker_at_the_same_batch_and_the_job_resumes(tmp_path):
    """The launcher passes Ctrl-C on as SIGINT; the workers agree (through the per-batch sum)
    on where to stop, rank 0 writes a resumable checkpoint, and a second job finishes."""
    out = str(tmp_path / "out")
    train_args = CLI + TINY + ["--epochs", "10", "--out", out]
    job = Launcher(["-n", "2", "--grace", "20", "--timeout", "120", "--"] + train_args)
    try:
        job.wait_for(lambda: os.path.exists(os.path.join(out, "metrics.jsonl"))
                     and len(_metrics(out)) >= 1, 120, "the first epoch")
        job.proc.send_signal(signal.SIGINT)
        code = job.wait(60)
    finally:
        if job.proc.poll() is None:
            job.close()
    assert code == 130, job.output[-3000:]
    stops = sorted(l.split("] ", 1)[1] for l in job.lines
                   if "interrupted: resumable checkpoint" in l)
    assert len(stops) == 2 and stops[0] == stops[1], job.output[-3000:]
    assert _survivors(set(job.pids.values())) == []
    assert len(_metrics(out)) < 10
    again, code = _launch_job(["-n", "2", "--timeout", "120", "--"] + train_args + ["--resume"])
    assert code == 0, again.output[-3000:]
    assert [r["epoch"] for r in _metrics(out)] == list(range(1, 11))
    assert _survivors(set(again.pids.values())) == []


def test_failing_worker_exits_at_once_instead_of_hanging_the_job(tmp_path):
    """A worker whose command fails after joining the job exits with the CLI's status, rather
    than wait in MXNet's exit barrier for workers that are waiting for it."""
    tic = time.monotonic()
    job, code = _launch_job(["-n", "2", "--timeout", "60", "--"] + CLI + TINY
                            + ["--epochs", "1", "--batch-size", "100", "--out",
                               str(tmp_path / "out")], timeout=90)
    assert code == 1
    assert re.fullmatch(r"resattn launch: error: worker [01] \(pid \d+\) exited with status 2",
                        job.stderr.strip().splitlines()[-1]), job.output[-3000:]
    assert "batch_size=100 exceeds the 64 items of this shard" in job.output
    assert time.monotonic() - tic < 45
    assert _survivors(set(job.pids.values())) == []


def _task(role, index, code):
    return launch.Task(role, index, None, [PY, "-c", code], {})


def _pids_in(text):
    return {int(m.group(2)) for m in map(PID_LINE.match, text.splitlines()) if m}


def test_run_ends_every_process_group_when_one_fails():
    """A failing worker stops a worker still busy, a server that ignores SIGTERM (SIGKILL
    after the grace period) and the grandchild that server started."""
    stubborn = ("import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                " subprocess.Popen(['sleep', '60']); print('serving', flush=True); time.sleep(60)")
    tasks = [_task("server", 0, stubborn),
             _task("worker", 0, "import time; time.sleep(60)"),
             _task("worker", 1, "import time; time.sleep(0.5); print('bye'); raise SystemExit(3)")]
    out = io.StringIO()
    tic = time.monotonic()
    status, problem = launch.run(tasks, grace=1.0, out=out)
    assert time.monotonic() - tic < 10
    assert status == 1 and re.fullmatch(r"worker 1 \(pid \d+\) exited with status 3", problem)
    text = out.getvalue()
    assert "[worker 1] bye" in text and "[server 0] serving" in text
    assert _survivors(_pids_in(text)) == []


def test_run_timeout_and_success():
    out = io.StringIO()
    status, problem = launch.run([_task("worker", 0, "import time; time.sleep(60)")],
                                 timeout=1, grace=1, out=out)
    assert (status, problem) == (124, "timed out after 1 s")
    out = io.StringIO()
    tasks = [_task("server", 0, "import time; time.sleep(60)"),
             _task("worker", 0, "print('a')"), _task("worker", 1, "print('b')")]
    assert launch.run(tasks, grace=0.5, out=out) == (0, None)
    assert "[worker 0] a" in out.getvalue() and "[worker 1] b" in out.getvalue()
    assert _survivors(_pids_in(out.getvalue())) == []


def test_ctrl_c_asks_workers_to_stop_then_ends_everything(tmp_path):
    worker = ("import signal, sys, time\n"
              "def stop(*_):\n    print('got SIGINT', flush=True)\n    sys.exit(130)\n"
              "signal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    job = Launcher(["-n", "2", "--grace", "5", "--timeout", "60", "--", PY, "-c", worker])
    try:
        job.wait_for(lambda: sum(l.endswith("] ready") for l in job.lines) == 2, 60, "ready")
        job.proc.send_signal(signal.SIGINT)
        code = job.wait(30)
    finally:
        if job.proc.poll() is None:
            job.close()
    assert code == 130
    assert "[worker 0] got SIGINT" in job.lines and "[worker 1] got SIGINT" in job.lines
    assert job.stderr.strip().splitlines()[-1] == "resattn launch: error: interrupted"
    assert _survivors(set(job.pids.values())) == []


# ----------------------------------------------------------------------------- dist_async
def test_dist_async_job_trains_without_resumable_states(tmp_path):
    out = str(tmp_path / "out")
    job, code = _launch_job(["-n", "2", "--timeout", "120", "--"] + CLI + TINY[:-1]
                            + ["dist_async", "--epochs", "2", "--out", out], timeout=140)
    assert code == 0, job.output[-4000:]
    assert _survivors(set(job.pids.values())) == []
    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in rows)
    net = mx.gluon.nn.Dense(2, in_units=2)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd")
    with pytest.raises(ValueError, match="holds no optimizer state"):
        train.load_checkpoint(os.path.join(out, "last"), net, trainer)


def test_async_optimizer_keeps_no_wd_on_the_servers():
    """MXNet pickles the optimizer to the servers without Parameters (so without their
    wd_mult); the one fit builds for dist_async carries them by name."""
    from resattn import get_model
    net = get_model("attention56_cifar", width_mult=0.0625)
    net.initialize()
    for name, p in net.collect_params().items():
        if name.endswith(("gamma", "beta", "bias")):
            p.wd_mult = 0.0
    cfg = train.TrainConfig(epochs=2, warmup_epochs=0)
    optimizer, _ = distributed.make_optimizer(cfg, net, {"wd": 1e-4, "momentum": 0.9}, True)
    on_server = pickle.loads(pickle.dumps(optimizer))
    names = list(net.collect_params().keys())
    wds = on_server._get_wds(list(range(len(names))))
    for name, wd in zip(names, wds):
        assert wd == (0.0 if name.endswith(("gamma", "beta", "bias")) else 1e-4), name


# ----------------------------------------------------------------------------- ssh
FAKE_SSH = r'''#!/bin/sh
# Stands in for ssh: drops the options and runs the remote command on a "host" at 127.0.0.1.
while [ $# -gt 0 ]; do
  case "$1" in -o) shift 2 ;; -*) shift ;; *) break ;; esac
done
echo "fake ssh to $1"
exec env DMLC_NODE_HOST=127.0.0.1 /bin/sh -c "$2"
'''

SUM_SCRIPT = r'''
import os
import mxnet as mx
kv = mx.kv.create("dist_sync")
kv.init(3, mx.nd.zeros(2))
kv.push(3, mx.nd.ones(2) * (kv.rank + 1))
total = mx.nd.zeros(2)
kv.pull(3, out=total)
print("sum %s in %s" % (total.asnumpy().tolist(), os.path.basename(os.getcwd())))
'''


def test_ssh_launcher_runs_the_job_through_ssh(tmp_path):
    bin_dir, work = tmp_path / "bin", tmp_path / "work dir"
    bin_dir.mkdir()
    work.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    (work / "sum.py").write_text(SUM_SCRIPT)
    (work / "hosts").write_text("# two 'machines'\n127.0.0.1\n\n127.0.0.1  # again\n")
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]))
    job, code = _launch_job(["-n", "2", "--launcher", "ssh", "-H", "hosts", "--port",
                             str(launch.free_port()), "--timeout", "60", "--", PY, "sum.py"],
                            timeout=90, cwd=str(work), env=env)
    assert code == 0, job.output[-4000:]
    for name in ("scheduler", "server 0", "worker 0", "worker 1"):
        assert "[%s] fake ssh to 127.0.0.1" % name in job.lines
    assert sorted(l for l in job.lines if "] sum " in l) == [
        "[worker 0] sum [3.0, 3.0] in work dir", "[worker 1] sum [3.0, 3.0] in work dir"]
    assert _survivors(set(job.pids.values())) == []


def test_ssh_command_quotes_for_the_remote_shell():
    argv = launch.ssh_command("bob@gpu1", "/data/my runs", {"B": "2", "A": "x y"},
                              ["resattn", "train", "--out", "it's"])
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-tt", "bob@gpu1"]
    assert argv[5] == ("cd '/data/my runs' && env A='x y' B=2 resattn train --out "
                       "'it'\"'\"'s'")
    import shlex
    assert shlex.split(argv[5]) == ["cd", "/data/my runs", "&&", "env", "A=x y", "B=2",
                                    "resattn", "train", "--out", "it's"]


def test_plan_ssh_round_robin_and_environment():
    tasks = launch.plan(["resattn", "train"], 3, 2, "ssh", ["alice@n1", "n2"], cwd="/w",
                        python="/py", env={"DMLC_INTERFACE": "eth1"})
    assert [(t.name, t.host) for t in tasks] == [
        ("scheduler", "alice@n1"), ("server 0", "alice@n1"), ("server 1", "n2"),
        ("worker 0", "alice@n1"), ("worker 1", "n2"), ("worker 2", "alice@n1")]
    remote = tasks[4].argv[-1]
    for var in ("DMLC_ROLE=worker", "DMLC_PS_ROOT_URI=n1", "DMLC_PS_ROOT_PORT=9091",
                "DMLC_NUM_SERVER=2", "DMLC_NUM_WORKER=3", "DMLC_INTERFACE=eth1"):
        assert var in remote
    assert remote.startswith("cd /w && env ") and remote.endswith(" resattn train")
    assert "/py -c " in tasks[0].argv[-1] and "DMLC_ROLE=scheduler" in tasks[0].argv[-1]


def test_plan_local_is_loopback_with_a_free_port():
    tasks = launch.plan(["w"], 2, 1)
    assert [t.name for t in tasks] == ["scheduler", "server 0", "worker 0", "worker 1"]
    envs = [t.env for t in tasks]
    assert {e["DMLC_PS_ROOT_URI"] for e in envs} == {"127.0.0.1"}
    assert {e["DMLC_NODE_HOST"] for e in envs} == {"127.0.0.1"}
    assert len({e["DMLC_PS_ROOT_PORT"] for e in envs}) == 1
    assert [e["DMLC_ROLE"] for e in envs] == ["scheduler", "server", "worker", "worker"]
    assert tasks[0].argv == [PY, "-c", launch.SERVE] and tasks[2].argv == ["w"]


def test_parse_hostfile(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("# cluster\nnode1\n\n  bob@node2   # gpu box\nnode3\n")
    assert launch.parse_hostfile(str(path)) == ["node1", "bob@node2", "node3"]
    path.write_text("node1 slots=4\n")
    with pytest.raises(ValueError, match="line 1: one host per line, got 'node1 slots=4'"):
        launch.parse_hostfile(str(path))
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="lists no host"):
        launch.parse_hostfile(str(path))
    with pytest.raises(ValueError, match="No such file"):
        launch.parse_hostfile(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- arguments
def _run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv,fragment", [
    (["launch", "-n", "0", "--", "echo"], "-n/--num-workers must be an integer >= 1, got 0"),
    (["launch", "-n", "2", "-s", "0", "--", "echo"], "-s/--num-servers must be an integer >= 1"),
    (["launch", "-n", "2"], "no command to run: put it after --"),
    (["launch", "-n", "2", "--"], "no command to run: put it after --"),
    (["launch", "-n", "x", "--", "echo"], "invalid int value: 'x'"),
    (["launch", "-n", "1", "--launcher", "rsh", "--", "echo"], "invalid choice: 'rsh'"),
    (["launch", "-n", "1", "--launcher", "ssh", "--", "echo"], "needs a hostfile"),
    (["launch", "-n", "1", "-H", "hosts", "--", "echo"], "only used with --launcher ssh"),
    (["launch", "-n", "1", "--timeout", "0", "--", "echo"], "--timeout must be > 0 seconds"),
    (["launch", "-n", "1", "--port", "70000", "--", "echo"], "port must be in [1, 65535]"),
    (["launch", "-n", "1", "-e", "NOVALUE", "--", "echo"], "NAME=VALUE, got 'NOVALUE'"),
    (["launch", "-n", "1", "-e", "DMLC_NUM_WORKER=3", "--", "echo"],
     "DMLC_NUM_WORKER: set by the launcher itself"),
    (["launch", "-n", "1", "-e", "1X=3", "--", "echo"], "names must be letters, digits and _"),
    (["train", "--model", "attention56_cifar", "--dataset", "digits", "--out", "x",
      "--kvstore", "nccl"], "argument --kvstore: invalid choice: 'nccl'"),
    (["train", "--model", "attention56_cifar", "--dataset", "digits", "--out", "x",
      "--kvstore", "dist_sync"], "needs the environment of a distributed job"),
])
def test_bad_arguments_exit_2_with_one_line(argv, fragment, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in ("DMLC_ROLE", "DMLC_PS_ROOT_URI"):
        monkeypatch.delenv(var, raising=False)
    assert _run_cli(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not os.listdir(str(tmp_path))


def test_kvstore_from_config_file_is_checked(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text('{"kvstore": "nccl"}')
    argv = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset",
            "digits", "--subset", "32", "--batch-size", "32", "--epochs", "1",
            "--warmup-epochs", "0", "--config", str(config), "--out", str(tmp_path / "o")]
    assert _run_cli(argv) == 2
    assert "kvstore must be one of local, device, dist_sync, dist_device_sync, dist_async, " \
           "got 'nccl'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- syncbn
def test_syncbn_builds_and_trains_on_one_cpu(tmp_path, monkeypatch):
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    from mxnet.gluon.nn import BatchNorm
    seen = {}
    real_fit = train.fit

    def fit(net, *args, **kwargs):
        seen["net"] = net
        return real_fit(net, *args, **kwargs)

    monkeypatch.setattr(train, "fit", fit)
    out = str(tmp_path)
    argv = ["train", "--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset",
            "digits", "--subset", "32", "--batch-size", "32", "--epochs", "1",
            "--warmup-epochs", "0", "--mixup-alpha", "0", "--no-progress", "--syncbn",
            "--out", out, "--overwrite"]
    assert _run_cli(argv) == 0

    def blocks(block):
        yield block
        for child in block._children.values():
            yield from blocks(child)

    norms = [b for b in blocks(seen["net"]) if isinstance(b, BatchNorm)]
    assert norms and all(isinstance(b, SyncBatchNorm) for b in norms)
    assert all(b._kwargs.get("ndev") == 1 for b in norms)
    row = _metrics(out)[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["syncbn"] is True


def test_parameter_check_names_the_parameter_that_differs():
    net = mx.gluon.nn.Dense(3, in_units=2)
    net.initialize()
    workers = distributed.Workers(None)
    workers.sync, workers.num_workers = True, 2
    workers.sum = lambda name, values: np.asarray(values) * 2
    workers.check_identical(net, 1)
    workers.sum = lambda name, values: np.asarray(values) * 2 + np.array([0.5, 0.0])
    with pytest.raises(RuntimeError, match=r"after epoch 1, parameter dense\d+_weight of worker "
                                           r"rank 0 differs from the other workers'"):
        workers.check_identical(net, 1)
