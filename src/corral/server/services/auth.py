"""Logging in, sessions, and turning a bearer token into a principal."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from corral.errors import AuthenticationError
from corral.schemas.auth import LoginResponse, UserRead
from corral.server.db.engine import Database
from corral.server.db.tables import ApiKey, Session, User, Worker
from corral.server.security import (
    DUMMY_PASSWORD_HASH,
    CredentialKind,
    hash_secret,
    new_credential,
    parse_credential,
    secret_matches,
    verify_password,
)
from corral.server.services.principal import Principal

logger = logging.getLogger(__name__)

INVALID_CREDENTIAL = "invalid credential"


async def login(db: Database, username: str, password: str, ttl: timedelta) -> LoginResponse:
    async with db.read() as s:
        user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
    stored = user.password_hash if user is not None else DUMMY_PASSWORD_HASH
    ok = await asyncio.to_thread(verify_password, password, stored)
    if user is None or not ok:
        raise AuthenticationError("wrong username or password")
    if not user.is_active:
        raise AuthenticationError(f"user {username!r} is disabled")
    credential = new_credential(CredentialKind.SESSION)
    expires_at = datetime.now(UTC) + ttl
    async with db.write() as s:
        s.add(
            Session(
                id=credential.id,
                user_id=user.id,
                secret_hash=hash_secret(credential.secret),
                expires_at=expires_at,
            )
        )
    logger.info("user %s (id %d) logged in", user.username, user.id)
    return LoginResponse(
        token=str(credential), expires_at=expires_at, user=UserRead.model_validate(user)
    )


async def logout(db: Database, session_id: str) -> None:
    async with db.write() as s:
        await s.execute(delete(Session).where(Session.id == session_id))


async def authenticate(db: Database, token: str) -> Principal:
    """The principal a bearer token stands for; AuthenticationError otherwise."""
    credential = parse_credential(token)
    if credential is None:
        raise AuthenticationError(INVALID_CREDENTIAL)
    now = datetime.now(UTC)
    async with db.read() as s:
        if credential.kind is CredentialKind.WORKER:
            worker = (
                await s.execute(select(Worker).where(Worker.credential_id == credential.id))
            ).scalar_one_or_none()
            if worker is None or not secret_matches(credential.secret, worker.credential_hash):
                raise AuthenticationError(INVALID_CREDENTIAL)
            return Principal(worker_id=worker.id)

        table = Session if credential.kind is CredentialKind.SESSION else ApiKey
        row = (
            await s.execute(
                select(table.secret_hash, table.expires_at, User)
                .join(User, User.id == table.user_id)
                .where(table.id == credential.id)
            )
        ).one_or_none()
        if row is None or not secret_matches(credential.secret, row.secret_hash):
            raise AuthenticationError(INVALID_CREDENTIAL)
        if row.expires_at is not None and row.expires_at <= now:
            raise AuthenticationError(
                "session expired; log in again"
                if table is Session
                else f"API key {credential.id} expired at {row.expires_at.isoformat()}"
            )
        user: User = row.User
        if not user.is_active:
            raise AuthenticationError(f"user {user.username!r} is disabled")
        return Principal(
            user=UserRead.model_validate(user),
            session_id=credential.id if table is Session else None,
        )
