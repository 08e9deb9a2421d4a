"""Usage metering: tokens per user, API key, model and day, added up in memory
and written in batches.

A database write per request would cost more than the rest of the gateway;
the meter adds each answer's usage to an in-memory tally and writes the
tallies every ``FLUSH_S`` seconds (one upsert per key, so several server
processes add up). ``GET /api/v1/usage`` flushes this process's tally first,
so what a client reads includes its own last request; another process's last
few seconds may still be on their way. A failed write keeps the tally for the next
try; what is lost is at most the last ``FLUSH_S`` seconds of a process
killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from sqlalchemy.exc import SQLAlchemyError

from corral.server.db.engine import Database
from corral.server.gateway.callers import Caller
from corral.server.services.usage import Tally, UsageKey, add_usage

logger = logging.getLogger(__name__)

FLUSH_S = 5.0
"""A flush costs a few milliseconds of CPU whatever it writes (a transaction);
every 5 s keeps that under a percent of a core while the gateway serves."""


class Meter:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: dict[UsageKey, Tally] = {}
        self._lock = asyncio.Lock()

    def record(self, caller: Caller, model: str, prompt: int, completion: int) -> None:
        key = UsageKey(caller.user_id, caller.api_key_id, model, dt.datetime.now(dt.UTC).date())
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = Tally()
        tally.requests += 1
        tally.prompt_tokens += prompt
        tally.completion_tokens += completion

    async def run(self) -> None:
        """Flush every ``FLUSH_S`` seconds until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_S)
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self.flush()

    async def flush(self) -> None:
        """Write what was tallied since the last flush."""
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await add_usage(self._db, batch)
            except (SQLAlchemyError, OSError) as e:
                logger.warning(
                    "usage not written yet (%d rows kept for the next try): %s", len(batch), e
                )
                for key, tally in batch.items():
                    kept = self._pending.setdefault(key, Tally())
                    kept.requests += tally.requests
                    kept.prompt_tokens += tally.prompt_tokens
                    kept.completion_tokens += tally.completion_tokens
                raise
