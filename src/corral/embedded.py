"""The embedded worker of ``corral start``: the worker agent run as the
server's companion in one process, and the demo model.

Kept apart from ``corral.start`` (the command) so that only ``corral start``
pays for importing both the server and the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from corral.backends.llama_cpp.demo_model import demo_model
from corral.backends.paths import cache_dir
from corral.config import ServerSettings, WorkerSettings, load_settings
from corral.errors import ConflictError
from corral.schemas.models import LocalSource, ModelCreate
from corral.server import datadir
from corral.server.services.models import create_model
from corral.worker.agent import Agent

logger = logging.getLogger(__name__)

WORKER_DIR = "worker"


def embedded_worker(
    server: ServerSettings, flags: dict[str, Any], *, demo: str | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The worker as the server's companion: it joins once the server is up
    and stops (engines included) before the server does."""

    @asynccontextmanager
    async def companion(app: FastAPI) -> AsyncIterator[None]:
        given = server.cluster_token.get_secret_value() if server.cluster_token else None
        token = datadir.cluster_token(server.data_dir, given)
        settings = load_settings(
            WorkerSettings,
            {
                "server_url": server.local_url(),
                "token": token,
                "data_dir": server.data_dir / WORKER_DIR,
                # Only this server reads the worker's API: loopback unless the
                # user says where others reach this machine.
                "host": "0.0.0.0" if flags.get("advertise_address") else "127.0.0.1",
                "port": 0,
                "log_level": server.log_level,
                **{k: v for k, v in flags.items() if v is not None},
            },
        )
        agent = Agent(settings)
        task = asyncio.create_task(agent.run(), name="embedded-worker")
        task.add_done_callback(_stop_server_if_failed)
        try:
            if demo is not None:
                await _deploy_demo(app, demo)
            yield
        finally:
            agent.shutdown()
            await asyncio.gather(task, return_exceptions=True)

    return companion


async def _deploy_demo(app: FastAPI, name: str) -> None:
    """Deploy the demo model (made here, no download) unless it exists."""
    path = await asyncio.to_thread(demo_model, cache_dir(), lambda m: logger.info("demo: %s", m))
    spec = ModelCreate(name=name, source=LocalSource(type="local", path=str(path)))
    try:
        await create_model(app.state.db, spec)
    except ConflictError:
        return  # deployed by an earlier start
    app.state.placement.wake()
    logger.info("deployed the demo model %r from %s", name, path)


def _stop_server_if_failed(task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    message = getattr(error, "message", None) or repr(error)
    logger.error("the embedded worker stopped: %s; stopping corral", message)
    os.kill(os.getpid(), signal.SIGTERM)
