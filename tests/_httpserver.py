"""A real HTTP file server on 127.0.0.1 for fsspec's ``http://`` filesystem.

It serves the files below a folder with ``HEAD`` and ``GET`` (single byte ranges
included), and sends the validators a test asks for: ``Last-Modified`` (from the
file's mtime) and/or an ``ETag``, or neither. It counts the requests it answers.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass
class HttpFiles:
    """The server's folder, its URL, what it sends, and what it was asked."""

    root: Path
    url: str
    etag: bool = False
    last_modified: bool = True
    log: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, contains: str = "") -> int:
        with self.lock:
            return sum(1 for m, path in self.log if m == method and contains in path)


def _handler(files: HttpFiles) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _file(self) -> Path | None:
            relative = self.path.split("?", 1)[0].lstrip("/")
            path = (files.root / relative).resolve()
            if files.root.resolve() not in path.parents or not path.is_file():
                return None
            return path

        def _headers(self, path: Path, length: int) -> None:
            info = path.stat()
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if files.last_modified:
                stamp = email.utils.formatdate(info.st_mtime, usegmt=True)
                self.send_header("Last-Modified", stamp)
            if files.etag:
                digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
                self.send_header("ETag", f'"{digest}"')
            self.end_headers()

        def _missing(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            with files.lock:
                files.log.append(("HEAD", self.path))
            path = self._file()
            if path is None:
                self._missing()
                return
            self.send_response(200)
            self._headers(path, path.stat().st_size)

        def do_GET(self) -> None:
            with files.lock:
                files.log.append(("GET", self.path))
            path = self._file()
            if path is None:
                self._missing()
                return
            data = path.read_bytes()
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes=") :].partition("-")
                if first:
                    start, end = int(first), (int(last) + 1 if last else len(data))
                else:
                    start, end = max(0, len(data) - int(last)), len(data)
                part = data[start:end]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self._headers(path, len(part))
                self.wfile.write(part)
                return
            self.send_response(200)
            self._headers(path, len(data))
            self.wfile.write(data)

    return Handler


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[HttpFiles]:
    """A fresh folder served over HTTP on 127.0.0.1 (Last-Modified, no ETag)."""
    root = tmp_path / "served"
    root.mkdir()
    files = HttpFiles(root, "")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    files.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def set_mtime(path: Path, seconds: float) -> None:
    """Give ``path`` a modification time (whole seconds, as HTTP dates have)."""
    os.utime(path, (seconds, seconds))
