"""What the gateway does over time, against FAKE engines (``tests/responder.py``)
whose timing the test sets: keep-alive comments while an engine is silent,
the engine's request cancelled when the client leaves, rerank relayed, and
a configured body limit. Its own server, with a short keep-alive interval
and a small body limit (``CORRAL_GATEWAY_KEEPALIVE``, ``CORRAL_GATEWAY_MAX_BODY``).

The llama-server side of the same behaviour is in ``test_gateway.py``;
these cases need an engine that is silent for exactly as long as asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import ServerProcess
from tests.integration.fake_engines import fake_cluster
from tests.integration.test_gateway import poll
from tests.responder import RunningResponder

KEEPALIVE_S = 0.3
MAX_BODY = 64 * 1024

pytestmark = pytest.mark.timeout(180)


@dataclass
class Setup:
    server: ServerProcess
    key: str
    slow: str
    """A chat model whose engine is silent for 1.2 s before its first event."""
    trickle: str
    """A chat model whose engine sends an event every 50 ms."""
    rerank: str
    trickle_engine: RunningResponder

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.server.url}/v1",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels) -> Iterator[Setup]:
    env = {
        "CORRAL_GATEWAY_KEEPALIVE": str(KEEPALIVE_S),
        "CORRAL_GATEWAY_MAX_BODY": str(MAX_BODY),
    }
    roles: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
        "slow": (("--first-delay", "1.2"), {}),
        "trickle": (("--event-delay", "0.05", "--stream-events", "200"), {}),
        "rerank": ((), {"categories": ["reranker"]}),
    }
    directory = Path(tmp_path_factory.mktemp("timing"))
    with fake_cluster(directory, tiny_models, roles, env=env) as cluster:
        yield Setup(
            server=cluster.server,
            key=cluster.key,
            slow=cluster.names["slow"],
            trickle=cluster.names["trickle"],
            rerank=cluster.names["rerank"],
            trickle_engine=cluster.engines["trickle"],
        )


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


def test_a_silent_engine_gets_keep_alive_comments_sent_for_it(setup: Setup) -> None:
    arrivals: list[tuple[float, bytes]] = []
    with (
        setup.http() as http,
        http.stream("POST", "/chat/completions", json=_chat(setup.slow, stream=True)) as r,
    ):
        assert r.status_code == 200
        start = time.monotonic()
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic() - start, chunk))
    body = b"".join(c for _, c in arrivals)
    before_data = body[: body.index(b"data:")]
    # 1.2 s of silence at 0.3 s intervals: three or four comments, then the events.
    assert 2 <= before_data.count(b": keep-alive\n\n") <= 4, before_data
    assert body.rstrip().endswith(b"data: [DONE]")
    with openai.OpenAI(base_url=f"{setup.server.url}/v1", api_key=setup.key, max_retries=0) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model=setup.slow,
                messages=[{"role": "user", "content": "hello"}],
                stream=True,
                max_tokens=3,
            )
        )
    assert next(c.choices[0].delta.content for c in chunks if c.choices) is not None


def _stats(engine: RunningResponder) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{engine.url}/stats", timeout=5).json()
    return stats


def test_a_client_that_leaves_cancels_the_engines_request(setup: Setup) -> None:
    before = _stats(setup.trickle_engine)["cancelled"]
    with (
        setup.http() as http,
        http.stream("POST", "/chat/completions", json=_chat(setup.trickle, stream=True)) as r,
    ):
        chunks = r.iter_raw()
        next(chunks)
        assert _stats(setup.trickle_engine)["in_progress"] == 1
    poll(
        "the engine to see its client gone",
        lambda: _stats(setup.trickle_engine)["cancelled"] == before + 1,
        5,
    )
    assert _stats(setup.trickle_engine)["in_progress"] == 0


def test_rerank_is_relayed_in_one_shape(setup: Setup) -> None:
    with setup.http() as http:
        r = http.post(
            "/rerank",
            json={
                "model": setup.rerank,
                "query": "fast gateway",
                "documents": ["a slow proxy", "a fast gateway for models", "bread"],
                "top_n": 2,
            },
        )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["index"] for x in answer["results"]] == [1, 0]
    assert answer["usage"]["prompt_tokens"] > 0


def test_the_configured_body_limit_applies(setup: Setup) -> None:
    with setup.http() as http:
        r = http.post("/chat/completions", json=_chat(setup.slow, pad="x" * MAX_BODY))
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "request_too_large"
        assert str(MAX_BODY) in r.json()["error"]["message"]
        assert http.post("/chat/completions", json=_chat(setup.rerank)).status_code == 200
