"""Instances: listing, removal, and keeping each model at its replica count."""

from __future__ import annotations

import logging
import re

from sqlalchemy import Select, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from corral.errors import ConflictError, NotFoundError
from corral.schemas.instances import (
    InstanceEventRead,
    InstanceRead,
    InstanceState,
    RpcServerRead,
    RpcServerState,
)
from corral.schemas.workers import WorkerState
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, InstanceEvent, Model, RpcServer, Worker
from corral.server.security import random_string
from corral.server.services.routing import base_url
from corral.server.services.rpc_servers import reads_of

logger = logging.getLogger(__name__)

# When scaling down, give up first what serves nobody yet; running last.
_REMOVAL_ORDER = [
    InstanceState.PENDING,
    InstanceState.ERROR,
    InstanceState.UNREACHABLE,
    InstanceState.SCHEDULED,
    InstanceState.DOWNLOADING,
    InstanceState.STARTING,
    InstanceState.RUNNING,
]


def _instance_query() -> Select[Instance, str, str | None]:
    worker = aliased(Worker)
    return (
        select(Instance, Model.name, worker.name)
        .join(Model, Model.id == Instance.model_id)
        .outerjoin(worker, worker.id == Instance.worker_id)
    )


def _to_read(
    instance: Instance,
    model_name: str,
    worker_name: str | None,
    helpers: dict[int, list[RpcServerRead]],
) -> InstanceRead:
    return InstanceRead.model_validate(
        {
            **{c.key: getattr(instance, c.key) for c in Instance.__table__.columns},
            "model_name": model_name,
            "worker_name": worker_name,
            "rpc_servers": helpers.get(instance.id, []),
        }
    )


async def list_instances(
    db: Database,
    *,
    model_id: int | None = None,
    worker_id: int | None = None,
    state: InstanceState | None = None,
) -> list[InstanceRead]:
    query = _instance_query()
    if model_id is not None:
        query = query.where(Instance.model_id == model_id)
    if worker_id is not None:
        query = query.where(Instance.worker_id == worker_id)
    if state is not None:
        query = query.where(Instance.state == state)
    async with db.read() as s:
        rows = (await s.execute(query.order_by(Instance.id))).all()
        helpers = await reads_of(s, [instance.id for instance, *_ in rows])
    return [_to_read(*row, helpers) for row in rows]


async def get_instance(db: Database, instance_id: int) -> InstanceRead:
    async with db.read() as s:
        row = (await s.execute(_instance_query().where(Instance.id == instance_id))).one_or_none()
        if row is None:
            raise NotFoundError(f"instance {instance_id} does not exist")
        helpers = await reads_of(s, [instance_id])
    return _to_read(*row, helpers)


async def instance_events(db: Database, instance_id: int) -> list[InstanceEventRead]:
    """The instance's state changes, oldest first."""
    async with db.read() as s:
        if await s.get(Instance, instance_id) is None:
            raise NotFoundError(f"instance {instance_id} does not exist")
        rows = await s.execute(
            select(InstanceEvent)
            .where(InstanceEvent.instance_id == instance_id)
            .order_by(InstanceEvent.id)
        )
        return [InstanceEventRead.model_validate(e) for e in rows.scalars()]


async def restart_instance(db: Database, instance_id: int, by: str) -> InstanceRead:
    """Ask the instance's worker to stop its engine and start it again, in
    the same place (its claim is kept). 409 when it is not placed: a pending
    instance starts by itself once it fits."""
    async with db.write() as s:
        instance = await s.get(Instance, instance_id, with_for_update=True)
        if instance is None:
            raise NotFoundError(f"instance {instance_id} does not exist")
        if instance.worker_id is None or instance.placement is None:
            raise ConflictError(
                f"instance {instance.name} is not placed on a worker yet, so there is "
                f"nothing to restart: it starts once placed ({instance.state_message})"
            )
        worker = await s.get(Worker, instance.worker_id)
        if worker is None or worker.state != WorkerState.READY:
            state = worker.state if worker is not None else "gone"
            raise ConflictError(
                f"instance {instance.name}'s worker is {state}, so it cannot restart the "
                f"engine now; once the worker is back (or the instance is placed elsewhere) "
                f"try again"
            )
        instance.generation += 1
        # Its helpers restart too (their assignments carry the generation);
        # the primary waits for them to be ready again.
        await s.execute(
            update(RpcServer)
            .where(RpcServer.instance_id == instance_id)
            .values(state=RpcServerState.PENDING, state_message=f"restart asked by {by}", pid=None)
        )
        instance.state = InstanceState.SCHEDULED
        instance.state_message = f"restart asked by {by}"
        instance.pid = None
        instance.layers = None
    logger.info("instance %s (id %d): restart asked by %s", instance.name, instance_id, by)
    return await get_instance(db, instance_id)


async def delete_instance(db: Database, instance_id: int) -> None:
    """Remove one instance. The model keeps its replica count, so a fresh
    pending instance takes its place: this is how an instance is restarted."""
    async with db.write() as s:
        instance = await s.get(Instance, instance_id)
        if instance is None:
            raise NotFoundError(f"instance {instance_id} does not exist")
        model = (
            await s.execute(select(Model).where(Model.id == instance.model_id).with_for_update())
        ).scalar_one()
        await s.delete(instance)
        await s.flush()
        await reconcile_instances(s, model)
    logger.info("deleted instance %s (id %d) of model %s", instance.name, instance_id, model.name)


async def reconcile_instances(s: AsyncSession, model: Model) -> None:
    """Create or remove instances until the model has ``replicas`` of them.

    Runs inside the caller's transaction, with the model row locked, so
    concurrent scalings of one model serialise instead of both adding.
    """
    instances = list(
        (await s.execute(select(Instance).where(Instance.model_id == model.id))).scalars()
    )
    missing = model.replicas - len(instances)
    for _ in range(missing):
        s.add(
            Instance(
                name=instance_name(model.name),
                model_id=model.id,
                state=InstanceState.PENDING,
                state_message="waiting to be scheduled",
                devices=[],
                restart_count=0,
            )
        )
    if missing < 0:
        rank = {state: i for i, state in enumerate(_REMOVAL_ORDER)}
        instances.sort(key=lambda i: (rank.get(InstanceState(i.state), 0), -i.id))
        for instance in instances[:-missing]:
            await s.delete(instance)
    if missing:
        logger.info(
            "model %s (id %d): %s %d instance(s) to reach %d replicas",
            model.name,
            model.id,
            "added" if missing > 0 else "removed",
            abs(missing),
            model.replicas,
        )
    await s.flush()


def instance_name(model_name: str) -> str:
    """A readable, unique instance name: the model's name made host-safe plus a suffix."""
    base = re.sub(r"[^A-Za-z0-9.-]+", "-", model_name).strip("-.")[:120] or "model"
    return f"{base}-{random_string(6)}"


async def running_counts(s: AsyncSession, model_id: int | None = None) -> dict[int, int]:
    """Number of running instances per model id (models with none are absent)."""
    running = case((Instance.state == InstanceState.RUNNING, 1), else_=0)
    query = select(Instance.model_id, func.sum(running)).group_by(Instance.model_id)
    if model_id is not None:
        query = query.where(Instance.model_id == model_id)
    return {mid: int(count) for mid, count in (await s.execute(query)).all()}


async def log_source(db: Database, instance_id: int) -> tuple[str, str]:
    """Where an instance's log is read: its worker's log URL and the key it takes."""
    async with db.read() as s:
        row = (
            await s.execute(
                select(Instance.api_key, Worker.name, Worker.address, Worker.port)
                .join(Worker, Worker.id == Instance.worker_id)
                .where(Instance.id == instance_id)
            )
        ).one_or_none()
        if row is None:
            if await s.get(Instance, instance_id) is None:
                raise NotFoundError(f"instance {instance_id} does not exist")
            raise ConflictError(f"instance {instance_id} is not placed on a worker yet: no log")
    api_key, _, address, port = row
    return f"{base_url(address, port)}/instances/{instance_id}/logs", api_key or ""
