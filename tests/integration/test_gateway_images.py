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

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.tiny_models import TinyModels
from tests.images import GUARDED_HOST, bmp, data_uri, image_part, image_server, png
from tests.integration.fake_engines import FakeCluster, fake_cluster

pytestmark = pytest.mark.timeout(180)

MAX_BYTES = 64 * 1024


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


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels) -> Iterator[Setup]:
    directory = Path(tmp_path_factory.mktemp("images"))
    routes = {
        "/cat.png": (200, "image/png", png()),
        "/big.png": (200, "image/png", png(400, 400, noise=True)),
        "/page.html": (200, "text/html", b"<html>not an image</html>"),
        "/lying.png": (200, "image/png", b"GIF? no: plain text pretending"),
    }
    roles: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
        "eyes": ((), {"categories": ["llm", "vision"]}),
        "text": ((), {}),
    }
    with image_server(directory, routes) as images:
        env = {
            "CORRAL_IMAGE_MAX_BYTES": str(MAX_BYTES),
            "CORRAL_IMAGE_FETCH_TIMEOUT": "1",
            "CORRAL_IMAGE_FETCH_NETWORKS": f"{GUARDED_HOST}/32",
            "SSL_CERT_FILE": str(images.ca_file),
        }
        with fake_cluster(directory, tiny_models, roles, env=env) as cluster:
            yield Setup(cluster, images.url, images.port)


def test_a_data_uri_reaches_the_engine_unchanged(setup: Setup) -> None:
    url = data_uri(png())
    r = setup.chat("eyes", image_part(url))
    assert r.status_code == 200, r.text
    assert r.json()["images_seen"] == [f"{url[:40]} ({len(url)})"]


def test_an_https_image_is_fetched_and_sent_on_as_a_data_uri(setup: Setup) -> None:
    expected = data_uri(png())
    r = setup.chat("eyes", image_part(f"{setup.images}/cat.png"))
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
            "messages": [{"role": "user", "content": [image_part(f"{setup.images}/cat.png")]}],
        }
        with http.stream("POST", "/chat/completions", json=body) as s:
            assert s.status_code == 200
            events = b"".join(s.iter_raw())
    assert events.rstrip().endswith(b"data: [DONE]")
    assert b'"usage"' not in events  # the client did not ask for it


@pytest.mark.parametrize(
    ("role", "part", "code", "words"),
    [
        ("text", image_part(data_uri(png())), "model_not_vision", "does not accept images"),
        ("eyes", image_part("data:image/png;base64,iVBORw0KGgo!!!"), "invalid_image", "base64"),
        (
            "eyes",
            image_part(data_uri(bmp(), "image/bmp")),
            "unsupported_image_type",
            "supported",
        ),
        (
            "eyes",
            image_part(data_uri(b"hello", "text/plain")),
            "unsupported_image_type",
            "not an image",
        ),
        ("eyes", image_part(data_uri(png()[:60])), "invalid_image", "damaged"),
        (
            "eyes",
            image_part(data_uri(png(400, 400, noise=True))),
            "image_too_large",
            str(MAX_BYTES),
        ),
        ("eyes", image_part("file:///etc/passwd"), "invalid_image_url", "https://"),
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
    r = setup.chat("eyes", image_part(url))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] in ("invalid_image_url", "unsupported_image_type", "invalid_image"), error
    assert words in error["message"], error
    assert time.monotonic() - started < 5
    assert setup.served("eyes") == before
