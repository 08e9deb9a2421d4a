"""Per-instance log files: what an engine printed, rotated by size, read
back (the last N lines, then follow) for ``corral instances logs``.

The worker reads the engine's output from a pipe and writes it here, so it
can rotate files while the engine runs and keep the last lines at hand for
the error message when the engine dies.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
TAIL_LINES = 25
"""Lines of the log an error report carries."""


class InstanceLog:
    """``<dir>/instance.log`` and its rotated predecessors ``instance.log.1`` … ``.3``."""

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "instance.log"
        self._max_bytes = max_bytes
        self._backups = backups
        self._file = self.path.open("ab")
        self._size = self.path.stat().st_size
        self.recent: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    @property
    def size(self) -> int:
        """Bytes in the current file: where what is written next begins."""
        return self._size

    def write_line(self, line: bytes) -> None:
        if self._size + len(line) > self._max_bytes and self._size > 0:
            self._rotate()
        self._file.write(line)
        self._file.flush()
        self._size += len(line)
        self.recent.append(line.decode("utf-8", "replace").rstrip("\n"))

    def note(self, text: str) -> None:
        """A line from the worker itself (launch, exit), marked as such."""
        self.write_line(f"[corral] {text}\n".encode())

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(list(self.recent)[-lines:])

    def close(self) -> None:
        self._file.close()

    async def copy_from(self, stream: asyncio.StreamReader) -> None:
        """Write every line of ``stream`` until it ends (the engine exited)."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the reader's limit
                line = await stream.read(64 * 1024)
            if not line:
                return
            self.write_line(line if line.endswith(b"\n") else line + b"\n")


def read_tail(path: Path, lines: int) -> tuple[bytes, int]:
    """The last ``lines`` lines of the log at ``path`` (reaching into the
    rotated files when the current one is short) and the offset where the
    current file ends."""
    kept: list[bytes] = []
    end = 0
    for i, file in enumerate([path, *(path.with_name(f"{path.name}.{n}") for n in range(1, 10))]):
        if len(kept) >= lines:
            break
        data, size = _last_lines(file, lines - len(kept))
        if i == 0:
            end = size
        elif size == 0:
            break
        kept = data + kept
    return b"".join(kept[-lines:] if lines > 0 else []), end


def _last_lines(path: Path, lines: int) -> tuple[list[bytes], int]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            end = position = f.tell()
            data = b""
            while position > 0 and data.count(b"\n") <= lines:
                step = min(64 * 1024, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    except FileNotFoundError:
        return [], 0
    return (data.splitlines(keepends=True)[-lines:] if lines > 0 else []), end


async def follow(path: Path, offset: int, poll: float = 0.25) -> AsyncIterator[bytes]:
    """What is appended to ``path`` after ``offset``, as it comes.

    The file stays open, so a rotation is seen as the path naming another
    file (the open one keeps its inode, which therefore cannot be reused):
    the rest of the old file is read, then the new one from its start.
    """
    f = _open(path)
    try:
        if f is not None:
            f.seek(offset)
        while True:
            chunk = f.read(1024 * 1024) if f is not None else b""
            if chunk:
                yield chunk
                continue
            if f is None or _rotated(path, f):
                if f is not None:
                    f.close()
                f = _open(path)
                if f is not None:
                    continue
            await asyncio.sleep(poll)
    finally:
        if f is not None:
            f.close()


def _open(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _rotated(path: Path, f: BinaryIO) -> bool:
    try:
        return path.stat().st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False
