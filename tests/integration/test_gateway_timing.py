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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import (
    Heartbeat,
    ServerProcess,
    client,
    create_user,
    deploy,
    login,
    register_worker,
    run_server,
    unique,
)
from tests.integration.test_gateway import poll, worker_status
from tests.responder import RunningResponder, run_responder

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
    with ExitStack() as stack:
        server = stack.enter_context(run_server(Path(tmp_path_factory.mktemp("timing")), env=env))
        admin = stack.enter_context(
            client(server.url, login(server.url, "admin", server.admin_password))
        )
        registered, worker = register_worker(server.url, server.cluster_token)
        stack.enter_context(worker)
        wid = registered["worker_id"]
        assert worker.post(f"/api/v1/workers/{wid}/status", json=worker_status()).is_success
        stack.enter_context(Heartbeat(server.url, wid, registered["credential"], worker_status))
        engines = {
            "slow": stack.enter_context(run_responder("--first-delay", "1.2")),
            "trickle": stack.enter_context(
                run_responder("--event-delay", "0.05", "--stream-events", "200")
            ),
            "rerank": stack.enter_context(run_responder()),
        }
        names = {}
        for role in engines:
            spec: dict[str, Any] = {"source": {"type": "local", "path": str(tiny_models.gguf_q8_0)}}
            if role == "rerank":
                spec["categories"] = ["reranker"]
            names[role] = deploy(admin, name=unique(role), **spec)["name"]

        def placed() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = worker.get(f"/api/v1/workers/{wid}/assignments").json()[
                "items"
            ]
            return items if len(items) == 3 else None

        for item in poll("three instances placed", placed):
            role = next(r for r, n in names.items() if n == item["model_name"])
            port = int(engines[role].url.rsplit(":", 1)[1])
            r = worker.post(
                f"/api/v1/workers/{wid}/instances/{item['instance_id']}/status",
                json={"state": "running", "port": port, "pid": engines[role].process.pid},
            )
            assert r.status_code == 204, r.text
        user = stack.enter_context(create_user(admin)[1])
        r = user.post("/api/v1/api-keys", json={"name": "timing"})
        assert r.status_code == 201, r.text
        yield Setup(
            server=server,
            key=r.json()["key"],
            slow=names["slow"],
            trickle=names["trickle"],
            rerank=names["rerank"],
            trickle_engine=engines["trickle"],
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
