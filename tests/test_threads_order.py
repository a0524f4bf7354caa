"""Every physical core whatever the import order: MXNet imported before resattn is reached
after the fact (resattn._threads.reach_running_mxnet), in its engine's CPU worker where
oneDNN computes; where it cannot be, one warning at the first forward pass says the fix."""
import os
import sys

from conftest import run_python

PROBE = """
import ctypes, json, sys
{first}
import resattn
import mxnet as mx
from resattn import _threads
gomp = ctypes.CDLL("libgomp.so.1")
seen = []
cb = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
    lambda r, p: seen.append(gomp.omp_get_max_threads()))
token = mx.nd.zeros((1,))
mx.base._LIB.MXEnginePushSyncND(cb, None, None, ctypes.byref((ctypes.c_int * 2)(1, 0)), None,
                                0, (ctypes.c_void_p * 1)(token.handle.value), 1, None, 0, None)
token.wait_to_read()
get = mx.base._LIB._ZN5mxnet6engine6OpenMP3GetEv
get.restype = ctypes.c_void_p
bound = (ctypes.c_int * 4).from_address(get())[1]
print(json.dumps({{"worker": seen[0], "bound": bound, "choice": list(_threads.CHOICE),
                  "cores": _threads.physical_cores()}}))
"""


def _probe(first, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                              "RESATTN_AUTO_THREADS")}
    base.update(env)
    import subprocess
    proc = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], env=base,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_mxnet_imported_first_computes_on_every_core():
    for first in ("import mxnet", "import mxnet as mx; mx.nd.ones((2,)).asnumpy()", ""):
        got = _probe(first)
        assert got["worker"] == got["bound"] == got["cores"], (first, got)
        assert got["choice"][0] == got["cores"]


def test_omp_num_threads_stays_the_users_override():
    got = _probe("import mxnet", OMP_NUM_THREADS="1")
    assert got["worker"] == 1 and got["choice"] == [1, "OMP_NUM_THREADS=1, set in the "
                                                       "environment"]
    got = _probe("import mxnet", RESATTN_AUTO_THREADS="0")
    assert got["choice"][0] is None


def test_unreachable_mxnet_warns_once_at_the_first_forward():
    code = ("import warnings, mxnet as mx\n"
            "import resattn._threads as t\n"
            "t._UNREACHED.append('MXNet was imported before resattn and could not be reached "
            "(test); import resattn first or set OMP_NUM_THREADS=2')\n"
            "net = resattn.get_model('attention56_cifar', width_mult=0.0625); net.initialize()\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    net(mx.nd.zeros((1, 3, 32, 32))); net(mx.nd.zeros((1, 3, 32, 32)))\n"
            "print(sum('OMP_NUM_THREADS=2' in str(x.message) for x in w))\n")
    proc = run_python("-c", "import resattn\n" + code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "1"
