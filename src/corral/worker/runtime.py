"""What the runners of one worker share: its engines, ports, process
registry, where to report, and the settings a launch needs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from corral.schemas.assignments import InstanceStatusReport, RpcServerStatusReport
from corral.schemas.workers import Device
from corral.worker.engines import Engines
from corral.worker.logs import InstanceLog
from corral.worker.ports import PortAllocator
from corral.worker.processes import Child, ProcessRegistry, Record, spawn

Report = Callable[[int, InstanceStatusReport], None]
"""Queues an instance report for the server; never blocks, never fails."""
RpcReport = Callable[[int, RpcServerStatusReport], None]


@dataclass
class Runtime:
    engines: Engines
    ports: PortAllocator
    registry: ProcessRegistry
    report: Report
    report_rpc: RpcReport
    devices: Callable[[], list[Device]]
    data_dir: Path
    models_dir: Path
    logs_dir: Path
    host: str
    """Where engines listen: the address the server reaches this worker at."""
    stop_grace: float
    ready_timeout: float
    helper_timeout: float = 600.0
    """Seconds a primary waits for its helpers' rpc-servers before giving up."""
    rpc_host: str | None = None
    """Where rpc-servers listen when not ``host`` (set only by the operator)."""
    cluster_network: str | None = None
    """CIDR the rpc-server address must lie in, when configured."""
    cpu_threads: int = 1
    """Threads an rpc-server lending the CPU (a simulated GPU) computes with."""


class RestartBackoff:
    """Delay before restarting a crashed child: ``first`` seconds doubling up
    to ``maximum``, back to ``first`` after a run that lasted ``stable_after``
    seconds (the backoff is for crash loops, not the occasional crash)."""

    def __init__(self, first: float, maximum: float, stable_after: float) -> None:
        self._first, self._maximum, self._stable_after = first, maximum, stable_after
        self._attempt = 0

    def after(self, ran_for: float) -> float:
        if ran_for > self._stable_after:
            self._attempt = 0
        delay: float = min(self._first * 2.0**self._attempt, self._maximum)
        self._attempt += 1
        return delay


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a runner's task and wait until it has cleaned up. Safe to call twice."""
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LaunchFailed(Exception):
    """The instance could not be (kept) running; the message is for the user."""


def exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Running:
    """A child started by ``supervised``, its output copied into its log."""

    child: Child
    copier: asyncio.Task[None]

    async def exited(self) -> int:
        """Its exit code, once its output is all in the log."""
        code = await self.child.process.wait()
        await self.copier
        return code


@contextlib.asynccontextmanager
async def supervised(
    rt: Runtime, key: str, log: InstanceLog, argv: list[str], env: dict[str, str], what: str
) -> AsyncIterator[Running]:
    """Run ``argv`` as a supervised child for the block: its own process group,
    recorded in the registry (so a later run of this worker can reap it),
    output into ``log``; stopped (SIGTERM, then SIGKILL) when the block ends,
    even when cancelled."""
    try:
        child = await spawn(argv, {**os.environ, **env})
    except OSError as e:
        raise LaunchFailed(f"cannot start {argv[0]}: {e}") from e
    rt.registry.add(Record(key, child.pid, child.started))
    assert child.process.stdout is not None
    running = Running(child, asyncio.create_task(log.copy_from(child.process.stdout)))
    try:
        yield running
    finally:
        await asyncio.shield(_stop(rt, key, log, running, what))


async def _stop(rt: Runtime, key: str, log: InstanceLog, running: Running, what: str) -> None:
    code = await running.child.stop(rt.stop_grace)
    rt.registry.remove(key)
    with contextlib.suppress(asyncio.CancelledError):
        await running.copier
    log.note(f"{what} {exit_description(code)}")
