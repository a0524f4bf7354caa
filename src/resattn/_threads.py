"""How many threads MXNet computes with: every physical core this process may run on.

MXNet 1.9 starts its OpenMP (oneDNN) thread pool once, when it is imported, on
half the logical CPUs unless ``OMP_NUM_THREADS`` is set. On machines without
hyper-threads (most cloud VMs and containers) that leaves half the cores idle.
So ``import resattn``, before MXNet is imported, sets ``OMP_NUM_THREADS`` to
the number of physical cores among the CPUs the process may run on (its CPU
affinity, e.g. ``taskset`` or a container's cpuset), counted from the kernel's
topology (``/sys/devices/system/cpu/cpuN/topology``: one per distinct
``(physical_package_id, core_id)``), not guessed from the logical count.

To choose otherwise:

- set ``OMP_NUM_THREADS`` yourself: it is left as it is;
- set ``RESATTN_AUTO_THREADS=0``: resattn changes nothing (MXNet's own default);
- import MXNet before resattn: MXNet has started by then, with half the
  logical CPUs. resattn then reaches the running MXNet (:func:`reach_running_mxnet`):
  it raises the thread bound of MXNet's OpenMP layer (``engine::OpenMP``, read
  by every worker thread it starts and by its own kernels), sets OpenMP's
  thread count in the calling thread, and runs one operation on MXNet's CPU
  worker that sets it there (where oneDNN computes). ``MXSetNumOMPThreads``
  alone reaches only the calling thread, which computes nothing; this was
  measured (docs/performance.md, "Import order"). Where that cannot be done
  (another OpenMP runtime, a changed MXNet), a warning says so once, at the
  first forward pass of a resattn network, with the line that fixes it.

:data:`CHOICE` records what was decided and why; ``resattn train`` prints it
and writes it into ``config.json``. This module does not import MXNet.
"""
import os
import sys

__all__ = ["usable_cpus", "physical_cores", "configure", "reach_running_mxnet", "cpu_model",
           "cpu_isa", "describe_cpu", "warn_once_if_unreached", "CHOICE"]

#: ``(threads or None, reason)``: what :func:`configure` decided (None: left to MXNet).
CHOICE = (None, "not configured")

_SYSFS = "/sys/devices/system/cpu"


def usable_cpus():
    """The logical CPUs this process may run on (its affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus=None, sysfs=_SYSFS):
    """Distinct physical cores among ``cpus`` (default: :func:`usable_cpus`).

    Hyper-threads of one core count once. Where the kernel gives no topology,
    every CPU counts as a core.
    """
    cpus = usable_cpus() if cpus is None else list(cpus)
    cores = set()
    for cpu in cpus:
        topo = os.path.join(sysfs, "cpu%d" % cpu, "topology")
        try:
            with open(os.path.join(topo, "core_id")) as f:
                core = f.read().strip()
            with open(os.path.join(topo, "physical_package_id")) as f:
                package = f.read().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


#: The instruction sets that decide which oneDNN kernels run, as ``/proc/cpuinfo`` names them.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo(path="/proc/cpuinfo"):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_model(path="/proc/cpuinfo"):
    """The CPU's model name (``'AMD EPYC 9B45'``), or the platform's word where unknown."""
    for line in _cpuinfo(path).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_isa(path="/proc/cpuinfo"):
    """Which of :data:`ISA_FLAGS` the CPU has, in that order (AMX, AVX-512 BF16/VNNI, ...)."""
    flags = set()
    for line in _cpuinfo(path).splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in ISA_FLAGS if f in flags]


def describe_cpu():
    """One line: model, instruction sets, physical cores and usable logical CPUs."""
    cpus = usable_cpus()
    cores = physical_cores(cpus)
    return "%s; %s; %d physical core%s, %d logical CPU%s usable" % (
        cpu_model(), " ".join(cpu_isa()) or "no AVX2/AVX-512/AMX", cores,
        "" if cores == 1 else "s", len(cpus), "" if len(cpus) == 1 else "s")


def configure(environ=None, modules=None):
    """Set ``OMP_NUM_THREADS`` to the physical core count, unless told otherwise.

    Parameters
    ----------
    environ : mapping, default ``os.environ``
    modules : mapping, default ``sys.modules``
        Used to tell whether MXNet has already started.

    Returns
    -------
    (int or None, str)
        The thread count (None where MXNet decides) and why; also kept in :data:`CHOICE`.
    """
    global CHOICE
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    cpus = usable_cpus()
    if environ.get("OMP_NUM_THREADS", "").strip():
        value = environ["OMP_NUM_THREADS"].strip()
        CHOICE = (int(value) if value.isdigit() else None,
                  "OMP_NUM_THREADS=%s, set in the environment" % value)
    elif environ.get("RESATTN_AUTO_THREADS", "1").strip() in ("0", "no", "false"):
        CHOICE = (None, "RESATTN_AUTO_THREADS=0: MXNet's own default (half the %d logical "
                        "CPUs)" % len(cpus))
    elif "mxnet" in modules:
        cores = physical_cores(cpus)
        failure = reach_running_mxnet(cores) if modules is sys.modules else "not the live MXNet"
        if failure is None:
            CHOICE = (cores, "%d physical core%s of the %d CPU%s this process may use, set in "
                             "MXNet after it was imported (set OMP_NUM_THREADS to choose)"
                      % (cores, "" if cores == 1 else "s", len(cpus),
                         "" if len(cpus) == 1 else "s"))
        else:
            CHOICE = (None, "MXNet was imported before resattn and could not be reached (%s), "
                            "so its own default applies (half the logical CPUs); import "
                            "resattn first or set OMP_NUM_THREADS=%d" % (failure, cores))
            if modules is sys.modules:  # the live process, not a caller's what-if
                _UNREACHED[:] = [CHOICE[1]]
    else:
        cores = physical_cores(cpus)
        environ["OMP_NUM_THREADS"] = str(cores)
        CHOICE = (cores, "%d physical core%s of the %d CPU%s this process may use (set "
                         "OMP_NUM_THREADS to choose)" % (cores, "" if cores == 1 else "s",
                                                         len(cpus), "" if len(cpus) == 1
                                                         else "s"))
    return CHOICE


#: The reason MXNet kept its own thread count after being imported first (warned once).
_UNREACHED = []


def warn_once_if_unreached():
    """Warn (``RuntimeWarning``, once per process) where MXNet, imported before resattn,
    computes on fewer threads than the cores; called at a network's first forward pass."""
    if _UNREACHED:
        import warnings
        warnings.warn("resattn: " + _UNREACHED.pop(), RuntimeWarning, stacklevel=3)


def _omp_runtime():
    """MXNet's OpenMP runtime (libgomp, which the MXNet wheels link), or None."""
    import ctypes
    try:
        return ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
    except (OSError, AttributeError):
        return None


def reach_running_mxnet(threads):
    """Make an MXNet that is already imported compute on ``threads`` threads.

    MXNet 1.9 keeps its bound in a singleton (``mxnet::engine::OpenMP``, fields
    ``enabled_``, ``omp_thread_max_``, ``reserve_cores_``,
    ``omp_num_threads_set_in_environment_``), which its worker threads read when they
    start and its own kernels read at every call; oneDNN takes OpenMP's count of the
    worker thread that runs it. So: check the singleton is as MXNet's constructor
    leaves it (half the processors, no environment setting), raise its bound, set
    OpenMP's count in this thread, and run one operation on the CPU worker (the
    engine's C API, ``MXEnginePushSyncND``) that sets it there.

    Returns
    -------
    str or None
        None when done, else why not (nothing was changed then).
    """
    import ctypes
    mx = sys.modules.get("mxnet")
    lib = getattr(getattr(mx, "base", None), "_LIB", None)
    gomp = _omp_runtime()
    if lib is None or gomp is None:
        return "no libgomp or libmxnet loaded"
    try:
        get = lib._ZN5mxnet6engine6OpenMP3GetEv
        push = lib.MXEnginePushSyncND
    except AttributeError:
        return "this MXNet exports no engine::OpenMP"
    get.restype = ctypes.c_void_p
    fields = (ctypes.c_int32 * 4).from_address(get())
    enabled, bound, reserved, from_env = fields[0] & 0xFF, fields[1], fields[2], fields[3] & 0xFF
    expected = max(1, int(gomp.omp_get_num_procs()) // 2)
    if (enabled, reserved, from_env) != (1, 0, 0) or bound not in (expected, threads):
        return "its OpenMP settings are not MXNet 1.9's defaults"
    fields[1] = int(threads)
    gomp.omp_set_num_threads(int(threads))
    seen = []
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
        lambda run_context, param: (gomp.omp_set_num_threads(int(threads)),
                                    seen.append(int(gomp.omp_get_max_threads()))))
    cpu = (ctypes.c_int32 * 2)(1, 0)  # mxnet::Context {kCPU, dev_id 0}
    token = mx.nd.zeros((1,))
    handles = (ctypes.c_void_p * 1)(token.handle.value)
    status = push(callback, None, None, ctypes.byref(cpu), None, 0, handles, 1, None, 0, None)
    token.wait_to_read()
    if status != 0 or seen != [int(threads)]:
        fields[1] = bound
        return "MXNet's CPU worker did not take the setting"
    return None
