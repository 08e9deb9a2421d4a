"""``/api/v1/users``: user management (admins) and one's own password."""

from __future__ import annotations

from fastapi import APIRouter, Response

from corral.schemas.auth import PasswordChange, UserCreate, UserRead, UserUpdate
from corral.schemas.common import ItemList
from corral.server.api.deps import DbDep, ForgetCredentialsDep, PrincipalDep
from corral.server.services import users

router = APIRouter(prefix="/users", tags=["users"])


@router.get("")
async def list_users(db: DbDep, principal: PrincipalDep) -> ItemList[UserRead]:
    principal.require_admin()
    return ItemList(items=await users.list_users(db))


@router.post("", status_code=201)
async def create_user(body: UserCreate, db: DbDep, principal: PrincipalDep) -> UserRead:
    principal.require_admin()
    return await users.create_user(db, body)


@router.post("/me/password")
async def change_password(body: PasswordChange, db: DbDep, principal: PrincipalDep) -> UserRead:
    user = principal.require_user()
    return await users.change_own_password(db, user.id, body)


@router.get("/{user_id}")
async def get_user(user_id: int, db: DbDep, principal: PrincipalDep) -> UserRead:
    principal.require_admin()
    return await users.get_user(db, user_id)


@router.patch("/{user_id}")
async def update_user(
    user_id: int, body: UserUpdate, db: DbDep, principal: PrincipalDep, forget: ForgetCredentialsDep
) -> UserRead:
    principal.require_admin()
    updated = await users.update_user(db, user_id, body)
    forget()
    return updated


@router.delete("/{user_id}", status_code=204)
async def delete_user(
    user_id: int, db: DbDep, principal: PrincipalDep, forget: ForgetCredentialsDep
) -> Response:
    principal.require_admin()
    await users.delete_user(db, user_id)
    forget()
    return Response(status_code=204)
