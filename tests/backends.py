"""Finding the engines the tests run. ``make test`` (and so ``.ci/run``)
installs them into the machine's cache first; a test that needs one fails
when ``CI`` is set and it is missing, and is skipped (saying how to install
it) only on a developer's machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from corral.backends.base import Installation
from corral.backends.llama_cpp import install as llama
from corral.backends.registry import driver
from corral.backends.vllm import install as vllm
from corral.schemas.models import Backend
from tests.helpers import CORRAL


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
