"""Where header bytes come from: anything that can read a byte range."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class ByteSource(Protocol):
    """Random access to a file's bytes, read in ranges."""

    name: str
    """How to name the file in error messages."""

    def size(self) -> int | None:
        """The file's length, when known."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; fewer only at the end of the file."""
        ...


class LocalFile:
    """A file on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self._size = path.stat().st_size

    def size(self) -> int | None:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)
