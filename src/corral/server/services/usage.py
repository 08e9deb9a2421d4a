"""Token usage per user, API key, model and UTC day: written by the gateway's
meter in batches, read by ``GET /api/v1/usage``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from corral.schemas.usage import UsageCounts, UsageDimension, UsageReport, UsageRow
from corral.server.db.engine import Database
from corral.server.db.tables import Usage, User


@dataclass(frozen=True, slots=True)
class UsageKey:
    user_id: int
    api_key_id: str
    model: str
    day: dt.date


@dataclass(slots=True)
class Tally:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def add_usage(db: Database, tallies: Mapping[UsageKey, Tally]) -> None:
    """Add the tallies to the stored totals in one transaction (an upsert per
    key, so concurrent server processes add up instead of overwriting)."""
    if not tallies:
        return
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    rows = [
        {
            "user_id": key.user_id,
            "api_key_id": key.api_key_id,
            "model_name": key.model,
            "day": key.day,
            "requests": t.requests,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
        }
        for key, t in tallies.items()
    ]
    statement = insert(Usage)
    statement = statement.on_conflict_do_update(
        index_elements=["user_id", "api_key_id", "model_name", "day"],
        set_={
            "requests": Usage.requests + statement.excluded.requests,
            "prompt_tokens": Usage.prompt_tokens + statement.excluded.prompt_tokens,
            "completion_tokens": Usage.completion_tokens + statement.excluded.completion_tokens,
        },
    )
    async with db.write() as s:
        # One statement per row: an upsert of many rows hitting one key twice
        # is an error on PostgreSQL, and the meter merges keys already.
        for row in rows:
            await s.execute(statement.values(**row))


_GROUP_COLUMNS: dict[UsageDimension, tuple[Any, ...]] = {
    UsageDimension.DAY: (Usage.day,),
    UsageDimension.USER: (Usage.user_id, User.username),
    UsageDimension.API_KEY: (Usage.api_key_id,),
    UsageDimension.MODEL: (Usage.model_name,),
}


async def usage_report(
    db: Database,
    *,
    group_by: Sequence[UsageDimension],
    start: dt.date | None = None,
    end: dt.date | None = None,
    user_id: int | None = None,
    api_key_id: str | None = None,
    model: str | None = None,
) -> UsageReport:
    """Usage summed over the dimensions not in ``group_by``, between ``start``
    and ``end`` (UTC days, both included), ordered by day, user, key, model."""
    dimensions = [d for d in UsageDimension if d in group_by]
    columns = [c for d in dimensions for c in _GROUP_COLUMNS[d]]
    sums = (
        func.coalesce(func.sum(Usage.requests), 0),
        func.coalesce(func.sum(Usage.prompt_tokens), 0),
        func.coalesce(func.sum(Usage.completion_tokens), 0),
    )
    query = select(*columns, *sums).join(User, User.id == Usage.user_id)
    if start is not None:
        query = query.where(Usage.day >= start)
    if end is not None:
        query = query.where(Usage.day <= end)
    if user_id is not None:
        query = query.where(Usage.user_id == user_id)
    if api_key_id is not None:
        query = query.where(Usage.api_key_id == api_key_id)
    if model is not None:
        query = query.where(Usage.model_name == model)
    if columns:
        query = query.group_by(*columns).order_by(*columns)
    async with db.read() as s:
        rows = (await s.execute(query)).all()
    items = []
    total = Tally()
    for row in rows:
        requests, prompt, completion = (int(cast(int, x)) for x in row[len(columns) :])
        if not columns and requests == 0:
            continue
        values = dict(zip((c.key for c in columns), row[: len(columns)], strict=True))
        total.requests += requests
        total.prompt_tokens += prompt
        total.completion_tokens += completion
        items.append(
            UsageRow(
                day=values.get("day"),
                user_id=values.get("user_id"),
                username=values.get("username"),
                api_key_id=values.get("api_key_id"),
                model=values.get("model_name"),
                **_counts(requests, prompt, completion).model_dump(),
            )
        )
    return UsageReport(
        items=items, total=_counts(total.requests, total.prompt_tokens, total.completion_tokens)
    )


def _counts(requests: int, prompt: int, completion: int) -> UsageCounts:
    return UsageCounts(
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
    )
