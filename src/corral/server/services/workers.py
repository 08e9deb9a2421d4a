"""Workers: registration with the cluster token, status reports, labels."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
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
from corral.server.services.rpc_servers import helped_by, mark_unreachable, release_instances

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


async def report_status(
    db: Database, worker_id: int, status: WorkerStatus
) -> tuple[WorkerRead, bool]:
    """Store a heartbeat. Returns the worker and whether what placement sees
    changed (it became ready, or its devices or memory did)."""
    async with db.write() as s:
        worker = await load(s, Worker, worker_id, "worker")
        reported = status.model_dump()
        previous = worker.status or {}
        changed = (
            worker.state != WorkerState.READY
            or any(previous.get(k) != reported.get(k) for k in ("devices", "disks"))
            or (previous.get("memory") or {}).get("total") != status.memory.total
        )
        if worker.state != WorkerState.READY:
            # Back after a silence: what was not yet placed elsewhere is still
            # its own, and its next report of each instance tells the rest.
            await s.execute(
                update(Instance)
                .where(
                    Instance.worker_id == worker_id,
                    Instance.state == InstanceState.UNREACHABLE,
                )
                .values(
                    state=InstanceState.SCHEDULED,
                    state_message=f"worker {worker.name} is back; waiting for its report",
                )
            )
            logger.info("worker %s (id %d) is ready", worker.name, worker_id)
        worker.status = reported
        worker.heartbeat_at = datetime.now(UTC)
        worker.state = WorkerState.READY
        worker.state_message = None
        await s.flush()
        return WorkerRead.model_validate(worker), changed


async def check_liveness(db: Database, timeout: float, grace: float) -> int:
    """Workers silent for ``timeout`` seconds become not ready, their
    instances unreachable and the rpc-servers they run for other workers'
    instances unreachable too (the primaries stop and wait). After ``grace``
    more seconds the instances they run or help are released (claims freed,
    back to pending) to be placed elsewhere, with fresh helpers if need be.

    Returns how many instances were released. Every change is guarded by the
    condition that caused it, so concurrent servers agree.
    """
    now = datetime.now(UTC)
    silent_since = now - timedelta(seconds=timeout)
    lost_since = silent_since - timedelta(seconds=grace)
    async with db.write() as s:
        stale = (
            await s.execute(
                select(Worker.id, Worker.name).where(
                    Worker.state == WorkerState.READY, Worker.heartbeat_at < silent_since
                )
            )
        ).all()
        for worker_id, name in stale:
            await s.execute(
                update(Worker)
                .where(Worker.id == worker_id, Worker.heartbeat_at < silent_since)
                .values(
                    state=WorkerState.NOT_READY,
                    state_message=f"no heartbeat for {timeout:.0f} s",
                )
            )
            await s.execute(
                update(Instance)
                .where(
                    Instance.worker_id == worker_id,
                    Instance.state.not_in([InstanceState.PENDING, InstanceState.UNREACHABLE]),
                )
                .values(
                    state=InstanceState.UNREACHABLE,
                    state_message=f"worker {name} sent no heartbeat for {timeout:.0f} s",
                )
            )
            await mark_unreachable(
                s, worker_id, f"worker {name} sent no heartbeat for {timeout:.0f} s"
            )
            logger.warning("worker %s (id %d): no heartbeat for %.0f s", name, worker_id, timeout)
        lost = (
            await s.execute(
                select(Worker.id, Worker.name).where(
                    Worker.state != WorkerState.READY, Worker.heartbeat_at < lost_since
                )
            )
        ).all()
        released = 0
        for worker_id, name in lost:
            count = await release_instances(
                s,
                or_(Instance.worker_id == worker_id, helped_by(worker_id)),
                f"worker {name} was unreachable for {timeout + grace:.0f} s; placing it again",
            )
            if count:
                logger.warning(
                    "worker %s (id %d): released %d instance(s) to be placed elsewhere",
                    name,
                    worker_id,
                    count,
                )
            released += count
    return released


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
        await release_instances(
            s,
            or_(Instance.worker_id == worker_id, helped_by(worker_id)),
            f"worker {worker.name} was removed from the cluster",
        )
        await s.delete(worker)
    logger.info("deleted worker %s (id %d)", worker.name, worker_id)
