"""Request dependencies: the database and the caller's principal."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from corral.errors import AuthenticationError
from corral.server.cookie import CSRF_HEADER, cookie_credential
from corral.server.db.engine import Database
from corral.server.services import auth
from corral.server.services.principal import Principal

_bearer = HTTPBearer(auto_error=False, description="A session token, API key or worker credential.")


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_wake(request: Request) -> Callable[[], None]:
    """Wakes the placement controller after a change that may let instances be
    placed, and the workers' long polls, whose assignments may have changed."""
    state = request.app.state

    def wake() -> None:
        if getattr(state, "placement", None) is not None:
            state.placement.wake()
        if getattr(state, "changes", None) is not None:
            state.changes.notify()

    return wake


def get_forget_credentials(request: Request) -> Callable[[], None]:
    """Makes the gateway forget the credentials it remembers, after a change
    that may revoke one (a key deleted, a user disabled, a logout)."""
    forget: Callable[[], None] | None = getattr(request.app.state, "forget_credentials", None)
    return forget if forget is not None else _nothing


def _nothing() -> None:
    pass


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None:
        raise AuthenticationError("missing credential: send 'Authorization: Bearer <token>'")
    return credentials.credentials


async def get_principal(
    db: Annotated[Database, Depends(get_db)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> Principal:
    """The caller, by bearer token, else by the web UI's session cookie."""
    if credentials is not None:
        return await auth.authenticate(db, credentials.credentials)
    token = cookie_credential(
        request.headers.get("cookie"), request.method, bool(request.headers.get(CSRF_HEADER))
    )
    if token is None:
        raise AuthenticationError("missing credential: send 'Authorization: Bearer <token>'")
    principal = await auth.authenticate(db, token)
    return dataclasses.replace(principal, via_cookie=True)


DbDep = Annotated[Database, Depends(get_db)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
TokenDep = Annotated[str, Depends(bearer_token)]
WakeDep = Annotated[Callable[[], None], Depends(get_wake)]
ForgetCredentialsDep = Annotated[Callable[[], None], Depends(get_forget_credentials)]
