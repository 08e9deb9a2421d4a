"""The gateway's pure parts: reading request heads and usage, and choosing instances."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from corral.server.gateway.balancer import FAILURES_TO_OPEN, Balancer
from corral.server.gateway.errors import GatewayError
from corral.server.gateway.protocol import StreamUsage, Usage, read_head, usage_in_answer
from corral.server.services.routing import Upstream, context_length


def _upstreams(n: int) -> list[Upstream]:
    return [
        Upstream(instance_id=i + 1, host="127.0.0.1", port=40000 + i, api_key="k") for i in range(n)
    ]


# --- request heads ---------------------------------------------------------


def test_a_plain_request_is_relayed_byte_for_byte() -> None:
    body = b'{"model": "m", "messages": [], "temperature": 0.5}'
    head, sent = read_head(body)
    assert (head.model, head.stream, head.wants_usage) == ("m", False, False)
    assert sent is body


def test_a_stream_is_asked_for_its_usage_without_rewriting_the_body() -> None:
    body = b'  {"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    head, sent = read_head(body)
    assert head.stream and not head.wants_usage
    parsed = json.loads(sent)
    assert parsed["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in parsed.items() if k != "stream_options"} == json.loads(body)


def test_stream_options_the_client_sent_are_kept() -> None:
    body = json.dumps(
        {"model": "m", "stream": True, "stream_options": {"continuous_usage_stats": True}}
    ).encode()
    head, sent = read_head(body)
    assert not head.wants_usage
    assert json.loads(sent)["stream_options"] == {
        "continuous_usage_stats": True,
        "include_usage": True,
    }


def test_a_client_asking_for_usage_gets_its_body_unchanged() -> None:
    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    head, sent = read_head(body)
    assert head.wants_usage and sent is body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"messages": []}', "missing_model"),
        (b'{"model": 7}', "missing_model"),
    ],
)
def test_bad_bodies_are_400s_that_say_why(body: bytes, code: str) -> None:
    with pytest.raises(GatewayError) as e:
        read_head(body)
    assert e.value.status == 400 and e.value.code == code


# --- usage -------------------------------------------------------------------


def test_usage_is_found_at_the_end_of_a_plain_answer() -> None:
    answer = json.dumps(
        {
            "choices": [{"message": {"content": 'a "usage": {"prompt_tokens": 99} trap'}}],
            "usage": {"completion_tokens": 8, "prompt_tokens": 12, "total_tokens": 20},
        }
    ).encode()
    assert usage_in_answer(answer) == Usage(prompt_tokens=12, completion_tokens=8)


def test_embeddings_usage_has_no_completion_tokens() -> None:
    answer = b'{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":4,"total_tokens":4}}'
    assert usage_in_answer(answer) == Usage(prompt_tokens=4, completion_tokens=0)


@pytest.mark.parametrize("answer", [b'{"usage": null}', b"{}", b'{"usage": {"x": 1}}', b"oops"])
def test_answers_without_usage_give_none(answer: bytes) -> None:
    assert usage_in_answer(answer) is None


def _sse(*payloads: object) -> list[bytes]:
    return [b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads] + [b"data: [DONE]\n\n"]


_CHUNKS = _sse(
    {"choices": [{"delta": {"content": "a"}}]},
    {"choices": [{"delta": {}, "finish_reason": "length"}]},
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
)


def test_the_usage_chunk_is_read_and_kept_when_the_client_asked() -> None:
    usage = StreamUsage(keep_usage=True)
    out = b"".join(usage.feed(c) for c in _CHUNKS) + usage.rest()
    assert out == b"".join(_CHUNKS)
    assert usage.usage == Usage(5, 2)


def test_the_usage_chunk_is_taken_out_when_the_client_did_not_ask() -> None:
    usage = StreamUsage(keep_usage=False)
    out = b"".join(usage.feed(c) for c in _CHUNKS) + usage.rest()
    assert out == b"".join(_CHUNKS[:2] + _CHUNKS[3:])
    assert usage.usage == Usage(5, 2)


def test_events_split_anywhere_come_out_whole() -> None:
    stream = b"".join(_CHUNKS)
    for size in (1, 3, 7, 50):
        usage = StreamUsage(keep_usage=False)
        pieces = [usage.feed(stream[i : i + size]) for i in range(0, len(stream), size)]
        out = b"".join(pieces) + usage.rest()
        assert out == b"".join(_CHUNKS[:2] + _CHUNKS[3:])
        assert all(p == b"" or p.endswith(b"\n\n") for p in pieces)
        assert usage.usage == Usage(5, 2)


def test_usage_on_a_content_chunk_is_dropped_and_the_content_kept() -> None:
    chunk = _sse({"choices": [{"delta": {"content": "z"}}], "usage": {"prompt_tokens": 1}})[0]
    usage = StreamUsage(keep_usage=False)
    out = usage.feed(chunk)
    assert json.loads(out.removeprefix(b"data: ")) == {"choices": [{"delta": {"content": "z"}}]}
    assert usage.usage == Usage(1, 0)


# --- choosing instances ---------------------------------------------------------


def test_idle_instances_take_turns() -> None:
    balancer = Balancer()
    ups = _upstreams(3)
    firsts = Counter()
    for _ in range(300):
        first, second = balancer.choose("m", ups)
        assert first != second
        firsts[first.instance_id] += 1
    assert firsts == {1: 100, 2: 100, 3: 100}


def test_the_least_busy_instance_is_chosen() -> None:
    balancer = Balancer()
    ups = _upstreams(3)
    for _ in range(2):
        balancer.started(ups[0])
    balancer.started(ups[1])
    for _ in range(5):
        assert balancer.choose("m", ups)[0] == ups[2]
    balancer.started(ups[2])
    balancer.started(ups[2])
    assert balancer.choose("m", ups)[0] == ups[1]


def test_a_single_instance_is_retried_on_itself() -> None:
    only = _upstreams(1)
    assert Balancer().choose("m", only) == (only[0], only[0])


def test_a_failing_instance_leaves_the_rotation_and_is_probed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("corral.server.gateway.balancer.time.monotonic", lambda: now[0])
    balancer = Balancer()
    bad, good = _upstreams(2)
    for _ in range(FAILURES_TO_OPEN):
        balancer.failed(bad)
    assert balancer.out_of_rotation() == {bad.instance_id}
    assert {balancer.choose("m", [bad, good])[0] for _ in range(10)} == {good}
    now[0] += 1.01  # the cool-down is over: one request probes it
    chosen = [balancer.choose("m", [bad, good])[0] for _ in range(4)]
    assert chosen.count(bad) == 1
    balancer.failed(bad)  # the probe failed: out again, for twice as long
    now[0] += 1.5
    assert {balancer.choose("m", [bad, good])[0] for _ in range(4)} == {good}
    now[0] += 1.0
    probe = [u for u in (balancer.choose("m", [bad, good])[0] for _ in range(4)) if u == bad]
    assert probe == [bad]
    balancer.succeeded(bad)
    assert balancer.out_of_rotation() == set()
    assert Counter(balancer.choose("m", [bad, good])[0].instance_id for _ in range(10)) == {
        1: 5,
        2: 5,
    }


def test_when_every_instance_is_out_the_requests_still_go_somewhere() -> None:
    balancer = Balancer()
    ups = _upstreams(2)
    for u in ups:
        for _ in range(FAILURES_TO_OPEN):
            balancer.failed(u)
    first, second = balancer.choose("m", ups)
    assert {first, second} == set(ups)


# --- context length from the launch command ----------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["llama-server", "--ctx-size", "4096", "--parallel", "4"], 4096),
        (["llama-server", "--ctx-size", "4096", "-c", "2048"], 2048),
        (["vllm", "serve", "m", "--max-model-len=8192"], 8192),
        (["vllm", "serve", "m"], None),
        (None, None),
        (["llama-server", "--ctx-size"], None),
    ],
)
def test_context_length_is_what_the_engine_was_launched_with(
    command: list[str] | None, expected: int | None
) -> None:
    assert context_length(command) == expected
