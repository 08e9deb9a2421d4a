"""How far a download has got, measured from the bytes in the cache.

Measuring the disk rather than hooking huggingface_hub's progress bars means a
caller that waits for another process's download of the same files (see
``locks``) sees that download advance too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
"""Seconds between measurements, so progress is reported at most twice a second."""

Progress = Callable[[float], None]


@dataclass(frozen=True)
class CachedFile:
    """Where one file of a download lands in huggingface_hub's cache."""

    pointer: Path
    """``snapshots/<commit>/<name>``: there once the file is complete."""
    blob: Path | None
    """``blobs/<etag>``; huggingface_hub writes it as ``<etag>.<random>.incomplete``
    first. ``None`` when the hub gave no blob id, so only completion is seen."""
    size: int

    def is_present(self) -> bool:
        return self.pointer.exists() or (self.blob is not None and self.blob.exists())


def missing_bytes(files: Iterable[CachedFile]) -> int:
    """Bytes still to download (a partial file counts whole: its writer may be
    another process, and huggingface_hub does not resume another's file)."""
    return sum(f.size for f in files if not f.is_present())


def present_bytes(files: Sequence[CachedFile]) -> int:
    partial = _incomplete_sizes({f.blob.parent for f in files if f.blob is not None})
    total = 0
    for f in files:
        if f.is_present():
            total += f.size
        elif f.blob is not None:
            total += min(f.size, partial.get(f.blob.name, 0))
    return total


def _incomplete_sizes(directories: Iterable[Path]) -> dict[str, int]:
    """The largest ``.incomplete`` file per blob name: two writers of one blob
    (a lock the file system ignores) each write a whole copy."""
    sizes: dict[str, int] = {}
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.name.endswith(".incomplete"):
                continue
            blob = entry.name.split(".", 1)[0]
            try:
                size = entry.stat().st_size
            except FileNotFoundError:  # renamed into place since the listing
                continue
            sizes[blob] = max(sizes.get(blob, 0), size)
    return sizes


@asynccontextmanager
async def reporting(measure: Callable[[], float], on_progress: Progress) -> AsyncIterator[None]:
    """While the body runs, report ``measure()`` (a fraction, measured in a
    thread) every :data:`POLL_INTERVAL` when it has grown. Values of 1.0 are
    left to the caller, which reports 1.0 once when every file is in place.

    An exception from ``on_progress`` is raised when the body has finished."""

    async def poll() -> None:
        reported = -1.0
        while True:
            try:
                fraction = await asyncio.to_thread(measure)
            except OSError as e:  # a cache being cleaned up under us; the download reports it
                logger.debug("could not measure download progress: %s", e)
            else:
                if reported < fraction < 1.0:
                    on_progress(fraction)
                    reported = fraction
            await asyncio.sleep(POLL_INTERVAL)

    poller = asyncio.create_task(poll())
    try:
        yield
    finally:
        poller.cancel()
        (outcome,) = await asyncio.gather(poller, return_exceptions=True)
    if isinstance(outcome, Exception):
        raise outcome
