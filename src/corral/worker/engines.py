"""The inference engines this worker runs, installed on demand.

A model may pin ``backend_version``; without a pin the newest version
installed on this worker is used, else corral's default is installed. An
install runs once per (backend, version) even when several instances wait
for it, and is cached per machine (``corral backend install`` shares it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from corral.backends.base import Installation
from corral.backends.llama_cpp import install as llama_install
from corral.backends.registry import driver
from corral.backends.vllm import install as vllm_install
from corral.schemas.models import Backend

logger = logging.getLogger(__name__)


class Engines:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._locks: dict[tuple[Backend, str | None], asyncio.Lock] = {}

    def _find(self, backend: Backend, version: str | None) -> Installation | None:
        installed = driver(backend).installed(self._data_dir)
        matching = [i for i in installed if version is None or i.version == version]
        return matching[-1] if matching else None

    async def get(
        self, backend: Backend, version: str | None, progress: Callable[[str], None]
    ) -> Installation:
        """The installation to launch with; installs it first when missing
        (``InstallError`` says why an install failed)."""
        found = await asyncio.to_thread(self._find, backend, version)
        if found is not None:
            return found
        lock = self._locks.setdefault((backend, version), asyncio.Lock())
        async with lock:
            found = await asyncio.to_thread(self._find, backend, version)
            if found is not None:
                return found
            progress(f"installing {backend} {version or '(default version)'} on this worker")
            await asyncio.to_thread(self._install, backend, version, progress)
            found = await asyncio.to_thread(self._find, backend, version)
        if found is None:
            raise RuntimeError(f"{backend} {version} was installed but is not found")
        return found

    def _install(
        self, backend: Backend, version: str | None, progress: Callable[[str], None]
    ) -> None:
        if backend is Backend.VLLM:
            vllm_install.install(
                self._data_dir,
                version or vllm_install.DEFAULT_VERSION,
                vllm_install.detect_flavour(),
                progress,
            )
        else:
            llama_install.install(
                self._data_dir,
                version or llama_install.DEFAULT_VERSION,
                llama_install.detect_flavour(),
                progress,
            )
