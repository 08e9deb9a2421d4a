"""The backend drivers by id."""

from __future__ import annotations

from corral.backends.base import BackendDriver
from corral.backends.llama_cpp.driver import LlamaCppDriver
from corral.backends.vllm.driver import VllmDriver
from corral.schemas.models import BACKEND_ALIASES, Backend

_DRIVERS: dict[Backend, BackendDriver] = {
    Backend.LLAMA_CPP: LlamaCppDriver(),
    Backend.VLLM: VllmDriver(),
}


def driver(backend: str) -> BackendDriver:
    """The driver for a backend id or alias (``llama-box`` → llama.cpp)."""
    canonical = BACKEND_ALIASES.get(backend) or Backend(backend)
    return _DRIVERS[canonical]
