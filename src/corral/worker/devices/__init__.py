"""What this machine has: accelerators, CPU, memory, disks, and its labels.

``build_detector(devices_file)`` makes the ``DeviceDetector`` the worker
keeps for its life; ``read_status(detector, disk_paths)`` is what each
heartbeat sends. Detection blocks (NVML calls, amd-smi subprocesses), so the
agent runs it in a thread.

Without a devices file every vendor is asked: NVIDIA (NVML), AMD (amd-smi,
else rocm-smi), Apple silicon (system_profiler). A vendor that is absent, or
whose tool fails, contributes no devices and does not stop the others.

A devices file *replaces* detection rather than adding to it: a worker that
simulates GPUs reports exactly the file's GPUs, on any machine, so tests and
demos see the same cluster everywhere.

Each device keeps the index its own vendor's tool gives it, because that is
the number ``CUDA_VISIBLE_DEVICES`` or ``HIP_VISIBLE_DEVICES`` takes. On a
machine with GPUs of two vendors the indices therefore repeat (an NVIDIA 0
and an AMD 0); such machines are rare, and until the scheduler addresses a
GPU by vendor as well, one of them should be hidden from the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from corral.schemas.workers import Device, WorkerStatus
from corral.worker.devices.amd import AmdDetector, parse_amd_smi, parse_rocm_smi
from corral.worker.devices.apple import AppleDetector, parse_system_profiler
from corral.worker.devices.host import read_cpu, read_disks, read_memory
from corral.worker.devices.labels import builtin_labels, normalise_arch, parse_label
from corral.worker.devices.nvidia import NvidiaDetector, Nvml
from corral.worker.devices.simulated import load_devices_file
from corral.worker.devices.sizes import parse_size
from corral.worker.devices.vendors import Vendor

__all__ = [
    "AmdDetector",
    "AppleDetector",
    "Detector",
    "DeviceDetector",
    "NvidiaDetector",
    "Nvml",
    "SimulatedDetector",
    "Vendor",
    "build_detector",
    "builtin_labels",
    "load_devices_file",
    "normalise_arch",
    "parse_amd_smi",
    "parse_label",
    "parse_rocm_smi",
    "parse_size",
    "parse_system_profiler",
    "read_status",
]

logger = logging.getLogger(__name__)


class Detector(Protocol):
    """One source of devices. ``detect`` should not raise; if it does anyway,
    ``DeviceDetector`` leaves that source out of the reading."""

    name: str

    def detect(self) -> list[Device]: ...
    def close(self) -> None: ...


class SimulatedDetector:
    """The devices of a devices file, the same at every call."""

    name = "simulated"

    def __init__(self, devices: Sequence[Device]) -> None:
        self._devices = list(devices)

    def detect(self) -> list[Device]:
        return [device.model_copy() for device in self._devices]

    def close(self) -> None:
        """Nothing is held."""


class DeviceDetector:
    """Asks each detector in turn and reports all their devices together."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = list(detectors)
        self._broken: set[str] = set()
        self._warned_mixed = False

    def detect(self) -> list[Device]:
        devices: list[Device] = []
        for detector in self._detectors:
            try:
                found = detector.detect()
            except Exception:
                # A bug in one detector must not hide the others' GPUs; say so
                # loudly once, not at every heartbeat.
                if detector.name not in self._broken:
                    logger.exception("%s device detection failed", detector.name)
                    self._broken.add(detector.name)
                continue
            self._broken.discard(detector.name)
            devices.extend(found)
        self._warn_if_mixed(devices)
        return devices

    def close(self) -> None:
        """Release what the detectors hold (NVML). Safe to call twice."""
        for detector in self._detectors:
            try:
                detector.close()
            except Exception:
                logger.exception("closing %s device detection failed", detector.name)

    def _warn_if_mixed(self, devices: Iterable[Device]) -> None:
        vendors = {device.vendor for device in devices}
        if len(vendors) > 1 and not self._warned_mixed:
            logger.warning(
                "GPUs of more than one vendor (%s): their indices overlap; hide one vendor's"
                " GPUs from this worker",
                ", ".join(sorted(vendors)),
            )
            self._warned_mixed = True


def build_detector(devices_file: Path | None = None) -> DeviceDetector:
    """The detector for this machine, or for ``devices_file``'s simulated GPUs.

    A bad devices file raises ``InvalidInputError`` here, at start-up, so
    the worker can print it and exit.
    """
    if devices_file is not None:
        return DeviceDetector([SimulatedDetector(load_devices_file(devices_file))])
    return DeviceDetector([NvidiaDetector(), AmdDetector(), AppleDetector()])


def read_status(detector: DeviceDetector, disk_paths: Iterable[Path]) -> WorkerStatus:
    """One heartbeat's report of this machine."""
    return WorkerStatus(
        cpu=read_cpu(),
        memory=read_memory(),
        disks=read_disks(disk_paths),
        devices=detector.detect(),
    )
