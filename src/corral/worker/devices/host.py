"""The machine itself: CPU, memory and the disks the worker writes to."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import psutil

from corral.schemas.workers import CpuStatus, DiskStatus, MemoryStatus

logger = logging.getLogger(__name__)


def read_cpu() -> CpuStatus:
    """Logical cores, and how busy they were since the previous call.

    ``cpu_percent(interval=None)`` does not block; it compares against the
    previous call, so the first reading of a process is 0 and each later one
    covers one heartbeat interval.
    """
    cores = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    utilization = float(psutil.cpu_percent(interval=None))
    return CpuStatus(cores=int(cores), utilization=min(max(utilization, 0.0), 100.0))


def read_memory() -> MemoryStatus:
    """Used is total less *available*: page cache the kernel would give back
    counts as free, as it does for a process that asks for memory."""
    memory = psutil.virtual_memory()
    total = int(memory.total)
    return MemoryStatus(total=total, used=min(max(total - int(memory.available), 0), total))


def read_disks(paths: Iterable[Path]) -> list[DiskStatus]:
    """Size and use of the filesystem under each path, once per filesystem.

    Two paths on one filesystem (a data dir and a model cache beside it)
    report it once, under the first path given, so that its space is not
    counted twice. Paths that do not exist yet are left out.
    """
    disks: list[DiskStatus] = []
    mounts: set[Path] = set()
    for path in paths:
        try:
            resolved = path.expanduser().resolve(strict=True)
            mount = _mount_point(resolved)
            if mount in mounts:
                continue
            usage = psutil.disk_usage(str(resolved))
        except OSError as e:
            logger.debug("disk %s left out: %s", path, e)
            continue
        mounts.add(mount)
        disks.append(DiskStatus(path=str(path), total=int(usage.total), used=int(usage.used)))
    return disks


def _mount_point(path: Path) -> Path:
    while not path.is_mount() and path != path.parent:
        path = path.parent
    return path
