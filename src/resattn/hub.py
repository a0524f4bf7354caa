"""A verified download cache for published weight files.

Published weights are listed as URLs (raw GitHub files at fixed commits) with
the *git blob id* of the file, the id that ``git hash-object FILE`` prints::

    sha1(b"blob %d\\0" % len(data) + data).hexdigest()

A file is only ever used when its blob id matches, so a truncated, corrupted or
different file can never pass for the published one.

Cache layout
------------
The cache folder is ``root`` when given, else ``$RESATTN_HOME``, else
``~/.resattn``. Weight files live in its ``weights/`` subfolder::

    <cache>/weights/<name>          the verified file: the only name ever returned
    <cache>/weights/<name>.blob     "<blob id> <size> <mtime_ns> <ctime_ns> <inode>",
                                    so a file that has not changed is not hashed again
    <cache>/weights/<name>.part     a download in progress; resumed on the next try
    <cache>/weights/<name>.lock     taken with ``fcntl.flock`` while downloading, so
                                    two processes never write the same file

A file reaches its final name only through ``os.replace`` after its blob id has
been checked, so an interrupted download (Ctrl-C, a crash, a cut connection)
leaves at most ``.part`` and ``.lock`` files behind. To fill the cache by hand,
save the file as ``<cache>/weights/<name>``: it is checked like a download.

The cache writes only files it made: ``.part`` and ``.lock`` are opened with
``O_NOFOLLOW`` (a new ``.part`` with ``O_EXCL``), so a symbolic link put there is
refused, its target untouched; a path of the wrong kind (a folder where the file
belongs, ``$RESATTN_HOME`` a file) is one ValueError line. A download is bounded
in bytes (``max_bytes``, the file's size), in rate (``min_rate`` over
``rate_window``) and in time (``max_time``), see :func:`download`.

This module uses the standard library only and does not import MXNet.
"""
import contextlib
import hashlib
import http.client
import os
import posixpath
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

try:
    import fcntl
except ImportError:  # not Linux/Unix: downloads are not locked against each other
    fcntl = None

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

__all__ = ["DownloadError", "blob_id", "cache_dir", "download", "is_cached"]

#: Bytes read or written at a time.
_CHUNK = 1 << 20
#: Seconds to wait before retry number ``n`` is ``_RETRY_DELAY * n``.
_RETRY_DELAY = 1.0
#: HTTP statuses worth trying again.
_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
#: Suffixes of the cache's own bookkeeping files; no weight file may end with one.
_RESERVED = (".part", ".lock", ".blob")
_BLOB_RE = re.compile(r"[0-9a-f]{40}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(OSError):
    """A file could not be downloaded (offline, unreachable server, HTTP error...).

    The message names the URL, the error, and how to put the file in the cache
    by hand. The attributes ``url``, ``path`` (the file's place in the cache) and
    ``blob`` (its expected git blob id) say the same.
    """

    def __init__(self, url, path, blob, error):
        self.url, self.path, self.blob = url, path, blob
        super().__init__(
            "could not download %s: %s. To put the file in the cache by hand, download %s "
            "with a browser or curl and save it as %s (its git blob id must be %s), or pass "
            "the file's path instead." % (url, error, url, path, blob))


class _Truncated(ConnectionError):
    """The server closed the connection before sending all the bytes it announced."""


# --------------------------------------------------------------------------- ids


def blob_id(path_or_bytes):
    """The git blob id of a file or of bytes, as ``git hash-object`` prints it.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike, bytes, bytearray or memoryview
        A file (read in chunks, never whole into memory) or the data itself.

    Returns
    -------
    str
        40 lowercase hex digits: ``sha1(b"blob %d\\0" % size + data)``.

    Raises
    ------
    TypeError
        If ``path_or_bytes`` is neither a path nor bytes.
    OSError
        If the file cannot be read, or changed size while it was read.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = memoryview(path_or_bytes).cast("B")
        sha = hashlib.sha1(b"blob %d\0" % data.nbytes)
        sha.update(data)
        return sha.hexdigest()
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise TypeError("blob_id() takes a file path (str or os.PathLike) or bytes, got %s"
                        % type(path_or_bytes).__name__)
    with open(path_or_bytes, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        sha = hashlib.sha1(b"blob %d\0" % size)
        done = 0
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            sha.update(chunk)
            done += len(chunk)
    if done != size:
        raise OSError("%s changed size while its blob id was computed (%d bytes, then %d)"
                      % (os.fspath(path_or_bytes), size, done))
    return sha.hexdigest()


def _check_blob(blob):
    if not isinstance(blob, str) or not _BLOB_RE.fullmatch(blob.lower()):
        raise ValueError("blob must be a git blob id: 40 hex digits, as `git hash-object "
                         "FILE` prints them; got %r" % (blob,))
    return blob.lower()


def _stat_key(st):
    return [str(st.st_size), str(st.st_mtime_ns), str(st.st_ctime_ns), str(st.st_ino)]


def _write_sidecar(path, blob, st=None):
    """Record that ``path``, as it is now (or was at ``st``), has blob id ``blob``."""
    try:
        st = os.stat(path) if st is None else st
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".blob-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(" ".join([blob] + _stat_key(st)) + "\n")
            os.replace(tmp, path + ".blob")
        except BaseException:
            _remove(tmp)
            raise
    except OSError:
        pass  # the sidecar only saves time; a read-only cache still works


def _read_sidecar(path):
    """The fields of ``path``'s ``.blob`` sidecar; [] if it is missing or not a plain file."""
    try:
        # never through a link, never blocking on a FIFO, never more than a line
        fd = os.open(path + ".blob", os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        return f.read(200).decode("ascii", "replace").split()


def _file_blob(path):
    """The blob id of the file at ``path``, or None if there is no file.

    The ``.blob`` sidecar is trusted only while the file's size, mtime, ctime
    and inode are those it records; otherwise the file is hashed again. A
    folder, FIFO or device at ``path`` (or a link to one) is a ValueError.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        _check_folders(os.path.dirname(path))
        raise
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(_WRONG_KIND % (path, _kind(st), "the file"))
    fields = _read_sidecar(path)
    if len(fields) == 5 and _BLOB_RE.fullmatch(fields[0]) and fields[1:] == _stat_key(st):
        return fields[0]
    actual = blob_id(path)
    _write_sidecar(path, actual, st)  # the stat from before hashing: a change since shows
    return actual


# ------------------------------------------------------------------------ places


def cache_dir(root=None):
    """The cache folder (weight files live in its ``weights/`` subfolder).

    Parameters
    ----------
    root : str or os.PathLike, optional
        The folder to use. Default: ``$RESATTN_HOME`` if set and not empty,
        else ``~/.resattn``.

    Returns
    -------
    str
        The absolute path, ``~`` expanded. Nothing is created.
    """
    if root is None:
        root = os.environ.get("RESATTN_HOME") or os.path.join("~", ".resattn")
    elif not isinstance(root, (str, os.PathLike)):
        raise TypeError("root must be a folder path (str or os.PathLike) or None, got %s"
                        % type(root).__name__)
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def _check_url(url):
    if not isinstance(url, str):
        raise TypeError("url must be a str, got %s" % type(url).__name__)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("url must be an http:// or https:// URL, got %r" % (url,))
    return url


def _check_filename(name, what):
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or name.endswith(_RESERVED)):
        raise ValueError("%s must be a plain file name (no folders; not '.', '..'; not ending "
                         "with %s), got %r" % (what, ", ".join(_RESERVED), name))
    return name


def _filename(url, filename):
    if filename is not None:
        if not isinstance(filename, str):
            raise TypeError("filename must be a str or None, got %s" % type(filename).__name__)
        return _check_filename(filename, "filename")
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if not name:
        raise ValueError("cannot take a file name from url %r (its path ends with '/'); "
                         "pass filename=" % (url,))
    return _check_filename(name, "the file name taken from url %r" % (url,))


def _weights_path(name, root):
    return os.path.join(cache_dir(root), "weights", name)


#: A cache path of the wrong kind: the path, what it is, what the cache keeps there.
_WRONG_KIND = ("%s is %s, not %s the cache keeps there: remove or rename it (or use another "
               "cache folder: root=, or $RESATTN_HOME)")


def _kind(st):
    mode = st.st_mode
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "a file"


def _check_folders(folder):
    """ValueError unless ``folder`` and each folder above it that exists is a folder."""
    path = folder
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return
            path = parent
            continue
        except OSError as err:  # a file above it: NotADirectoryError, or a link loop
            parent = os.path.dirname(path)
            if parent == path or isinstance(err, PermissionError):
                raise ValueError("cannot use the cache folder %s (%s)"
                                 % (folder, err.strerror)) from None
            path = parent
            continue
        if not stat.S_ISDIR(st.st_mode):
            where = " ($RESATTN_HOME)" if path == cache_dir(None) and \
                os.environ.get("RESATTN_HOME") else ""
            raise ValueError("the cache folder %s cannot be made: %s%s is %s, not a folder; "
                             "set RESATTN_HOME (or root=) to a folder, or remove it"
                             % (folder, path, where, _kind(st)))
        return


def is_cached(url_or_filename, blob, root=None):
    """Whether the cache holds the file with this blob id (no network access).

    Parameters
    ----------
    url_or_filename : str
        The file's URL (its last path component is the file name) or the name
        it has in the cache.
    blob : str
        The git blob id the file must have.
    root : str or os.PathLike, optional
        The cache folder, as in :func:`cache_dir`.

    Returns
    -------
    bool
        True if ``<cache>/weights/<name>`` exists and its blob id is ``blob``.
    """
    blob = _check_blob(blob)
    if not isinstance(url_or_filename, str):
        raise TypeError("url_or_filename must be a str, got %s" % type(url_or_filename).__name__)
    if "://" in url_or_filename:
        name = _filename(_check_url(url_or_filename), None)
    else:
        name = _check_filename(url_or_filename, "url_or_filename")
    return _file_blob(_weights_path(name, root)) == blob


# --------------------------------------------------------------------- download


def _open_nofollow(path, flags, what, single=False):
    """``os.open`` of a cache file the cache made itself: never through a symbolic link,
    never a folder, FIFO or device; with ``single``, never a file with other names (hard
    links), which writing would change too."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) |
                     getattr(os, "O_NONBLOCK", 0), 0o644)
    except FileExistsError:
        raise ValueError("%s appeared while it was being created; is another program "
                         "writing into the cache?" % path) from None
    except OSError as err:
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise ValueError(_WRONG_KIND % (path, _kind(st), what)) from None
        raise ValueError("cannot open %s (%s); check the cache folder's permissions, or "
                         "set RESATTN_HOME (or root=) to another folder"
                         % (path, err.strerror or type(err).__name__)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (single and st.st_nlink > 1):
        os.close(fd)
        raise ValueError(_WRONG_KIND % (path, _kind(st) if not stat.S_ISREG(st.st_mode) else
                                        "a file with %d names (hard links)" % st.st_nlink,
                                        what))
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing)."""
    fd = _open_nofollow(path, os.O_RDWR | os.O_CREAT, "the lock file")
    with os.fdopen(fd, "r+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove(path):
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _fsync_dir(folder):
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _size(n):
    return "%.1f MB" % (n / 1e6) if n >= 1e5 else "%d bytes" % n


class _Progress:
    """A one-line progress report on stderr.

    On a terminal it is a bar redrawn with ``\\r``; elsewhere (a log file, a
    pipe) one line when the download starts and one when it ends.
    """

    def __init__(self, name, total, done, enabled):
        self.name, self.total, self.done = name, total, done
        self.stream = sys.stderr
        self.enabled = enabled and self.stream is not None
        self.tty = self.enabled and getattr(self.stream, "isatty", lambda: False)()
        self.last = 0.0
        if self.enabled and not self.tty:
            self._write("downloading %s (%s%s)\n" % (
                name, _size(total) if total else "size unknown",
                ", resuming at %s" % _size(done) if done else ""))
        self._draw(force=True)

    def _write(self, text):
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()

    def _draw(self, force=False):
        if not self.tty or (not force and time.monotonic() - self.last < 0.1):
            return
        self.last = time.monotonic()
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac)
            line = "%s [%-30s] %s / %s %3d%%" % (self.name, bar, _size(self.done),
                                               _size(self.total), 100 * frac)
        else:
            line = "%s %s" % (self.name, _size(self.done))
        self._write("\r" + line)

    def update(self, n):
        self.done += n
        self._draw()

    def close(self):
        if self.tty:
            self._draw(force=True)
            self._write("\n")
        elif self.enabled:
            self._write("%s: %s received\n" % (self.name, _size(self.done)))


class _Limits:
    """What one :func:`download` may take: bytes, a rate over a window, and time."""

    def __init__(self, max_bytes, min_rate, rate_window, max_time, timeout):
        self.max_bytes, self.min_rate, self.window = max_bytes, min_rate, rate_window
        self.max_time, self.timeout = max_time, timeout
        self.deadline = time.monotonic() + max_time

    def left(self):
        return self.deadline - time.monotonic()

    def wait(self, now=None):
        """Seconds a request or read may wait: ``timeout``, and never past the deadline;
        None: no bound."""
        left = self.deadline - (time.monotonic() if now is None else now)
        if left <= 0:
            raise _OutOfTime()
        wait = left if self.timeout is None else min(self.timeout, left)
        return None if wait == float("inf") else wait


class _TooBig(Exception):
    """The server sends (or announces) more than ``max_bytes``: never resumed."""


class _OutOfTime(Exception):
    """The attempt ran past ``max_time``."""


class _TooSlow(TimeoutError):
    """Fewer than ``min_rate`` bytes a second arrived over a whole window (retried)."""


class _Meter:
    """Fails a transfer whose rate over a window of ``rate_window`` seconds is under
    ``min_rate`` bytes a second (curl's ``--speed-limit`` and ``--speed-time``)."""

    def __init__(self, limits, now):
        self.limits, self.start, self.got = limits, now, 0
        self.need = limits.min_rate * limits.window

    def too_slow(self):
        return _TooSlow("the transfer was slower than %s bytes/s over %s s (min_rate and "
                        "rate_window, or $RESATTN_DOWNLOAD_MIN_RATE and "
                        "$RESATTN_DOWNLOAD_RATE_WINDOW)"
                        % (_num(self.limits.min_rate), _num(self.limits.window)))

    def _roll(self, now):
        while now >= self.start + self.limits.window:
            if self.got < self.need:
                raise self.too_slow()
            self.start += self.limits.window
            self.got = 0

    def add(self, n, now):
        if self.need > 0:
            self._roll(now)
            self.got += n

    def wait(self, now):
        """``(seconds, why)`` the next read may take: until the rate fails, the deadline
        passes or ``timeout`` runs out, whichever comes first."""
        wait, why = self.limits.wait(now), "timeout"
        if wait is not None and (self.limits.timeout is None or wait < self.limits.timeout):
            why = "deadline"
        if self.need > 0:
            self._roll(now)
            fails = self.start + self.limits.window * (1 if self.got < self.need else 2)
            if wait is None or fails - now < wait:
                wait, why = fails - now, "slow"
        return None if wait is None else max(wait, 0.001), why


def _num(x):
    return "%d" % x if float(x).is_integer() else "%g" % x


def _socket(response):
    """The socket under an ``http.client.HTTPResponse``, to bound each read; or None."""
    return getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)


def _fetch_once(url, part, name, progress, limits):
    """One HTTP request appending to (206) or rewriting (200) ``part``.

    Returns False when the server answers 416 (nothing left to send from the
    size ``part`` has), True otherwise. Raises on errors; what arrived stays in
    ``part`` (except after :class:`_TooBig`, which the caller deletes).
    """
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(_WRONG_KIND % (part, _kind(st), "the partial download"))
    have = st.st_size if st is not None else 0
    if limits.max_bytes is not None and have > limits.max_bytes:
        _remove(part)  # longer than the file: not a part of it
        st, have = None, 0
    headers = {"User-Agent": "resattn-hub"}
    if have:
        headers["Range"] = "bytes=%d-" % have
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=limits.wait())
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            return False
        raise
    with response:
        length = response.headers.get("Content-Length", "").strip()
        length = int(length) if length.isdigit() else None
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind == "text/html":
            raise _NotTheFile("the server answered with an HTML page (Content-Type %s), not "
                              "the file: a login, error or proxy page?" % kind)
        if response.getcode() == 206:
            content_range = response.headers.get("Content-Range", "").strip()
            match = _CONTENT_RANGE_RE.fullmatch(content_range)
            if not match or int(match.group(1)) != have:
                if st is not None:  # start again from zero next time
                    os.close(_open_nofollow(part, os.O_WRONLY | os.O_TRUNC,
                                            "the partial download", single=True))
                raise _Truncated("the server resumed at the wrong offset (%r for byte %d)"
                                 % (content_range, have))
            total = None if match.group(3) == "*" else int(match.group(3))
            append = True
        else:  # 200: the whole file, whether or not a range was asked for
            have, total, append = 0, length, False
        if limits.max_bytes is not None and total is not None and total > limits.max_bytes:
            raise _TooBig("the server announced %d bytes, more than the %d the file has "
                          "(max_bytes)" % (total, limits.max_bytes))
        if total is not None:
            _check_room(os.path.dirname(part), total - have)
        fd = _open_nofollow(part, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC) |
                            (0 if st is not None else os.O_CREAT | os.O_EXCL),
                            "the partial download", single=True)
        bar = _Progress(name, total, have, progress)
        received = 0
        left = None if limits.max_bytes is None else limits.max_bytes - have
        sock = _socket(response)
        meter = _Meter(limits, time.monotonic())
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    while True:
                        wait, why = meter.wait(time.monotonic())
                        if sock is not None:
                            sock.settimeout(wait)
                        try:
                            # read1: what has arrived, so nothing is lost if a later read
                            # times out; at most one byte more than the file may have
                            chunk = response.read1(_CHUNK if left is None
                                                   else min(_CHUNK, left + 1))
                        except (socket.timeout, TimeoutError):
                            if why == "slow":
                                raise meter.too_slow() from None
                            if why == "deadline":
                                raise _OutOfTime() from None
                            raise
                        if not chunk:
                            break
                        if left is not None and len(chunk) > left:
                            raise _TooBig("the server sent more than %d bytes, the size of "
                                          "the file (max_bytes); the transfer was cut off"
                                          % limits.max_bytes)
                        f.write(chunk)
                        received += len(chunk)
                        if left is not None:
                            left -= len(chunk)
                        bar.update(len(chunk))
                        meter.add(len(chunk), time.monotonic())
                finally:
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            bar.close()
    # http.client returns b"" on an early close instead of raising IncompleteRead
    if length is not None and received < length:
        raise _Truncated("the connection closed after %d of %d bytes" % (received, length))
    return True


class _NotTheFile(Exception):
    """The server answered, but not with the file (an HTML page): not retried."""


def _check_room(folder, need):
    """:class:`_NoRoom` if the disk of ``folder`` has fewer than ``need`` bytes free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        raise _NoRoom("the server announced %s more, and %s has only %s free"
                      % (_size(need), folder, _size(free)))


class _NoRoom(Exception):
    """Not enough free disk for what the server announced: not retried."""


def _is_transient(exc):
    """Whether trying ``exc``'s request again may succeed."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in _TRANSIENT_STATUS
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError))
    return isinstance(exc, (http.client.HTTPException, ConnectionError, TimeoutError))


def _describe(exc):
    """One line: urllib's redirect-loop error, for one, spans three."""
    if isinstance(exc, urllib.error.HTTPError):
        text = "HTTP error %d (%s)" % (exc.code, exc.reason)
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    elif isinstance(exc, (_Truncated, _TooSlow)):
        text = str(exc)
    else:
        text = "%s: %s" % (type(exc).__name__, exc)
    return " ".join(text.split())


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError)


def _part_size(part):
    with contextlib.suppress(OSError):
        st = os.lstat(part)
        if stat.S_ISREG(st.st_mode):
            return st.st_size
    return 0


def _fetch(url, part, final, blob, progress, retries, limits):
    """Fill ``part`` with the file at ``url``, resuming and retrying cut transfers.

    At most ``retries`` failed transfers are tried again, however many bytes each brought
    (a server that sends a little and hangs up does not get tries without end), and
    all of it within ``limits.max_time``.
    """
    name = os.path.basename(final)
    failures = 0

    def fail(error, keep=True):
        size = _part_size(part)
        if not keep:
            _remove(part)
        elif size:
            error += "; the %s that arrived are kept in %s and resumed next time" \
                % (_size(size), part)
        return DownloadError(url, final, blob, error)

    while True:
        try:
            complete = _fetch_once(url, part, name, progress, limits)
        except _TooBig as exc:
            raise fail("%s; nothing was kept" % exc, keep=False) from None
        except (_NotTheFile, _NoRoom) as exc:
            raise fail(str(exc)) from None
        except _OutOfTime:
            raise fail("it took longer than %s s (max_time, or $RESATTN_DOWNLOAD_MAX_TIME)"
                       % _num(limits.max_time)) from None
        except _NETWORK_ERRORS as exc:
            if not _is_transient(exc):
                raise fail(_describe(exc)) from None
            failures += 1
            if failures > retries:
                raise fail("%s (gave up after %d tries)" % (_describe(exc), failures)) from None
            delay = _RETRY_DELAY * failures
            if limits.left() <= delay:
                raise fail("%s, and the next try would end past max_time (%s s, or "
                           "$RESATTN_DOWNLOAD_MAX_TIME)" % (_describe(exc),
                                                            _num(limits.max_time))) from None
            time.sleep(delay)
            continue
        if complete:
            return
        if blob_id(part) == blob:  # 416 and the part is already the whole file
            return
        _remove(part)  # 416 and the part is not the file: start again from zero


#: download()'s defaults for the limits the environment variables of the same names
#: override: bytes a second below which a transfer fails when it lasts a whole window
#: of seconds (curl's --speed-limit and --speed-time), and seconds for the whole
#: download, all tries together.
_DEFAULT_LIMITS = {"min_rate": ("RESATTN_DOWNLOAD_MIN_RATE", 1024.0),
                   "rate_window": ("RESATTN_DOWNLOAD_RATE_WINDOW", 30.0),
                   "max_time": ("RESATTN_DOWNLOAD_MAX_TIME", 3600.0)}


def _limit(name, value, zero_ok=False):
    """``value`` checked, or the environment variable's, or the default."""
    env, default = _DEFAULT_LIMITS[name]
    where = name
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        where = "$%s" % env
        try:
            value = float(text)
        except ValueError:
            value = text
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and (value >= 0 if zero_ok else value > 0) and value == value)
    if not ok:
        raise ValueError("%s must be a %s number%s, got %r" % (
            where, "non-negative" if zero_ok else "positive",
            " (bytes a second; 0: no minimum)" if zero_ok else " of seconds", value))
    return float(value)


def download(url, blob, filename=None, root=None, progress=True, timeout=30, retries=3,
             max_bytes=None, min_rate=None, rate_window=None, max_time=None):
    """The path of a verified copy of ``url`` in the cache, downloaded if needed.

    Parameters
    ----------
    url : str
        An http:// or https:// URL.
    blob : str
        The git blob id the file must have (``git hash-object FILE``).
    filename : str, optional
        The name in the cache. Default: the last path component of ``url``.
    root : str or os.PathLike, optional
        The cache folder, as in :func:`cache_dir`.
    progress : bool, optional
        Report progress on stderr (default True).
    timeout : float or None, optional
        Seconds to wait for the server (connecting, then each read); None waits
        forever. Default 30.
    retries : int, optional
        How many times a cut, timed-out or too slow transfer is tried again,
        resuming from what arrived. The count does not start over when bytes
        arrive. Default 3.
    max_bytes : int, optional
        The file's size, or a bound on it (:attr:`resattn.models.weights.Weights.size`).
        A server that announces more is refused at once, and a body that runs
        longer is cut off when the byte after ``max_bytes`` arrives; either way
        the ``.part`` file is deleted. Default None: no bound.
    min_rate, rate_window : float, optional
        A transfer that brings fewer than ``min_rate`` bytes a second over a
        whole window of ``rate_window`` seconds fails (and is tried again, as a
        cut one is); ``min_rate=0`` turns this off. Defaults:
        ``$RESATTN_DOWNLOAD_MIN_RATE`` and ``$RESATTN_DOWNLOAD_RATE_WINDOW`` if
        set, else 1024 bytes a second over 30 seconds (curl's ``--speed-limit``
        and ``--speed-time``).
    max_time : float, optional
        Seconds for the whole download, all tries and waits together.
        Default: ``$RESATTN_DOWNLOAD_MAX_TIME`` if set, else 3600.

    Returns
    -------
    str
        The absolute path ``<cache>/weights/<name>``, a file whose blob id is
        ``blob``. A file already there with that id is returned without
        network access.

    Raises
    ------
    DownloadError
        The file could not be downloaded (offline, unreachable, HTTP error, an
        HTML page instead of the file, more than ``max_bytes``, no room on the
        disk, too slow, past ``max_time``, or the retries ran out). One line,
        which says how to put the file in place by hand.
    ValueError
        The downloaded file does not have blob id ``blob`` (it is deleted); an
        argument is not valid; or a cache path is of the wrong kind (the
        cache folder or ``$RESATTN_HOME`` a file, the file's place a folder, a
        ``.part`` or ``.lock`` file a symbolic link or a folder). The cache
        never writes through a symbolic link it did not make.

    Warns
    -----
    UserWarning
        A file at the final name had another blob id; it is downloaded again.
    """
    blob = _check_blob(blob)
    _check_url(url)
    name = _filename(url, filename)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ValueError("timeout must be a positive number of seconds or None, got %r"
                         % (timeout,))
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError("retries must be an int >= 0, got %r" % (retries,))
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                  or max_bytes < 0):
        raise ValueError("max_bytes must be an int >= 0 (the file's size) or None, got %r"
                         % (max_bytes,))
    min_rate = _limit("min_rate", min_rate, zero_ok=True)
    rate_window = _limit("rate_window", rate_window)
    max_time = _limit("max_time", max_time)

    final = _weights_path(name, root)
    if _file_blob(final) == blob:
        return final
    folder = os.path.dirname(final)
    _check_folders(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ValueError("cannot make the cache folder %s (%s); set RESATTN_HOME (or root=) "
                         "to a folder you can write" % (folder, err.strerror or err)) from None
    limits = _Limits(max_bytes, min_rate, rate_window, max_time, timeout)
    with _locked(final + ".lock"):
        actual = _file_blob(final)  # another process may have finished meanwhile
        if actual == blob:
            return final
        if actual is not None:
            warnings.warn("%s has git blob id %s, not %s; downloading it again from %s"
                          % (final, actual, blob, url), stacklevel=2)
        part = final + ".part"
        _fetch(url, part, final, blob, bool(progress), retries, limits)
        actual = blob_id(part)
        if actual != blob:
            _remove(part)
            raise ValueError("%s has git blob id %s, expected %s: corrupted download or a "
                             "different file; it was deleted" % (url, actual, blob))
        os.replace(part, final)
        _fsync_dir(folder)
        _write_sidecar(final, blob)
    return final
