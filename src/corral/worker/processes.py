"""Child processes the worker starts: spawned so they cannot outlive it, and
remembered on disk so that a worker killed before it could stop them finds
and stops them at its next start.

Each engine runs in its own session (process group), so stopping it reaches
the processes it started itself (vLLM's engine cores). On Linux each child
also asks the kernel to SIGKILL it when the worker dies
(``PR_SET_PDEATHSIG``): a ``kill -9`` of the worker takes its engines along.
The registry catches the rest (other platforms, grandchildren that left the
group).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _child_setup() -> None:
    """Runs in the child between fork and exec: async-signal-safe calls only."""
    os.setsid()
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class Record:
    key: str
    """What the process is for, e.g. ``instance-12``."""
    pid: int
    started: float
    """The leader's create time (psutil), so a recycled pid is not mistaken for it."""


class ProcessRegistry:
    """``processes.json`` in the worker's run directory: the process groups alive now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, Record] = {}

    def add(self, record: Record) -> None:
        self._records[record.key] = record
        self._save()

    def remove(self, key: str) -> None:
        if self._records.pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in self._records.values()]))
        os.replace(tmp, self.path)

    def reap_leftovers(self) -> list[Record]:
        """Kill every process group a previous run of this worker left behind.

        Returns what was found still running. Only groups whose leader is the
        recorded process (same pid and create time), or whose members started
        after it, are touched.
        """
        try:
            records = [Record(**r) for r in json.loads(self.path.read_text())]
        except (OSError, ValueError, TypeError):
            records = []
        found = []
        for record in records:
            members = _group_members(record)
            if members:
                found.append(record)
                logger.warning(
                    "stopping %s (pid %d, %d process(es)) left by a previous run of this worker",
                    record.key,
                    record.pid,
                    len(members),
                )
                for p in members:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                psutil.wait_procs(members, timeout=10)
        self._records.clear()
        self._save()
        return found


def _group_members(record: Record) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(p.pid) == record.pid and p.info["create_time"] >= record.started - 1:
                members.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


async def spawn(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Child:
    """Start ``argv`` in its own process group, output (both streams) on a pipe."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
        # Only setsid and prctl run before exec: both async-signal-safe.
        preexec_fn=_child_setup,
    )
    try:
        started = psutil.Process(process.pid).create_time()
    except psutil.Error:
        started = time.time()
    return Child(process, started)


@dataclass
class Child:
    process: asyncio.subprocess.Process
    started: float

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self, grace: float) -> int:
        """SIGTERM the leader (vLLM then stops its engine processes in order),
        SIGKILL the whole group after ``grace`` seconds or once the leader is
        gone; returns the exit code. Safe to call twice."""
        pgid = self.process.pid
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.process.wait()
            except TimeoutError:
                logger.warning("pid %d did not exit %.0f s after SIGTERM; killing it", pgid, grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        code = await self.process.wait()
        await _group_gone(pgid)
        return code


async def _group_gone(pgid: int, timeout: float = 10) -> None:
    """Wait until no process of the group is left (zombies reaped by init included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        await asyncio.sleep(0.05)
