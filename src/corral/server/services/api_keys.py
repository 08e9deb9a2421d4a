"""API keys: created by a user for themself, shown once, stored hashed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from corral.errors import ConflictError, InvalidInputError, NotFoundError
from corral.schemas.auth import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from corral.server.db.engine import Database
from corral.server.db.tables import ApiKey, User
from corral.server.security import CredentialKind, hash_secret, new_credential
from corral.server.services.principal import Principal

logger = logging.getLogger(__name__)


async def create_api_key(db: Database, user_id: int, body: ApiKeyCreate) -> ApiKeyCreated:
    expires_at = body.expires_at
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            raise InvalidInputError("expires_at must be in the future", code="validation_error")
    credential = new_credential(CredentialKind.API_KEY)
    try:
        async with db.write() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise NotFoundError(f"user {user_id} does not exist")
            key = ApiKey(
                id=credential.id,
                name=body.name,
                user_id=user_id,
                secret_hash=hash_secret(credential.secret),
                expires_at=expires_at,
            )
            s.add(key)
            await s.flush()
            read = _to_read(key, user.username)
    except IntegrityError as e:
        raise ConflictError(f"you already have an API key named {body.name!r}") from e
    logger.info("user %d created API key %s", user_id, credential.id)
    return ApiKeyCreated(**read.model_dump(), key=str(credential))


async def list_api_keys(db: Database, principal: Principal, *, all_users: bool) -> list[ApiKeyRead]:
    """The caller's keys; with ``all_users`` (admins only) everyone's."""
    user = principal.require_admin() if all_users else principal.require_user()
    query = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id)
    if not all_users:
        query = query.where(ApiKey.user_id == user.id)
    async with db.read() as s:
        rows = (await s.execute(query.order_by(ApiKey.created_at))).all()
    return [_to_read(key, username) for key, username in rows]


async def delete_api_key(db: Database, principal: Principal, key_id: str) -> None:
    """Revoke a key: its owner or an admin may. Others are told it does not exist."""
    user = principal.require_user()
    async with db.write() as s:
        key = await s.get(ApiKey, key_id)
        if key is None or (key.user_id != user.id and not principal.is_admin):
            raise NotFoundError(f"API key {key_id} does not exist")
        await s.delete(key)
    logger.info("API key %s revoked by user %d", key_id, user.id)


def _to_read(key: ApiKey, username: str) -> ApiKeyRead:
    return ApiKeyRead(
        id=key.id,
        name=key.name,
        user_id=key.user_id,
        username=username,
        created_at=key.created_at,
        expires_at=key.expires_at,
    )
