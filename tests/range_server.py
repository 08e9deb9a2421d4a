"""A small HTTP file server for tests that answers ``Range`` requests the way
Hugging Face's CDN does, redirects ``resolve`` URLs, and counts every byte
it sends. Real HTTP over loopback; nothing is mocked."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Served:
    url: str
    bytes_sent: int = 0
    requests: list[str] = field(default_factory=list)


@contextmanager
def serve_files(root: Path) -> Iterator[Served]:
    """``/files/NAME`` with ranges, ``/ORG/REPO/resolve/REV/NAME`` → 302 there,
    ``/norange/NAME`` ignoring ranges."""
    served = Served(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            served.requests.append(self.path)
            if match := re.fullmatch(r"/[^/]+/[^/]+/resolve/[^/]+/(.+)", self.path):
                self.send_response(302)
                self.send_header("Location", f"/files/{match.group(1)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            kind, _, name = self.path.lstrip("/").partition("/")
            path = root / name
            if kind not in ("files", "norange") or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if kind == "files" and ranged:
                start = int(ranged.group(1))
                end = min(int(ranged.group(2) or len(data) - 1), len(data) - 1)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                body = data[start : end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                body = data
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                return
            with lock:
                served.bytes_sent += len(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
