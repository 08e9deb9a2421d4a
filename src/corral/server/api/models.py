"""``/api/v1/models``: deploy, inspect, scale and remove models."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from corral.schemas.common import ItemList
from corral.schemas.models import ModelCreate, ModelRead, ModelUpdate
from corral.schemas.plans import PlanRead
from corral.server.api.deps import DbDep, PrincipalDep, WakeDep
from corral.server.services import models, plans

router = APIRouter(prefix="/models", tags=["models"])


@router.post("", status_code=201)
async def create_model(
    body: ModelCreate, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> ModelRead:
    principal.require_admin()
    model = await models.create_model(db, body)
    wake()
    return model


@router.post(":plan")
async def plan_model(
    body: ModelCreate, db: DbDep, principal: PrincipalDep, request: Request
) -> PlanRead:
    """Where this spec would run now and the memory estimate behind it, or per
    worker why it would not fit. Creates nothing."""
    principal.require_admin()
    return await plans.plan_model(db, request.app.state.estimator, body)


@router.get("")
async def list_models(
    db: DbDep, principal: PrincipalDep, name: str | None = None
) -> ItemList[ModelRead]:
    principal.require_user()
    return ItemList(items=await models.list_models(db, name=name))


@router.get("/{model_id}")
async def get_model(model_id: int, db: DbDep, principal: PrincipalDep) -> ModelRead:
    principal.require_user()
    return await models.get_model(db, model_id)


@router.patch("/{model_id}")
async def update_model(
    model_id: int, body: ModelUpdate, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> ModelRead:
    principal.require_admin()
    model = await models.update_model(db, model_id, body)
    wake()
    return model


@router.delete("/{model_id}", status_code=204)
async def delete_model(
    model_id: int, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> Response:
    principal.require_admin()
    await models.delete_model(db, model_id)
    wake()  # its claims are gone: other pending instances may fit now
    return Response(status_code=204)
