"""A periodic loop that can also be woken early."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


class Loop:
    """Runs ``step`` now, then whenever woken or ``interval`` seconds after the last run.

    ``shutdown()`` is safe to call twice and before ``run()``. A failing step is
    logged and retried on the next tick; it never ends the loop.
    """

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], interval: float) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self._step()
            except Exception:
                logger.exception("%s failed; retrying in %.0f s", self.name, self._interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await _first(self._wake, self._stopping)

    def shutdown(self) -> None:
        self._stopping.set()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
