"""A real HTTP file server on 127.0.0.1 for download and source-resolution tests.

It serves in-memory files with ``Range``/``If-Range``, ``ETag`` and
``Last-Modified``, HTML directory listings, and the failures downloads must
survive: a connection dropped mid-body, a server that ignores ``Range``, and
transient 5xx answers. Every request is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Drop:
    """Send ``after`` bytes of the body, then close the connection."""

    after: int


@dataclass
class ServedFile:
    data: bytes
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class FileServer:
    """Files by path; knobs for failure modes; ``requests`` logs what clients sent."""

    files: dict[str, ServedFile] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)
    ignore_range: bool = False
    # path -> what the next requests get, one entry each, before normal service:
    # an HTTP status (e.g. 503), or Drop(n) (n body bytes, then the connection closes)
    script: dict[str, list] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    base_url: str = ""

    def add(self, path: str, data: bytes, *, etag: bool = True, last_modified: bool = True) -> str:
        self.files[path] = ServedFile(
            data,
            etag=f'"{hashlib.md5(data).hexdigest()}"' if etag else None,
            last_modified=formatdate(1_700_000_000, usegmt=True) if last_modified else None)
        return self.url(path)

    def add_page(self, path: str, html: str) -> str:
        self.pages[path] = html
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base_url + path

    def gets(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == "GET" and r["path"] == path]


def _handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _serve(self, body: bool):
            path = self.path.split("?")[0]
            server.requests.append({"method": self.command, "path": path,
                                    "headers": dict(self.headers.items())})
            self.close_connection = True
            step = server.script[path].pop(0) if server.script.get(path) else None
            if isinstance(step, int):
                self._reply(step, b"try again later", {}, body)
                return
            if path in server.pages:
                page = server.pages[path].encode()
                self._reply(200, page, {"Content-Type": "text/html; charset=utf-8"}, body)
                return
            served = server.files.get(path)
            if served is None:
                self._reply(404, b"not found", {}, body)
                return
            headers = {"Accept-Ranges": "none" if server.ignore_range else "bytes"}
            if served.etag:
                headers["ETag"] = served.etag
            if served.last_modified:
                headers["Last-Modified"] = served.last_modified
            data, status = served.data, 200
            start = self._range_start(served)
            if start is not None:
                if start >= len(data):
                    headers["Content-Range"] = f"bytes */{len(data)}"
                    self._reply(416, b"", headers, body)
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                data = data[start:]
            self._reply(status, data, headers, body, cut_at=step.after if step else None)

        def _range_start(self, served: ServedFile) -> int | None:
            if server.ignore_range:
                return None
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if not match:
                return None
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range not in (served.etag, served.last_modified):
                return None  # the client's copy is stale: send the whole file
            return int(match.group(1))

        def _reply(self, status, data, headers, body, cut_at=None):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(data if cut_at is None else data[:cut_at])
            self.wfile.flush()

    return Handler


class running:
    """``with running(FileServer()) as server:`` serves on a free loopback port."""

    def __init__(self, server: FileServer):
        self.server = server

    def __enter__(self) -> FileServer:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.server))
        self.httpd.daemon_threads = True
        self.server.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self.server

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def directory_listing(names: list[str]) -> str:
    """An Apache/nginx-style index page linking each name."""
    links = "\n".join(f'<a href="{n}">{n}</a>' for n in names)
    return f"<html><head><title>Index</title></head><body><pre>\n<a href=\"../\">../</a>\n{links}\n</pre></body></html>"
