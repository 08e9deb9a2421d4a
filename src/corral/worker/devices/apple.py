"""Apple silicon GPUs, which share the machine's memory (unified memory).

``system_profiler SPDisplaysDataType -json`` names the GPU and counts its
cores; ``sysctl -n hw.memsize`` gives the memory. Both are read once: they
do not change while the worker runs, and system_profiler takes the better
part of a second. What is in use is read every time, from psutil.

The GPU can use most, not all, of that memory (Metal caps a process's
working set somewhat below it). The device reports all of it: the margin
belongs in the worker's ``system_reserved``, which the scheduler subtracts.
"""

from __future__ import annotations

import logging
import platform

import psutil

from corral.schemas.workers import Device
from corral.worker.devices.tools import ToolRunner, json_document, run_tool
from corral.worker.devices.vendors import Vendor

logger = logging.getLogger(__name__)

SYSTEM_PROFILER = ("system_profiler", "SPDisplaysDataType", "-json")
MEMSIZE = ("sysctl", "-n", "hw.memsize")


def parse_system_profiler(json_text: str, memory_total: int, memory_used: int) -> list[Device]:
    """The Apple GPUs in ``system_profiler SPDisplaysDataType -json`` output,
    each with the machine's memory. Other GPUs in the listing (the AMD or
    Intel GPU of an Intel Mac) are not Apple silicon and are left out."""
    document = json_document(json_text)
    entries = document.get("SPDisplaysDataType") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    devices: list[Device] = []
    for entry in entries:
        if not isinstance(entry, dict) or not _is_apple(entry):
            continue
        model = str(entry.get("sppci_model") or entry.get("_name") or "Apple GPU")
        cores = str(entry.get("sppci_cores") or "")
        metal = str(entry.get("spdisplays_mtlgpufamilysupport") or "")
        devices.append(
            Device(
                index=len(devices),
                vendor=Vendor.APPLE,
                name=f"{model} ({cores}-core GPU)" if cores.isdigit() else model,
                memory_total=memory_total,
                memory_used=min(max(memory_used, 0), memory_total),
                # The Metal family ("metal3") plays the part a CUDA compute
                # capability does: which GPU features a build may rely on.
                compute_capability=metal.removeprefix("spdisplays_") or None,
            )
        )
    return devices


def parse_memsize(text: str) -> int | None:
    """``sysctl -n hw.memsize`` output: the bytes of memory, on one line."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() and int(stripped) > 0 else None


def _is_apple(entry: dict[str, object]) -> bool:
    vendor = str(entry.get("spdisplays_vendor") or entry.get("sppci_vendor") or "")
    model = str(entry.get("sppci_model") or "")
    return vendor.lower().endswith("apple") or model.startswith("Apple ")


class AppleDetector:
    """Reports the GPU of an Apple silicon Mac; nothing anywhere else."""

    name = "apple"

    def __init__(
        self,
        run: ToolRunner = run_tool,
        *,
        system: str | None = None,
        machine: str | None = None,
    ) -> None:
        self._run = run
        system = platform.system() if system is None else system
        machine = platform.machine() if machine is None else machine
        self._applies = system == "Darwin" and machine.lower() in {"arm64", "aarch64"}
        self._profile: str | None = None
        self._memsize: int | None = None

    def detect(self) -> list[Device]:
        if not self._applies:
            return []
        if self._profile is None or self._memsize is None:
            self._profile = self._run(SYSTEM_PROFILER)
            self._memsize = parse_memsize(self._run(MEMSIZE) or "")
        if not self._profile or not self._memsize:
            logger.debug("no Apple GPU: system_profiler or sysctl gave nothing usable")
            return []
        memory = psutil.virtual_memory()
        used = int(memory.total) - int(memory.available)
        return parse_system_profiler(self._profile, self._memsize, used)

    def close(self) -> None:
        """Nothing is held between calls."""
