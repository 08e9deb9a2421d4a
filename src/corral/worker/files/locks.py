"""One fetch at a time per repository and revision, across processes.

huggingface_hub already locks each blob, so two downloads never fetch the same
file twice. The lock here is per (repo, revision): a second caller waits for
the first to finish the whole set, then finds every file in the cache, which
also keeps its disk-space check from counting files being written."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from filelock import AsyncFileLock

LOCK_POLL_INTERVAL = 0.1


def repo_lock(cache_dir: Path, hub: str, repo: str, revision: str) -> AsyncFileLock:
    """A lock file under ``cache_dir/locks``. Waiting on it polls, so a cancelled
    waiter holds nothing (a blocking acquire in a thread would take the lock
    after its caller had gone)."""
    directory = cache_dir / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{hub}--{repo.replace('/', '--')}--{quote(revision, safe='')}.lock"
    return AsyncFileLock(directory / name, poll_interval=LOCK_POLL_INTERVAL)
