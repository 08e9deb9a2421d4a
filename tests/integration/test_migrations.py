"""Schema migrations, from an empty database and from every earlier revision."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from corral.server.db.engine import Database
from corral.server.db.migrate import current_revision, migrate, revisions
from corral.server.db.tables import Base
from tests.helpers import run_server

HEAD = revisions()[-1]


async def _schema_diff(db: Database) -> list[object]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
            )
        )


async def test_from_empty_to_head_matches_the_tables(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert await current_revision(db) is None
        await migrate(db)
        assert await current_revision(db) == HEAD
        assert await _schema_diff(db) == []
        await migrate(db)  # a second start finds nothing to do
        assert await current_revision(db) == HEAD
    finally:
        await db.dispose()


@pytest.mark.parametrize("start", revisions())
async def test_from_every_revision_to_head(empty_database_url: str, start: str) -> None:
    db = Database(empty_database_url)
    try:
        await migrate(db, start)
        assert await current_revision(db) == start
        await migrate(db)
        assert await current_revision(db) == HEAD
        assert await _schema_diff(db) == []
    finally:
        await db.dispose()


async def test_down_to_base_and_up_again(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await migrate(db)
        await migrate(db, "base")
        assert await current_revision(db) is None
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
        assert set(tables) <= {"alembic_version"}
        await migrate(db)
        assert await _schema_diff(db) == []
    finally:
        await db.dispose()


async def test_a_schema_from_a_newer_corral_is_refused(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await migrate(db)
        async with db.write() as s:
            await s.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
        with pytest.raises(RuntimeError, match="f00dfeed"):
            await migrate(db)
    finally:
        await db.dispose()


@pytest.mark.parametrize("start", [None, *revisions()])
async def test_server_start_upgrades_an_older_database(
    empty_database_url: str, start: str | None, tmp_path: Path
) -> None:
    db = Database(empty_database_url)
    if start is not None:
        await migrate(db, start)
    plain_url = empty_database_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    with run_server(tmp_path, plain_url) as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert await current_revision(db) == HEAD
    await db.dispose()
