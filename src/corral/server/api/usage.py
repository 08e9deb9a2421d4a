"""``/api/v1/usage``: tokens used through the gateway, per user, key, model and day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request

from corral.errors import InvalidInputError, PermissionDeniedError
from corral.schemas.usage import UsageDimension, UsageReport
from corral.server.api.deps import DbDep, PrincipalDep
from corral.server.services import usage

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("")
async def usage_report(
    db: DbDep,
    principal: PrincipalDep,
    request: Request,
    start: Annotated[dt.date | None, Query(description="First UTC day (YYYY-MM-DD).")] = None,
    end: Annotated[dt.date | None, Query(description="Last UTC day, included.")] = None,
    user_id: Annotated[int | None, Query(description="One user (admins: anyone).")] = None,
    api_key_id: Annotated[
        str | None, Query(description="One API key's id; '' for session-token requests.")
    ] = None,
    model: Annotated[str | None, Query(description="One model, by name.")] = None,
    group_by: Annotated[
        list[UsageDimension] | None,
        Query(description="Dimensions to keep apart (repeat); default: all four."),
    ] = None,
) -> UsageReport:
    """Requests and tokens as the engines counted them. Users see their own;
    admins see everyone's unless they name a user. Includes this server's
    requests up to now; another server process's last second may still be
    on its way."""
    user = principal.require_user()
    if not principal.is_admin:
        if user_id is not None and user_id != user.id:
            raise PermissionDeniedError("you can only read your own usage: leave user_id out")
        user_id = user.id
    if start is not None and end is not None and end < start:
        raise InvalidInputError(f"end ({end}) is before start ({start})", code="validation_error")
    flush: Callable[[], Awaitable[None]] | None = getattr(request.app.state, "flush_usage", None)
    if flush is not None:
        await flush()
    return await usage.usage_report(
        db,
        group_by=group_by or list(UsageDimension),
        start=start,
        end=end,
        user_id=user_id,
        api_key_id=api_key_id,
        model=model,
    )
