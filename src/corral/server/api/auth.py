"""``/api/v1/auth``: log in and out, who am I."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from corral.errors import InvalidInputError
from corral.schemas.auth import LoginRequest, LoginResponse, UserRead
from corral.server.api.deps import DbDep, ForgetCredentialsDep, PrincipalDep
from corral.server.cookie import clear_cookie_header, is_secure_origin, set_cookie_header
from corral.server.services import auth

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login")
async def login(
    body: LoginRequest, db: DbDep, request: Request, response: Response
) -> LoginResponse:
    """A new session. With ``cookie``, its token goes into an HttpOnly cookie
    (the web UI) and the response carries none."""
    ttl = timedelta(hours=request.app.state.settings.session_ttl_hours)
    session = await auth.login(db, body.username, body.password, ttl)
    if body.cookie and session.token is not None:
        response.headers.append(
            "set-cookie",
            set_cookie_header(session.token, int(ttl.total_seconds()), secure=_secure(request)),
        )
        session = session.model_copy(update={"token": None})
    return session


@router.post("/logout", status_code=204)
async def logout(
    db: DbDep, principal: PrincipalDep, forget: ForgetCredentialsDep, request: Request
) -> Response:
    if principal.session_id is None:
        raise InvalidInputError(
            "logout ends a session; revoke an API key with DELETE /api/v1/api-keys/{id}",
            code="not_a_session",
        )
    await auth.logout(db, principal.session_id)
    forget()
    response = Response(status_code=204)
    if principal.via_cookie:
        response.headers.append("set-cookie", clear_cookie_header(secure=_secure(request)))
    return response


@router.get("/me")
async def me(principal: PrincipalDep) -> UserRead:
    return principal.require_user()


def _secure(request: Request) -> bool:
    configured: bool | None = request.app.state.settings.cookie_secure
    if configured is not None:
        return configured
    return is_secure_origin(request.url.scheme, request.headers.get("host", ""))
