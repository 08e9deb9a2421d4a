"""``/api/v1/api-keys``: a user's own API keys."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from corral.schemas.auth import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from corral.schemas.common import ItemList
from corral.server.api.deps import DbDep, ForgetCredentialsDep, PrincipalDep
from corral.server.services import api_keys

router = APIRouter(prefix="/api-keys", tags=["api-keys"])


@router.post("", status_code=201)
async def create_api_key(body: ApiKeyCreate, db: DbDep, principal: PrincipalDep) -> ApiKeyCreated:
    user = principal.require_user()
    return await api_keys.create_api_key(db, user.id, body)


@router.get("")
async def list_api_keys(
    db: DbDep,
    principal: PrincipalDep,
    all: bool = Query(False, description="Every user's keys (admins only)."),
) -> ItemList[ApiKeyRead]:
    return ItemList(items=await api_keys.list_api_keys(db, principal, all_users=all))


@router.delete("/{key_id}", status_code=204)
async def delete_api_key(
    key_id: str, db: DbDep, principal: PrincipalDep, forget: ForgetCredentialsDep
) -> Response:
    await api_keys.delete_api_key(db, principal, key_id)
    forget()
    return Response(status_code=204)
