"""``/api/v1/models``: deploy, inspect, scale and remove models."""

from __future__ import annotations

from fastapi import APIRouter, Response

from corral.schemas.common import ItemList
from corral.schemas.models import ModelCreate, ModelRead, ModelUpdate
from corral.server.api.deps import DbDep, PrincipalDep
from corral.server.services import models

router = APIRouter(prefix="/models", tags=["models"])


@router.post("", status_code=201)
async def create_model(body: ModelCreate, db: DbDep, principal: PrincipalDep) -> ModelRead:
    principal.require_admin()
    return await models.create_model(db, body)


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
    model_id: int, body: ModelUpdate, db: DbDep, principal: PrincipalDep
) -> ModelRead:
    principal.require_admin()
    return await models.update_model(db, model_id, body)


@router.delete("/{model_id}", status_code=204)
async def delete_model(model_id: int, db: DbDep, principal: PrincipalDep) -> Response:
    principal.require_admin()
    await models.delete_model(db, model_id)
    return Response(status_code=204)
