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

This module uses the standard library only and does not import MXNet.
"""
import contextlib
import hashlib
import http.client
import os
import posixpath
import re
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


def _file_blob(path):
    """The blob id of the file at ``path``, or None if there is no file.

    The ``.blob`` sidecar is trusted only while the file's size, mtime, ctime
    and inode are those it records; otherwise the file is hashed again.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        with open(path + ".blob") as f:
            fields = f.read().split()
        if len(fields) == 5 and _BLOB_RE.fullmatch(fields[0]) and fields[1:] == _stat_key(st):
            return fields[0]
    except OSError:
        pass
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


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing)."""
    with open(path, "a") as f:
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


def _fetch_once(url, part, name, progress, timeout):
    """One HTTP request appending to (206) or rewriting (200) ``part``.

    Returns False when the server answers 416 (nothing left to send from the
    size ``part`` has), True otherwise. Raises on errors; what arrived stays in
    ``part``.
    """
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": "resattn-hub"}
    if have:
        headers["Range"] = "bytes=%d-" % have
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            return False
        raise
    with response:
        length = response.headers.get("Content-Length", "").strip()
        length = int(length) if length.isdigit() else None
        if response.getcode() == 206:
            content_range = response.headers.get("Content-Range", "").strip()
            match = _CONTENT_RANGE_RE.fullmatch(content_range)
            if not match or int(match.group(1)) != have:
                open(part, "wb").close()  # start again from zero on the next try
                raise _Truncated("the server resumed at the wrong offset (%r for byte %d)"
                                 % (content_range, have))
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:  # 200: the whole file, whether or not a range was asked for
            have, total, mode = 0, length, "wb"
        bar = _Progress(name, total, have, progress)
        received = 0
        try:
            with open(part, mode) as f:
                try:
                    # read1: what has arrived, so nothing is lost if a later read times out
                    for chunk in iter(lambda: response.read1(_CHUNK), b""):
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                finally:
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            bar.close()
    # http.client returns b"" on an early close instead of raising IncompleteRead
    if length is not None and received < length:
        raise _Truncated("the connection closed after %d of %d bytes" % (received, length))
    return True


def _is_transient(exc):
    """Whether trying ``exc``'s request again may succeed."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in _TRANSIENT_STATUS
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError))
    return isinstance(exc, (http.client.HTTPException, ConnectionError, TimeoutError))


def _describe(exc):
    if isinstance(exc, urllib.error.HTTPError):
        return "HTTP error %d (%s)" % (exc.code, exc.reason)
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return "%s: %s" % (type(exc).__name__, exc)


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError)


def _fetch(url, part, final, blob, progress, timeout, retries):
    """Fill ``part`` with the file at ``url``, resuming and retrying cut transfers."""
    name = os.path.basename(final)
    failures, best = 0, -1
    while True:
        try:
            complete = _fetch_once(url, part, name, progress, timeout)
        except _NETWORK_ERRORS as exc:
            if not _is_transient(exc):
                raise DownloadError(url, final, blob, _describe(exc)) from None
            size = os.path.getsize(part) if os.path.exists(part) else 0
            if size > best:  # bytes arrived since the last failure: the retries start over
                failures, best = 0, size
            failures += 1
            if failures > retries:
                raise DownloadError(url, final, blob, "%s (gave up after %d tries; the %s that "
                                    "arrived are kept in %s and resumed next time)"
                                    % (_describe(exc), failures, _size(size), part)) from None
            time.sleep(_RETRY_DELAY * failures)
            continue
        if complete:
            return
        if blob_id(part) == blob:  # 416 and the part is already the whole file
            return
        _remove(part)  # 416 and the part is not the file: start again from zero


def download(url, blob, filename=None, root=None, progress=True, timeout=30, retries=3):
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
        How many times a cut or timed-out transfer is tried again, resuming
        from what arrived; the count starts over whenever more bytes arrived.
        Default 3.

    Returns
    -------
    str
        The absolute path ``<cache>/weights/<name>``, a file whose blob id is
        ``blob``. A file already there with that id is returned without
        network access.

    Raises
    ------
    DownloadError
        The file could not be downloaded (offline, unreachable, HTTP error, or
        the retries ran out). The message says how to put the file in place by
        hand.
    ValueError
        The downloaded file does not have blob id ``blob`` (it is deleted), or
        an argument is not valid.

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

    final = _weights_path(name, root)
    if _file_blob(final) == blob:
        return final
    folder = os.path.dirname(final)
    os.makedirs(folder, exist_ok=True)
    with _locked(final + ".lock"):
        actual = _file_blob(final)  # another process may have finished meanwhile
        if actual == blob:
            return final
        if actual is not None:
            warnings.warn("%s has git blob id %s, not %s; downloading it again from %s"
                          % (final, actual, blob, url), stacklevel=2)
        part = final + ".part"
        _fetch(url, part, final, blob, bool(progress), timeout, retries)
        actual = blob_id(part)
        if actual != blob:
            _remove(part)
            raise ValueError("%s has git blob id %s, expected %s: corrupted download or a "
                             "different file; it was deleted" % (url, actual, blob))
        os.replace(part, final)
        _fsync_dir(folder)
        _write_sidecar(final, blob)
    return final
