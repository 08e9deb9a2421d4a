"""What the runners of one worker share: its engines, ports, process
registry, where to report, and the settings a launch needs."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.schemas.assignments import InstanceStatusReport, RpcServerStatusReport
from corral.schemas.workers import Device
from corral.worker.engines import Engines
from corral.worker.ports import PortAllocator
from corral.worker.processes import ProcessRegistry

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


class LaunchFailed(Exception):
    """The instance could not be (kept) running; the message is for the user."""


def exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
