"""Start an MXNet parameter-server job: one scheduler, servers and workers.

MXNet's distributed kvstore (ps-lite) runs as three roles that find each other
through the environment: ``DMLC_ROLE`` (scheduler, server or worker),
``DMLC_PS_ROOT_URI`` and ``DMLC_PS_ROOT_PORT`` (where the scheduler listens),
``DMLC_NUM_SERVER`` and ``DMLC_NUM_WORKER``. Scheduler and servers are
Python processes that import mxnet: with ``DMLC_ROLE`` set, ``import mxnet``
serves until the workers finish, then returns. Workers run the training
command, which creates a ``dist_*`` kvstore.

This module does what dmlc-tracker's local and ssh launchers do, and also
forwards every line of output prefixed with the process's role and launch
index (``[worker 1] ...``; the kvstore rank is assigned by the scheduler and
may differ), and ends every process it started, each in its own process
group, as soon as one fails, when the job ends, or on Ctrl-C.

Nothing here imports mxnet.
"""
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["LAUNCHERS", "SERVE", "MAX_PROCESSES", "Task", "parse_hostfile", "free_port",
           "dmlc_env", "ssh_command", "process_limit", "plan", "run"]

LAUNCHERS = ("local", "ssh")
#: What scheduler and servers run. ``import mxnet`` alone would serve from inside the
#: import (when DMLC_ROLE is set), before MXNet is complete; with dist_async the servers
#: then cannot unpickle the optimizer's GluonCV learning-rate schedule. So MXNet is
#: imported as a worker would, then the process serves as mxnet's own start-up does.
#: GluonCV also refuses to import beside torch>=2 (``_compat.import_gluoncv``); a server
#: needs no torch, so it is hidden.
SERVE = ('import os, sys; role = os.environ.pop("DMLC_ROLE"); sys.modules["torch"] = None; '
         'import mxnet; from mxnet.kvstore.kvstore_server import KVStoreServer; '
         'os.environ["DMLC_ROLE"] = role; KVStoreServer(mxnet.kv.create("dist")).run()')
#: Default scheduler port for ``--launcher ssh`` (remote ports cannot be probed from here).
SSH_PORT = 9091
SSH = ("ssh", "-o", "BatchMode=yes", "-tt")


@dataclasses.dataclass
class Task:
    """One process of a job.

    Attributes
    ----------
    role : {'scheduler', 'server', 'worker'}
    index : int
        Launch index within the role (0 for the scheduler).
    host : str or None
        Where it runs; None for this machine without ssh.
    argv : list of str
        The command to start here (``ssh ...`` for remote tasks).
    env : dict
        Variables added to this process's environment (the DMLC ones for
        local tasks; remote tasks carry theirs inside ``argv``).
    """
    role: str
    index: int
    host: object
    argv: list
    env: dict

    @property
    def name(self):
        return self.role if self.role == "scheduler" else "%s %d" % (self.role, self.index)


def parse_hostfile(path):
    """Hosts of a hostfile: one ``host`` or ``user@host`` per line; ``#`` starts a comment.

    Raises
    ------
    ValueError
        If the file cannot be read, lists no host, or a line holds more than one word.
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ValueError("hostfile %s: %s" % (path, err.strerror or err)) from None
    hosts = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if len(words) > 1:
            raise ValueError("hostfile %s line %d: one host per line, got %r"
                             % (path, number, line.strip()))
        hosts.extend(words)
    if not hosts:
        raise ValueError("hostfile %s lists no host (one host per line)" % path)
    return hosts


def free_port(host="127.0.0.1"):
    """A TCP port of ``host`` that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dmlc_env(role, root_uri, port, num_workers, num_servers):
    """The ``DMLC_*`` variables that make a process one ``role`` of a job."""
    return {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": str(root_uri),
            "DMLC_PS_ROOT_PORT": str(port), "DMLC_NUM_SERVER": str(num_servers),
            "DMLC_NUM_WORKER": str(num_workers)}


def ssh_command(host, cwd, env, argv, ssh=SSH):
    """``ssh ... host 'cd CWD && env K=V ... ARGV'``, every word quoted for the remote shell.

    ``-tt`` gives the remote command a terminal, so that ending the local ssh
    client hangs up the remote process instead of leaving it running.
    """
    assignments = ["%s=%s" % (k, shlex.quote(str(v))) for k, v in sorted(env.items())]
    remote = "cd %s && env %s %s" % (shlex.quote(cwd), " ".join(assignments),
                                     " ".join(shlex.quote(a) for a in argv))
    return list(ssh) + [host, remote]


def _host_name(host):
    return host.rsplit("@", 1)[-1]


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError("%s must be an integer >= %d, got %r" % (name, low, value))


#: Most processes one launch starts (scheduler + servers + workers): each is a child process
#: of the launcher (for ``ssh``, the local ssh client of a remote one) with an output pipe
#: and a forwarding thread here. 1024 is the usual open-file limit (``ulimit -n``) too;
#: the machine's own limits (:func:`process_limit`) may allow fewer.
MAX_PROCESSES = 1024
#: File descriptors the launcher keeps for itself (standard streams, imports, Popen's own).
_FD_RESERVE = 32


def process_limit():
    """``(n, why)``: how many processes one launch may start here, and what sets that.

    The least of :data:`MAX_PROCESSES`, the open-file limit (one pipe per
    process stays open here; ``ulimit -n``) less a reserve, and half the
    process limit (a process and a thread here each; ``ulimit -u``).
    """
    limits = [(MAX_PROCESSES, "resattn launch's cap, MAX_PROCESSES: each process is a child "
                              "here with an output pipe and a thread")]
    try:
        import resource
    except ImportError:  # not on POSIX
        return limits[0]
    for name, option, per, what in (
            ("RLIMIT_NOFILE", "-n", 1, "the open-file limit, ulimit -n %d: one pipe per "
                                       "process, %d kept for the launcher"),
            ("RLIMIT_NPROC", "-u", 2, "the process limit, ulimit -u %d: a process and a "
                                      "thread per process")):
        try:
            soft = resource.getrlimit(getattr(resource, name))[0]
        except (AttributeError, ValueError, OSError):
            continue
        if soft != resource.RLIM_INFINITY and soft >= 0:
            if name == "RLIMIT_NOFILE":
                limits.append((max(soft - _FD_RESERVE, 0), what % (soft, _FD_RESERVE)))
            else:
                limits.append((soft // per, what % soft))
    return min(limits, key=lambda limit: limit[0])


def _check_size(num_workers, num_servers):
    """Refuse a job larger than :func:`process_limit` (before anything is built for it)."""
    total = 1 + num_servers + num_workers
    limit, why = process_limit()
    if total > limit:
        raise ValueError("-n/--num-workers %d with -s/--num-servers %d is %d processes with the "
                         "scheduler; one launch starts at most %d here (%s)"
                         % (num_workers, num_servers, total, limit, why))


def plan(command, num_workers, num_servers=1, launcher="local", hosts=None, port=None,
         cwd=None, python=None, env=None):
    """The tasks of a job: scheduler, then servers, then workers.

    Parameters
    ----------
    command : list of str
        What every worker runs, e.g. ``['resattn', 'train', ..., '--kvstore', 'dist_sync']``.
    num_workers, num_servers : int
        At least 1 each; with the scheduler at most :func:`process_limit` processes
        (:data:`MAX_PROCESSES`, 1024, or fewer where ``ulimit -n`` / ``-u`` says so).
    launcher : {'local', 'ssh'}
        'local': every process on this machine, scheduler on 127.0.0.1.
        'ssh': servers and workers round-robin over ``hosts`` (worker ``i``
        on ``hosts[i % len(hosts)]``, likewise servers), the scheduler on
        ``hosts[0]``, which every host must reach by that name.
    hosts : list of str
        For 'ssh' (see :func:`parse_hostfile`).
    port : int or None
        Scheduler port; None picks a free one ('local') or 9091 ('ssh').
    cwd : str
        Directory the commands run in (default: this one; the same path on every host).
    python : str
        Interpreter of scheduler and servers (default: this one; the same path on every host).
    env : dict, optional
        More variables for every process (ssh does not forward the local
        environment), e.g. ``{'DMLC_INTERFACE': 'eth1'}``.
    """
    _check_count("-n/--num-workers", num_workers, 1)
    _check_count("-s/--num-servers", num_servers, 1)
    _check_size(num_workers, num_servers)
    if launcher not in LAUNCHERS:
        raise ValueError("launcher must be one of %s, got %r" % (", ".join(LAUNCHERS), launcher))
    command = list(command or [])
    if not command:
        raise ValueError("no command to run: put it after --, e.g. `resattn launch -n 2 -s 1 "
                         "-- resattn train ... --kvstore dist_sync`")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 < port < 65536):
        raise ValueError("port must be in [1, 65535], got %r" % (port,))
    cwd = cwd or os.getcwd()
    serve = [python or sys.executable, "-c", SERVE]
    if launcher == "local":
        if hosts:
            raise ValueError("a hostfile is only used with --launcher ssh, got launcher 'local'")
        root, port = "127.0.0.1", port or free_port("127.0.0.1")
    else:
        if not hosts:
            raise ValueError("--launcher ssh needs a hostfile (-H FILE, one host per line)")
        root, port = _host_name(hosts[0]), port or SSH_PORT
    extra = dict(env or {})
    bad = sorted(k for k in extra if not k or not (k[0].isalpha() or k[0] == "_")
                 or not all(c.isalnum() or c == "_" for c in k))
    if bad:
        raise ValueError("environment variable names must be letters, digits and _, got %s"
                         % ", ".join(map(repr, bad)))
    own = sorted(set(extra) & set(dmlc_env("worker", root, port, 1, 1)))
    if own:
        raise ValueError("%s: set by the launcher itself (use -n, -s, --port); got them in env"
                         % ", ".join(own))
    roles = [("scheduler", 0)] + [("server", i) for i in range(num_servers)] \
        + [("worker", i) for i in range(num_workers)]
    threads = _local_threads(num_workers) if launcher == "local" and \
        "OMP_NUM_THREADS" not in extra else None
    tasks = []
    for role, index in roles:
        env = dict(extra, **dmlc_env(role, root, port, num_workers, num_servers),
                   PYTHONUNBUFFERED="1")
        if launcher == "local":  # else ps-lite advertises (and binds) the first non-loopback IP
            env.setdefault("DMLC_NODE_HOST", "127.0.0.1")
        if threads is not None:
            # Local workers share the cores instead of each taking them all.
            env["OMP_NUM_THREADS"] = str(threads if role == "worker" else 1)
        argv = command if role == "worker" else serve
        if launcher == "local":
            tasks.append(Task(role, index, None, list(argv), env))
        else:
            host = hosts[0] if role == "scheduler" else hosts[index % len(hosts)]
            tasks.append(Task(role, index, host, ssh_command(host, cwd, env, argv), {}))
    return tasks


def _local_threads(num_workers):
    """Threads per local worker: the physical cores shared out, unless the user chose
    ``OMP_NUM_THREADS`` (then each process keeps it) or None."""
    from .. import _threads
    if _threads.CHOICE[1].startswith("OMP_NUM_THREADS="):
        return None
    return max(1, _threads.physical_cores() // max(1, num_workers))


# ----------------------------------------------------------------------------- running
def _describe(code):
    if code < 0:
        try:
            return "was killed by %s" % signal.Signals(-code).name
        except ValueError:
            return "was killed by signal %d" % -code
    return "exited with status %d" % code


class _Job:
    """Started processes, their output threads, and how to end them."""

    def __init__(self, tasks, out, cwd):
        self.tasks, self.out, self.cwd = tasks, out, cwd
        self.procs, self.threads = [], []
        self.lock = threading.Lock()

    def say(self, line):
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def _forward(self, task, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            line = line.rsplit("\r", 1)[-1]  # what a terminal shows of progress-bar updates
            self.say("[%s] %s" % (task.name, line))
        stream.close()

    def start(self):
        for task in self.tasks:
            proc = subprocess.Popen(task.argv, cwd=self.cwd, env=dict(os.environ, **task.env),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.procs.append(proc)
            self.say("[launch] %s: pid %d%s%s" % (
                task.name, proc.pid, " on %s" % task.host if task.host else "",
                ": " + " ".join(shlex.quote(a) for a in task.argv).replace("\n", "\\n")
                if task.role == "worker" else ""))
            thread = threading.Thread(target=self._forward, args=(task, proc.stdout),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def signal(self, sig, roles=None):
        for task, proc in zip(self.tasks, self.procs):
            if roles is None or task.role in roles:
                try:
                    os.killpg(proc.pid, sig)  # the group: also what the process started
                except (ProcessLookupError, PermissionError):
                    pass

    def wait(self, timeout, roles=None):
        """Wait up to ``timeout`` s for the processes of ``roles``; True if all ended."""
        deadline = time.monotonic() + timeout
        for task, proc in zip(self.tasks, self.procs):
            if roles is None or task.role in roles:
                try:
                    proc.wait(max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    return False
        return True

    def stop(self, grace):
        """SIGTERM to every process group, SIGKILL after ``grace`` s, then reap everything."""
        self.signal(signal.SIGTERM)
        if not self.wait(grace):
            self.signal(signal.SIGKILL)
        self.wait(grace)
        self.signal(signal.SIGKILL)  # stray members of a group whose leader already ended
        for thread in self.threads:
            thread.join(timeout=5)


def run(tasks, timeout=None, grace=10.0, out=None, cwd=None, poll=0.1):
    """Start ``tasks``, forward their output, and end them all.

    The job succeeds when every worker exits with status 0. It fails (status
    1) as soon as any process exits with another status, naming it; after
    ``timeout`` seconds (status 124); or on Ctrl-C (status 130), which first
    sends SIGINT to the workers so that ``resattn train`` can write a
    resumable checkpoint within ``grace`` seconds. In every case each process
    group is sent SIGTERM, then SIGKILL after ``grace`` seconds.
    """
    out = out or sys.stdout
    job = _Job(tasks, out, cwd)
    start = time.monotonic()
    status, problem = None, None
    try:
        job.start()
        while status is None:
            for task, proc in zip(tasks, job.procs):
                code = proc.poll()
                if code not in (None, 0):
                    problem = "%s (pid %d%s) %s" % (
                        task.name, proc.pid, " on %s" % task.host if task.host else "",
                        _describe(code))
                    job.say("[launch] error: %s; stopping the other processes" % problem)
                    status = 1
                    break
            else:
                workers = [p for t, p in zip(tasks, job.procs) if t.role == "worker"]
                if all(p.poll() == 0 for p in workers):
                    # Scheduler and servers leave on their own once the workers finalised.
                    if not job.wait(grace, roles=("scheduler", "server")):
                        job.say("[launch] scheduler or servers still running %.0f s after the "
                                "workers finished; stopping them" % grace)
                    status = 0
                elif timeout is not None and time.monotonic() - start > timeout:
                    problem = "timed out after %g s" % timeout
                    job.say("[launch] error: %s; stopping every process" % problem)
                    status = 124
                else:
                    time.sleep(poll)
    except KeyboardInterrupt:
        job.say("[launch] interrupted: asking the workers to stop (checkpoint) within %g s"
                % grace)
        try:
            job.signal(signal.SIGINT, roles=("worker",))
            job.wait(grace, roles=("worker",))
        except KeyboardInterrupt:
            pass
        status, problem = 130, "interrupted"
    finally:
        job.stop(grace)
    if status == 0:
        job.say("[launch] done: %d worker(s) finished in %.1f s"
                % (sum(t.role == "worker" for t in tasks), time.monotonic() - start))
    return status, problem
