"""A model deployed through corral runs on a real worker and answers through
corral's OpenAI-compatible endpoint: ``corral start`` (server + embedded
worker), real llama-server processes, the official ``openai`` client."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import install_llama_cpp
from tests.fixtures.tiny_models import TinyModels
from tests.helpers import CORRAL, ServerProcess, client, create_user, deploy, run_server, unique
from tests.workers import (
    alive,
    api_key_of,
    instances,
    listening,
    openai_client,
    wait_for,
    wait_running,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def corral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``corral start`` on this machine: no GPU, so models run on the CPU."""
    install_llama_cpp(tmp_path_factory.mktemp("seed"))  # built once per machine, cached
    tmp = tmp_path_factory.mktemp("start")
    with run_server(tmp, command="start", extra_args=["--worker-name", "main"]) as server:
        yield server


@pytest.fixture(scope="module")
def admin(corral: ServerProcess) -> Iterator[httpx.Client]:
    r = httpx.post(
        f"{corral.url}/api/v1/auth/login",
        json={"username": "admin", "password": corral.admin_password},
    )
    with client(corral.url, r.json()["token"]) as c:
        yield c


@pytest.fixture(scope="module")
def api_key(admin: httpx.Client) -> str:
    _, user = create_user(admin)
    key = api_key_of(user)
    user.close()
    return key


def _local(path: Path) -> dict[str, str]:
    return {"type": "local", "path": str(path)}


def test_gguf_model_chats_streams_and_embeds_through_corral(
    corral: ServerProcess, admin: httpx.Client, api_key: str, tiny_models: TinyModels
) -> None:
    chat_model = deploy(admin, name=unique("tiny-chat"), source=_local(tiny_models.gguf_f16))
    embed_model = deploy(
        admin,
        name=unique("tiny-embed"),
        source=_local(tiny_models.gguf_embed),
        categories=["embedding"],
    )
    assert chat_model["backend"] == "llama.cpp"
    [running] = wait_running(admin, chat_model["id"])
    assert running["worker_name"] == "main"
    assert running["pid"] and running["port"]
    assert running["placement"]["kind"] == "cpu"
    wait_running(admin, embed_model["id"])

    with openai_client(corral, api_key) as ai:
        assert {chat_model["name"], embed_model["name"]} <= {m.id for m in ai.models.list()}
        messages: Any = [{"role": "user", "content": "Say something."}]
        answer = ai.chat.completions.create(
            model=chat_model["name"], messages=messages, max_tokens=8
        )
        assert answer.usage is not None and answer.usage.prompt_tokens > 0
        assert 0 < answer.usage.completion_tokens <= 8

        stream = ai.chat.completions.create(
            model=chat_model["name"],
            messages=messages,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = 0, None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
            usage = chunk.usage or usage
        assert usage is not None
        # The same prompt costs the same tokens streamed or not, and every
        # generated token arrived as its own chunk.
        assert usage.prompt_tokens == answer.usage.prompt_tokens
        assert 0 < usage.completion_tokens <= 8
        assert pieces <= usage.completion_tokens

        completion = ai.completions.create(model=chat_model["name"], prompt="Once", max_tokens=4)
        assert completion.usage is not None and completion.usage.completion_tokens <= 4

        embedding = ai.embeddings.create(model=embed_model["name"], input=["hello", "world"])
        assert [len(e.embedding) for e in embedding.data] == [256, 256]
        assert embedding.usage.prompt_tokens > 0

    for model in (chat_model, embed_model):
        assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204


def test_logs_through_the_api_and_the_cli(
    corral: ServerProcess, admin: httpx.Client, tiny_models: TinyModels, tmp_path: Path
) -> None:
    model = deploy(admin, name=unique("logs"), source=_local(tiny_models.gguf_q8_0))
    [instance] = wait_running(admin, model["id"])
    r = admin.get(f"/api/v1/instances/{instance['id']}/logs", params={"tail": 5})
    assert r.status_code == 200, r.text
    assert 0 < len(r.text.splitlines()) <= 5

    full = admin.get(f"/api/v1/instances/{instance['id']}/logs", params={"tail": 10000}).text
    assert "[corral] starting llama.cpp" in full
    assert "[corral] ready" in full
    assert instance["pid"] and str(instance["port"]) in full

    # Follow: what the engine writes next arrives on the open stream.
    with admin.stream(
        "GET", f"/api/v1/instances/{instance['id']}/logs", params={"tail": 0, "follow": 1}
    ) as stream:
        with openai_client(corral, _key(admin)) as ai:
            ai.completions.create(model=model["name"], prompt="Hi", max_tokens=2)
        received = b""
        for chunk in stream.iter_raw():
            received += chunk
            if b"print_timing" in received:  # llama-server's summary of each request
                break
    assert b"print_timing" in received

    # The CLI shows the same log.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    login = subprocess.run(
        [CORRAL, "login", "--server", corral.url, "--username", "admin", "--password",
         corral.admin_password],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    out = subprocess.run(
        [CORRAL, "instances", "logs", str(instance["id"]), "--tail", "3"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert 0 < len(out.stdout.splitlines()) <= 3
    missing = subprocess.run(
        [CORRAL, "instances", "logs", "999999"], capture_output=True, text=True, env=env,
        timeout=30,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "instance 999999 does not exist" in missing.stderr
    admin.delete(f"/api/v1/models/{model['id']}")


def _key(admin: httpx.Client) -> str:
    r = admin.post("/api/v1/api-keys", json={"name": unique("k")})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def test_a_crashed_engine_is_restarted(
    corral: ServerProcess, admin: httpx.Client, api_key: str, tiny_models: TinyModels
) -> None:
    model = deploy(admin, name=unique("crash"), source=_local(tiny_models.gguf_f16))
    [before] = wait_running(admin, model["id"])
    os.kill(before["pid"], signal.SIGKILL)

    def crashed() -> dict[str, Any] | None:
        [i] = instances(admin, model["id"])
        return i if i["state"] == "error" else None

    error = wait_for("the error state", crashed, timeout=30, every=0.05)
    assert "SIGKILL" in error["state_message"]
    assert "restarting in" in error["state_message"]

    def restarted() -> dict[str, Any] | None:
        [i] = instances(admin, model["id"])
        return i if i["state"] == "running" and i["restart_count"] == 1 else None

    after = wait_for("the restarted engine", restarted, timeout=60)
    assert after["pid"] != before["pid"]
    with openai_client(corral, api_key) as ai:
        reply = ai.completions.create(model=model["name"], prompt="Hi", max_tokens=2)
        assert reply.usage is not None
    admin.delete(f"/api/v1/models/{model['id']}")


def test_deleting_a_model_stops_its_processes_and_frees_their_ports(
    corral: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    model = deploy(admin, name=unique("delete"), source=_local(tiny_models.gguf_q8_0), replicas=2)
    running = wait_running(admin, model["id"], count=2)
    pids = [i["pid"] for i in running]
    ports = [i["port"] for i in running]
    assert len(set(ports)) == 2
    assert all(alive(p) for p in pids) and all(listening(p) for p in ports)

    assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204
    wait_for("the engines to exit", lambda: not any(alive(p) for p in pids), timeout=30)
    wait_for("the ports to close", lambda: not any(listening(p) for p in ports), timeout=10)


def test_bad_models_say_why_and_break_nothing(
    corral: ServerProcess,
    admin: httpx.Client,
    api_key: str,
    tiny_models: TinyModels,
    tmp_path: Path,
) -> None:
    missing = deploy(admin, name=unique("missing"), source=_local(tmp_path / "nope.gguf"))
    corrupt_path = tmp_path / "corrupt.gguf"
    corrupt_path.write_bytes(b"GGUF" + os.urandom(4096))
    corrupt = deploy(admin, name=unique("corrupt"), source=_local(corrupt_path))
    huge = deploy(
        admin,
        name=unique("huge"),
        source=_local(tiny_models.gguf_f16),
        # ~100 M tokens of KV cache: about 95 GiB, more than any worker here has.
        backend_parameters=["--ctx-size", "100000000"],
    )

    def settled(model: dict[str, Any], state: str) -> dict[str, Any] | None:
        items = instances(admin, model["id"])
        return (
            items[0] if items and items[0]["state"] == state and items[0]["state_message"] else None
        )

    gone = wait_for("missing file reported", lambda: settled(missing, "error"), timeout=30)
    assert "does not exist" in gone["state_message"]
    broken = wait_for("corrupt file reported", lambda: settled(corrupt, "error"), timeout=30)
    assert "corrupt.gguf" in broken["state_message"]
    waiting = wait_for("unplaceable reported", lambda: settled(huge, "pending"), timeout=30)
    assert "main:" in waiting["state_message"] and "GiB" in waiting["state_message"]

    # The gateway says the same in OpenAI's words; the server and worker still serve.
    with openai_client(corral, api_key) as ai:
        with pytest.raises(Exception) as raised:
            ai.completions.create(model=missing["name"], prompt="Hi", max_tokens=2)
        assert getattr(raised.value, "status_code", None) == 503
    assert admin.get("/api/v1/workers").json()["items"][0]["state"] == "ready"
    for model in (missing, corrupt, huge):
        admin.delete(f"/api/v1/models/{model['id']}")
