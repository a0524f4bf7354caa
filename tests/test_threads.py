"""resattn computes on every physical core unless told otherwise (resattn._threads)."""
import os

import pytest

from resattn import _threads


def _fake_topology(tmp_path, cores):
    """A sysfs with CPU i on (package, core) = cores[i]."""
    for cpu, (package, core) in enumerate(cores):
        topo = tmp_path / ("cpu%d" % cpu) / "topology"
        topo.mkdir(parents=True)
        (topo / "core_id").write_text("%d\n" % core)
        (topo / "physical_package_id").write_text("%d\n" % package)
    return str(tmp_path)


@pytest.mark.parametrize("cores, cpus, expected", [
    ([(0, 0), (0, 1), (0, 2), (0, 3)], [0, 1, 2, 3], 4),           # no hyper-threads
    ([(0, 0), (0, 0), (0, 1), (0, 1)], [0, 1, 2, 3], 2),           # 2 threads per core
    ([(0, 0), (0, 0), (0, 1), (0, 1)], [0, 1], 1),                 # affinity: one core's threads
    ([(0, 0), (1, 0), (0, 1), (1, 1)], [0, 1, 2, 3], 4),           # two sockets, same core ids
])
def test_physical_cores_from_affinity_and_topology(tmp_path, cores, cpus, expected):
    assert _threads.physical_cores(cpus, sysfs=_fake_topology(tmp_path, cores)) == expected


def test_no_topology_counts_every_cpu(tmp_path):
    assert _threads.physical_cores([0, 1, 2], sysfs=str(tmp_path)) == 3


def test_configure_sets_respects_and_steps_aside():
    env = {}
    n, why = _threads.configure(env, modules={})
    assert env["OMP_NUM_THREADS"] == str(n) == str(_threads.physical_cores())
    assert "physical core" in why
    env = {"OMP_NUM_THREADS": "3"}
    assert _threads.configure(env, modules={}) == (3, "OMP_NUM_THREADS=3, set in the "
                                                      "environment")
    assert env == {"OMP_NUM_THREADS": "3"}
    env = {"RESATTN_AUTO_THREADS": "0"}
    assert _threads.configure(env, modules={})[0] is None and "OMP_NUM_THREADS" not in env
    env = {}
    n, why = _threads.configure(env, modules={"mxnet": object()})
    assert n is None and "imported before resattn" in why and env == {}


def test_import_resattn_sets_the_threads_before_mxnet_and_mxnet_uses_them():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = ("import os, resattn, resattn._threads as t; import mxnet; "
            "print(os.environ['OMP_NUM_THREADS'], t.CHOICE[0], "
            "mxnet.base._LIB and __import__('ctypes').CDLL('libgomp.so.1').omp_get_max_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(_threads.physical_cores())] * 3
    # MXNet first: reached after the fact (tests/test_threads_order.py measures where).
    out = subprocess.run([sys.executable, "-c", "import mxnet, resattn._threads as t; "
                          "print(t.CHOICE[1])"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "set in MXNet after it was imported" in out.stdout
    out = subprocess.run([sys.executable, "-c", "import os, resattn; "
                          "print(os.environ.get('OMP_NUM_THREADS'))"],
                         env=dict(env, RESATTN_AUTO_THREADS="0"), capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "None"


def test_train_says_what_it_chose(tmp_path):
    import json
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "resattn", "train", "--model",
                           "attention56_cifar", "--width-mult", "0.0625", "--dataset", "digits",
                           "--subset", "64", "--batch-size", "32", "--epochs", "2",
                           "--no-progress", "--out", out], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cores = _threads.physical_cores()
    assert "threads: %d physical core" % cores in proc.stdout
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["threads"]["omp_num_threads"] == str(cores)
    with open(os.path.join(out, "train.log")) as f:
        header = f.readline()
    assert header.startswith("# resattn ") and "threads: %d physical core" % cores in header
    assert _threads.cpu_model() in header


def test_cpu_model_and_instruction_sets_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B45\n"
                    "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 sse\n")
    assert _threads.cpu_model(str(info)) == "AMD EPYC 9B45"
    assert _threads.cpu_isa(str(info)) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert _threads.cpu_isa(str(tmp_path / "missing")) == []
    line = _threads.describe_cpu()
    assert _threads.cpu_model() in line and "physical core" in line


def test_local_launch_shares_the_cores_among_workers(monkeypatch):
    from resattn.training import launch
    monkeypatch.setattr(_threads, "CHOICE", (4, "4 physical cores of the 4 CPUs"))
    monkeypatch.setattr(_threads, "physical_cores", lambda *a, **k: 4)
    tasks = launch.plan(["w"], 2, 1)
    assert [t.env["OMP_NUM_THREADS"] for t in tasks] == ["1", "1", "2", "2"]
    monkeypatch.setattr(_threads, "CHOICE", (3, "OMP_NUM_THREADS=3, set in the environment"))
    assert all("OMP_NUM_THREADS" not in t.env for t in launch.plan(["w"], 2, 1))
