"""A signal that wakes long polls in this process when assignments may have changed.

Only a hint: a change made by another server process does not reach it, so
waiters also re-read the database every few seconds (see ``assignments.watch``).
"""

from __future__ import annotations

import asyncio
import contextlib


class ChangeSignal:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        """The server is stopping: wake every waiter now and never wait again,
        so that long polls end instead of holding the shutdown up."""
        self.closed = True
        self._event.set()

    def notify(self) -> None:
        """Wake everyone waiting now; later waiters wait for the next change."""
        self._event.set()
        if not self.closed:
            self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return at the next change or after ``timeout`` seconds, whichever is first."""
        if self.closed:
            return
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
