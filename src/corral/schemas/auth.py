"""Users, sessions and API keys on the wire."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from corral.schemas.common import InputModel, OutputModel


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


class LoginRequest(InputModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    cookie: bool = Field(
        default=False,
        description="Keep the session in an HttpOnly cookie (the web UI) instead of "
        "returning its token.",
    )


class UserRead(OutputModel):
    id: int
    username: str
    role: Role
    is_active: bool
    password_change_required: bool
    created_at: datetime


class LoginResponse(OutputModel):
    token: str | None = Field(
        description="Session token: send as `Authorization: Bearer <token>`; null when "
        "the session went into a cookie."
    )
    expires_at: datetime
    user: UserRead


class UserCreate(InputModel):
    username: Username
    password: Password
    role: Role = Role.USER


class UserUpdate(InputModel):
    password: Password | None = None
    role: Role | None = None
    is_active: bool | None = None


class PasswordChange(InputModel):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Password


class ApiKeyCreate(InputModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (UTC when no zone is given)."
    )


class ApiKeyRead(OutputModel):
    id: str = Field(description="Public id; the key itself reads `corral_<id>_<secret>`.")
    name: str
    user_id: int
    username: str
    created_at: datetime
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The full key. Shown only in this response.")
