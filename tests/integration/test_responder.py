"""The fake engine (``tests.responder``) answers as an OpenAI-compatible engine
does, as the official ``openai`` client reads it, and counts the streams its
clients abandon: the gateway's tests and bench/gateway.py rely on both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.responder import RunningResponder, run_responder

pytestmark = pytest.mark.timeout(60)

EVENT_DELAY_S = 0.05


@pytest.fixture(scope="module")
def responder() -> Iterator[RunningResponder]:
    with run_responder("--event-delay", str(EVENT_DELAY_S)) as running:
        yield running


@pytest.fixture
def sdk(responder: RunningResponder) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{responder.url}/v1", api_key="unused", max_retries=0) as ai:
        yield ai


def _stats(responder: RunningResponder) -> dict[str, Any]:
    r = httpx.get(f"{responder.url}/stats", timeout=5)
    assert r.status_code == 200, r.text
    stats: dict[str, Any] = r.json()
    return stats


def test_a_chat_completion_counts_words_and_max_tokens(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="any-name",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello to the cluster."},
        ],
        max_tokens=5,
    )
    assert reply.model == "any-name"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "word word word word word"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 5)
    assert reply.usage.total_tokens == 12


def test_a_stream_ends_with_the_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Count to three."}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) == 4
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:3]) == "word word word"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[2].choices[0].finish_reason == "length"
    assert chunks[3].choices == []
    assert chunks[3].usage is not None
    assert (chunks[3].usage.prompt_tokens, chunks[3].usage.completion_tokens) == (3, 3)


def test_a_stream_is_chunked_event_by_event(responder: RunningResponder) -> None:
    body = {"model": "m", "prompt": "Once upon a time", "max_tokens": 2, "stream": True}
    with (
        httpx.Client(base_url=responder.url, timeout=10) as http,
        http.stream("POST", "/v1/completions", json=body) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["transfer-encoding"] == "chunked"
        chunks = list(r.iter_raw())
    assert [c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks] == [True] * 3
    assert chunks[-1] == b"data: [DONE]\n\n"


def test_rerank_orders_by_relevance_and_honours_top_n(responder: RunningResponder) -> None:
    body = {
        "model": "reranker",
        "query": "red apple",
        "documents": ["a blue car", "a red apple", {"text": "an apple"}],
        "top_n": 2,
    }
    r = httpx.post(f"{responder.url}/v1/rerank", json=body, timeout=5)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == "reranker" and answer["object"] == "list"
    assert [(x["index"], x["relevance_score"]) for x in answer["results"]] == [(1, 1.0), (2, 0.5)]
    assert answer["usage"] == {"prompt_tokens": 10, "total_tokens": 10}


def test_embeddings_give_a_vector_per_input(sdk: openai.OpenAI) -> None:
    reply = sdk.embeddings.create(model="e", input=["one", "two more words"])
    assert [len(d.embedding) for d in reply.data] == [8, 8]
    assert reply.usage.prompt_tokens == 4


def test_a_malformed_body_is_an_openai_error(responder: RunningResponder) -> None:
    r = httpx.post(f"{responder.url}/v1/chat/completions", content=b'{"model": ', timeout=5)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_an_abandoned_stream_is_counted_as_cancelled(responder: RunningResponder) -> None:
    before = _stats(responder)
    body = {"model": "m", "prompt": "Tell a long story.", "max_tokens": 200, "stream": True}
    with (
        httpx.Client(base_url=responder.url, timeout=10) as http,
        http.stream("POST", "/v1/completions", json=body) as r,
    ):
        chunks = r.iter_raw()  # kept: a dropped iterator closes the response
        assert next(chunks).startswith(b"data: ")
        assert _stats(responder)["in_progress"] == before["in_progress"] + 1
    # Leaving the block closed the connection, 10 s before the stream's end.
    deadline = time.monotonic() + 5
    while (after := _stats(responder))["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, after
        time.sleep(0.02)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["in_progress"] == before["in_progress"]
    assert after["served"] == before["served"]
