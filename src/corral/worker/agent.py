"""The worker agent: joins the cluster, reports this machine, runs what it is told.

Three loops share one ``ServerClient``: the heartbeat (full status every
``heartbeat_interval`` seconds), the watch (long poll on the assignments,
applied to the supervisor), and the reporter (instance news, latest per
instance, resent until the server has it). None of them ends on a network
error: a server restart or a blip is waited out with backoff and jitter, the
engines keep running, and the next answer re-syncs everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import uvicorn

from corral.config import WorkerSettings
from corral.errors import InvalidInputError
from corral.schemas.assignments import InstanceStatusReport, RpcServerStatusReport
from corral.schemas.workers import Device, SystemReserved, WorkerRegister
from corral.worker.api import create_api
from corral.worker.client import CredentialRejected, Rejected, ServerClient, ServerUnavailable
from corral.worker.devices import build_detector, builtin_labels, read_status
from corral.worker.engines import Engines
from corral.worker.identity import (
    Identity,
    default_name,
    load_identity,
    route_address,
    save_identity,
)
from corral.worker.ports import PortAllocator
from corral.worker.processes import ProcessRegistry
from corral.worker.runtime import Runtime
from corral.worker.supervisor import Supervisor

logger = logging.getLogger(__name__)

WATCH_WAIT = 30.0
BACKOFF_MAX = 30.0


def _backoff(attempt: int) -> float:
    """0.5 s doubling up to 30 s, with jitter so that a cluster's workers do
    not all come back to a restarted server in the same instant."""
    jitter: float = random.uniform(0.5, 1.0)
    return min(0.5 * 2.0 ** min(attempt, 16), BACKOFF_MAX) * jitter


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent's owner stops it."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Reporter:
    """Reports on instances and rpc-servers, the newest per subject, delivered
    in the background."""

    def __init__(self, client: ServerClient) -> None:
        self._client = client
        self._pending: dict[tuple[str, int], InstanceStatusReport | RpcServerStatusReport] = {}
        self._wake = asyncio.Event()

    def report(self, instance_id: int, report: InstanceStatusReport) -> None:
        self._pending["instance", instance_id] = report
        self._wake.set()

    def report_rpc(self, rpc_server_id: int, report: RpcServerStatusReport) -> None:
        self._pending["rpc-server", rpc_server_id] = report
        self._wake.set()

    async def _send(
        self, key: tuple[str, int], report: InstanceStatusReport | RpcServerStatusReport
    ) -> None:
        if isinstance(report, InstanceStatusReport):
            await self._client.report_instance(key[1], report)
        else:
            await self._client.report_rpc_server(key[1], report)

    async def run(self) -> None:
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                key, report = next(iter(self._pending.items()))
                try:
                    await self._send(key, report)
                except ServerUnavailable as e:
                    logger.debug("report of %s %d postponed: %s", *key, e)
                    await asyncio.sleep(_backoff(attempt))
                    attempt += 1
                    continue
                except Rejected as e:
                    # Gone or placed elsewhere: the watch stops it.
                    logger.info("report of %s %d refused: %s", *key, e.message)
                attempt = 0
                if self._pending.get(key) is report:
                    del self._pending[key]


class Agent:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.name = settings.name or default_name()
        self.detector = build_detector(settings.devices_file)
        self.client = ServerClient(settings.server_url)
        self.reporter = Reporter(self.client)
        self.registry = ProcessRegistry(self.data_dir / "run" / "processes.json")
        self.address = settings.advertise_address or route_address(settings.server_url)
        self._devices: list[Device] = []
        self._stopping = asyncio.Event()
        self._registered = asyncio.Event()
        self._http: _QuietServer | None = None
        self.supervisor = Supervisor(
            Runtime(
                engines=Engines(self.data_dir),
                ports=PortAllocator(self.address, *settings.backend_ports),
                registry=self.registry,
                report=self.reporter.report,
                report_rpc=self.reporter.report_rpc,
                devices=lambda: self._devices,
                data_dir=self.data_dir,
                models_dir=self.data_dir / "models",
                logs_dir=self.data_dir / "logs",
                host=self.address,
                stop_grace=settings.stop_grace,
                ready_timeout=settings.ready_timeout,
                helper_timeout=settings.helper_timeout,
                rpc_host=settings.rpc_host,
                cluster_network=settings.cluster_network,
                cpu_threads=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
            )
        )

    def shutdown(self) -> None:
        """Ask ``run()`` to stop the engines and return. Safe to call twice, and before run()."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until ``shutdown()``; every engine started is stopped before it returns.

        Raises ``InvalidInputError`` for a bad devices file and ``SystemExit``-worthy
        ``RuntimeError`` when the worker cannot register (no token, token refused).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        leftovers = await asyncio.to_thread(self.registry.reap_leftovers)
        if leftovers:
            logger.warning(
                "stopped %d engine(s) left by this worker's previous run", len(leftovers)
            )
        self._devices = await asyncio.to_thread(self.detector.detect)
        sock = self._bind_api()
        port = sock.getsockname()[1]
        self._http = _QuietServer(
            uvicorn.Config(
                create_api(self.supervisor),
                log_config=None,
                access_log=False,
                lifespan="off",
                server_header=False,
                # Followed logs never end by themselves; cut them at a stop.
                timeout_graceful_shutdown=2,
            )
        )
        api = asyncio.create_task(self._http.serve(sockets=[sock]), name="worker-api")
        try:
            if not await self._register(port):
                return
            loops = [
                asyncio.create_task(self._heartbeat(port), name="heartbeat"),
                asyncio.create_task(self._watch(), name="watch"),
                asyncio.create_task(self.reporter.run(), name="reporter"),
            ]
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([*loops, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for task in loops:
                task.cancel()
            # The loops end only when cancelled; anything else is a bug to surface.
            for result in await asyncio.gather(*loops, return_exceptions=True):
                if isinstance(result, Exception):
                    raise result
        finally:
            await self.supervisor.shutdown()
            self._http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await api
            await self.client.aclose()
            self.detector.close()
            logger.info("worker %s stopped", self.name)

    def _bind_api(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise InvalidInputError(f"the worker cannot listen on {host}:{port}: {e}") from e
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def _register(self, port: int) -> bool:
        """Join the cluster (or rejoin with the stored credential). False when stopping."""
        token = self.settings.token.get_secret_value() if self.settings.token else None
        stored = load_identity(self.data_dir, self.settings.server_url)
        if token is None:
            if stored is None:
                raise InvalidInputError(
                    f"this worker has not joined {self.settings.server_url} yet: "
                    "give the cluster token with --token"
                )
            self.client.identity = stored
            self._registered.set()
            return True
        body = WorkerRegister(
            name=self.name,
            address=self.address,
            port=port,
            labels={**self.settings.labels, **builtin_labels(self.name)},
            system_reserved=SystemReserved(
                ram=self.settings.reserved_ram, vram=self.settings.reserved_vram
            ),
        )
        attempt = 0
        while not self._stopping.is_set():
            try:
                registered = await self.client.register(body, token)
            except ServerUnavailable as e:
                if attempt == 0:
                    logger.warning("cannot reach the server yet (%s); retrying", e)
                await self._sleep(_backoff(attempt))
                attempt += 1
                continue
            except Rejected as e:
                raise InvalidInputError(
                    f"the server refused to register worker {self.name}: {e.message}"
                ) from e
            identity = Identity(
                server_url=self.settings.server_url,
                worker_id=registered.worker_id,
                name=registered.name,
                credential=registered.credential,
            )
            await asyncio.to_thread(save_identity, self.data_dir, identity)
            self.client.identity = identity
            self._registered.set()
            logger.info(
                "worker %s (id %d) joined %s, reachable at %s:%d",
                self.name,
                identity.worker_id,
                self.settings.server_url,
                self.address,
                port,
            )
            return True
        return False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _heartbeat(self, port: int) -> None:
        failing = False
        while True:
            try:
                status = await asyncio.to_thread(read_status, self.detector, [self.data_dir])
                self._devices = status.devices
                await self.client.report_status(status)
                if failing:
                    logger.info("the server answers again")
                failing = False
            except ServerUnavailable as e:
                if not failing:
                    logger.warning("heartbeat failed: %s; the engines keep running", e)
                failing = True
            except CredentialRejected:
                logger.warning(
                    "the server no longer knows this worker's credential; registering again"
                )
                await self._register(port)
            except Rejected as e:
                logger.error("the server refused this worker's status: %s", e.message)
            await self._sleep(self.settings.heartbeat_interval)

    async def _watch(self) -> None:
        etag: str | None = None
        attempt = 0
        while True:
            try:
                assignments = await self.client.watch(etag, WATCH_WAIT)
            except (ServerUnavailable, Rejected) as e:
                # A new credential comes from the heartbeat's re-registration.
                logger.debug("watching assignments failed: %s", e)
                await self._sleep(_backoff(attempt))
                attempt += 1
                etag = None  # after an outage, take the whole list and re-sync
                continue
            attempt = 0
            if assignments is not None:
                etag = assignments.etag
                await self.supervisor.apply(assignments.items, assignments.rpc_servers)
