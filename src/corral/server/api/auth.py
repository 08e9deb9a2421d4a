"""``/api/v1/auth``: log in and out, who am I."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from corral.errors import InvalidInputError
from corral.schemas.auth import LoginRequest, LoginResponse, UserRead
from corral.server.api.deps import DbDep, ForgetCredentialsDep, PrincipalDep
from corral.server.services import auth

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login")
async def login(body: LoginRequest, db: DbDep, request: Request) -> LoginResponse:
    ttl = timedelta(hours=request.app.state.settings.session_ttl_hours)
    return await auth.login(db, body.username, body.password, ttl)


@router.post("/logout", status_code=204)
async def logout(db: DbDep, principal: PrincipalDep, forget: ForgetCredentialsDep) -> Response:
    if principal.session_id is None:
        raise InvalidInputError(
            "logout ends a session; revoke an API key with DELETE /api/v1/api-keys/{id}",
            code="not_a_session",
        )
    await auth.logout(db, principal.session_id)
    forget()
    return Response(status_code=204)


@router.get("/me")
async def me(principal: PrincipalDep) -> UserRead:
    return principal.require_user()
