"""Token usage on the wire: what ``GET /api/v1/usage`` answers."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from corral.schemas.common import OutputModel


class UsageDimension(StrEnum):
    DAY = "day"
    USER = "user"
    API_KEY = "api_key"
    MODEL = "model"


class UsageCounts(OutputModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageRow(UsageCounts):
    """One group of usage; a dimension not grouped by is left out (null)."""

    day: dt.date | None = None
    user_id: int | None = None
    username: str | None = None
    api_key_id: str | None = None
    """The API key's id; ``""`` for requests made with a session token."""
    model: str | None = None


class UsageReport(OutputModel):
    items: list[UsageRow]
    total: UsageCounts
