"""rpc-servers: what helper workers run for distributed llama.cpp instances.

A distributed placement names helper workers whose GPUs the primary's
``llama-server`` uses over llama.cpp's RPC. Each helper GPU gets a row here
when the instance is placed; the helper sees its rows in its assignments,
starts one ``rpc-server`` per row and reports it ready with its port; the
primary sees the rows of its instance and launches once all are ready.

The rows live exactly as long as the placement: releasing an instance (its
worker or a helper lost, a worker deleted) deletes them in the same
transaction, and deleting the instance deletes them by foreign key. A helper
stops what is no longer in its assignments, so nothing outlives its instance.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import ConflictError, NotFoundError
from corral.scheduler import Placement
from corral.schemas.assignments import (
    HelperEndpoint,
    RpcServerAssignment,
    RpcServerStatusReport,
)
from corral.schemas.instances import InstanceState, RpcServerRead, RpcServerState
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Model, RpcServer, Worker
from corral.server.services.routing import base_url

logger = logging.getLogger(__name__)

UNPLACED: dict[str, object] = {
    "worker_id": None,
    "state": InstanceState.PENDING,
    "devices": [],
    "port": None,
    "pid": None,
    "claim": None,
    "placement": None,
    "command": None,
    "api_key": None,
    "download_progress": None,
    "layers": None,
}
"""An instance's columns when it goes back to be placed again, its claims freed."""


def add_for(s: AsyncSession, instance_id: int, placement: Placement) -> None:
    """One row per helper GPU, in the order the primary's ``--rpc`` lists them."""
    claimed = {c.worker_id: c.gpus for c in placement.claims[1:]}
    position = 0
    for helper in placement.helpers:
        for gpu in helper.gpus:
            s.add(
                RpcServer(
                    instance_id=instance_id,
                    worker_id=helper.worker_id,
                    device=gpu,
                    position=position,
                    memory=claimed.get(helper.worker_id, {}).get(gpu, 0),
                    state=RpcServerState.PENDING,
                    state_message=f"waiting for worker {helper.worker_name} to start it",
                    secret=secrets.token_urlsafe(24),
                )
            )
            position += 1


async def release_instances(s: AsyncSession, where: ColumnElement[bool], message: str) -> int:
    """Send the instances matching ``where`` back to be placed again: claims
    freed, their rpc-servers' rows deleted (so helpers stop them). Returns how many."""
    ids = list((await s.execute(select(Instance.id).where(where))).scalars())
    if not ids:
        return 0
    await s.execute(delete(RpcServer).where(RpcServer.instance_id.in_(ids)))
    await s.execute(
        update(Instance).where(Instance.id.in_(ids)).values(**UNPLACED, state_message=message)
    )
    return len(ids)


def helped_by(worker_id: int) -> ColumnElement[bool]:
    """Instances that use one of ``worker_id``'s GPUs as a helper."""
    return Instance.id.in_(select(RpcServer.instance_id).where(RpcServer.worker_id == worker_id))


async def mark_unreachable(s: AsyncSession, worker_id: int, message: str) -> None:
    await s.execute(
        update(RpcServer)
        .where(RpcServer.worker_id == worker_id, RpcServer.state != RpcServerState.UNREACHABLE)
        .values(state=RpcServerState.UNREACHABLE, state_message=message)
    )


async def helper_assignments(s: AsyncSession, worker_id: int) -> list[RpcServerAssignment]:
    primary = Worker.__table__.alias("primary_worker")
    rows = await s.execute(
        select(
            RpcServer,
            Instance.name,
            Instance.generation,
            Model.name,
            Model.backend_version,
            primary.c.name,
        )
        .join(Instance, Instance.id == RpcServer.instance_id)
        .join(Model, Model.id == Instance.model_id)
        .join(primary, primary.c.id == Instance.worker_id)
        .where(RpcServer.worker_id == worker_id)
        .order_by(RpcServer.id)
    )
    return [
        RpcServerAssignment(
            rpc_server_id=row.id,
            instance_id=row.instance_id,
            instance_name=instance_name,
            model_name=model_name,
            primary_worker=primary_name,
            device=row.device,
            memory=row.memory,
            backend_version=version,
            secret=row.secret,
            state=RpcServerState(row.state),
            generation=generation,
        )
        for row, instance_name, generation, model_name, version, primary_name in rows
    ]


async def endpoints_of(
    s: AsyncSession, instance_ids: Iterable[int]
) -> dict[int, list[HelperEndpoint]]:
    """Per instance, its helpers' rpc-servers in ``--rpc`` order."""
    out: dict[int, list[HelperEndpoint]] = defaultdict(list)
    for row in await _rows(s, instance_ids):
        server, name, address = row
        out[server.instance_id].append(
            HelperEndpoint(
                rpc_server_id=server.id,
                worker_name=name,
                device=server.device,
                address=address,
                port=server.port,
                state=RpcServerState(server.state),
                state_message=server.state_message,
            )
        )
    return out


async def reads_of(s: AsyncSession, instance_ids: Iterable[int]) -> dict[int, list[RpcServerRead]]:
    out: dict[int, list[RpcServerRead]] = defaultdict(list)
    for server, name, address in await _rows(s, instance_ids):
        out[server.instance_id].append(
            RpcServerRead.model_validate(
                {
                    **{c.key: getattr(server, c.key) for c in RpcServer.__table__.columns},
                    "worker_name": name,
                    "address": address,
                }
            )
        )
    return out


async def _rows(s: AsyncSession, instance_ids: Iterable[int]) -> list[tuple[RpcServer, str, str]]:
    ids = list(instance_ids)
    if not ids:
        return []
    rows = await s.execute(
        select(RpcServer, Worker.name, Worker.address)
        .join(Worker, Worker.id == RpcServer.worker_id)
        .where(RpcServer.instance_id.in_(ids))
        .order_by(RpcServer.instance_id, RpcServer.position)
    )
    return [(server, name, address) for server, name, address in rows]


async def report_rpc_server(
    db: Database, worker_id: int, rpc_server_id: int, report: RpcServerStatusReport
) -> None:
    """Store a helper's news about one of its rpc-servers. 404 when the row
    is gone (the instance was deleted or placed again): the helper stops it."""
    async with db.write() as s:
        result = await s.execute(
            update(RpcServer)
            .where(RpcServer.id == rpc_server_id, RpcServer.worker_id == worker_id)
            .values(
                state=report.state,
                state_message=report.state_message,
                port=report.port,
                pid=report.pid,
            )
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return
        owner = (
            await s.execute(select(RpcServer.worker_id).where(RpcServer.id == rpc_server_id))
        ).scalar_one_or_none()
    if owner is None:
        raise NotFoundError(f"rpc-server {rpc_server_id} does not exist")
    raise ConflictError(f"rpc-server {rpc_server_id} is not assigned to worker {worker_id}")


async def log_source(db: Database, instance_id: int, rpc_server_id: int) -> tuple[str, str]:
    """Where one of an instance's rpc-servers logs: its helper's log URL and key."""
    async with db.read() as s:
        row = (
            await s.execute(
                select(RpcServer.secret, Worker.address, Worker.port)
                .join(Worker, Worker.id == RpcServer.worker_id)
                .where(RpcServer.id == rpc_server_id, RpcServer.instance_id == instance_id)
            )
        ).one_or_none()
    if row is None:
        raise NotFoundError(f"instance {instance_id} has no rpc-server {rpc_server_id}")
    secret, address, port = row
    return f"{base_url(address, port)}/rpc-servers/{rpc_server_id}/logs", secret
