"""What each worker must run, and what it reports about it.

A worker watches its assignments with a long poll: it sends the ETag of the
list it has, and the answer comes when the list differs (or after ``wait``
seconds, unchanged). The ETag covers everything a worker acts on, state
included, so a worker that missed a change (a network blip, a server
restart) sees it on its next poll.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from sqlalchemy import select, update

from corral.errors import ConflictError, NotFoundError
from corral.schemas.assignments import Assignment, Assignments, InstanceStatusReport
from corral.schemas.instances import InstanceState
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Model
from corral.server.services.changes import ChangeSignal
from corral.server.services.rpc_servers import endpoints_of, helper_assignments

logger = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0
"""How often a waiting long poll re-reads the database: changes written by
another server process have no in-process signal."""


async def list_assignments(db: Database, worker_id: int) -> Assignments:
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Instance, Model)
                .join(Model, Model.id == Instance.model_id)
                .where(Instance.worker_id == worker_id, Instance.placement.is_not(None))
                .order_by(Instance.id)
            )
        ).all()
        helpers = await endpoints_of(s, [instance.id for instance, _ in rows])
        rpc_servers = await helper_assignments(s, worker_id)
    items = [
        Assignment(
            instance_id=instance.id,
            instance_name=instance.name,
            model_id=model.id,
            model_name=model.name,
            source=model.source,
            backend=model.backend,
            backend_version=model.backend_version,
            backend_parameters=list(model.backend_parameters),
            env=dict(model.env),
            categories=list(model.categories),
            restart_on_error=model.restart_on_error,
            placement=instance.placement or {},
            api_key=instance.api_key or "",
            state=InstanceState(instance.state),
            restart_count=instance.restart_count,
            generation=instance.generation,
            helpers=helpers.get(instance.id, []),
        )
        for instance, model in rows
    ]
    digest = hashlib.sha256(
        json.dumps(
            [
                [i.model_dump(mode="json") for i in items],
                [r.model_dump(mode="json") for r in rpc_servers],
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    return Assignments(etag=digest, items=items, rpc_servers=rpc_servers)


async def watch_assignments(
    db: Database, worker_id: int, seen: str | None, wait: float, changes: ChangeSignal
) -> Assignments | None:
    """The worker's assignments once they differ from ETag ``seen``; None when
    ``wait`` seconds pass without a change."""
    deadline = time.monotonic() + wait
    while True:
        current = await list_assignments(db, worker_id)
        if current.etag != seen:
            return current
        left = deadline - time.monotonic()
        if left <= 0 or changes.closed:
            return None
        await changes.wait(min(left, RECHECK_SECONDS))


async def report_instance(
    db: Database, worker_id: int, instance_id: int, report: InstanceStatusReport
) -> None:
    """Store a worker's news about one of its instances.

    Refused (404/409) when the instance is gone or placed elsewhere: the
    worker then stops it. A report also brings an instance its worker lost
    contact with (``unreachable``) back.
    """
    values: dict[str, object] = {
        "state": report.state,
        "state_message": report.state_message,
        "download_progress": report.download_progress,
    }
    for field in ("pid", "port", "restart_count"):
        value = getattr(report, field)
        if value is not None or field != "restart_count":
            values[field] = value
    if report.layers is not None:
        values["layers"] = [share.model_dump() for share in report.layers]
    elif report.state is not InstanceState.RUNNING:
        values["layers"] = None  # a new start: the last run's layout no longer holds
    async with db.write() as s:
        result = await s.execute(
            update(Instance)
            .where(
                Instance.id == instance_id,
                Instance.worker_id == worker_id,
                Instance.state != InstanceState.PENDING,
                *(
                    [Instance.generation == report.generation]
                    if report.generation is not None
                    else []
                ),
            )
            .values(**values)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return
        exists = (
            await s.execute(
                select(Instance.worker_id, Instance.generation).where(Instance.id == instance_id)
            )
        ).first()
    if exists is None:
        raise NotFoundError(f"instance {instance_id} does not exist")
    if exists.worker_id == worker_id and report.generation not in (None, exists.generation):
        return  # news from the engine a restart replaced: the new one reports for itself
    raise ConflictError(f"instance {instance_id} is not assigned to worker {worker_id}")
