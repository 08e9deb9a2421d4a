"""rpc-servers this worker runs as a helper of another worker's instance.

A distributed llama.cpp placement lends GPUs of helper workers to a primary
worker's ``llama-server``, which reaches them over llama.cpp's RPC. For each
helper GPU the server assigns this worker an rpc-server: started here only
while the instance exists (never always-on), on a port from the engines'
range, bound to this worker's cluster address, with exactly that GPU
visible. Once it accepts connections it is reported ``ready`` with its port,
which is what the primary waits for. A crash is reported with the log's
tail and the server is started again after a backoff; the primary, seeing
its helper leave ``ready``, restarts its own engine once it is back.

llama.cpp's RPC has no authentication: anyone who reaches the port can use
the device and read what is on it. Hence the address rules of
``bind_address`` (docs/distributed.md says more).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from functools import cache
from pathlib import Path

from corral.backends.base import Installation
from corral.backends.flags import read_flags
from corral.backends.llama_cpp.driver import rpc_server_launch, rpc_server_path
from corral.backends.steps import InstallError
from corral.errors import CorralError
from corral.schemas.assignments import RpcServerAssignment, RpcServerStatusReport
from corral.schemas.instances import RpcServerState
from corral.schemas.models import Backend
from corral.worker.logs import InstanceLog
from corral.worker.ports import PortsExhausted
from corral.worker.runtime import (
    LaunchFailed,
    RestartBackoff,
    Runtime,
    cancel_and_wait,
    exit_description,
    supervised,
)

logger = logging.getLogger(__name__)

LISTEN_TIMEOUT = 60.0
"""Seconds an rpc-server may take to accept connections (it loads no model)."""
BACKOFF = (1.0, 30.0, 60.0)
"""First delay, longest delay, and the run after which the delay starts over."""


class RpcRefused(Exception):
    """This worker must not start an rpc-server; the message says why."""


def bind_address(address: str, rpc_host: str | None, cluster_network: str | None) -> str:
    """The address this worker's rpc-servers listen on.

    By default the worker's cluster address (what the server and the other
    workers reach it at). An unspecified address (``0.0.0.0``, ``::``) would
    expose the unauthenticated RPC port on every interface, so it is refused
    unless the operator asked for it by name (``rpc_host``). With
    ``cluster_network`` set, the address must lie inside it.
    """
    chosen = rpc_host or address
    try:
        ip = ipaddress.ip_address(_resolve(chosen))
    except (OSError, ValueError) as e:
        raise RpcRefused(
            f"cannot tell which network {chosen!r} is on ({e}); set the worker's "
            "advertise_address (or rpc_host) to an IP address of the cluster network"
        ) from e
    if ip.is_unspecified and rpc_host is None:
        raise RpcRefused(
            f"this worker's cluster address is {chosen}, which would expose llama.cpp's "
            "unauthenticated RPC on every interface; set advertise_address to its address on "
            "the cluster network (or rpc_host, to bind all interfaces knowingly)"
        )
    if cluster_network is not None and not ip.is_unspecified:
        network = ipaddress.ip_network(cluster_network, strict=False)
        if ip not in network:
            raise RpcRefused(
                f"the rpc-server address {ip} is outside the configured cluster network {network}"
            )
    return str(ip)


def _resolve(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])


@cache
def _rpc_flags(path: Path) -> frozenset[str]:
    return read_flags([str(path), "--help"], timeout=30)


class RpcServerRunner:
    """Keeps one assigned rpc-server running and reported."""

    def __init__(self, assignment: RpcServerAssignment, rt: Runtime) -> None:
        self.assignment = assignment
        self.rt = rt
        self.id = assignment.rpc_server_id
        self.last: RpcServerStatusReport | None = None
        self.log = InstanceLog(rt.logs_dir / self.key)
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return f"rpc-{self.id}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.key)

    def differs(self, a: RpcServerAssignment) -> bool:
        return (a.device, a.backend_version, a.secret, a.generation) != (
            self.assignment.device,
            self.assignment.backend_version,
            self.assignment.secret,
            self.assignment.generation,
        )

    def resync(self, a: RpcServerAssignment) -> None:
        self.assignment = a
        if self.last is not None and a.state != self.last.state:
            self.rt.report_rpc(self.id, self.last)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self.log.close()

    def _report(self, state: RpcServerState, message: str | None, **fields: int) -> None:
        report = RpcServerStatusReport.model_validate(
            {"state": state, "state_message": message, **fields}
        )
        self.last = report
        self.rt.report_rpc(self.id, report)

    async def _run(self) -> None:
        backoff = RestartBackoff(*BACKOFF)
        while True:
            began = time.monotonic()
            try:
                await self._run_once()
                message = "rpc-server exited"
            except RpcRefused as e:
                # A configuration problem: retrying cannot fix it.
                logger.error("rpc-server %d: %s", self.id, e)
                self.log.note(f"refused: {e}")
                self._report(RpcServerState.ERROR, f"refused to start: {e}")
                return
            except LaunchFailed as e:
                message = str(e)
            delay = backoff.after(time.monotonic() - began)
            logger.warning("rpc-server %d: %s", self.id, message.partition("\n")[0])
            self._report(RpcServerState.ERROR, f"{message}\nrestarting in {delay:.0f} s")
            await asyncio.sleep(delay)

    async def _run_once(self) -> None:
        a = self.assignment
        host = bind_address(self.rt.host, self.rt.rpc_host, self.rt.cluster_network)
        self._report(RpcServerState.STARTING, "preparing llama.cpp")
        installation = await self._install()
        device = next((d for d in self.rt.devices() if d.index == a.device), None)
        if device is None:
            raise LaunchFailed(f"this worker has no GPU {a.device}")
        real_gpu = not device.simulated
        try:
            port = self.rt.ports.allocate()
        except PortsExhausted as e:
            raise LaunchFailed(str(e)) from e
        try:
            path = rpc_server_path(installation)
            command = rpc_server_launch(
                installation,
                host,
                port,
                gpu_index=a.device if real_gpu else None,
                gpu_vendor=device.vendor if real_gpu else None,
                flags=await asyncio.to_thread(_rpc_flags, path),
                cache_dir=self.rt.data_dir / "cache" / "llama.cpp",
                threads=self.rt.cpu_threads,
            )
            if not real_gpu:
                self.log.note(f"GPU {a.device} is simulated: this rpc-server lends the CPU")
            await self._serve(command.argv, command.env, host, port)
        finally:
            self.rt.ports.release(port)

    async def _install(self) -> Installation:
        try:
            return await self.rt.engines.get(
                Backend.LLAMA_CPP, self.assignment.backend_version, self.log.note
            )
        except InstallError as e:
            raise LaunchFailed(f"installing llama.cpp failed: {e.message}") from e
        except CorralError as e:
            raise LaunchFailed(e.message) from e

    async def _serve(self, argv: list[str], env: dict[str, str], host: str, port: int) -> None:
        a = self.assignment
        self.log.note(
            f"starting an rpc-server for instance {a.instance_name} (primary: "
            f"{a.primary_worker}), GPU {a.device}: {' '.join(argv)}"
        )
        async with supervised(self.rt, self.key, self.log, argv, env, "rpc-server") as running:
            child = running.child
            self._report(
                RpcServerState.STARTING,
                f"rpc-server starting on {host}:{port} (pid {child.pid})",
                port=port,
                pid=child.pid,
            )
            if await _listening(host, port, child.process, LISTEN_TIMEOUT):
                self._report(
                    RpcServerState.READY,
                    f"serving GPU {a.device} on {host}:{port}",
                    port=port,
                    pid=child.pid,
                )
                logger.info(
                    "rpc-server %d for instance %d: ready on %s:%d",
                    self.id,
                    a.instance_id,
                    host,
                    port,
                )
            code = await running.exited()
            raise LaunchFailed(f"rpc-server {exit_description(code)}:\n{self.log.tail()}")


async def _listening(
    host: str, port: int, process: asyncio.subprocess.Process, timeout: float
) -> bool:
    """Whether the rpc-server accepts connections; False when it exits first.

    A connection that closes before its hello is harmless: the server
    drops it and waits for the next (it serves one client at a time, which
    is why this probe runs only before the primary connects)."""
    target = "127.0.0.1" if ipaddress.ip_address(host).is_unspecified else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            return False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(target, port), 1)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    raise LaunchFailed(f"rpc-server did not listen on {host}:{port} within {timeout:.0f} s")
