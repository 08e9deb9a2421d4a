"""vLLM for real: the CPU build corral installs, serving the tiny Hugging
Face checkpoint to the official ``openai`` client. Each start takes about a
minute on two cores (torch compile warm-up), so one server is shared."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from corral.backends.base import Installation
from corral.backends.process import BackendProcess, running
from corral.backends.vllm.driver import VllmDriver
from corral.schemas.models import ModelCategory
from tests.backends import install_vllm, launch_request, openai_client
from tests.fixtures.tiny_models import TinyModels

START_TIMEOUT_S = 600
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB; the default would take a quarter of RAM

pytestmark = pytest.mark.timeout(START_TIMEOUT_S + 120)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm-data")


@pytest.fixture(scope="module")
def vllm(data_dir: Path) -> Installation:
    return install_vllm(data_dir)


@pytest.fixture(scope="module")
def chat(vllm: Installation, tiny_models: TinyModels, data_dir: Path) -> Iterator[BackendProcess]:
    with running(
        VllmDriver(),
        vllm,
        launch_request(tiny_models.hf_dir, env=CPU_ENV),
        data_dir / "chat.log",
        timeout=START_TIMEOUT_S,
    ) as process:
        yield process


def test_install_uses_the_module_entry_point(vllm: Installation) -> None:
    assert vllm.flavour == "cpu" and vllm.reported_version == "0.32.0"
    assert vllm.launcher[1:] == ("-m", "vllm.entrypoints.openai.api_server")
    assert {"--runner", "--max-model-len"} <= vllm.flags


def test_chat_completion(chat: BackendProcess) -> None:
    client = openai_client(chat)
    assert [m.id for m in client.models.list()] == ["tiny"]
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5 and 1 <= reply.usage.completion_tokens <= 8


def test_streamed_chat_completion(chat: BackendProcess) -> None:
    stream = openai_client(chat).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Count."}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    deltas = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


def test_a_wrong_key_is_refused(chat: BackendProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client(chat, key="not-the-key").models.list()
    assert "--api-key" not in chat.command.argv


def test_memory_report(chat: BackendProcess, tiny_models: TinyModels) -> None:
    report = VllmDriver().parse_memory(chat.log_path.read_text())
    checkpoint = (tiny_models.hf_dir / "model.safetensors").stat().st_size
    assert abs(report.total("CPU", "weights") - checkpoint) < 0.3 * checkpoint
    assert report.total("CPU", "kv") == 1024**3
    assert report.kv_cache_tokens is not None and report.kv_cache_tokens > 2048
    assert report.context_length == 2048


def test_embeddings_and_a_clean_stop(
    vllm: Installation, tiny_models: TinyModels, data_dir: Path
) -> None:
    request = launch_request(
        tiny_models.hf_dir, categories=frozenset({ModelCategory.EMBEDDING}), env=CPU_ENV
    )
    with running(
        VllmDriver(), vllm, request, data_dir / "embed.log", timeout=START_TIMEOUT_S
    ) as process:
        result = openai_client(process).embeddings.create(model="tiny", input=["one", "two words"])
        assert [len(d.embedding) for d in result.data] == [256, 256]
        assert result.usage.prompt_tokens >= 3
        assert process.process is not None
        pgid = process.process.pid
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # the API server and its engine processes are all gone
