"""Finding the engines the tests run. ``make test`` (and so ``.ci/run``)
installs them into the machine's cache first; a test that needs one fails
when ``CI`` is set and it is missing, and is skipped (saying how to install
it) only on a developer's machine."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import openai
import pytest

from corral.backends.base import Installation, LaunchRequest
from corral.backends.llama_cpp import install as llama
from corral.backends.process import BackendProcess
from corral.backends.registry import driver
from corral.backends.vllm import install as vllm
from corral.schemas.models import Backend
from tests.helpers import CORRAL, free_port


def _missing(what: str, how: str) -> None:
    message = f"{what} is not installed on this machine; run `{how}` (or `make backends`)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def install_llama_cpp(data_dir: Path) -> Installation:
    """llama.cpp CPU build, installed into ``data_dir`` through the real CLI."""
    if llama.cached_build(llama.DEFAULT_VERSION, llama.Flavour.CPU) is None:
        _missing("llama.cpp", "corral backend install llama.cpp --gpu cpu")
    run = subprocess.run(
        [CORRAL, "backend", "install", "llama.cpp", "--gpu", "cpu", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    [found] = [i for i in driver(Backend.LLAMA_CPP).installed(data_dir) if i.flavour == "cpu"]
    return found


def install_vllm(data_dir: Path) -> Installation:
    if not (
        vllm.backend_cache(vllm.BACKEND_DIR) / f"{vllm.DEFAULT_VERSION}-cpu" / vllm.MANIFEST
    ).exists():
        _missing("vLLM", "corral backend install vllm")
    run = subprocess.run(
        [CORRAL, "backend", "install", "vllm", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    [found] = driver(Backend.VLLM).installed(data_dir)
    return found


def launch_request(model: Path, **overrides: object) -> LaunchRequest:
    """A launch of the tiny model on loopback, on a free port, with a fresh key."""
    values: dict[str, object] = {
        "model_name": "tiny", "model_path": model, "host": "127.0.0.1",
        "port": free_port(), "api_key": secrets.token_urlsafe(16), "context_length": 2048,
    }  # fmt: skip
    return LaunchRequest(**(values | overrides))  # type: ignore[arg-type]


def openai_client(process: BackendProcess, key: str | None = None) -> openai.OpenAI:
    """The official SDK pointed straight at one engine."""
    return openai.OpenAI(
        base_url=f"{process.base_url}/v1", api_key=key or process.request.api_key, max_retries=0
    )
