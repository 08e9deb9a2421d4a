"""The server's ASGI application and its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI

from corral import __version__
from corral.config import ServerSettings
from corral.server import datadir
from corral.server.api import (
    api_keys,
    auth,
    cluster,
    health,
    instances,
    metrics,
    models,
    usage,
    users,
    workers,
)
from corral.server.api.errors import install_error_handlers
from corral.server.controllers.liveness import LivenessController
from corral.server.controllers.placement import PlacementController
from corral.server.db.engine import Database
from corral.server.db.migrate import migrate
from corral.server.gateway.app import open_gateway
from corral.server.gateway.fetch import FetchPolicy, ImageFetcher
from corral.server.gateway.images import ImageLimits, Images
from corral.server.security import generate_password
from corral.server.services.changes import ChangeSignal
from corral.server.services.estimates import Estimator
from corral.server.services.users import BootstrapResult, bootstrap_admin
from corral.server.ui import UiHeaders, install_ui

logger = logging.getLogger(__name__)


async def prepare(settings: ServerSettings) -> BootstrapResult:
    """Everything a server needs before it serves: the data dir, the schema
    at the newest revision, the cluster token, the first admin.

    Safe to run again and from several replicas at once. Runs before the
    HTTP server starts so that a wrong database URL is reported in one line
    rather than as a failed ASGI lifespan.
    """
    datadir.prepare(settings.data_dir)
    _cluster_token(settings)
    db = Database(settings.resolved_database_url())
    try:
        await migrate(db)
        return await _bootstrap(db, settings)
    finally:
        await db.dispose()


def create_app(settings: ServerSettings) -> FastAPI:
    """Build the app for a prepared data dir and database (see ``prepare``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url())
        try:
            # A no-op after prepare(); guards against a schema left behind by
            # an older corral if the two ran apart.
            await migrate(db)
            app.state.db = db
            app.state.settings = settings
            app.state.cluster_token = _cluster_token(settings)
            async with (
                _controllers(app, db, settings),
                httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as app.state.http,
                open_gateway(
                    app,
                    db,
                    max_body=settings.gateway_max_body,
                    keepalive_s=settings.gateway_keepalive,
                    images=_images(settings),
                ) as gateway,
            ):
                # What the management API needs of the gateway, without
                # importing it (they are independent layers).
                app.state.flush_usage = gateway.meter.flush
                app.state.forget_credentials = gateway.callers.forget
                app.state.gateway_collector = gateway.collector
                yield
        finally:
            await db.dispose()

    app = FastAPI(
        title="corral",
        version=__version__,
        summary="Run large language models on your own cluster.",
        lifespan=lifespan,
    )
    app.state.stopping = asyncio.Event()
    install_error_handlers(app)
    api = APIRouter(prefix="/api/v1")
    for module in (auth, users, api_keys, workers, cluster, models, instances, usage):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(metrics.router)
    install_ui(app)
    app.add_middleware(UiHeaders)
    return app


def stopping(app: FastAPI) -> None:
    """The server was asked to stop: end the requests that would never end
    on their own (workers' assignment watches, followed logs)."""
    app.state.stopping.set()
    changes = getattr(app.state, "changes", None)
    if changes is not None:
        changes.close()


@asynccontextmanager
async def _controllers(app: FastAPI, db: Database, settings: ServerSettings) -> AsyncIterator[None]:
    estimator = Estimator()
    app.state.estimator = estimator
    changes = ChangeSignal()
    app.state.changes = changes
    placement = PlacementController(
        db, estimator, settings.placement_interval, on_placed=changes.notify
    )

    def released() -> None:
        placement.wake()
        changes.notify()

    liveness = LivenessController(
        db,
        heartbeat_timeout=settings.heartbeat_timeout,
        grace=settings.reschedule_grace,
        on_released=released,
    )
    app.state.placement = placement
    tasks = [asyncio.create_task(c.run(), name=c.name) for c in (placement, liveness)]
    try:
        yield
    finally:
        placement.shutdown()
        liveness.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cluster_token(settings: ServerSettings) -> str:
    given = settings.cluster_token.get_secret_value() if settings.cluster_token else None
    return datadir.cluster_token(settings.data_dir, given)


async def _bootstrap(db: Database, settings: ServerSettings) -> BootstrapResult:
    given = settings.bootstrap_password
    password = given.get_secret_value() if given else generate_password()
    result = await bootstrap_admin(db, password, generated=given is None)
    if result.created and given is None:
        datadir.write_secret(settings.data_dir / datadir.INITIAL_PASSWORD_FILE, password)
    return result


def _images(settings: ServerSettings) -> Images:
    fetcher = (
        ImageFetcher(
            FetchPolicy(
                timeout=settings.image_fetch_timeout,
                max_bytes=settings.image_max_bytes,
                allow_http=settings.image_fetch_allow_http,
                allowed_networks=settings.image_fetch_allowed(),
            )
        )
        if settings.image_fetch
        else None
    )
    limits = ImageLimits(
        max_bytes=settings.image_max_bytes,
        max_pixels=settings.image_max_pixels,
        max_images=settings.image_max_count,
    )
    return Images(limits, fetcher)
