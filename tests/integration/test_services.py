"""Service behaviour that the HTTP API cannot reach yet (no scheduler), run
in-process against a real, migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from corral.errors import ConflictError
from corral.schemas.auth import UserCreate
from corral.schemas.models import HuggingFaceSource, ModelCreate, ModelUpdate
from corral.schemas.workers import WorkerRegister
from corral.server.db.engine import Database
from corral.server.db.migrate import migrate
from corral.server.db.tables import Instance, User
from corral.server.services import instances, models, users, workers


@pytest.fixture
async def db(empty_database_url: str) -> AsyncIterator[Database]:
    database = Database(empty_database_url)
    await migrate(database)
    yield database
    await database.dispose()


def _spec(name: str, replicas: int) -> ModelCreate:
    source = HuggingFaceSource(type="huggingface", repo_id="org/m-GGUF", filename="*.gguf")
    return ModelCreate(name=name, source=source, replicas=replicas)


async def _set_state(db: Database, instance_id: int, state: str, worker_id: int | None) -> None:
    async with db.write() as s:
        await s.execute(
            update(Instance)
            .where(Instance.id == instance_id)
            .values(state=state, worker_id=worker_id, port=40001, pid=1234)
        )


async def test_a_failed_write_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as s:
            s.add(
                User(
                    username="ghost",
                    password_hash="x",
                    role="user",
                    is_active=True,
                    password_change_required=False,
                )
            )
            await s.flush()
            raise RuntimeError("boom after the insert")
    async with db.read() as s:
        assert (await s.execute(select(User))).scalars().all() == []


async def test_a_conflict_mid_transaction_rolls_back_the_whole_change(db: Database) -> None:
    await models.create_model(db, _spec("taken", 1))
    with pytest.raises(ConflictError):
        await models.create_model(db, _spec("taken", 3))
    assert [i.model_name for i in await instances.list_instances(db)] == ["taken"]


async def test_deleting_a_worker_sends_its_instances_back_to_pending(db: Database) -> None:
    registered, _ = await workers.register_worker(
        db, WorkerRegister(name="w1", address="10.0.0.1", port=10150)
    )
    model = await models.create_model(db, _spec("m", 2))
    placed, waiting = await instances.list_instances(db, model_id=model.id)
    await _set_state(db, placed.id, "running", registered.worker_id)
    assert (await models.get_model(db, model.id)).ready_replicas == 1
    assert [i.id for i in await instances.list_instances(db, worker_id=registered.worker_id)] == [
        placed.id
    ]

    await workers.delete_worker(db, registered.worker_id)

    after = await instances.get_instance(db, placed.id)
    assert after.state == "pending" and after.worker_id is None and after.pid is None
    assert after.state_message == "worker w1 was removed from the cluster"
    assert (await instances.get_instance(db, waiting.id)).state == "pending"
    assert (await models.get_model(db, model.id)).ready_replicas == 0


async def test_scaling_down_keeps_running_instances(db: Database) -> None:
    registered, _ = await workers.register_worker(
        db, WorkerRegister(name="w2", address="10.0.0.2", port=10150)
    )
    model = await models.create_model(db, _spec("busy", 3))
    first, _, _ = await instances.list_instances(db, model_id=model.id)
    await _set_state(db, first.id, "running", registered.worker_id)
    await models.update_model(db, model.id, ModelUpdate(replicas=1))
    [kept] = await instances.list_instances(db, model_id=model.id)
    assert kept.id == first.id and kept.state == "running"


async def test_bootstrap_admin_happens_once(db: Database) -> None:
    first = await users.bootstrap_admin(db, "first-password", generated=True)
    second = await users.bootstrap_admin(db, "other-password", generated=True)
    assert first.created and first.password == "first-password"
    assert not second.created and second.password is None
    [admin] = await users.list_users(db)
    assert admin.username == "admin" and admin.password_change_required
    await users.create_user(db, UserCreate(username="u1", password="password-1"))
    assert len(await users.list_users(db)) == 2


async def test_sqlite_runs_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    try:
        await migrate(db)
        async with db.read() as s:
            assert (await s.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await s.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await db.dispose()
