"""resattn computes on every physical core unless told otherwise (resattn._threads)."""
import os

import pytest

from conftest import run_python
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


def test_local_launch_shares_the_cores_among_workers(monkeypatch):
    from resattn.training import launch
    monkeypatch.setattr(_threads, "CHOICE", (4, "4 physical cores of the 4 CPUs"))
    monkeypatch.setattr(_threads, "physical_cores", lambda *a, **k: 4)
    tasks = launch.plan(["w"], 2, 1)
    assert [t.env["OMP_NUM_THREADS"] for t in tasks] == ["1", "1", "2", "2"]
    monkeypatch.setattr(_threads, "CHOICE", (3, "OMP_NUM_THREADS=3, set in the environment"))
    assert all("OMP_NUM_THREADS" not in t.env for t in launch.plan(["w"], 2, 1))
