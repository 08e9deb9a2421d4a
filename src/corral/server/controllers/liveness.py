"""Marks workers that stopped sending heartbeats, and places their instances
elsewhere once the grace period is over."""

from __future__ import annotations

from collections.abc import Callable

from corral.server.controllers.loop import Loop
from corral.server.db.engine import Database
from corral.server.services.workers import check_liveness


class LivenessController(Loop):
    def __init__(
        self,
        db: Database,
        *,
        heartbeat_timeout: float,
        grace: float,
        on_released: Callable[[], None],
    ) -> None:
        super().__init__("liveness", self._check, max(min(heartbeat_timeout / 3, 5.0), 0.2))
        self._db = db
        self._timeout = heartbeat_timeout
        self._grace = grace
        self._on_released = on_released

    async def _check(self) -> None:
        released = await check_liveness(self._db, self._timeout, self._grace)
        if released:
            self._on_released()
