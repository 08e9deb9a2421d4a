"""llama.cpp for real: the CPU build corral installs, serving the tiny GGUF
models to the official ``openai`` client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from corral.backends.base import Installation, Placement
from corral.backends.llama_cpp.driver import LlamaCppDriver, rpc_server_launch
from corral.backends.process import BackendExitedError, BackendProcess, running
from corral.schemas.models import ModelCategory
from tests.backends import install_llama_cpp, launch_request, openai_client
from tests.fixtures.tiny_models import TinyModels
from tests.helpers import CORRAL, free_port

START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def llama(data_dir: Path) -> Installation:
    return install_llama_cpp(data_dir)


@pytest.fixture(scope="module")
def chat(llama: Installation, tiny_models: TinyModels, data_dir: Path) -> Iterator[BackendProcess]:
    request = launch_request(tiny_models.gguf_q8_0)
    with running(
        LlamaCppDriver(), llama, request, data_dir / "chat.log", timeout=START_TIMEOUT_S
    ) as process:
        yield process


def test_install_is_listed(llama: Installation, data_dir: Path) -> None:
    out = subprocess.run(
        [CORRAL, "backend", "list", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert '"version": "0.3.36"' in out.stdout and '"flavour": "cpu"' in out.stdout
    assert llama.reported_version.startswith("0.5.0")
    assert {"--kv-unified", "--fit", "LLAMA_API_KEY"} <= llama.flags


def test_chat_completion(chat: BackendProcess) -> None:
    reply = openai_client(chat).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.choices[0].message.role == "assistant"


def test_streamed_chat_completion(chat: BackendProcess) -> None:
    stream = openai_client(chat).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Count."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) >= 2
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 12
    assert len(deltas) <= 12


def test_a_wrong_key_is_refused(chat: BackendProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client(chat, key="not-the-key").models.list()
    assert "--api-key" not in chat.command.argv  # the key travels in the environment


def test_memory_report_and_context(chat: BackendProcess, tiny_models: TinyModels) -> None:
    report = LlamaCppDriver().parse_memory(chat.log_path.read_text())
    file_size = tiny_models.gguf_q8_0.stat().st_size
    weights = report.total("CPU", "model")
    assert 0.8 * file_size < weights <= file_size
    assert report.total("CPU", "kv") > 0 and report.total("CPU", "compute") > 0
    assert report.context_length == 2048 and report.training_context_length == 2048


def test_embeddings(llama: Installation, tiny_models: TinyModels, data_dir: Path) -> None:
    request = launch_request(
        tiny_models.gguf_embed, categories=frozenset({ModelCategory.EMBEDDING})
    )
    with running(
        LlamaCppDriver(), llama, request, data_dir / "embed.log", timeout=START_TIMEOUT_S
    ) as process:
        result = openai_client(process).embeddings.create(model="tiny", input=["one", "two words"])
    assert [len(d.embedding) for d in result.data] == [256, 256]
    assert result.usage.prompt_tokens >= 3


def test_stop_leaves_no_process(
    llama: Installation, tiny_models: TinyModels, data_dir: Path
) -> None:
    process = BackendProcess(
        LlamaCppDriver(), llama, launch_request(tiny_models.gguf_q8_0), data_dir / "stop.log"
    )
    process.start()
    process.wait_ready(START_TIMEOUT_S)
    assert process.process is not None
    pgid = process.process.pid
    process.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{process.base_url}/health")
    assert process.stop() is not None  # twice is fine


def test_a_broken_model_file_fails_with_the_reason(
    llama: Installation, tiny_models: TinyModels, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_models.gguf_q8_0.read_bytes()[: 1 << 20])
    process = BackendProcess(
        LlamaCppDriver(), llama, launch_request(broken), tmp_path / "broken.log"
    )
    process.start()
    with pytest.raises(BackendExitedError, match="exited with"):
        process.wait_ready(START_TIMEOUT_S)
    process.stop()


def test_backend_run_command(
    llama: Installation, tiny_models: TinyModels, data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "run.out"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [
                CORRAL,
                "backend",
                "run",
                str(tiny_models.gguf_q8_0),
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--name",
                "tiny-run",
                "--",
                "--ctx-size",
                "1024",
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            text=True,
            # As from a terminal: a suite started in the background (``cmd &``)
            # hands its children SIGINT ignored, and Python keeps it so.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "ready:" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        key = out.read_text().split("api key=")[1].split()[0]
        props = httpx.get(
            f"http://127.0.0.1:{port}/props", headers={"Authorization": f"Bearer {key}"}
        ).json()
        assert props["default_generation_settings"]["n_ctx"] == 1024  # the user's value won
        # Closed before the interrupt: llama-server's shutdown waits for open
        # keep-alive connections, and an unclosed client's lingers until GC.
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key) as llm:
            reply = llm.completions.create(model="tiny-run", prompt="Once upon", max_tokens=4)
        assert reply.usage is not None and reply.usage.completion_tokens == 4
        assert key not in out.read_text().split("ready:")[0]  # the key is not echoed in argv
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "rpc-server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"rpc-server did not listen on {port}")


def test_layers_on_an_rpc_server(
    llama: Installation, tiny_models: TinyModels, data_dir: Path
) -> None:
    """llama-server with every layer on an rpc-server's device (one machine)."""
    port = free_port()
    command = rpc_server_launch(
        llama,
        "127.0.0.1",
        port,
        gpu_index=None,
        gpu_vendor=None,
        flags=frozenset(),
        cache_dir=data_dir,
        threads=1,
    )
    rpc = subprocess.Popen(
        command.argv,
        env={**os.environ, **command.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=data_dir,
    )
    try:
        _wait_for_port(port, rpc)
        endpoint = f"127.0.0.1:{port}"
        request = launch_request(
            tiny_models.gguf_q8_0, placement=Placement(rpc_endpoints=(endpoint,))
        )
        with running(
            LlamaCppDriver(), llama, request, data_dir / "rpc.log", timeout=START_TIMEOUT_S
        ) as process:
            reply = openai_client(process).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert reply.usage is not None and reply.usage.completion_tokens >= 1
        report = LlamaCppDriver().parse_memory(process.log_path.read_text())
        remote = f"RPC0[{endpoint}]"
        assert report.total(remote, "model") > 0.8 * tiny_models.gguf_q8_0.stat().st_size
        assert report.total(remote, "kv") > 0
    finally:
        rpc.terminate()
        rpc.wait(timeout=10)


def test_backend_run_refuses_a_broken_file_before_starting(
    llama: Installation, data_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(8) + (1 << 62).to_bytes(8, "little") + bytes(8))
    r = subprocess.run(
        [CORRAL, "backend", "run", str(broken), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "broken.gguf at byte 4: unsupported GGUF version 0" in r.stderr
    assert "log:" not in r.stderr  # no engine was started
