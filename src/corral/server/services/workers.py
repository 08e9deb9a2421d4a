"""Workers: registration with the cluster token, status reports, labels."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from corral.errors import ConflictError, InvalidInputError
from corral.schemas.instances import InstanceState
from corral.schemas.workers import (
    BUILTIN_LABELS,
    WorkerLabelsUpdate,
    WorkerRead,
    WorkerRegister,
    WorkerRegistered,
    WorkerState,
    WorkerStatus,
)
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Worker
from corral.server.security import Credential, CredentialKind, hash_secret, new_credential
from corral.server.services.rows import load

logger = logging.getLogger(__name__)


async def register_worker(db: Database, body: WorkerRegister) -> tuple[WorkerRegistered, bool]:
    """Create the worker, or hand a known one a fresh credential.

    A worker that lost its credential file registers again under its name;
    holding the cluster token is what entitles it to. Returns the
    registration and whether the worker is new.
    """
    credential = new_credential(CredentialKind.WORKER)
    labels = {**body.labels, "worker-name": body.name}
    try:
        return await _register(db, body, credential, labels)
    except IntegrityError as e:
        raise ConflictError(f"worker {body.name!r} is registering twice at once") from e


async def _register(
    db: Database, body: WorkerRegister, credential: Credential, labels: dict[str, str]
) -> tuple[WorkerRegistered, bool]:
    async with db.write() as s:
        worker = (
            await s.execute(select(Worker).where(Worker.name == body.name).with_for_update())
        ).scalar_one_or_none()
        created = worker is None
        if worker is None:
            worker = Worker(name=body.name, state=WorkerState.NOT_READY)
            s.add(worker)
        else:
            user_labels = {k: v for k, v in worker.labels.items() if k not in BUILTIN_LABELS}
            labels = {**user_labels, **labels}
        worker.address = body.address
        worker.port = body.port
        worker.labels = labels
        worker.system_reserved = body.system_reserved.model_dump()
        worker.credential_id = credential.id
        worker.credential_hash = hash_secret(credential.secret)
        await s.flush()
        worker_id = worker.id
    logger.info(
        "worker %s (id %d) %s at %s:%d",
        body.name,
        worker_id,
        "registered" if created else "re-registered",
        body.address,
        body.port,
    )
    return WorkerRegistered(
        worker_id=worker_id, name=body.name, credential=str(credential)
    ), created


async def report_status(db: Database, worker_id: int, status: WorkerStatus) -> WorkerRead:
    async with db.write() as s:
        worker = await load(s, Worker, worker_id, "worker")
        worker.status = status.model_dump()
        worker.heartbeat_at = datetime.now(UTC)
        worker.state = WorkerState.READY
        worker.state_message = None
        await s.flush()
        return WorkerRead.model_validate(worker)


async def list_workers(db: Database) -> list[WorkerRead]:
    async with db.read() as s:
        rows = (await s.execute(select(Worker).order_by(Worker.name))).scalars()
        return [WorkerRead.model_validate(w) for w in rows]


async def get_worker(db: Database, worker_id: int) -> WorkerRead:
    async with db.read() as s:
        return WorkerRead.model_validate(await load(s, Worker, worker_id, "worker"))


async def update_labels(db: Database, worker_id: int, body: WorkerLabelsUpdate) -> WorkerRead:
    builtin = sorted(BUILTIN_LABELS & body.labels.keys())
    if builtin:
        raise InvalidInputError(
            f"label {builtin[0]!r} is set by the worker itself and cannot be changed",
            code="validation_error",
        )
    async with db.write() as s:
        worker = await load(s, Worker, worker_id, "worker", for_update=True)
        labels = dict(worker.labels)
        for key, value in body.labels.items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        worker.labels = labels
        await s.flush()
        return WorkerRead.model_validate(worker)


async def delete_worker(db: Database, worker_id: int) -> None:
    """Forget a worker; its instances go back to pending to be placed again."""
    async with db.write() as s:
        worker = await load(s, Worker, worker_id, "worker", for_update=True)
        await s.execute(
            update(Instance)
            .where(Instance.worker_id == worker_id)
            .values(
                worker_id=None,
                state=InstanceState.PENDING,
                state_message=f"worker {worker.name} was removed from the cluster",
                devices=[],
                port=None,
                pid=None,
                claim=None,
                command=None,
            )
        )
        await s.delete(worker)
    logger.info("deleted worker %s (id %d)", worker.name, worker_id)
