"""Test images and a real HTTPS server for them, with its own CA.

The server listens on a loopback address of the test's choosing
(``127.0.0.2`` by default, so it can be told apart from ``127.0.0.1`` in the
gateway's fetch guard) with a certificate from a ``trustme`` CA; a corral
server trusts it through ``SSL_CERT_FILE=<ca_file>``.
"""

from __future__ import annotations

import base64
import io
import random
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from PIL import Image

from tests.helpers import free_port

GUARDED_HOST = "127.0.0.2"


def png(width: int = 32, height: int = 32, *, noise: bool = False) -> bytes:
    """A PNG; with ``noise``, random pixels, which do not compress."""
    image = Image.new("RGB", (width, height), (200, 40, 40))
    if noise:
        pixels = random.Random(1).randbytes(width * height * 3)
        image = Image.frombytes("RGB", (width, height), pixels)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bmp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "BMP")
    return out.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@dataclass(frozen=True)
class ImageServer:
    url: str
    """``https://HOST:PORT``"""
    port: int
    ca_file: Path


@contextmanager
def image_server(
    directory: Path, routes: Mapping[str, tuple[int, str, bytes]], host: str = GUARDED_HOST
) -> Iterator[ImageServer]:
    """Serves ``routes`` (path → status, content type, body) over HTTPS, plus
    ``/slow.png`` (3 s, then 404), ``/to-cat`` (302 to ``/cat.png``) and
    ``/to-loopback`` (302 to ``https://127.0.0.1:PORT/cat.png``)."""
    ca = trustme.CA()
    cert = ca.issue_cert(host, "127.0.0.1", "localhost")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow.png":
                time.sleep(3)
            elif self.path == "/to-loopback":
                self._answer(302, b"", f"https://127.0.0.1:{port}/cat.png")
                return
            elif self.path == "/to-cat":
                self._answer(302, b"", "/cat.png")
                return
            status, kind, body = routes.get(self.path, (404, "text/plain", b"not here"))
            self._answer(status, body, kind=kind)

        def _answer(
            self, status: int, body: bytes, location: str = "", kind: str = "text/plain"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            if location:
                self.send_header("Location", location)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer((host, port), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield ImageServer(f"https://{host}:{port}", port, ca_file)
    finally:
        httpd.shutdown()
        httpd.server_close()
