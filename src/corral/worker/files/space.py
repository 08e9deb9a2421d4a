"""Refusing a download the disk cannot hold, before any byte of it is fetched."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from corral.worker.files.result import ModelFilesError

DiskFree = Callable[[Path], int]
"""Free bytes on the file system holding a directory."""


def disk_free(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def check_free_space(directory: Path, needed: int, free_of: DiskFree) -> None:
    """Raises unless ``needed`` more bytes fit in ``directory``.

    huggingface_hub writes each file next to its final blob and renames it into
    place, so a file needs its own size once, not twice."""
    if needed <= 0:
        return
    free = free_of(directory)
    if needed > free:
        raise ModelFilesError(
            f"Not enough disk space in {directory}: the model needs {format_size(needed)} "
            f"more, {format_size(free)} free."
        )


def format_size(n: int) -> str:
    """``512 B``, ``300.0 KiB``, ``14.2 GiB``: one decimal, binary units."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
