"""A loopback HTTP server for tests: in-memory files, with faults switched on per path.

Nothing in the tests reaches the internet: download code is pointed at
``site.base`` (``http://127.0.0.1:PORT``) by the ``server`` fixture of conftest.py.
"""
import hashlib
import http.server
import re
import threading

__all__ = ["git_blob", "Site", "make_handler", "serve"]


def git_blob(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Site:
    """In-memory files served over HTTP, with faults that tests switch on per path."""

    def __init__(self):
        self.files = {}          # path -> bytes
        self.corrupt = {}        # path -> the bytes served instead
        self.cut = {}            # path -> [bytes sent before closing, requests left to cut]
        self.stall = {}          # path -> [bytes sent before stalling, requests left to stall]
        self.status = {}         # path -> statuses answered (one per request) before serving
        self.ignore_range = set()
        self.no_length = set()
        self.requests = []       # (path, Range header or None, status sent)
        self.release = threading.Event()
        self.lock = threading.Lock()

    def add(self, path, data):
        self.files[path] = data
        return git_blob(data)

    def ranges(self):
        return [r for _, r, _ in self.requests]


def make_handler(site):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path
            rng = self.headers.get("Range")
            with site.lock:
                queued = site.status.get(path)
                forced = queued.pop(0) if queued else None
                cut = site.cut.get(path)
                cut_at = None
                if cut and cut[1] > 0:
                    cut[1] -= 1
                    cut_at = cut[0]
                stall = site.stall.get(path)
                stall_at = None
                if stall and stall[1] > 0:
                    stall[1] -= 1
                    stall_at = stall[0]
            if forced is not None or path not in site.files:
                code = forced or 404
                site.requests.append((path, rng, code))
                self.send_error(code)
                return
            data = site.corrupt.get(path, site.files[path])
            start, code = 0, 200
            if rng and path not in site.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                if start >= len(data):
                    site.requests.append((path, rng, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % len(data))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = 206
            site.requests.append((path, rng, code))
            body = data[start:]
            self.send_response(code)
            if path not in site.no_length:
                self.send_header("Content-Length", str(len(body)))
            if code == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1,
                                                                     len(data)))
            self.end_headers()
            if cut_at is not None:  # announce the whole body, send part, hang up
                self.wfile.write(body[:cut_at])
                self.wfile.flush()
                self.close_connection = True
                return
            if stall_at is not None:  # send part, then go quiet until the client times out
                self.wfile.write(body[:stall_at])
                self.wfile.flush()
                site.release.wait(2)
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


def serve():
    """Start a server on a free port; returns its :class:`Site` (``site.stop()`` ends it)."""
    site = Site()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(site))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    site.base = "http://127.0.0.1:%d" % httpd.server_address[1]
    running = [True]

    def stop():
        if running[0]:
            running[0] = False
            site.release.set()
            httpd.shutdown()
            httpd.server_close()
            thread.join(2)

    site.stop = stop
    return site


