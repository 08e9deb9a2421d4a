"""Loading one row by id inside a service's transaction."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import NotFoundError
from corral.server.db.tables import Base

Row = TypeVar("Row", bound=Base)


async def load(
    s: AsyncSession, table: type[Row], row_id: Any, what: str, *, for_update: bool = False
) -> Row:
    """The row with ``row_id``, locked (PostgreSQL) when the caller will change
    it; ``NotFoundError`` ("<what> <id> does not exist") otherwise."""
    query = select(table).where(table.id == row_id)  # type: ignore[attr-defined]
    if for_update:
        query = query.with_for_update()
    row = (await s.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"{what} {row_id} does not exist")
    return row
