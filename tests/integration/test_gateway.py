"""The OpenAI-compatible gateway, end to end with real parts: a real server,
real llama-server instances on the tiny GGUF models, and the official
``openai`` client. The test plays the worker over the HTTP API: it registers,
sends heartbeats, reads its assignments, starts each backend with the key the
server gave it and reports it running.

Models deployed (each in its own label pool, so other tests do not meet them):

* ``chat``  one instance, served by llama-server;
* ``embed`` the embedding model, served by llama-server;
* ``idle``  placed on the worker but never started (503);
* ``flaky`` two instances: one served, one reported on a port nobody
  listens on (the gateway retries on the other);
* ``dead``  one instance on a port nobody listens on (502);
* ``pair``  two instances, both served by llama-server (balancing, and one
  killed mid-run).

The worker reports one simulated GPU too small for any model, so the
metrics have a device to show and every model is still placed on the CPU.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from corral.backends.base import Installation
from corral.backends.llama_cpp.driver import LlamaCppDriver
from corral.backends.process import BackendProcess, running
from corral.schemas.models import ModelCategory
from tests.backends import install_llama_cpp, launch_request
from tests.fixtures.tiny_models import TinyModels
from tests.helpers import (
    Heartbeat,
    ServerProcess,
    client,
    create_user,
    deploy,
    free_port,
    login,
    register_worker,
    unique,
)

GIB = 1024**3
START_TIMEOUT_S = 120

# Setting up starts three llama-servers on a shared 2-core machine.
pytestmark = pytest.mark.timeout(300)


def worker_status() -> dict[str, Any]:
    return {
        "cpu": {"cores": 8},
        "memory": {"total": 64 * GIB, "used": 0},
        "disks": [{"path": "/", "total": 500 * GIB, "used": 0}],
        "devices": [
            {
                "index": 0,
                "vendor": "nvidia",
                "name": "Tiny simulated GPU",
                "memory_total": 64 * 1024**2,
                "memory_used": 16 * 1024**2,
                "simulated": True,
            }
        ],
    }


@dataclass
class Served:
    name: str
    backend: BackendProcess | None = None

    @property
    def direct(self) -> openai.OpenAI:
        """The SDK straight at the backend, with the instance's own key."""
        assert self.backend is not None
        return openai.OpenAI(
            base_url=f"{self.backend.base_url}/v1",
            api_key=self.backend.request.api_key,
            max_retries=0,
        )


@dataclass
class Cluster:
    server: ServerProcess
    user_key: str
    worker_credential: str
    chat: Served
    embed: Served
    idle: Served
    flaky: Served
    dead: Served
    pair: Served
    pair_backends: list[BackendProcess]

    def sdk(self, key: str | None = None) -> openai.OpenAI:
        """The SDK pointed at the gateway, as a user's code would be."""
        return openai.OpenAI(
            base_url=f"{self.server.url}/v1", api_key=key or self.user_key, max_retries=0
        )

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.server.url}/v1",
            headers={"Authorization": f"Bearer {key or self.user_key}"},
            timeout=60,
        )


def poll(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    return install_llama_cpp(tmp_path_factory.mktemp("backends"))


@pytest.fixture(scope="module")
def cluster(
    server: ServerProcess,
    admin: httpx.Client,
    tiny_models: TinyModels,
    llama: Installation,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("backend-logs")
    pool = unique("gateway")
    registered, worker = register_worker(
        server.url, server.cluster_token, labels={"os": "linux", "arch": "amd64", "pool": pool}
    )
    wid = registered["worker_id"]
    with ExitStack() as stack:
        stack.callback(admin.delete, f"/api/v1/workers/{wid}")
        stack.callback(worker.close)
        r = worker.post(f"/api/v1/workers/{wid}/status", json=worker_status())
        assert r.status_code == 200, r.text
        stack.enter_context(Heartbeat(server.url, wid, registered["credential"], worker_status))

        def model(path: Path, **extra: Any) -> Served:
            spec = {
                "source": {"type": "local", "path": str(path)},
                "worker_selector": {"pool": pool},
            }
            deployed = deploy(admin, name=unique("gw"), **spec, **extra)
            stack.callback(admin.delete, f"/api/v1/models/{deployed['id']}")
            return Served(deployed["name"])

        served = {
            "chat": model(tiny_models.gguf_f16),
            "embed": model(tiny_models.gguf_embed, categories=["embedding"]),
            "idle": model(tiny_models.gguf_q8_0),
            "flaky": model(tiny_models.gguf_q8_0, replicas=2),
            "dead": model(tiny_models.gguf_q8_0),
            "pair": model(tiny_models.gguf_f16, replicas=2),
        }
        files = {
            "chat": tiny_models.gguf_f16,
            "embed": tiny_models.gguf_embed,
            "flaky": tiny_models.gguf_q8_0,
            "pair": tiny_models.gguf_f16,
        }

        def all_scheduled() -> list[dict[str, Any]] | None:
            r = worker.get(f"/api/v1/workers/{wid}/assignments")
            assert r.status_code == 200, r.text
            items: list[dict[str, Any]] = r.json()["items"]
            return (
                items if len(items) == 8 and all(i["state"] == "scheduled" for i in items) else None
            )

        assignments = poll("every instance placed on the worker", all_scheduled)
        by_model: dict[str, list[dict[str, Any]]] = {}
        for item in assignments:
            by_model.setdefault(item["model_name"], []).append(item)

        def report(item: dict[str, Any], port: int, pid: int) -> None:
            r = worker.post(
                f"/api/v1/workers/{wid}/instances/{item['instance_id']}/status",
                json={"state": "running", "port": port, "pid": pid},
            )
            assert r.status_code == 204, r.text

        pair_backends: list[BackendProcess] = []
        for role, target in served.items():
            items = by_model[target.name]
            for replica, item in enumerate(items[: (2 if role == "pair" else 1)]):
                if role not in files:
                    break
                request = launch_request(
                    files[role],
                    model_name=target.name,
                    api_key=item["api_key"],
                    categories=frozenset(ModelCategory(c) for c in item["categories"])
                    or frozenset({ModelCategory.LLM}),
                )
                backend = stack.enter_context(
                    running(
                        LlamaCppDriver(),
                        llama,
                        request,
                        logs / f"{role}-{replica}.log",
                        timeout=START_TIMEOUT_S,
                    )
                )
                assert backend.process is not None
                report(item, request.port, backend.process.pid)
                target.backend = target.backend or backend
                if role == "pair":
                    pair_backends.append(backend)
                items = items[1:]
            if role in ("flaky", "dead"):
                for item in items:
                    report(item, free_port(), 1)  # nothing listens there

        user_client = create_user(admin)[1]
        stack.callback(user_client.close)
        r = user_client.post("/api/v1/api-keys", json={"name": "gateway"})
        assert r.status_code == 201, r.text
        yield Cluster(
            server=server,
            user_key=r.json()["key"],
            worker_credential=registered["credential"],
            pair_backends=pair_backends,
            **served,
        )


# --- listing models ------------------------------------------------------


def test_models_lists_the_models_with_a_running_instance(cluster: Cluster) -> None:
    with cluster.sdk() as sdk:
        listed = {m.id: m for m in sdk.models.list()}
        assert {cluster.chat.name, cluster.embed.name, cluster.flaky.name} <= listed.keys()
        assert cluster.idle.name not in listed
        chat = listed[cluster.chat.name]
        assert chat.owned_by == "corral" and chat.object == "model"
        assert abs(chat.created - time.time()) < 3600
        assert sdk.models.retrieve(cluster.chat.name).id == cluster.chat.name
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve(cluster.idle.name)


# --- inference through the gateway ---------------------------------------


def test_chat_completion_counts_tokens_as_the_backend_does(cluster: Cluster) -> None:
    def ask(sdk: openai.OpenAI) -> Any:
        return sdk.chat.completions.create(
            model=cluster.chat.name,
            messages=[{"role": "user", "content": "Say hello to the cluster."}],
            max_tokens=8,
            temperature=0,
            extra_body={"ignore_eos": True},
        )

    with cluster.sdk() as sdk, cluster.chat.direct as direct:
        via_gateway, straight = ask(sdk), ask(direct)
    assert via_gateway.model == straight.model == cluster.chat.name
    assert via_gateway.choices[0].message.role == "assistant"
    assert via_gateway.usage is not None and straight.usage is not None
    assert via_gateway.usage.completion_tokens == straight.usage.completion_tokens == 8
    assert via_gateway.usage.prompt_tokens == straight.usage.prompt_tokens > 5
    assert via_gateway.choices[0].message.content == straight.choices[0].message.content


def test_streamed_chat_ends_with_the_usage_chunk(cluster: Cluster) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count to twelve."}]
    with cluster.sdk() as sdk, cluster.chat.direct as direct:
        chunks = list(
            sdk.chat.completions.create(
                model=cluster.chat.name,
                messages=messages,
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
        )
        straight = direct.chat.completions.create(
            model=cluster.chat.name,
            messages=messages,
            max_tokens=1,
        )
        # llama-server closes its connection after a stream: the pooled one
        # must not fail the next request.
        after = sdk.chat.completions.create(
            model=cluster.chat.name,
            messages=messages,
            max_tokens=1,
        )
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert 2 <= len(deltas) <= 12
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 12
    assert straight.usage is not None and usage.prompt_tokens == straight.usage.prompt_tokens
    assert after.usage is not None and after.usage.completion_tokens == 1


def test_completion_counts_tokens_as_the_backend_does(cluster: Cluster) -> None:
    def ask(sdk: openai.OpenAI) -> Any:
        return sdk.completions.create(
            model=cluster.chat.name,
            prompt="Once upon a time",
            max_tokens=6,
            temperature=0,
            extra_body={"ignore_eos": True},
        )

    with cluster.sdk() as sdk, cluster.chat.direct as direct:
        via_gateway, straight = ask(sdk), ask(direct)
    assert via_gateway.usage is not None and straight.usage is not None
    assert via_gateway.usage.completion_tokens == straight.usage.completion_tokens == 6
    assert via_gateway.usage.prompt_tokens == straight.usage.prompt_tokens >= 4
    assert via_gateway.choices[0].text == straight.choices[0].text


def test_embeddings_count_tokens_as_the_backend_does(cluster: Cluster) -> None:
    def embed(sdk: openai.OpenAI) -> Any:
        return sdk.embeddings.create(model=cluster.embed.name, input=["one", "two more words"])

    with cluster.sdk() as sdk, cluster.embed.direct as direct:
        via_gateway, straight = embed(sdk), embed(direct)
    assert [len(d.embedding) for d in via_gateway.data] == [256, 256]
    assert via_gateway.usage.prompt_tokens == straight.usage.prompt_tokens >= 4
    assert via_gateway.data[1].embedding == straight.data[1].embedding


def test_a_failed_connection_is_retried_on_the_next_instance(cluster: Cluster) -> None:
    """Half of these start at the instance nobody listens for (round robin);
    each must still be answered, by the other one."""
    with cluster.sdk() as sdk:
        for _ in range(4):
            reply = sdk.completions.create(model=cluster.flaky.name, prompt="Hi", max_tokens=1)
            assert reply.usage is not None and reply.usage.completion_tokens == 1
    # Two of the four started at the silent instance: the relay says so in its log.
    failed_first = f"model {cluster.flaky.name}, instance "
    assert cluster.server.log().count(failed_first) == 2


# --- streaming is relayed, not buffered -----------------------------------


def _stream_request(cluster: Cluster, max_tokens: int) -> dict[str, Any]:
    return {
        "model": cluster.chat.name,
        "prompt": "Tell a long story.",
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
    }


def test_a_stream_is_relayed_as_it_is_generated(cluster: Cluster) -> None:
    """Chunks arrive spread over the generation, not all at its end."""
    times: list[float] = []
    with cluster.http() as http:
        start = time.monotonic()
        with http.stream("POST", "/completions", json=_stream_request(cluster, 400)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            body = b""
            for chunk in r.iter_raw():
                times.append(time.monotonic() - start)
                body += chunk
    assert body.rstrip().endswith(b"data: [DONE]")
    # Fewer events than tokens: llama-server holds back a token that ends
    # inside a UTF-8 character, and random weights make many of those.
    assert body.count(b"data: ") >= 100
    total = times[-1]
    # A buffering relay would deliver everything in the last few milliseconds.
    assert times[0] < total / 2, (times[0], total)
    assert len([t for t in times if t < total / 2]) >= 10


def _metric(backend: BackendProcess, name: str) -> int:
    """One of llama-server's Prometheus figures (``--metrics``)."""
    r = httpx.get(
        f"{backend.base_url}/metrics",
        headers={"Authorization": f"Bearer {backend.request.api_key}"},
        timeout=10,
    )
    r.raise_for_status()
    match = re.search(rf"^llamacpp:{name}\s+(\S+)", r.text, re.MULTILINE)
    assert match, r.text
    return int(float(match.group(1)))


def test_the_backend_stops_when_the_client_goes_away(cluster: Cluster) -> None:
    assert cluster.chat.backend is not None
    backend = cluster.chat.backend
    assert _metric(backend, "requests_processing") == 0
    before = _metric(backend, "tokens_predicted_total")
    with (
        cluster.http() as http,
        http.stream("POST", "/completions", json=_stream_request(cluster, 1800)) as r,
    ):
        assert r.status_code == 200
        chunks = r.iter_raw()  # kept: a dropped iterator closes the response
        next(chunks)
        assert _metric(backend, "requests_processing") == 1
    # Leaving the block closed the client's connection; the relay must close
    # its own to the backend, which then stops generating.
    poll("the backend to stop", lambda: _metric(backend, "requests_processing") == 0, 10)
    generated = _metric(backend, "tokens_predicted_total") - before  # counted when it stops
    # With ignore_eos only a cancelled request ends short of max_tokens. (How
    # short depends on how busy the machine is: 900 of 1,800 seen under load.)
    assert 0 < generated < 1800, generated


# --- errors, in OpenAI's shape ---------------------------------------------


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    return error


def test_a_missing_or_wrong_key_is_401(cluster: Cluster) -> None:
    body = {"model": cluster.chat.name, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(f"{cluster.server.url}/v1/chat/completions", json=body)
    _error(r, 401, "invalid_api_key")
    assert r.headers["www-authenticate"] == "Bearer"
    with cluster.http("corral_not-a-key") as http:
        _error(http.get("/models"), 401, "invalid_api_key")
    with cluster.sdk("corral_not-a-key") as sdk, pytest.raises(openai.AuthenticationError):
        sdk.models.list()


def test_a_worker_credential_is_refused(cluster: Cluster) -> None:
    with cluster.http(cluster.worker_credential) as http:
        _error(http.get("/models"), 403, "permission_denied")


def test_an_unknown_model_is_404(cluster: Cluster) -> None:
    with cluster.sdk() as sdk, pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "model_not_found"


def test_a_model_without_a_running_instance_is_503_with_retry_after(cluster: Cluster) -> None:
    with cluster.http() as http:
        r = http.post("/completions", json={"model": cluster.idle.name, "prompt": "x"})
    error = _error(r, 503, "model_not_running")
    assert error["param"] == "model"
    assert r.headers["retry-after"] == "5"


def test_a_model_whose_instances_do_not_answer_is_502(cluster: Cluster) -> None:
    with cluster.http() as http:
        r = http.post("/completions", json={"model": cluster.dead.name, "prompt": "x"})
    _error(r, 502, "upstream_unavailable")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "x", ', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'["a list"]', "invalid_json"),
        (b'{"prompt": "no model"}', "missing_model"),
        (b'{"model": 42}', "missing_model"),
    ],
)
def test_a_malformed_body_is_400(cluster: Cluster, body: bytes, code: str) -> None:
    with cluster.http() as http:
        r = http.post(
            "/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
    _error(r, 400, code)


def test_a_body_over_the_limit_is_413_before_it_is_read(cluster: Cluster) -> None:
    # The default limit is 32 MiB; one byte more, declared up front.
    body = b'{"model": "%s", "prompt": "' % cluster.chat.name.encode()
    body += b"x" * (32 * 1024 * 1024 + 1 - len(body) - 2) + b'"}'
    with cluster.http() as http:
        r = http.post("/completions", content=body, headers={"Content-Type": "application/json"})
    _error(r, 413, "request_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"model": "x", "prompt": "'
        for _ in range(33):
            yield b"y" * 1024 * 1024

    with cluster.http() as http:
        r = http.post("/completions", content=chunked())
    _error(r, 413, "request_too_large")


def test_unknown_paths_and_methods_are_refused_in_openai_shape(cluster: Cluster) -> None:
    with cluster.http() as http:
        _error(http.post("/images/generations", json={}), 404, "unknown_url")
        r = http.get("/chat/completions")
        _error(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "POST"


# --- the async client --------------------------------------------------------------


def test_the_async_client_chats_streams_embeds_and_raises_the_sdk_errors(cluster: Cluster) -> None:
    async def run() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{cluster.server.url}/v1", api_key=cluster.user_key, max_retries=0
        ) as sdk:
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
            reply = await sdk.chat.completions.create(
                model=cluster.chat.name, messages=messages, max_tokens=3
            )
            assert reply.usage is not None and reply.usage.completion_tokens <= 3
            stream = await sdk.chat.completions.create(
                model=cluster.chat.name,
                messages=messages,
                max_tokens=4,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            chunks = [c async for c in stream]
            assert chunks and all(c.usage is None for c in chunks)  # not asked for
            embedded = await sdk.embeddings.create(model=cluster.embed.name, input="one")
            assert len(embedded.data[0].embedding) == 256
            with pytest.raises(openai.NotFoundError):
                await sdk.completions.create(model="nobody", prompt="x")
            with pytest.raises(openai.InternalServerError):  # 503: not running yet
                await sdk.completions.create(model=cluster.idle.name, prompt="x")
        async with openai.AsyncOpenAI(
            base_url=f"{cluster.server.url}/v1", api_key="corral_bad_key", max_retries=0
        ) as sdk:
            with pytest.raises(openai.AuthenticationError):
                await sdk.models.list()

    asyncio.run(run())


def test_models_carry_context_length_and_categories(cluster: Cluster) -> None:
    with cluster.http() as http:
        r = http.get("/models")
    cards = {m["id"]: m for m in r.json()["data"]}
    assert cards[cluster.embed.name]["categories"] == ["embedding"]
    # The placement's launch command sets the context (llama.cpp --ctx-size).
    assert isinstance(cards[cluster.chat.name]["context_length"], int)
    assert cards[cluster.chat.name]["context_length"] > 0


# --- the circuit breaker -----------------------------------------------------------


def test_an_instance_that_keeps_failing_leaves_the_rotation(cluster: Cluster) -> None:
    failed_first = f"model {cluster.flaky.name}, instance "
    before = cluster.server.log().count(failed_first)
    with cluster.sdk() as sdk:
        for _ in range(12):
            reply = sdk.completions.create(model=cluster.flaky.name, prompt="Hi", max_tokens=1)
            assert reply.usage is not None
    # Three failures in a row take it out for a second; a dozen quick requests
    # meet it at most until then (plus one probe).
    assert cluster.server.log().count(failed_first) - before <= 3
    families = _scrape(cluster)
    out = {
        s.labels["instance"]: s.value
        for s in families["corral_gateway_instances_out_of_rotation"].samples
        if s.labels["model"] == cluster.flaky.name
    }
    assert sorted(out.values()) == [0.0, 1.0], out


# --- usage and metrics -------------------------------------------------------------


def _scrape(cluster: Cluster) -> dict[str, Any]:
    admin_token = login(cluster.server.url, "admin", cluster.server.admin_password)
    r = httpx.get(
        f"{cluster.server.url}/metrics", headers={"Authorization": f"Bearer {admin_token}"}
    )
    assert r.status_code == 200, r.text
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def test_usage_adds_up_to_what_the_answers_said(cluster: Cluster) -> None:
    key_id, key = _new_key(cluster)
    said = {"prompt": 0, "completion": 0, "requests": 0}

    def count(usage: Any) -> None:
        said["prompt"] += usage.prompt_tokens
        said["completion"] += getattr(usage, "completion_tokens", 0) or 0
        said["requests"] += 1

    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count sheep."}]
    with cluster.sdk(key) as sdk:
        for n in (2, 5):
            count(sdk.chat.completions.create(
                model=cluster.chat.name, messages=messages, max_tokens=n,
                extra_body={"ignore_eos": True},
            ).usage)  # fmt: skip
        streamed = list(
            sdk.chat.completions.create(
                model=cluster.chat.name,
                messages=messages,
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
        )
        count(streamed[-1].usage)
        # Not asked for: the client gets no usage chunk, but corral meters it;
        # it counts what the same request says when it is asked.
        silent = list(
            sdk.chat.completions.create(
                model=cluster.chat.name,
                messages=messages,
                max_tokens=7,
                stream=True,
                extra_body={"ignore_eos": True},
            )
        )
        assert all(c.usage is None for c in silent) and silent[-1].choices
        said["prompt"] += streamed[-1].usage.prompt_tokens  # type: ignore[union-attr]
        said["completion"] += 7
        said["requests"] += 1
        count(sdk.completions.create(
            model=cluster.chat.name, prompt="Once", max_tokens=3, extra_body={"ignore_eos": True}
        ).usage)  # fmt: skip
        count(sdk.embeddings.create(model=cluster.embed.name, input=["a b c", "d"]).usage)
    r = httpx.get(
        f"{cluster.server.url}/api/v1/usage",
        params={"api_key_id": key_id, "group_by": ["api_key", "model"]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["total"] == {
        "requests": said["requests"],
        "prompt_tokens": said["prompt"],
        "completion_tokens": said["completion"],
        "total_tokens": said["prompt"] + said["completion"],
    }
    by_model = {row["model"]: row for row in report["items"]}
    assert set(by_model) == {cluster.chat.name, cluster.embed.name}
    assert by_model[cluster.embed.name]["requests"] == 1
    assert all(row["api_key_id"] == key_id and row["day"] is None for row in report["items"])


def _new_key(cluster: Cluster) -> tuple[str, str]:
    admin_token = login(cluster.server.url, "admin", cluster.server.admin_password)
    with client(cluster.server.url, admin_token) as admin:
        user_client = create_user(admin)[1]
    with user_client:
        r = user_client.post("/api/v1/api-keys", json={"name": "usage"})
        assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def test_a_user_reads_only_their_own_usage(cluster: Cluster) -> None:
    _, key = _new_key(cluster)
    with cluster.sdk(key) as sdk:
        sdk.completions.create(model=cluster.chat.name, prompt="Hi", max_tokens=1)
    headers = {"Authorization": f"Bearer {key}"}
    mine = httpx.get(f"{cluster.server.url}/api/v1/usage", headers=headers).json()
    assert mine["total"]["requests"] == 1
    assert {row["user_id"] for row in mine["items"]} == {mine["items"][0]["user_id"]}
    r = httpx.get(f"{cluster.server.url}/api/v1/usage", params={"user_id": 1}, headers=headers)
    assert r.status_code == 403, r.text
    r = httpx.get(
        f"{cluster.server.url}/api/v1/usage",
        params={"start": "2026-02-02", "end": "2026-01-01"},
        headers=headers,
    )
    assert r.status_code == 422 and "before start" in r.text, r.text


def test_metrics_count_requests_tokens_and_devices(cluster: Cluster) -> None:
    with cluster.sdk() as sdk:
        reply = sdk.chat.completions.create(
            model=cluster.chat.name, messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
        list(
            sdk.chat.completions.create(
                model=cluster.chat.name,
                messages=[{"role": "user", "content": "x"}],
                max_tokens=2,
                stream=True,
            )
        )
    assert reply.usage is not None
    families = _scrape(cluster)
    requests = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["corral_gateway_requests"].samples
        if s.labels.get("model") == cluster.chat.name and s.name.endswith("_total")
    }
    assert requests[("chat", "200")] >= 2
    durations = [
        s
        for s in families["corral_gateway_request_duration_seconds"].samples
        if s.labels.get("model") == cluster.chat.name and s.name.endswith("_count")
    ]
    assert durations and durations[0].value >= 2
    first = [
        s
        for s in families["corral_gateway_time_to_first_token_seconds"].samples
        if s.labels.get("model") == cluster.chat.name and s.name.endswith("_count")
    ]
    assert first and first[0].value >= 1
    tokens = {
        s.labels["kind"]: s.value
        for s in families["corral_gateway_tokens"].samples
        if s.labels.get("model") == cluster.chat.name
    }
    assert tokens["prompt"] >= reply.usage.prompt_tokens and tokens["completion"] >= 2
    in_flight = [
        s
        for s in families["corral_gateway_in_flight_requests"].samples
        if s.labels["model"] == cluster.chat.name
    ]
    assert [s.value for s in in_flight] == [0.0]
    devices = [
        s
        for s in families["corral_worker_device_memory_total_bytes"].samples
        if s.labels["name"] == "Tiny simulated GPU"
    ]
    assert devices and devices[0].value == 64 * 1024**2
    assert devices[0].labels["simulated"] == "true"
    instances = {s.labels["state"]: s.value for s in families["corral_instances"].samples}
    assert instances["running"] >= 5


# --- two replicas --------------------------------------------------------------------


def _predicted(backend: BackendProcess) -> int:
    return _metric(backend, "tokens_predicted_total")


class _Load:
    """Clients sending completions to the two-replica model from threads."""

    def __init__(self, cluster: Cluster, clients: int, each: int, max_tokens: int) -> None:
        self.done: list[int] = []
        self.failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._ask, args=(cluster, each, max_tokens))
            for _ in range(clients)
        ]
        for t in self._threads:
            t.start()

    def _ask(self, cluster: Cluster, n: int, max_tokens: int) -> None:
        with cluster.sdk() as sdk:
            for _ in range(n):
                try:
                    sdk.completions.create(
                        model=cluster.pair.name,
                        prompt="Tell me more",
                        max_tokens=max_tokens,
                        extra_body={"ignore_eos": True},
                    )
                    self.done.append(1)
                except openai.APIError as e:
                    self.failures.append(e)

    def join(self) -> None:
        for t in self._threads:
            t.join()


def test_load_is_spread_over_the_replicas(cluster: Cluster) -> None:
    """One client after another: every choice is a tie, so turns alternate.
    (With concurrent clients, least-outstanding sends more to the replica that
    answers faster, as it should: 128 to 72 here, where two llama-servers
    share two cores. The choice itself is unit-tested.)"""
    before = [_predicted(b) for b in cluster.pair_backends]
    load = _Load(cluster, clients=1, each=200, max_tokens=1)
    load.join()
    assert not load.failures

    def served() -> list[int]:
        return [_predicted(b) - n for b, n in zip(cluster.pair_backends, before, strict=True)]

    # llama-server counts a request a moment after answering it.
    poll("every request counted", lambda: sum(served()) == 200, 5)
    counts = served()
    assert all(85 <= n <= 115 for n in counts), counts


def test_a_replica_killed_mid_run_fails_no_request(cluster: Cluster) -> None:
    """Requests on their way to the killed replica are tried again on the
    other one; the rest never notice. (It leaves one replica dead: no test
    after it uses the pair.)"""
    victim = cluster.pair_backends[1]
    assert victim.process is not None
    load = _Load(cluster, clients=4, each=40, max_tokens=4)
    poll("some requests answered", lambda: len(load.done) >= 30)
    os.kill(victim.process.pid, signal.SIGKILL)
    load.join()
    assert not load.failures, load.failures[:3]
    assert len(load.done) == 160
    assert cluster.server.log().count(f"model {cluster.pair.name}, instance ") >= 1


def test_a_revoked_key_is_refused_at_once(cluster: Cluster) -> None:
    """Keys are remembered for a few seconds, but a revocation on this server
    clears what it remembers."""
    key_id, key = _new_key(cluster)
    with cluster.sdk(key) as sdk:
        assert sdk.models.list().data  # now remembered
        admin_token = login(cluster.server.url, "admin", cluster.server.admin_password)
        with client(cluster.server.url, admin_token) as admin:
            r = admin.delete(f"/api/v1/api-keys/{key_id}")
        assert r.status_code == 204, r.text
        with pytest.raises(openai.AuthenticationError):
            sdk.models.list()
