"""resattn.hub: the verified weight-file cache, against a loopback HTTP server."""
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import warnings

import pytest

from loopback import git_blob
from resattn import hub

SIZE = 200_000
EMPTY_BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git hash-object /dev/null


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder via $RESATTN_HOME; no retry delays."""
    monkeypatch.setenv("RESATTN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hub, "_RETRY_DELAY", 0)
    return tmp_path / "home"


@pytest.fixture
def data():
    return os.urandom(SIZE)


def leftovers(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ------------------------------------------------------------------- blob ids


def test_blob_id_matches_git_hash_object(tmp_path):
    path = tmp_path / "w.params"
    path.write_bytes(os.urandom(3 * hub._CHUNK // 2))  # more than one chunk
    out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert hub.blob_id(path) == out
    assert hub.blob_id(str(path)) == out
    assert hub.blob_id(path.read_bytes()) == out
    assert hub.blob_id(bytearray(path.read_bytes())) == out
    assert hub.blob_id(b"") == EMPTY_BLOB


def test_blob_id_rejects_other_types():
    with pytest.raises(TypeError, match="got int"):
        hub.blob_id(42)


# ------------------------------------------------------------------ cache dir


def test_cache_dir_default_env_and_root(tmp_path, monkeypatch):
    monkeypatch.delenv("RESATTN_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.cache_dir() == str(tmp_path / ".resattn")
    monkeypatch.setenv("RESATTN_HOME", "")  # empty counts as unset
    assert hub.cache_dir() == str(tmp_path / ".resattn")
    monkeypatch.setenv("RESATTN_HOME", "~/elsewhere")
    assert hub.cache_dir() == str(tmp_path / "elsewhere")
    assert hub.cache_dir(tmp_path / "given") == str(tmp_path / "given")
    assert not os.path.exists(tmp_path / ".resattn")  # a query creates nothing
    assert not os.path.exists(tmp_path / "elsewhere")


def test_env_and_root_decide_where_files_land(server, cache, data, tmp_path):
    blob = server.add("/w.params", data)
    path = hub.download(server.base + "/w.params", blob, progress=False)
    assert path == str(cache / "weights" / "w.params")
    other = hub.download(server.base + "/w.params", blob, root=tmp_path / "r",
                         filename="renamed.params", progress=False)
    assert other == str(tmp_path / "r" / "weights" / "renamed.params")
    assert open(other, "rb").read() == data
    assert hub.is_cached("renamed.params", blob, root=tmp_path / "r")
    assert not hub.is_cached("renamed.params", blob)  # not in $RESATTN_HOME


# ------------------------------------------------------------------ downloads


def test_first_download_then_offline_reuse(server, cache, data):
    blob = server.add("/w.params", data)
    url = server.base + "/w.params"
    assert not hub.is_cached(url, blob)
    path = hub.download(url, blob, progress=False)
    assert os.path.isabs(path) and open(path, "rb").read() == data
    assert server.ranges() == [None]
    assert leftovers(cache / "weights") == ["w.params", "w.params.blob", "w.params.lock"]
    assert hub.is_cached(url, blob) and hub.is_cached("w.params", blob)
    assert not hub.is_cached(url, git_blob(b"other"))

    assert hub.download(url, blob, progress=False) == path
    assert len(server.requests) == 1  # the second call made no request
    server.stop()
    assert hub.download(url, blob, progress=False) == path  # works offline
    assert len(server.requests) == 1


def test_sidecar_skips_hashing_but_a_changed_file_is_hashed_again(server, cache, data,
                                                                   monkeypatch):
    blob = server.add("/w.params", data)
    path = hub.download(server.base + "/w.params", blob, progress=False)
    real_blob_id = hub.blob_id

    def no_hashing(_):
        raise AssertionError("hashed although the sidecar matches")

    monkeypatch.setattr(hub, "blob_id", no_hashing)
    assert hub.is_cached("w.params", blob)
    monkeypatch.setattr(hub, "blob_id", real_blob_id)

    st = os.stat(path)
    with open(path, "r+b") as f:  # same size, other bytes, mtime put back
        f.write(bytes([data[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(path) == SIZE
    assert not hub.is_cached("w.params", blob)


def test_cut_connection_is_resumed_with_range(server, cache, data):
    blob = server.add("/w.params", data)
    server.cut["/w.params"] = [50_000, 2]
    path = hub.download(server.base + "/w.params", blob, progress=False, retries=2)
    assert open(path, "rb").read() == data
    assert server.requests == [("/w.params", None, 200),
                               ("/w.params", "bytes=50000-", 206),
                               ("/w.params", "bytes=100000-", 206)]
    assert not os.path.exists(path + ".part")


def test_server_ignoring_range_restarts_from_zero(server, cache, data):
    blob = server.add("/w.params", data)
    server.cut["/w.params"] = [50_000, 1]
    server.ignore_range.add("/w.params")
    path = hub.download(server.base + "/w.params", blob, progress=False)
    assert open(path, "rb").read() == data
    assert server.requests == [("/w.params", None, 200), ("/w.params", "bytes=50000-", 200)]


def test_read_timeout_is_retried_and_resumed(server, cache, data):
    blob = server.add("/w.params", data)
    server.stall["/w.params"] = [70_000, 1]
    path = hub.download(server.base + "/w.params", blob, progress=False, timeout=0.3)
    assert open(path, "rb").read() == data
    assert server.ranges() == [None, "bytes=70000-"]


def test_transient_http_error_is_retried(server, cache, data):
    blob = server.add("/w.params", data)
    server.status["/w.params"] = [503]
    path = hub.download(server.base + "/w.params", blob, progress=False)
    assert open(path, "rb").read() == data
    assert [s for _, _, s in server.requests] == [503, 200]


def test_complete_part_file_is_accepted_after_416(server, cache, data):
    blob = server.add("/w.params", data)
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "w.params.part").write_bytes(data)  # crashed before the rename
    path = hub.download(server.base + "/w.params", blob, progress=False)
    assert open(path, "rb").read() == data
    assert server.requests == [("/w.params", "bytes=%d-" % SIZE, 416)]


def test_corrupted_download_raises_and_leaves_nothing(server, cache, data):
    blob = server.add("/w.params", data)
    wrong = os.urandom(SIZE)
    server.corrupt["/w.params"] = wrong
    url = server.base + "/w.params"
    with pytest.raises(ValueError) as info:
        hub.download(url, blob, progress=False)
    message = str(info.value)
    assert url in message and blob in message and git_blob(wrong) in message
    assert "corrupted download or a different file; it was deleted" in message
    assert leftovers(cache / "weights") == ["w.params.lock"]

    del server.corrupt["/w.params"]  # the next try starts clean and succeeds
    assert open(hub.download(url, blob, progress=False), "rb").read() == data


def test_wrong_part_prefix_is_caught_and_deleted(server, cache, data):
    blob = server.add("/w.params", data)
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "w.params.part").write_bytes(os.urandom(1000))  # not this file
    with pytest.raises(ValueError, match=blob):
        hub.download(server.base + "/w.params", blob, progress=False)
    assert server.ranges() == ["bytes=1000-"]
    assert leftovers(cache / "weights") == ["w.params.lock"]


def _assert_by_hand_message(message, url, final, blob):
    assert url in message
    assert "download %s with a browser or curl and save it as %s (its git blob id must be %s)" \
        % (url, final, blob) in message
    assert "or pass the file's path instead" in message


def test_404_raises_download_error(server, cache):
    blob = git_blob(b"missing")
    url = server.base + "/missing.params"
    with pytest.raises(hub.DownloadError) as info:
        hub.download(url, blob, progress=False)
    err = info.value
    assert isinstance(err, OSError)
    assert "HTTP error 404" in str(err)
    final = str(cache / "weights" / "missing.params")
    _assert_by_hand_message(str(err), url, final, blob)
    assert (err.url, err.path, err.blob) == (url, final, blob)
    assert err.__cause__ is None and err.__suppress_context__  # one clean traceback
    assert len(server.requests) == 1  # a 404 is not retried
    assert leftovers(cache / "weights") == ["missing.params.lock"]


def test_closed_port_raises_download_error(server, cache, data):
    blob = server.add("/w.params", data)
    url = server.base + "/w.params"
    server.stop()
    with pytest.raises(hub.DownloadError) as info:
        hub.download(url, blob, progress=False)
    assert "refused" in str(info.value).lower()
    _assert_by_hand_message(str(info.value), url, str(cache / "weights" / "w.params"), blob)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_stale_wrong_final_file_is_replaced(server, cache, data):
    blob = server.add("/w.params", data)
    (cache / "weights").mkdir(parents=True)
    final = cache / "weights" / "w.params"
    final.write_bytes(b"an old, different file")
    with pytest.warns(UserWarning, match=git_blob(b"an old, different file")):
        path = hub.download(server.base + "/w.params", blob, progress=False)
    assert path == str(final) and final.read_bytes() == data
    assert len(server.requests) == 1


def test_file_placed_by_hand_is_used(server, cache, data):
    blob = git_blob(data)  # the server does not have it
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "w.params").write_bytes(data)
    path = hub.download(server.base + "/w.params", blob, progress=False)
    assert path == str(cache / "weights" / "w.params")
    assert server.requests == []
    assert leftovers(cache / "weights") == ["w.params", "w.params.blob"]  # no lock taken


def test_exhausted_retries_keep_part_and_next_call_completes(server, cache, data):
    blob = server.add("/w.params", data)
    server.cut["/w.params"] = [60_000, 5]
    url = server.base + "/w.params"
    with pytest.raises(hub.DownloadError, match="gave up after 1 tries"):
        hub.download(url, blob, progress=False, retries=0)
    final = cache / "weights" / "w.params"
    assert not final.exists()
    assert (cache / "weights" / "w.params.part").read_bytes() == data[:60_000]

    server.cut.clear()
    assert open(hub.download(url, blob, progress=False), "rb").read() == data
    assert server.ranges() == [None, "bytes=60000-"]


def test_retries_count_failures_without_progress(server, cache, data):
    blob = server.add("/w.params", data)
    server.cut["/w.params"] = [0, 10]  # hang up before any byte, every time
    with pytest.raises(hub.DownloadError, match="gave up after 3 tries"):
        hub.download(server.base + "/w.params", blob, progress=False, retries=2)
    assert len(server.requests) == 3


def test_interrupt_leaves_nothing_at_final_name(server, cache, data, monkeypatch):
    blob = server.add("/w.params", data)
    monkeypatch.setattr(hub, "_CHUNK", 16_384)
    real_update = hub._Progress.update

    def interrupt(self, n):
        real_update(self, n)
        if self.done >= 32_768:
            raise KeyboardInterrupt

    monkeypatch.setattr(hub._Progress, "update", interrupt)
    url = server.base + "/w.params"
    with pytest.raises(KeyboardInterrupt):
        hub.download(url, blob, progress=False)
    assert leftovers(cache / "weights") == ["w.params.lock", "w.params.part"]
    have = os.path.getsize(cache / "weights" / "w.params.part")
    assert 0 < have < SIZE

    monkeypatch.setattr(hub._Progress, "update", real_update)
    path = hub.download(url, blob, progress=False)  # the lock was released; resumes
    assert open(path, "rb").read() == data
    assert server.ranges() == [None, "bytes=%d-" % have]


def test_concurrent_downloads_share_one_transfer(server, cache, data):
    blob = server.add("/w.params", data)
    server.stall["/w.params"] = [10_000, 1]  # hold the first transfer until released
    url = server.base + "/w.params"
    results, errors = [], []

    def fetch():
        try:
            results.append(hub.download(url, blob, progress=False, timeout=5))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    while not server.requests:
        threading.Event().wait(0.01)
    threading.Event().wait(0.1)  # the others are now waiting on the lock
    server.release.set()  # the stalled transfer ends (cut); it is resumed
    for t in threads:
        t.join(5)
    assert errors == []
    assert results == [str(cache / "weights" / "w.params")] * 3
    assert open(results[0], "rb").read() == data
    assert server.ranges() == [None, "bytes=10000-"]  # one transfer, resumed once


# -------------------------------------------------------------------- progress


def test_progress_on_non_tty_stderr(server, cache, data, capsys):
    blob = server.add("/w.params", data)
    hub.download(server.base + "/w.params", blob, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == ["downloading w.params (0.2 MB)", "w.params: 0.2 MB received"]


def test_progress_with_unknown_size_on_a_tty(server, cache, data, monkeypatch):
    blob = server.add("/w.params", data)
    server.no_length.add("/w.params")

    class Terminal:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    path = hub.download(server.base + "/w.params", blob, progress=True)
    assert open(path, "rb").read() == data
    assert term.text.startswith("\rw.params 0 bytes") and term.text.endswith("0.2 MB\n")


def test_progress_bar_with_known_size_on_a_tty(monkeypatch):
    class Terminal:
        text = ""

        def isatty(self):
            return True

        def write(self, s):
            Terminal.text += s

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = hub._Progress("w.params", 1_000_000, 0, True)
    bar.update(500_000)
    bar.last = 0  # let the next draw through
    bar.update(500_000)
    bar.close()
    assert "1.0 MB / 1.0 MB 100%" in Terminal.text and Terminal.text.endswith("\n")


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("kwargs, match", [
    ({"blob": "xyz"}, "40 hex digits.*'xyz'"),
    ({"url": "ftp://host/w.params"}, "http:// or https://.*ftp://host/w.params"),
    ({"url": "http://host/dir/"}, "pass filename="),
    ({"filename": "a/b.params"}, "plain file name.*'a/b.params'"),
    ({"filename": "w.params.part"}, "plain file name.*'w.params.part'"),
    ({"timeout": 0}, "timeout must be a positive number.*0"),
    ({"retries": -1}, "retries must be an int >= 0.*-1"),
])
def test_bad_arguments_are_named(cache, kwargs, match):
    args = {"url": "http://127.0.0.1:9/w.params", "blob": EMPTY_BLOB, "progress": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        hub.download(**args)
    assert not os.path.exists(cache)  # nothing created, nothing fetched


def test_is_cached_without_a_cache_creates_nothing(cache):
    assert not hub.is_cached("http://example.invalid/w.params", EMPTY_BLOB)
    assert not hub.is_cached("w.params", EMPTY_BLOB.upper())
    assert not os.path.exists(cache)


def test_import_is_light():
    code = "import sys, resattn.hub; print('mxnet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    assert out == ["False"]


def test_warning_points_at_the_caller(server, cache, data):
    blob = server.add("/w.params", data)
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "w.params").write_bytes(b"stale")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hub.download(server.base + "/w.params", blob, progress=False)
    assert [os.path.basename(w.filename) for w in caught] == ["test_hub.py"]


# ------------------------------------------------------------- hostile servers


class _Hostile(http.server.BaseHTTPRequestHandler):
    """Answers no loopback.Site gives: an endless body, a trickle, HTML, a redirect loop."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        if self.path == "/loop.params":
            self.send_response(302)
            self.send_header("Location", "/loop.params")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if self.path == "/page.params":
            body = b"<html><body>Please log in</body></html>"
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()  # no Content-Length: the body ends when the connection does
        chunk, pause = (b"\0" * 65536, 0) if self.path == "/endless.params" else (b"x", 0.2)
        try:
            while not self.server.done.is_set():
                self.wfile.write(chunk)
                self.wfile.flush()
                self.server.sent[0] += len(chunk)
                if pause:
                    self.server.done.wait(pause)
        except OSError:  # the client hung up
            pass


@pytest.fixture
def hostile():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    httpd.requests, httpd.sent, httpd.done = [], [0], threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = "http://127.0.0.1:%d" % httpd.server_address[1]
    yield httpd
    httpd.done.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(2)


def _one_line(err):
    text = str(err)
    assert text and "\n" not in text, text
    return text


def test_endless_body_is_cut_off_at_max_bytes(hostile, cache, monkeypatch):
    written = []
    real_remove = hub._remove

    def remove(path):  # how long the .part had grown when it was deleted
        if path.endswith(".part") and os.path.exists(path):
            written.append(os.path.getsize(path))
        real_remove(path)

    monkeypatch.setattr(hub, "_remove", remove)
    url = hostile.base + "/endless.params"
    start = time.monotonic()
    with pytest.raises(hub.DownloadError) as info:
        hub.download(url, EMPTY_BLOB, progress=False, max_bytes=1_000_000)
    seconds = time.monotonic() - start
    message = _one_line(info.value)
    assert "the server sent more than 1000000 bytes, the size of the file (max_bytes); the " \
           "transfer was cut off; nothing was kept" in message
    assert len(written) == 1 and written[0] <= 1_000_000, written
    assert seconds < 5
    assert leftovers(cache / "weights") == ["endless.params.lock"]  # the .part is gone
    assert len(hostile.requests) == 1  # not retried
    print("endless body: %d bytes written, refused after %.2f s" % (written[0], seconds))


def test_announced_size_over_max_bytes_is_refused_before_the_body(server, cache, data):
    blob = server.add("/w.params", data)
    with pytest.raises(hub.DownloadError) as info:
        hub.download(server.base + "/w.params", blob, progress=False, max_bytes=SIZE - 1)
    assert "the server announced %d bytes, more than the %d the file has (max_bytes)" \
        % (SIZE, SIZE - 1) in _one_line(info.value)
    assert leftovers(cache / "weights") == ["w.params.lock"]
    # A .part longer than the file is not part of it: deleted, the file fetched whole.
    (cache / "weights" / "w.params.part").write_bytes(os.urandom(SIZE + 10))
    path = hub.download(server.base + "/w.params", blob, progress=False, max_bytes=SIZE)
    assert open(path, "rb").read() == data
    assert server.ranges()[-1] is None


def test_slow_body_fails_on_the_rate_limit(hostile, cache, monkeypatch):
    monkeypatch.setenv("RESATTN_DOWNLOAD_MIN_RATE", "100")  # bytes a second ...
    monkeypatch.setenv("RESATTN_DOWNLOAD_RATE_WINDOW", "0.5")  # ... over half a second
    start = time.monotonic()
    with pytest.raises(hub.DownloadError) as info:
        hub.download(hostile.base + "/slow.params", EMPTY_BLOB, progress=False, retries=1)
    seconds = time.monotonic() - start
    message = _one_line(info.value)
    assert "the transfer was slower than 100 bytes/s over 0.5 s (min_rate and rate_window, " \
           "or $RESATTN_DOWNLOAD_MIN_RATE and $RESATTN_DOWNLOAD_RATE_WINDOW) (gave up after " \
           "2 tries)" in message
    assert len(hostile.requests) == 2  # tried again once, resuming what arrived
    assert seconds < 3
    print("slow body: refused after %.2f s" % seconds)


def test_whole_download_has_a_time_bound(hostile, cache):
    start = time.monotonic()
    with pytest.raises(hub.DownloadError) as info:  # 5 bytes a second pass min_rate=1
        hub.download(hostile.base + "/slow.params", EMPTY_BLOB, progress=False, min_rate=1,
                     rate_window=0.3, max_time=0.8)
    seconds = time.monotonic() - start
    assert re.search(r"it took longer than 0\.8 s \(max_time, or \$RESATTN_DOWNLOAD_MAX_TIME\); "
                     r"the \d bytes that arrived are kept in ", _one_line(info.value))
    assert 0.7 < seconds < 2.5


def test_retries_do_not_start_over_when_bytes_arrive(server, cache, data):
    blob = server.add("/w.params", data)
    server.cut["/w.params"] = [10_000, 10]  # each try brings 10 kB more, then hangs up
    with pytest.raises(hub.DownloadError, match="gave up after 3 tries"):
        hub.download(server.base + "/w.params", blob, progress=False, retries=2)
    assert server.ranges() == [None, "bytes=10000-", "bytes=20000-"]


@pytest.mark.parametrize("env, value, match", [
    ("RESATTN_DOWNLOAD_MIN_RATE", "fast", r"\$RESATTN_DOWNLOAD_MIN_RATE must be a "
                                          r"non-negative number .*'fast'"),
    ("RESATTN_DOWNLOAD_RATE_WINDOW", "0", r"\$RESATTN_DOWNLOAD_RATE_WINDOW must be a positive"),
    ("RESATTN_DOWNLOAD_MAX_TIME", "-1", r"\$RESATTN_DOWNLOAD_MAX_TIME must be a positive"),
])
def test_bad_limits_in_the_environment_are_named(cache, monkeypatch, env, value, match):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=match):
        hub.download("http://127.0.0.1:9/w.params", EMPTY_BLOB, progress=False)
    assert not os.path.exists(cache)


def test_html_page_with_200_is_refused(hostile, cache):
    with pytest.raises(hub.DownloadError) as info:
        hub.download(hostile.base + "/page.params", EMPTY_BLOB, progress=False)
    assert "the server answered with an HTML page (Content-Type text/html)" \
        in _one_line(info.value)
    assert leftovers(cache / "weights") == ["page.params.lock"]


def test_redirect_loop_is_one_line(hostile, cache):
    with pytest.raises(hub.DownloadError) as info:
        hub.download(hostile.base + "/loop.params", EMPTY_BLOB, progress=False)
    assert "HTTP error 302 (The HTTP server returned a redirect error that would lead to an " \
           "infinite loop." in _one_line(info.value)
    assert leftovers(cache / "weights") == ["loop.params.lock"]


# ---------------------------------------------------------- links and wrong kinds


def test_symlinked_part_is_refused_and_its_target_untouched(server, cache, data, tmp_path):
    blob = server.add("/w.params", data)
    weights = cache / "weights"
    weights.mkdir(parents=True)
    target = tmp_path / "precious.txt"
    target.write_bytes(b"keep me")
    (weights / "w.params.part").symlink_to(target)
    (weights / "x.params.part").symlink_to(tmp_path / "made-by-nobody")  # dangling
    for name in ("w.params", "x.params"):
        with pytest.raises(ValueError) as info:
            hub.download(server.base + "/w.params", blob, filename=name, progress=False)
        assert _one_line(info.value).startswith(
            "%s is a symbolic link, not the partial download the cache keeps there: remove "
            "or rename it" % (weights / (name + ".part")))
    assert target.read_bytes() == b"keep me"
    assert not (tmp_path / "made-by-nobody").exists()
    assert server.requests == []
    # A hard link would be written through too: refused as well, before any request.
    os.remove(weights / "w.params.part")
    os.link(target, weights / "w.params.part")
    with pytest.raises(ValueError, match="is a file with 2 names"):
        hub.download(server.base + "/w.params", blob, progress=False)
    assert target.read_bytes() == b"keep me"


def test_symlinked_lock_is_refused_and_nothing_is_created(server, cache, data, tmp_path):
    blob = server.add("/w.params", data)
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "w.params.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="w.params.lock is a symbolic link, not the lock file"):
        hub.download(server.base + "/w.params", blob, progress=False)
    assert not (tmp_path / "elsewhere").exists() and server.requests == []


def test_cache_paths_of_the_wrong_kind_are_one_line(server, cache, data, tmp_path,
                                                    monkeypatch):
    blob = server.add("/w.params", data)
    url = server.base + "/w.params"
    # The file's place is a folder.
    (cache / "weights" / "w.params").mkdir(parents=True)
    with pytest.raises(ValueError) as info:
        hub.download(url, blob, progress=False)
    assert _one_line(info.value).startswith(
        "%s is a folder, not the file the cache keeps there" % (cache / "weights" / "w.params"))
    with pytest.raises(ValueError, match="is a folder, not the file"):
        hub.is_cached("w.params", blob)
    # The lock is a folder.
    (cache / "weights" / "v.params.lock").mkdir()
    with pytest.raises(ValueError) as info:
        hub.download(url, blob, filename="v.params", progress=False)
    assert _one_line(info.value).startswith(
        "%s is a folder, not the lock file" % (cache / "weights" / "v.params.lock"))
    # $RESATTN_HOME is a file.
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("RESATTN_HOME", str(home))
    for call in (lambda: hub.download(url, blob, progress=False),
                 lambda: hub.is_cached("w.params", blob)):
        with pytest.raises(ValueError) as info:
            call()
        assert _one_line(info.value) == (
            "the cache folder %s cannot be made: %s ($RESATTN_HOME) is a file, not a folder; "
            "set RESATTN_HOME (or root=) to a folder, or remove it" % (home / "weights", home))
    assert home.read_text() == "not a folder" and server.requests == []


# ------------------------------------------------------------ registered sizes


def _saved_size(net, tmp_path):
    import mxnet as mx
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))  # the shapes are known after one forward
    path = tmp_path / "seed.params"
    net.save_parameters(str(path))
    return os.path.getsize(path)


def test_registered_sizes_are_those_the_reference_code_gives(tmp_path):
    """The seed's files are save_parameters of the two namings (exact); the PyTorch one is
    a legacy torch pickle: the largest of torch 0.3/0.4.0/0.4.1, Python 2 or 3, with
    15-digit storage keys (heap addresses) is its bound."""
    pytest.importorskip("mxnet")
    from refimpl import seed_gluon
    from resattn.models import weights as W
    sizes = {"old": _saved_size(seed_gluon.ResidualAttentionModel_92_32input_update(),
                                tmp_path),
             "new": _saved_size(seed_gluon.ResidualAttentionModel_32input(
                 additional_stage=True), tmp_path)}
    entries = {w.tag: w for w in W.list_weights()}
    for tag in ("seed-95.41", "seed-95.65", "seed-95.68", "seed-96.57"):
        assert entries[tag].size == sizes["old"] == 48_994_898, tag
    for tag in ("seed-96.65", "seed-96.98", "seed-97.00", "seed-97.14"):
        assert entries[tag].size == sizes["new"] == 48_994_728, tag
    pytest.importorskip("torch")
    from refimpl import legacy_torch, pytorch_ref
    state = pytorch_ref.ResidualAttentionModel_92_32input_update().state_dict()
    bounds = []
    for version in legacy_torch.TORCH_VERSIONS:
        kept = {k: v for k, v in state.items()
                if version == "0.4.1" or not k.endswith(".num_batches_tracked")}
        keys = [str(10 ** 15 - 1 - i) for i in range(len(kept))]
        for py2 in (True, False):
            bounds.append(len(legacy_torch.legacy_bytes(
                kept, py2=py2, torch_version=version, metadata=state._metadata, keys=keys)))
    tensors = sum(v.numel() * v.element_size() for v in state.values())
    assert entries["pytorch-95.4"].size == max(bounds) == 80_114_481
    assert tensors < max(bounds) < tensors * 1.003  # tight: the pickles add 0.2%
