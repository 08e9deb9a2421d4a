"""NVIDIA GPUs through NVML, the library ``nvidia-smi`` itself uses.

NVML is initialised once and the handle kept: the heartbeat asks every few
seconds, and after the first call only the memory counters are read again.
GPUs that appear after the first call (hot-plug, a driver loaded later) are
not seen until the worker restarts.

Indices are NVML's, which number GPUs in PCI bus order. CUDA numbers them
fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set, so whoever
launches a backend with ``CUDA_VISIBLE_DEVICES`` built from these indices
must set that too (or pass the UUIDs instead).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol, cast

from corral.schemas.workers import Device
from corral.worker.devices.vendors import Vendor

logger = logging.getLogger(__name__)


class MemoryInfo(Protocol):
    total: int
    used: int


class Nvml(Protocol):
    """The part of the ``pynvml`` module (package ``nvidia-ml-py``) used here.
    Tests pass a fake that replays recorded values."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> MemoryInfo: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...


@dataclass(frozen=True)
class _Gpu:
    """What does not change while the worker runs."""

    index: int
    handle: Any
    uuid: str | None
    name: str
    compute_capability: str | None


def load_nvml() -> Nvml | None:
    """The ``pynvml`` module, or None when it is not installed."""
    try:
        return cast(Nvml, importlib.import_module("pynvml"))
    except ImportError:
        return None


class NvidiaDetector:
    """Reports every GPU NVML sees; none, and no error, on a machine without
    the NVIDIA driver."""

    name = "nvidia"

    def __init__(self, nvml: Nvml | None = None) -> None:
        # None means "import pynvml on first use"; a test passes its fake.
        self._nvml = nvml
        self._gpus: list[_Gpu] | None = None
        self._unavailable = False
        self._failing: set[int] = set()

    def detect(self) -> list[Device]:
        gpus = self._open()
        return [device for gpu in gpus if (device := self._read(gpu)) is not None]

    def close(self) -> None:
        """Release NVML. Safe to call twice, and before ``detect``."""
        if self._gpus is not None and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as e:
                logger.debug("nvmlShutdown failed: %s", e)
        self._gpus = None

    def _open(self) -> list[_Gpu]:
        if self._gpus is not None:
            return self._gpus
        if self._unavailable:
            return []
        nvml = self._nvml if self._nvml is not None else load_nvml()
        if nvml is None:
            return self._give_up("pynvml is not installed")
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError, OSError) as e:
            # No libnvidia-ml.so, no driver, or a driver/library mismatch: a
            # machine without NVIDIA GPUs, which is not worth more than debug.
            return self._give_up(str(e) or type(e).__name__)
        try:
            gpus = [self._describe(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]
        except nvml.NVMLError as e:
            logger.warning("NVIDIA GPUs left out: NVML could not list them: %s", e)
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()
            self._unavailable = True
            return []
        self._gpus = gpus
        return gpus

    def _give_up(self, why: str) -> list[_Gpu]:
        logger.debug("no NVIDIA GPUs: NVML unavailable (%s)", why)
        self._unavailable = True
        return []

    @staticmethod
    def _describe(nvml: Nvml, index: int) -> _Gpu:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            capability: str | None = f"{major}.{minor}"
        except nvml.NVMLError:
            capability = None
        try:
            uuid: str | None = _text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError:
            uuid = None
        return _Gpu(index, handle, uuid, _text(nvml.nvmlDeviceGetName(handle)), capability)

    def _read(self, gpu: _Gpu) -> Device | None:
        assert self._nvml is not None
        try:
            memory = self._nvml.nvmlDeviceGetMemoryInfo(gpu.handle)
        except self._nvml.NVMLError as e:
            # A GPU that cannot say how much memory it has (fallen off the
            # bus, in reset) cannot take work: leave it out rather than report
            # a size we do not know. The others keep their own indices.
            if gpu.index not in self._failing:
                logger.warning("NVIDIA GPU %d (%s) left out: %s", gpu.index, gpu.name, e)
                self._failing.add(gpu.index)
            return None
        if gpu.index in self._failing:
            logger.info("NVIDIA GPU %d (%s) reports its memory again", gpu.index, gpu.name)
            self._failing.discard(gpu.index)
        return Device(
            index=gpu.index,
            uuid=gpu.uuid,
            vendor=Vendor.NVIDIA,
            name=gpu.name,
            memory_total=int(memory.total),
            memory_used=min(int(memory.used), int(memory.total)),
            compute_capability=gpu.compute_capability,
        )


def _text(value: str | bytes) -> str:
    # pynvml returns str since 11.5; older releases returned bytes.
    return value.decode() if isinstance(value, bytes) else value
