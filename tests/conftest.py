"""Fixtures shared by every test: databases and running servers.

The server-backed fixtures are parametrised over the databases available:
SQLite always, PostgreSQL too when ``CORRAL_TEST_POSTGRES_URL`` is set
(``.ci/run`` sets it when a server answers at 127.0.0.1:5432). Each test
session gets a fresh PostgreSQL database of its own, dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fixtures.tiny_models import TinyModels
from tests.fixtures.tiny_models import cached as cached_tiny_models
from tests.helpers import ServerProcess, client, login, run_server

POSTGRES_URL = os.environ.get("CORRAL_TEST_POSTGRES_URL")
DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def _async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _admin_sql(statement: str) -> None:
    assert POSTGRES_URL
    engine = create_async_engine(_async_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(statement))
    await engine.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test session."""
    assert POSTGRES_URL, "CORRAL_TEST_POSTGRES_URL is not set"
    name = f"corral_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database URL for a server; empty before the server first starts."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_database")
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'corral.db'}"


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One running ``corral server`` per database, shared by the session."""
    with run_server(Path(tmp_path_factory.mktemp("server")), database_url) as process:
        yield process


@pytest.fixture(scope="session")
def admin(server: ServerProcess) -> httpx.Client:
    """A client logged in as the bootstrap admin (session token)."""
    return client(server.url, login(server.url, "admin", server.admin_password))


@pytest.fixture(scope="session")
def anonymous(server: ServerProcess) -> httpx.Client:
    return client(server.url)


@pytest.fixture(params=DATABASES)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty database (SQLAlchemy async URL) for one test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"
        return
    assert POSTGRES_URL
    name = f"corral_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        yield _async_url(make_url(POSTGRES_URL).set(database=name).render_as_string(False))
    finally:
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def tiny_models() -> TinyModels:
    """The generated tiny models (cached per machine)."""
    return cached_tiny_models()
