"""Images in chat requests through the gateway, against FAKE engines that
report which image parts reached them (``images_seen``).

A real server with a small image limit, a 1 s fetch timeout, and one
network let through the fetch guard: ``127.0.0.2/32``, where a real HTTPS
image server runs with a certificate from a test CA (``trustme``; the server
trusts it through ``SSL_CERT_FILE``). Every other loopback or private
address must be refused, redirects included. The real engines' side
(llama-server and vLLM encoding the image) is in ``tests/e2e/test_vision.py``.
"""

from __future__ import annotations

import base64
import io
import random
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import trustme
from PIL import Image

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import free_port
from tests.integration.fake_engines import FakeCluster, fake_cluster

pytestmark = pytest.mark.timeout(180)

MAX_BYTES = 64 * 1024
GUARDED_HOST = "127.0.0.2"


def png(width: int = 32, height: int = 32, *, noise: bool = False) -> bytes:
    """A PNG; with ``noise``, random pixels, which do not compress."""
    image = Image.new("RGB", (width, height), (200, 40, 40))
    if noise:
        image = Image.frombytes(
            "RGB", (width, height), random.Random(1).randbytes(width * height * 3)
        )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bmp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "BMP")
    return out.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class _Images(BaseHTTPRequestHandler):
    port = 0
    routes: ClassVar[dict[str, tuple[int, str, bytes]]] = {}

    def do_GET(self) -> None:
        if self.path == "/slow.png":
            time.sleep(3)
        if self.path == "/to-loopback":
            self._answer(
                302, "text/plain", b"", {"Location": f"https://127.0.0.1:{self.port}/cat.png"}
            )
            return
        if self.path == "/to-cat":
            self._answer(302, "text/plain", b"", {"Location": "/cat.png"})
            return
        status, kind, body = self.routes.get(self.path, (404, "text/plain", b"not here"))
        self._answer(status, kind, body)

    def _answer(
        self, status: int, kind: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Setup:
    cluster: FakeCluster
    images: str
    """https://127.0.0.2:PORT"""
    port: int

    def chat(self, role: str, *parts: Any, **extra: Any) -> httpx.Response:
        content = [{"type": "text", "text": "what is this"}, *parts]
        body = {
            "model": self.cluster.names[role],
            "messages": [{"role": "user", "content": content}],
            **extra,
        }
        with self.cluster.http() as http:
            return http.post("/chat/completions", json=body)

    def served(self, role: str) -> int:
        stats: dict[str, int] = httpx.get(
            f"{self.cluster.engines[role].url}/stats", timeout=5
        ).json()
        return stats["served"]


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels) -> Iterator[Setup]:
    directory = Path(tmp_path_factory.mktemp("images"))
    ca = trustme.CA()
    cert = ca.issue_cert(GUARDED_HOST, "127.0.0.1", "localhost")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    _Images.port = port
    _Images.routes = {
        "/cat.png": (200, "image/png", png()),
        "/big.png": (200, "image/png", png(400, 400, noise=True)),
        "/page.html": (200, "text/html", b"<html>not an image</html>"),
        "/lying.png": (200, "image/png", b"GIF? no: plain text pretending"),
    }
    httpd = ThreadingHTTPServer((GUARDED_HOST, port), _Images)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    env = {
        "CORRAL_IMAGE_MAX_BYTES": str(MAX_BYTES),
        "CORRAL_IMAGE_FETCH_TIMEOUT": "1",
        "CORRAL_IMAGE_FETCH_NETWORKS": f"{GUARDED_HOST}/32",
        "SSL_CERT_FILE": str(ca_file),
    }
    roles: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
        "eyes": ((), {"categories": ["llm", "vision"]}),
        "text": ((), {}),
    }
    try:
        with fake_cluster(directory, tiny_models, roles, env=env) as cluster:
            yield Setup(cluster, f"https://{GUARDED_HOST}:{port}", port)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_data_uri_reaches_the_engine_unchanged(setup: Setup) -> None:
    url = data_uri(png())
    r = setup.chat("eyes", image(url))
    assert r.status_code == 200, r.text
    assert r.json()["images_seen"] == [f"{url[:40]} ({len(url)})"]


def test_an_https_image_is_fetched_and_sent_on_as_a_data_uri(setup: Setup) -> None:
    expected = data_uri(png())
    r = setup.chat("eyes", image(f"{setup.images}/cat.png"))
    assert r.status_code == 200, r.text
    assert r.json()["images_seen"] == [f"{expected[:40]} ({len(expected)})"]
    # The bare-string form, a redirect on the same host, and a stream.
    r = setup.chat("eyes", {"type": "image_url", "image_url": f"{setup.images}/to-cat"})
    assert r.status_code == 200, r.text
    assert r.json()["images_seen"][0].startswith("data:image/png;base64,")
    with setup.cluster.http() as http:
        body = {
            "model": setup.cluster.names["eyes"],
            "stream": True,
            "messages": [{"role": "user", "content": [image(f"{setup.images}/cat.png")]}],
        }
        with http.stream("POST", "/chat/completions", json=body) as s:
            assert s.status_code == 200
            events = b"".join(s.iter_raw())
    assert events.rstrip().endswith(b"data: [DONE]")
    assert b'"usage"' not in events  # the client did not ask for it


@pytest.mark.parametrize(
    ("role", "part", "code", "words"),
    [
        ("text", image(data_uri(png())), "model_not_vision", "does not accept images"),
        ("eyes", image("data:image/png;base64,iVBORw0KGgo!!!"), "invalid_image", "base64"),
        (
            "eyes",
            image(data_uri(bmp(), "image/bmp")),
            "unsupported_image_type",
            "supported",
        ),
        ("eyes", image(data_uri(b"hello", "text/plain")), "unsupported_image_type", "not an image"),
        ("eyes", image(data_uri(png()[:60])), "invalid_image", "damaged"),
        ("eyes", image(data_uri(png(400, 400, noise=True))), "image_too_large", str(MAX_BYTES)),
        ("eyes", image("file:///etc/passwd"), "invalid_image_url", "https://"),
        (
            "eyes",
            {"type": "video_url", "video_url": {"url": "https://example.com/a.mp4"}},
            "unsupported_url",
            "data: URI",
        ),
    ],
    ids=[
        "text-model",
        "base64",
        "bmp",
        "not-image",
        "damaged",
        "too-large",
        "file-url",
        "video-url",
    ],
)
def test_bad_images_get_a_400_and_never_reach_the_engine(
    setup: Setup, role: str, part: dict[str, Any], code: str, words: str
) -> None:
    before = setup.served(role)
    r = setup.chat(role, part)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert words in error["message"], error
    assert error["param"] == "messages[0].content[1]"
    assert setup.served(role) == before
    assert setup.chat(role).status_code == 200  # the engine is still there


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("https://127.0.0.1:{port}/cat.png", "127.0.0.1, which is not a public address"),
        ("https://localhost:{port}/cat.png", "not a public address"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254, which is not a public"),
        ("https://10.0.0.1/a.png", "10.0.0.1, which is not a public"),
        ("https://[::1]:{port}/cat.png", "::1, which is not a public"),
        ("https://[::ffff:127.0.0.1]:{port}/cat.png", "not a public address"),
        ("http://127.0.0.2:{port}/cat.png", "only https://"),
        ("{images}/to-loopback", "127.0.0.1, which is not a public address"),
        ("{images}/page.html", "content type text/html"),
        ("{images}/lying.png", "not an image of a supported type"),
        ("{images}/big.png", "over the"),
        ("{images}/slow.png", "within 1 s"),
        ("{images}/missing.png", "HTTP 404"),
        ("https://user:pw@127.0.0.2:{port}/cat.png", "credentials"),
    ],
    ids=[
        "loopback", "localhost", "metadata", "private", "ipv6-loopback", "mapped-ipv6",
        "plain-http", "redirect-to-loopback", "html", "lying-type", "too-big", "slow",
        "missing", "credentials",
    ],
)  # fmt: skip
def test_image_urls_cannot_reach_internal_addresses_or_break_limits(
    setup: Setup, path: str, words: str
) -> None:
    url = path.format(port=setup.port, images=setup.images)
    before = setup.served("eyes")
    started = time.monotonic()
    r = setup.chat("eyes", image(url))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] in ("invalid_image_url", "unsupported_image_type", "invalid_image"), error
    assert words in error["message"], error
    assert time.monotonic() - started < 5
    assert setup.served("eyes") == before
