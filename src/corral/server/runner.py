"""Running the server process: uvicorn around the app, and the start-up banner."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import FrameType
from typing import Any

import typer
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from corral.config import ServerSettings
from corral.logging import configure_logging
from corral.server import datadir
from corral.server.app import create_app, prepare, stopping
from corral.server.gateway.app import with_gateway
from corral.server.services.users import ADMIN_USERNAME, BootstrapResult


class _Server(uvicorn.Server):
    """uvicorn's server, telling us once it listens and when it is asked to stop."""

    def __init__(self, config: uvicorn.Config, on_listening: Any, on_exit: Any) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn drains open requests before the app's shutdown runs: end the
        # endless ones (workers' long polls, followed logs) now.
        self._on_exit()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_listening()


def _attach(app: FastAPI, companion: Companion) -> None:
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with inner(app), companion(app):
            yield

    app.router.lifespan_context = lifespan


def _banner(settings: ServerSettings, result: BootstrapResult) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}"
    lines = [f"corral is ready at {url}  (API docs: {url}/docs)"]
    if result.created and result.password is not None:
        generated = settings.bootstrap_password is None
        lines.append(f"Admin user: {ADMIN_USERNAME}")
        if generated:
            path = settings.data_dir / datadir.INITIAL_PASSWORD_FILE
            lines.append(f"Admin password: {result.password}  (also in {path}; change it)")
        else:
            lines.append("Admin password: the one given with --bootstrap-password")
        password = result.password if generated else "<password>"
    else:
        password = "<password>"
    lines += [
        "Try it:",
        f"  TOKEN=$(curl -s {url}/api/v1/auth/login -H 'content-type: application/json' \\",
        f'    -d \'{{"username": "{ADMIN_USERNAME}", "password": "{password}"}}\' \\',
        "    | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"token\"])')",
        f'  curl -s {url}/api/v1/models -H "Authorization: Bearer $TOKEN"',
    ]
    return "\n".join(lines)


def _prepare(settings: ServerSettings) -> BootstrapResult:
    try:
        return asyncio.run(prepare(settings))
    except (OSError, SQLAlchemyError, RuntimeError) as e:
        url = make_url(settings.resolved_database_url()).render_as_string(hide_password=True)
        typer.echo(f"corral: cannot prepare the database {url}: {e}", err=True)
        raise SystemExit(1) from None


Companion = Callable[[FastAPI], AbstractAsyncContextManager[None]]
"""Something to run alongside the server while it serves (``corral start``'s
embedded worker): entered once the app has started, left before it stops."""


def run_server(
    settings: ServerSettings, companion: Companion | None = None, banner_extra: str = ""
) -> None:
    configure_logging(settings.log_level)
    result = _prepare(settings)
    app = create_app(settings)
    if companion is not None:
        _attach(app, companion)
    config = uvicorn.Config(
        with_gateway(app),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        server_header=False,
        # A last resort: requests still open this long after a stop are cut.
        timeout_graceful_shutdown=30,
    )
    server = _Server(
        config,
        lambda: print(_banner(settings, result) + banner_extra, flush=True),
        lambda: stopping(app),
    )
    server.run()
    if not server.started:
        typer.echo("corral: the server did not start; see the log above", err=True)
        sys.exit(1)
