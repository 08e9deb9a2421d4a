"""Places pending instances: at once when woken (a model deployed or scaled,
an instance deleted, a worker joined or changed), and on a timer so that
changes made through another server process are picked up too."""

from __future__ import annotations

from collections.abc import Callable

from corral.server.controllers.loop import Loop
from corral.server.db.engine import Database
from corral.server.services.estimates import Estimator
from corral.server.services.placement import PassResult, place_pending


class PlacementController(Loop):
    def __init__(
        self,
        db: Database,
        estimator: Estimator,
        interval: float,
        on_placed: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__("placement", self._pass, interval)
        self._db = db
        self._estimator = estimator
        self._on_placed = on_placed
        self.last: PassResult | None = None

    async def _pass(self) -> None:
        self.last = await place_pending(self._db, self._estimator)
        if self.last.placed or self.last.failed:
            self._on_placed()
