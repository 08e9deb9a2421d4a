"""The server's ASGI application and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from corral import __version__
from corral.config import ServerSettings
from corral.server import datadir
from corral.server.api import api_keys, auth, health, instances, models, users, workers
from corral.server.api.errors import install_error_handlers
from corral.server.db.engine import Database
from corral.server.db.migrate import migrate
from corral.server.security import generate_password
from corral.server.services.users import BootstrapResult, bootstrap_admin

logger = logging.getLogger(__name__)

StartupHook = Callable[[BootstrapResult], None]


def create_app(settings: ServerSettings, on_startup: StartupHook | None = None) -> FastAPI:
    """Build the app. Start-up prepares the data dir, migrates the database
    and creates the first admin; ``on_startup`` then gets the outcome."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        datadir.prepare(settings.data_dir)
        db = Database(settings.resolved_database_url())
        try:
            await migrate(db)
            app.state.db = db
            app.state.settings = settings
            app.state.cluster_token = datadir.cluster_token(
                settings.data_dir,
                settings.cluster_token.get_secret_value() if settings.cluster_token else None,
            )
            result = await _bootstrap(db, settings)
            if on_startup is not None:
                on_startup(result)
            yield
        finally:
            await db.dispose()

    app = FastAPI(
        title="corral",
        version=__version__,
        summary="Run large language models on your own cluster.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    api = APIRouter(prefix="/api/v1")
    for module in (auth, users, api_keys, workers, models, instances):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    return app


async def _bootstrap(db: Database, settings: ServerSettings) -> BootstrapResult:
    given = settings.bootstrap_password
    password = given.get_secret_value() if given else generate_password()
    result = await bootstrap_admin(db, password, generated=given is None)
    if result.created and given is None:
        datadir.write_secret(settings.data_dir / datadir.INITIAL_PASSWORD_FILE, password)
    return result
