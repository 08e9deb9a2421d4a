"""Bring the database schema to the newest revision at start-up.

Several server replicas may start at once against one PostgreSQL database;
they take a transaction-scoped advisory lock so that exactly one migrates and
the others then find nothing left to do. On SQLite the write transaction's
``BEGIN IMMEDIATE`` serialises them the same way.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from corral.server.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_ADVISORY_LOCK_KEY = 0x636F7272616C  # "corral"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


async def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade (or, with an older ``revision``, downgrade) the schema."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        current = MigrationContext.configure(connection).get_current_revision()
        script = ScriptDirectory.from_config(config)
        target = script.get_revision(revision)
        known = {rev.revision for rev in script.walk_revisions()}
        if current is not None and current not in known:
            raise RuntimeError(
                f"database schema is at revision {current}, which this corral does not know "
                "(written by a newer corral?); refusing to start"
            )
        if revision == "base" or (
            target is not None
            and current is not None
            and _is_ancestor(script, target.revision, current)
        ):
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    async with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            )
        await connection.run_sync(run)


def _is_ancestor(script: ScriptDirectory, older: str, newer: str) -> bool:
    """True when ``older`` lies strictly below ``newer`` in the history."""
    if older == newer:
        return False
    return any(rev.revision == older for rev in script.iterate_revisions(newer, "base"))


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as connection:
        return await connection.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )
