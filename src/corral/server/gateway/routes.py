"""The routing table, in memory: every model's routable instances.

Read from the database every ``REFRESH_S`` seconds by a background task, and
at once when a request names a model the table does not route (a model just
deployed, an instance just running), so a request never waits for the next
tick and a hit never touches the database. An instance that stopped a moment
ago may still be listed for up to ``REFRESH_S``; the relay's retry reads
the table again (``reread``), so an engine that came back on another port
is found by the same request, and the balancer's breaker covers the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from corral.server.db.engine import Database
from corral.server.services.routing import ModelRoute, load_routes

logger = logging.getLogger(__name__)

REFRESH_S = 1.0
MISS_REFRESH_MIN_S = 0.05
"""A burst of requests for a model that does not run shares one read."""


class Routes:
    def __init__(self, db: Database, on_refresh: Callable[[dict[str, ModelRoute]], None]) -> None:
        self._db = db
        self._on_refresh = on_refresh
        self.table: dict[str, ModelRoute] = {}
        self._loaded_at = 0.0
        self._reading: asyncio.Task[None] | None = None
        self._reading_began = 0.0
        self._table_began = 0.0

    async def run(self) -> None:
        """Refresh the table until cancelled."""
        while True:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self.refresh()
            await asyncio.sleep(REFRESH_S)

    async def refresh(self, *, begun_after: float = 0.0) -> None:
        """Read the table now; concurrent callers share one read, if it began
        after ``begun_after`` (a monotonic time)."""
        if self._reading is None or self._reading.done() or self._reading_began < begun_after:
            self._reading_began = time.monotonic()
            self._reading = asyncio.ensure_future(self._read(self._reading_began))
        await asyncio.shield(self._reading)

    async def _read(self, began: float) -> None:
        try:
            table = await load_routes(self._db)
        except (SQLAlchemyError, OSError) as e:
            logger.warning("cannot read the routing table: %s", e)
            raise
        if began < self._table_began:
            return  # a later read has already answered
        self._table_began = began
        self.table = table
        self._loaded_at = time.monotonic()
        self._on_refresh(table)

    async def find(self, model: str) -> ModelRoute | None:
        """The model's route, read again first when the table has no
        instance for it; ``None`` when no model has that name."""
        route = self.table.get(model)
        if route is not None and route.upstreams:
            return route
        if time.monotonic() - self._loaded_at >= MISS_REFRESH_MIN_S:
            # A failed read is logged; the table read before it still answers.
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self.refresh()
        return self.table.get(model)

    async def reread(self, model: str, since: float) -> ModelRoute | None:
        """The model's route as the database holds it after ``since`` (when an
        instance refused a connection: it may have moved, restarted on another
        port or been replaced). Retries are rare, so this reads every time,
        sharing only a read that began after ``since``."""
        with contextlib.suppress(SQLAlchemyError, OSError):
            await self.refresh(begun_after=since)
        return self.table.get(model)
