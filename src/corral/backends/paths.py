"""Where backends are built once per machine (the cache) and installed (the data dir).

The cache lives outside any clone (``$CORRAL_CACHE_DIR``, else
``$XDG_CACHE_HOME/corral``, else ``~/.cache/corral``), keyed by backend,
version and flavour, so tests, CI and every data dir on a machine build a
version once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    if explicit := os.environ.get("CORRAL_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "corral"


def backend_cache(backend: str) -> Path:
    return cache_dir() / "backends" / backend


def install_root(data_dir: Path, backend: str) -> Path:
    return data_dir / "backends" / backend


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive file lock: one build or download of a thing at a time,
    across processes (two test sessions, a worker and the CLI)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
