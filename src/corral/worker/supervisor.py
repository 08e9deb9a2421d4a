"""Runs the instances assigned to this worker and keeps them running.

One ``InstanceRunner`` per assigned instance walks
``downloading → starting → running``; when the engine exits it reports
``error`` (exit code and the log's last lines) and, if the model says
``restart_on_error``, starts it again after a capped exponential backoff.
The primary of a distributed llama.cpp instance first waits until every
helper's rpc-server is ready, and restarts its engine when one of them
stops being ready (the engine cannot survive losing a device).
The ``Supervisor`` makes the set of runners match the assignments, rpc-servers
this worker runs as a helper included: new ones start, removed or changed ones
stop (SIGTERM, SIGKILL after a grace period, port released).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Sequence

import httpx

from corral.backends.base import Installation, LaunchRequest, ReadinessProbe
from corral.backends.base import Placement as LaunchPlacement
from corral.backends.llama_cpp.layout import parse_layers
from corral.backends.llama_cpp.simulated import local_share_on_cpu
from corral.backends.model_info import context_length
from corral.backends.process import probe_passed
from corral.backends.registry import driver
from corral.backends.steps import InstallError
from corral.errors import CorralError, InvalidModelFile
from corral.schemas.assignments import (
    Assignment,
    HelperEndpoint,
    InstanceStatusReport,
    RpcServerAssignment,
)
from corral.schemas.instances import InstanceState, LayerShare, RpcServerState
from corral.schemas.models import Backend, ModelCategory
from corral.sources.projectors import user_projector
from corral.worker.files import ModelFiles, ModelFilesError, fetch_model_files
from corral.worker.logs import InstanceLog
from corral.worker.ports import PortsExhausted
from corral.worker.processes import Child
from corral.worker.rpc import RpcServerRunner
from corral.worker.runtime import (
    LaunchFailed,
    RestartBackoff,
    Running,
    Runtime,
    cancel_and_wait,
    exit_description,
    supervised,
)

logger = logging.getLogger(__name__)

BACKOFF = (2.0, 300.0, 600.0)
"""First delay, longest delay, and the run after which the delay starts over."""
PROGRESS_EVERY = 1.0


class HelperLost(Exception):
    """A helper's rpc-server stopped being ready under the running engine."""


def _launch_inputs(a: Assignment) -> tuple[object, ...]:
    """What, when changed, means the running engine must be replaced."""
    return (
        a.api_key,
        a.placement,
        a.source,
        a.backend,
        a.backend_version,
        a.backend_parameters,
        a.env,
        a.categories,
        a.generation,
    )


class InstanceRunner:
    def __init__(self, assignment: Assignment, rt: Runtime) -> None:
        self.assignment = assignment
        self.rt = rt
        self.id = assignment.instance_id
        self.restart_count = assignment.restart_count
        self.last: InstanceStatusReport | None = None
        self.log = InstanceLog(rt.logs_dir / f"instance-{self.id}")
        self._task: asyncio.Task[None] | None = None
        self._last_progress = 0.0
        self._helpers_changed = asyncio.Event()

    @property
    def key(self) -> str:
        return f"instance-{self.id}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.key)

    def differs(self, a: Assignment) -> bool:
        return _launch_inputs(a) != _launch_inputs(self.assignment)

    async def stop(self) -> None:
        """Stop the engine and wait until it is gone. Safe to call twice."""
        await cancel_and_wait(self._task)
        self.log.close()

    def resync(self, a: Assignment) -> None:
        """The server shows another state than we reported (a report lost in a
        network blip, or the server marked us unreachable): say it again."""
        if a.helpers != self.assignment.helpers:
            self._helpers_changed.set()
        self.assignment = a
        if self.last is not None and a.state != self.last.state:
            self.rt.report(self.id, self.last)

    def _report(self, state: InstanceState, message: str | None = None, **fields: object) -> None:
        report = InstanceStatusReport.model_validate(
            {
                "state": state,
                "state_message": message,
                "restart_count": self.restart_count,
                "generation": self.assignment.generation,
                **fields,
            }
        )
        self.last = report
        self.rt.report(self.id, report)

    async def _run(self) -> None:
        backoff = RestartBackoff(*BACKOFF)
        while True:
            began = time.monotonic()
            try:
                await self._run_once()
                message = "the engine exited"
            except HelperLost as e:
                # Not the engine's fault: start again as soon as the helpers are back.
                logger.warning("instance %d: %s", self.id, e)
                self._report(InstanceState.STARTING, f"{e}; restarting once it is back")
                continue
            except LaunchFailed as e:
                message = str(e)
            logger.warning("instance %d: %s", self.id, message.partition("\n")[0])
            if not self.assignment.restart_on_error:
                self._report(InstanceState.ERROR, message)
                return
            delay = backoff.after(time.monotonic() - began)
            self._report(InstanceState.ERROR, f"{message}\nrestarting in {delay:.0f} s")
            await asyncio.sleep(delay)
            self.restart_count += 1

    async def _run_once(self) -> None:
        """Fetch, install, launch, wait until ready, then until the engine exits.
        Raises ``LaunchFailed`` saying what went wrong."""
        files = await self._fetch()
        installation = await self._install()
        try:
            context = await asyncio.to_thread(context_length, files.path)
        except InvalidModelFile as e:
            raise LaunchFailed(f"the model file is broken: {e.message}") from e
        try:
            port = self.rt.ports.allocate()
        except PortsExhausted as e:
            raise LaunchFailed(str(e)) from e
        try:
            helpers = await self._wait_for_helpers()
            await self._launch(installation, self._request(files, context, port, helpers))
        finally:
            self.rt.ports.release(port)

    async def _wait_for_helpers(self) -> list[HelperEndpoint]:
        """The helpers' rpc-servers once every one is ready, in ``--rpc`` order."""
        deadline = time.monotonic() + self.rt.helper_timeout
        shown = None
        while True:
            self._helpers_changed.clear()
            helpers = self.assignment.helpers
            slow = [h for h in helpers if h.state is not RpcServerState.READY or h.port is None]
            if not slow:
                return helpers
            message = f"waiting for {len(slow)} of {len(helpers)} helper rpc-servers: " + "; ".join(
                _describe(h) for h in slow
            )
            if time.monotonic() >= deadline:
                raise LaunchFailed(
                    f"helpers not ready after {self.rt.helper_timeout:.0f} s: "
                    + "; ".join(_describe(h) for h in slow)
                )
            if message != shown:
                shown = message
                self._report(InstanceState.STARTING, message)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(deadline - time.monotonic(), 5)):
                    await self._helpers_changed.wait()

    async def _fetch(self) -> ModelFiles:
        a = self.assignment
        self._report(InstanceState.DOWNLOADING, "fetching the model files", download_progress=0.0)

        def progress(fraction: float) -> None:
            now = time.monotonic()
            if now - self._last_progress >= PROGRESS_EVERY or fraction >= 1.0:
                self._last_progress = now
                self._report(
                    InstanceState.DOWNLOADING,
                    f"downloading the model files: {fraction:.0%}",
                    download_progress=fraction,
                )

        try:
            return await fetch_model_files(
                a.source,
                a.backend,
                self.rt.models_dir,
                progress,
                # The user's --mmproj PATH or --no-mmproj replaces the search.
                projector=user_projector(a.backend_parameters) is None,
            )
        except ModelFilesError as e:
            raise LaunchFailed(e.message) from e

    async def _install(self) -> Installation:
        a = self.assignment

        def progress(message: str) -> None:
            self.log.note(message)

        try:
            return await self.rt.engines.get(a.backend, a.backend_version, progress)
        except InstallError as e:
            raise LaunchFailed(f"installing {a.backend} failed: {e.message}") from e
        except CorralError as e:
            raise LaunchFailed(e.message) from e

    def _request(
        self, files: ModelFiles, context: int | None, port: int, helpers: list[HelperEndpoint]
    ) -> LaunchRequest:
        a, p = self.assignment, self.assignment.placement
        gpus = tuple(int(i) for i in p.get("gpus") or ())
        devices = {d.index: d for d in self.rt.devices()}
        placement = LaunchPlacement(
            gpu_indices=gpus,
            gpu_vendor=devices[gpus[0]].vendor if gpus and gpus[0] in devices else None,
            gpu_layers=p.get("gpu_layers"),
            tensor_split=tuple(float(x) for x in p.get("tensor_split") or ()),
            rpc_endpoints=tuple(_endpoint(h) for h in helpers),
            tensor_parallel_size=p.get("tensor_parallel_size"),
        )
        simulated = [i for i in gpus if i in devices and devices[i].simulated]
        if helpers and simulated and a.backend is Backend.LLAMA_CPP:
            placement = local_share_on_cpu(placement, int(p.get("total_layers") or 0))
            self.log.note(
                f"GPU {','.join(map(str, simulated))} simulated: their layers run on this "
                f"worker's CPU ({placement.gpu_layers} layers go to the helpers)"
            )
        return LaunchRequest(
            model_name=a.model_name,
            model_path=files.path,
            host=self.rt.host,
            port=port,
            api_key=a.api_key,
            categories=frozenset(ModelCategory(c) for c in a.categories)
            or frozenset({ModelCategory.LLM}),
            context_length=context,
            mmproj_path=files.mmproj,
            placement=placement,
            backend_parameters=tuple(a.backend_parameters),
            env=dict(a.env),
        )

    async def _launch(self, installation: Installation, request: LaunchRequest) -> None:
        engine = driver(installation.backend)
        command = engine.command(installation, request)
        shown = " ".join(command.argv)
        self.log.note(f"starting {installation.backend} {installation.version}: {shown}")
        log_start = self.log.size
        async with supervised(
            self.rt, self.key, self.log, command.argv, command.env, "engine"
        ) as running:
            child = running.child
            self._report(
                InstanceState.STARTING,
                f"{installation.backend} {installation.version} is loading the model "
                f"(pid {child.pid}, port {request.port})",
                pid=child.pid,
                port=request.port,
            )
            if await self._wait_ready(child, request):
                self.log.note("ready")
                layers = await asyncio.to_thread(
                    self._layers, log_start, request.placement.tensor_split
                )
                self._report(
                    InstanceState.RUNNING, None, pid=child.pid, port=request.port, layers=layers
                )
                logger.info(
                    "instance %d: running on port %d (pid %d)", self.id, request.port, child.pid
                )
            code = await self._engine_exit(running, request.placement.rpc_endpoints)
            raise LaunchFailed(
                f"{installation.backend} {exit_description(code)}:\n{self.log.tail()}"
            )

    def _layers(self, since: int, split: tuple[float, ...]) -> list[dict[str, object]] | None:
        """The engine's own account of where the layers went (llama.cpp)."""
        if self.assignment.backend is not Backend.LLAMA_CPP:
            return None
        try:
            with self.log.path.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        spans = parse_layers(text, split)
        return [LayerShare.model_validate(vars(span)).model_dump() for span in spans] or None

    async def _engine_exit(self, running: Running, endpoints: tuple[str, ...]) -> int:
        """The engine's exit code; ``HelperLost`` first if a helper it uses stops being ready."""
        exited = asyncio.ensure_future(running.exited())
        try:
            while True:
                changed = asyncio.ensure_future(self._helpers_changed.wait())
                await asyncio.wait({exited, changed}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if exited.done():
                    return exited.result()
                self._helpers_changed.clear()
                lost = [
                    h
                    for h in self.assignment.helpers
                    if h.state is not RpcServerState.READY or _endpoint(h) not in endpoints
                ]
                if lost or len(self.assignment.helpers) != len(endpoints):
                    raise HelperLost(
                        "helper rpc-server stopped: " + "; ".join(_describe(h) for h in lost)
                    )
        finally:
            if not exited.done():
                exited.cancel()

    async def _wait_ready(self, child: Child, request: LaunchRequest) -> bool:
        """Poll the engine's readiness probes; False when it exits first."""
        probes = driver(self.assignment.backend).readiness(request)
        host = "127.0.0.1" if request.host in ("0.0.0.0", "") else request.host
        base = f"http://{host}:{request.port}"
        headers = {"Authorization": f"Bearer {request.api_key}"}
        deadline = time.monotonic() + self.rt.ready_timeout
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                if child.process.returncode is not None:
                    return False
                if await _probes_pass(http, base, headers, probes):
                    return True
                await asyncio.sleep(0.1)
        raise LaunchFailed(f"not ready after {self.rt.ready_timeout:.0f} s:\n{self.log.tail()}")


async def _probes_pass(
    http: httpx.AsyncClient, base: str, headers: dict[str, str], probes: list[ReadinessProbe]
) -> bool:
    for probe in probes:
        try:
            response = await http.get(base + probe.path, headers=headers)
        except httpx.HTTPError:
            return False
        if not probe_passed(probe, response):
            return False
    return True


def _endpoint(h: HelperEndpoint) -> str:
    host = f"[{h.address}]" if ":" in h.address else h.address
    return f"{host}:{h.port}"


def _describe(h: HelperEndpoint) -> str:
    where = f"{h.address}:{h.port}" if h.port else h.address
    message = (h.state_message or "").partition("\n")[0]
    return f"{h.worker_name} GPU {h.device} ({where}) is {h.state}" + (
        f": {message}" if message else ""
    )


class Supervisor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._runners: dict[int, InstanceRunner] = {}
        self._rpc: dict[int, RpcServerRunner] = {}

    @property
    def instances(self) -> dict[int, InstanceRunner]:
        return self._runners

    @property
    def rpc_servers(self) -> dict[int, RpcServerRunner]:
        return self._rpc

    async def apply(
        self, assignments: list[Assignment], rpc_servers: Sequence[RpcServerAssignment] = ()
    ) -> None:
        """Make what runs match ``assignments`` and the rpc-servers this worker helps with."""
        await self._apply_rpc(list(rpc_servers))
        wanted = {a.instance_id: a for a in assignments}
        gone = [
            runner
            for iid, runner in self._runners.items()
            if iid not in wanted or runner.differs(wanted[iid])
        ]
        if gone:
            await asyncio.gather(*(self._remove(r, keep_logs=r.id in wanted) for r in gone))
        for iid, a in wanted.items():
            runner = self._runners.get(iid)
            if runner is None:
                runner = self._runners[iid] = InstanceRunner(a, self.rt)
                logger.info("instance %d (%s): assigned; starting", iid, a.model_name)
                runner.start()
            else:
                runner.resync(a)

    async def _apply_rpc(self, assignments: list[RpcServerAssignment]) -> None:
        wanted = {a.rpc_server_id: a for a in assignments}
        gone = [r for rid, r in self._rpc.items() if rid not in wanted or r.differs(wanted[rid])]
        if gone:
            await asyncio.gather(*(self._remove_rpc(r) for r in gone))
        for rid, a in wanted.items():
            runner = self._rpc.get(rid)
            if runner is None:
                runner = self._rpc[rid] = RpcServerRunner(a, self.rt)
                logger.info(
                    "rpc-server %d: GPU %d for instance %s on %s; starting",
                    rid,
                    a.device,
                    a.instance_name,
                    a.primary_worker,
                )
                runner.start()
            else:
                runner.resync(a)

    async def _remove_rpc(self, runner: RpcServerRunner) -> None:
        logger.info("rpc-server %d: no longer needed; stopping", runner.id)
        await runner.stop()
        self._rpc.pop(runner.id, None)
        await asyncio.to_thread(shutil.rmtree, self.rt.logs_dir / runner.key, ignore_errors=True)

    async def _remove(self, runner: InstanceRunner, *, keep_logs: bool) -> None:
        logger.info("instance %d: stopping", runner.id)
        await runner.stop()
        self._runners.pop(runner.id, None)
        if not keep_logs:
            await asyncio.to_thread(
                shutil.rmtree, self.rt.logs_dir / runner.key, ignore_errors=True
            )

    async def shutdown(self) -> None:
        """Stop every engine and rpc-server (concurrently), keeping their logs."""
        await asyncio.gather(
            *(r.stop() for r in self._runners.values()), *(r.stop() for r in self._rpc.values())
        )
        self._runners.clear()
        self._rpc.clear()
