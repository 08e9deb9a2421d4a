"""Users: the bootstrap admin, management by admins, own password changes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import AuthenticationError, ConflictError
from corral.schemas.auth import PasswordChange, Role, UserCreate, UserRead, UserUpdate
from corral.server.db.engine import Database
from corral.server.db.tables import Session, User
from corral.server.security import hash_password, verify_password
from corral.server.services.rows import load

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class BootstrapResult:
    created: bool
    password: str | None
    """The new admin's password, when the admin was created just now."""


async def bootstrap_admin(db: Database, password: str, *, generated: bool) -> BootstrapResult:
    """Create the first admin when the database has no users at all.

    A generated password must be changed at first sign-in; one the operator
    chose (``--bootstrap-password``) need not.
    """
    async with db.read() as s:
        if (await s.execute(select(func.count()).select_from(User))).scalar_one() > 0:
            return BootstrapResult(created=False, password=None)
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        async with db.write() as s:
            if (await s.execute(select(func.count()).select_from(User))).scalar_one() > 0:
                return BootstrapResult(created=False, password=None)
            s.add(
                User(
                    username=ADMIN_USERNAME,
                    password_hash=password_hash,
                    role=Role.ADMIN,
                    is_active=True,
                    password_change_required=generated,
                )
            )
    except IntegrityError:
        # Another server replica created it between our check and insert.
        return BootstrapResult(created=False, password=None)
    logger.info("created the bootstrap admin user %r", ADMIN_USERNAME)
    return BootstrapResult(created=True, password=password)


async def list_users(db: Database) -> list[UserRead]:
    async with db.read() as s:
        rows = (await s.execute(select(User).order_by(User.id))).scalars()
        return [UserRead.model_validate(u) for u in rows]


async def get_user(db: Database, user_id: int) -> UserRead:
    async with db.read() as s:
        return UserRead.model_validate(await load(s, User, user_id, "user"))


async def create_user(db: Database, body: UserCreate) -> UserRead:
    password_hash = await asyncio.to_thread(hash_password, body.password)
    try:
        async with db.write() as s:
            user = User(
                username=body.username,
                password_hash=password_hash,
                role=body.role,
                is_active=True,
                password_change_required=False,
            )
            s.add(user)
            await s.flush()
            result = UserRead.model_validate(user)
    except IntegrityError as e:
        raise ConflictError(f"a user named {body.username!r} already exists") from e
    logger.info("created user %s (id %d, role %s)", result.username, result.id, result.role)
    return result


async def update_user(db: Database, user_id: int, body: UserUpdate) -> UserRead:
    password_hash = await asyncio.to_thread(hash_password, body.password) if body.password else None
    async with db.write() as s:
        user = await load(s, User, user_id, "user", for_update=True)
        demoting = body.role is not None and body.role != Role.ADMIN
        disabling = body.is_active is False
        if user.role == Role.ADMIN and (demoting or disabling):
            await _ensure_another_admin(s, user)
        if body.role is not None:
            user.role = body.role
        if body.is_active is not None:
            user.is_active = body.is_active
        if password_hash is not None:
            user.password_hash = password_hash
            user.password_change_required = False
        if body.is_active is False or password_hash is not None:
            await _end_sessions(s, user.id)
        await s.flush()
        return UserRead.model_validate(user)


async def change_own_password(db: Database, user_id: int, body: PasswordChange) -> UserRead:
    async with db.read() as s:
        stored = (await load(s, User, user_id, "user")).password_hash
    if not await asyncio.to_thread(verify_password, body.current_password, stored):
        raise AuthenticationError("current password is wrong")
    new_hash = await asyncio.to_thread(hash_password, body.new_password)
    async with db.write() as s:
        user = await load(s, User, user_id, "user", for_update=True)
        user.password_hash = new_hash
        user.password_change_required = False
        await s.flush()
        return UserRead.model_validate(user)


async def delete_user(db: Database, user_id: int) -> None:
    async with db.write() as s:
        user = await load(s, User, user_id, "user", for_update=True)
        if user.role == Role.ADMIN:
            await _ensure_another_admin(s, user)
        await s.delete(user)
    logger.info("deleted user %s (id %d)", user.username, user_id)


async def _ensure_another_admin(s: AsyncSession, user: User) -> None:
    # Lock every admin row (PostgreSQL), so that two admins demoting each
    # other at once cannot both succeed.
    admins = (
        await s.execute(
            select(User.id)
            .where(User.role == Role.ADMIN, User.is_active.is_(True))
            .with_for_update()
        )
    ).scalars()
    if not any(admin_id != user.id for admin_id in admins):
        raise ConflictError(f"{user.username!r} is the last active admin; make another admin first")


async def _end_sessions(s: AsyncSession, user_id: int) -> None:
    await s.execute(delete(Session).where(Session.user_id == user_id))
