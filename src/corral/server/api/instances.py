"""``/api/v1/instances``: the running (or waiting) copies of models."""

from __future__ import annotations

from fastapi import APIRouter, Response

from corral.schemas.common import ItemList
from corral.schemas.instances import InstanceRead, InstanceState
from corral.server.api.deps import DbDep, PrincipalDep, WakeDep
from corral.server.services import instances

router = APIRouter(prefix="/instances", tags=["instances"])


@router.get("")
async def list_instances(
    db: DbDep,
    principal: PrincipalDep,
    model_id: int | None = None,
    worker_id: int | None = None,
    state: InstanceState | None = None,
) -> ItemList[InstanceRead]:
    principal.require_admin()
    return ItemList(
        items=await instances.list_instances(
            db, model_id=model_id, worker_id=worker_id, state=state
        )
    )


@router.get("/{instance_id}")
async def get_instance(instance_id: int, db: DbDep, principal: PrincipalDep) -> InstanceRead:
    principal.require_admin()
    return await instances.get_instance(db, instance_id)


@router.delete("/{instance_id}", status_code=204)
async def delete_instance(
    instance_id: int, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> Response:
    """Remove an instance; a fresh one replaces it while the model wants replicas."""
    principal.require_admin()
    await instances.delete_instance(db, instance_id)
    wake()
    return Response(status_code=204)
