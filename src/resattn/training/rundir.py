"""The run directory of ``resattn train``: one run at a time, and what a killed run left.

:func:`run_directory` is the whole lifecycle, around a run (``fit`` uses it):
it locks the directory for the run's writer (:func:`lock_run_dir`),
refuses to start a new run over an old one and removes the temporary files a
killed run left behind (:func:`prepare_run_dir`); when the run fails to write
(an OSError: a full disk) it removes the temporaries of the checkpoint that
failed halfway, the previous pair staying intact; and it releases the lock
however the run ends.

The lock
~~~~~~~~
:func:`prepare_run_dir` takes ``OUT/.lock`` (``fcntl.flock``, exclusive) for
the writer of a run: a second run, or a ``--resume``, of the same directory
fails at once with :class:`RunDirInUseError`. The kernel releases the lock
when its process ends, however it ends (a SIGKILL included), so nothing
stale is left to clean up (forked children, such as DataLoader workers, close
their copy at once and never keep it alive); the file stays, holding the last
holder's pid and start time for the message. The other workers of a
distributed job write nothing and take no lock.
"""
import contextlib
import errno
import json
import os
import socket
import sys
import time
import warnings

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no lock
    fcntl = None

__all__ = ["run_directory", "prepare_run_dir", "lock_run_dir", "RunLock", "RunDirInUseError",
           "remove_stale_temporaries"]

LOCK_NAME = ".lock"

#: The descriptors of the locks this process holds: closed in forked children (DataLoader
#: workers), which must not keep a lock alive after the run that took it has died.
_HELD = {}


def _close_held_locks_in_child():
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_locks_in_child)


class RunDirInUseError(ValueError):
    """The run directory is locked by a run that is still going."""


class RunLock:
    """The exclusive lock of a run directory (``OUT/.lock``), taken by :func:`lock_run_dir`.

    :meth:`release` (or leaving a ``with`` block) gives it back; the kernel
    gives it back when the process ends, however it ends.
    """

    def __init__(self, out_dir, fd):
        self.out_dir, self.path, self._fd = out_dir, os.path.join(out_dir, LOCK_NAME), fd

    @property
    def held(self):
        """Whether this process holds the lock now (False where locks are not supported)."""
        return self._fd is not None and self._fd in _HELD

    def release(self):
        """Give the lock back (a second call does nothing)."""
        fd, self._fd = self._fd, None
        if fd is not None and _HELD.pop(fd, None) is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _lock_holder(fd):
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_run_dir(out_dir):
    """Take the exclusive lock of ``out_dir`` (created if needed) for a run's writer.

    Returns
    -------
    RunLock

    Raises
    ------
    RunDirInUseError
        Another process holds it: ``OUT is in use by another resattn train (pid N,
        started ...); wait for it, or use another --out``.
    """
    os.makedirs(out_dir, exist_ok=True)
    if fcntl is None:  # pragma: no cover - not POSIX
        return RunLock(out_dir, None)
    path = os.path.join(out_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _lock_holder(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = "pid %s" % holder.get("pid", "unknown")
            if holder.get("host") and holder["host"] != socket.gethostname():
                who += " on %s" % holder["host"]
            if holder.get("started"):
                who += ", started %s" % holder["started"]
            raise RunDirInUseError("%s is in use by another resattn train (%s); wait for it, or "
                                   "use another --out" % (out_dir, who)) from None
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            warnings.warn("%s: this file system does not support locks (%s); nothing stops "
                          "another run from using the directory at the same time"
                          % (out_dir, err.strerror), RuntimeWarning, stacklevel=2)
            return RunLock(out_dir, None)
        raise
    _HELD[fd] = path
    try:
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "argv": sys.argv}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info + b"\n", 0)
    except OSError:  # only the message of a later run loses the details
        pass
    return RunLock(out_dir, fd)


def prepare_run_dir(out_dir, resume=False, overwrite=False, writer=True):
    """Create ``out_dir``, lock it for this run and refuse to start a new run over an old one.

    The writer (rank 0) takes the directory's lock (:func:`lock_run_dir`)
    first: while another process holds it (a run, or a resumed run, that is
    still going) this raises :class:`RunDirInUseError`. Without ``resume``
    or ``overwrite``, a directory that already holds a run (``last.params``)
    is an error, so that no checkpoint is replaced by accident. The writer
    also removes temporary files a killed run left behind.

    Returns
    -------
    RunLock or None
        The writer's lock, to :meth:`~RunLock.release` when the run ends (the
        other workers take none: they write nothing).
    """
    lock = lock_run_dir(out_dir) if writer else None
    try:
        if not resume and not overwrite and os.path.exists(os.path.join(out_dir, "last.params")):
            raise ValueError("%s already holds a training run (last.params); pass --resume to "
                             "continue it, --overwrite to start again, or another --out"
                             % out_dir)
        if writer:
            remove_stale_temporaries(out_dir)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def remove_stale_temporaries(out_dir):
    """Delete temporary files a killed run left behind; the files they were for are intact."""
    for name in os.listdir(out_dir):
        if (name.startswith(".") and name.endswith(".tmp")) or name.endswith(
                (".params.new", ".trainer.tmp")):
            os.remove(os.path.join(out_dir, name))



@contextlib.contextmanager
def run_directory(out_dir, resume=False, overwrite=False, writer=True):
    """The run directory ``out_dir`` for the ``with`` block of a run: locked, checked and
    cleaned for the writer (:func:`prepare_run_dir`), given back at the end.

    An OSError out of the block (a write that failed: a full disk...) first
    removes the writer's temporary files, the previous checkpoint pair staying
    intact; the error goes on unchanged.

    Yields
    ------
    RunLock or None
        The writer's lock (None for the other workers, which write nothing).

    Raises
    ------
    RunDirInUseError
        Another run holds the directory.
    ValueError
        ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is given.
    """
    lock = prepare_run_dir(out_dir, resume=resume, overwrite=overwrite, writer=writer)
    try:
        yield lock
    except OSError:
        if writer:
            try:
                remove_stale_temporaries(out_dir)
            except OSError:  # the error of the run is the one to report
                pass
        raise
    finally:
        if lock is not None:
            lock.release()
