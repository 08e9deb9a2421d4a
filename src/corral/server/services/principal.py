"""Who is calling: a user (by session or API key) or a worker."""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import PermissionDeniedError
from corral.schemas.auth import Role, UserRead


@dataclass(frozen=True)
class Principal:
    user: UserRead | None = None
    worker_id: int | None = None
    session_id: str | None = None
    via_cookie: bool = False
    """Signed in through the web UI's cookie rather than a bearer token."""

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.role == Role.ADMIN

    def require_user(self) -> UserRead:
        if self.user is None:
            raise PermissionDeniedError("this endpoint needs a user's credential, not a worker's")
        return self.user

    def require_admin(self) -> UserRead:
        user = self.require_user()
        if user.role != Role.ADMIN:
            raise PermissionDeniedError("this endpoint is for admins")
        return user

    def require_worker(self, worker_id: int, *, or_admin: bool = False) -> None:
        """Allow only the worker itself (and, with ``or_admin``, admins)."""
        if self.worker_id == worker_id or (or_admin and self.is_admin):
            return
        if self.worker_id is not None:
            raise PermissionDeniedError("a worker may only act on its own record")
        raise PermissionDeniedError("this endpoint is for the worker's own credential")
