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
- import MXNet before resattn: MXNet has started by then, and resattn says so.

:data:`CHOICE` records what was decided and why; ``resattn train`` prints it
and writes it into ``config.json``. This module does not import MXNet.
"""
import os
import sys

__all__ = ["usable_cpus", "physical_cores", "configure", "cpu_model", "cpu_isa",
           "describe_cpu", "CHOICE"]

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
        CHOICE = (None, "MXNet was imported before resattn, so its own default applies (half "
                        "the logical CPUs); import resattn first or set OMP_NUM_THREADS=%d"
                  % physical_cores(cpus))
    else:
        cores = physical_cores(cpus)
        environ["OMP_NUM_THREADS"] = str(cores)
        CHOICE = (cores, "%d physical core%s of the %d CPU%s this process may use (set "
                         "OMP_NUM_THREADS to choose)" % (cores, "" if cores == 1 else "s",
                                                         len(cpus), "" if len(cpus) == 1
                                                         else "s"))
    return CHOICE
