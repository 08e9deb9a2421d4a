"""``/api/v1/workers``: registration and status (workers), management (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from corral.errors import AuthenticationError
from corral.schemas.assignments import Assignments, InstanceStatusReport, RpcServerStatusReport
from corral.schemas.common import ItemList
from corral.schemas.instances import InstanceRead
from corral.schemas.workers import (
    WorkerLabelsUpdate,
    WorkerRead,
    WorkerRegister,
    WorkerRegistered,
    WorkerStatus,
)
from corral.server.api.deps import DbDep, PrincipalDep, TokenDep, WakeDep
from corral.server.security import tokens_equal
from corral.server.services import assignments, instances, rpc_servers, workers
from corral.server.services.changes import ChangeSignal

router = APIRouter(prefix="/workers", tags=["workers"])


@router.post("/register", status_code=201, responses={200: {"model": WorkerRegistered}})
async def register_worker(
    body: WorkerRegister,
    db: DbDep,
    token: TokenDep,
    request: Request,
    response: Response,
    wake: WakeDep,
) -> WorkerRegistered:
    """Join the cluster with the cluster token; returns the worker's own credential
    (201 for a new worker, 200 when a known worker registers again)."""
    if not tokens_equal(token, request.app.state.cluster_token):
        raise AuthenticationError("registration needs the cluster token")
    registered, created = await workers.register_worker(db, body)
    response.status_code = 201 if created else 200
    wake()
    return registered


@router.post("/{worker_id}/status")
async def report_status(
    worker_id: int, body: WorkerStatus, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> WorkerRead:
    principal.require_worker(worker_id)
    worker, changed = await workers.report_status(db, worker_id, body)
    if changed:
        wake()
    return worker


@router.get("/{worker_id}/instances")
async def list_assignments(
    worker_id: int, db: DbDep, principal: PrincipalDep
) -> ItemList[InstanceRead]:
    """The instances placed on this worker: what it should be running."""
    principal.require_worker(worker_id, or_admin=True)
    return ItemList(items=await instances.list_instances(db, worker_id=worker_id))


@router.get("/{worker_id}/assignments", responses={304: {"description": "Unchanged"}})
async def watch_assignments(
    worker_id: int,
    db: DbDep,
    principal: PrincipalDep,
    request: Request,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a change.")] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """What this worker must run. With ``If-None-Match`` (the ETag it has) and
    ``wait``, a long poll: answers as soon as the list differs, else 304."""
    principal.require_worker(worker_id, or_admin=True)
    changes: ChangeSignal = request.app.state.changes
    seen = if_none_match.strip('"') if if_none_match else None
    current = await assignments.watch_assignments(db, worker_id, seen, wait, changes)
    if current is None:
        return Response(status_code=304, headers={"ETag": f'"{seen}"'})
    return Response(
        Assignments.model_validate(current).model_dump_json(),
        media_type="application/json",
        headers={"ETag": f'"{current.etag}"'},
    )


@router.post("/{worker_id}/instances/{instance_id}/status", status_code=204)
async def report_instance(
    worker_id: int,
    instance_id: int,
    body: InstanceStatusReport,
    db: DbDep,
    principal: PrincipalDep,
    request: Request,
) -> Response:
    """A worker's news about one of its instances (state, progress, pid, port)."""
    principal.require_worker(worker_id)
    await assignments.report_instance(db, worker_id, instance_id, body)
    request.app.state.changes.notify()
    return Response(status_code=204)


@router.post("/{worker_id}/rpc-servers/{rpc_server_id}/status", status_code=204)
async def report_rpc_server(
    worker_id: int,
    rpc_server_id: int,
    body: RpcServerStatusReport,
    db: DbDep,
    principal: PrincipalDep,
    request: Request,
) -> Response:
    """A helper worker's news about an rpc-server it runs (state, port, pid);
    wakes the primary waiting for it."""
    principal.require_worker(worker_id)
    await rpc_servers.report_rpc_server(db, worker_id, rpc_server_id, body)
    request.app.state.changes.notify()
    return Response(status_code=204)


@router.get("")
async def list_workers(db: DbDep, principal: PrincipalDep) -> ItemList[WorkerRead]:
    principal.require_admin()
    return ItemList(items=await workers.list_workers(db))


@router.get("/{worker_id}")
async def get_worker(worker_id: int, db: DbDep, principal: PrincipalDep) -> WorkerRead:
    principal.require_admin()
    return await workers.get_worker(db, worker_id)


@router.patch("/{worker_id}")
async def update_worker(
    worker_id: int, body: WorkerLabelsUpdate, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> WorkerRead:
    principal.require_admin()
    worker = await workers.update_labels(db, worker_id, body)
    wake()
    return worker


@router.delete("/{worker_id}", status_code=204)
async def delete_worker(
    worker_id: int, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> Response:
    principal.require_admin()
    await workers.delete_worker(db, worker_id)
    wake()
    return Response(status_code=204)
