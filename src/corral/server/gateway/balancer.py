"""Which instance a request goes to: least outstanding requests, round robin on
ties, and instances that keep failing left out for a while.

Outstanding requests are counted in this process only: with several gateway
processes each balances its own share, which evens out the same way.

The circuit breaker: ``FAILURES_TO_OPEN`` failures in a row (connection
refused or broken before an answer) take an instance out of rotation for a
cool-down that starts at ``COOL_DOWN_S`` and doubles up to ``MAX_COOL_DOWN_S``
while it keeps failing. After the cool-down one request at a time is let
through as the probe; its success puts the instance back. An instance the
worker reports as not running is gone from the routes anyway; the breaker
covers the seconds before that report, and engines that accept connections
and then drop them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from corral.server.services.routing import Upstream

FAILURES_TO_OPEN = 3
COOL_DOWN_S = 1.0
MAX_COOL_DOWN_S = 30.0


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    cool_down: float = COOL_DOWN_S
    probing: bool = False

    def admits(self, now: float) -> bool:
        if self.failures < FAILURES_TO_OPEN:
            return True
        return now >= self.open_until and not self.probing


class Balancer:
    def __init__(self) -> None:
        self._outstanding: dict[int, int] = {}
        self._turns: dict[str, int] = {}
        self._breakers: dict[int, _Breaker] = {}

    def outstanding(self) -> dict[int, int]:
        """Requests in flight per instance id (for the metrics)."""
        return {iid: n for iid, n in self._outstanding.items() if n}

    def choose(self, model: str, upstreams: Sequence[Upstream]) -> tuple[Upstream, Upstream]:
        """The instance to try first and the one for a retry (the same one
        again when it is the only one; a retry then takes a fresh connection)."""
        n = len(upstreams)
        turn = self._turns.get(model, 0)
        self._turns[model] = turn + 1
        if n == 1:
            only = upstreams[0]
            self._admit(only)
            return only, only
        now = time.monotonic() if self._breakers else 0.0
        ranked: list[tuple[int, int, Upstream]] = []
        shunned: list[tuple[int, int, Upstream]] = []
        for k in range(n):
            upstream = upstreams[(turn + k) % n]
            load = self._outstanding.get(upstream.instance_id, 0)
            breaker = self._breakers.get(upstream.instance_id)
            if breaker is None or breaker.admits(now):
                ranked.append((load, k, upstream))
            else:
                shunned.append((load, k, upstream))
        ranked.sort()
        # Out-of-rotation instances only when nothing else is left.
        ranked += sorted(shunned)
        first, second = ranked[0][2], ranked[1][2]
        self._admit(first)
        return first, second

    def _admit(self, upstream: Upstream) -> None:
        breaker = self._breakers.get(upstream.instance_id)
        if breaker is not None and breaker.failures >= FAILURES_TO_OPEN:
            breaker.probing = True

    def started(self, upstream: Upstream) -> None:
        iid = upstream.instance_id
        self._outstanding[iid] = self._outstanding.get(iid, 0) + 1

    def ended(self, upstream: Upstream) -> None:
        iid = upstream.instance_id
        left = self._outstanding.get(iid, 0) - 1
        if left > 0:
            self._outstanding[iid] = left
        else:
            self._outstanding.pop(iid, None)
        breaker = self._breakers.get(iid) if self._breakers else None
        if breaker is not None:
            # A probe that ended without a verdict (the client left) frees the slot.
            breaker.probing = False

    def succeeded(self, upstream: Upstream) -> None:
        if self._breakers:
            self._breakers.pop(upstream.instance_id, None)

    def failed(self, upstream: Upstream) -> None:
        breaker = self._breakers.setdefault(upstream.instance_id, _Breaker())
        breaker.failures += 1
        breaker.probing = False
        if breaker.failures >= FAILURES_TO_OPEN:
            breaker.open_until = time.monotonic() + breaker.cool_down
            breaker.cool_down = min(breaker.cool_down * 2, MAX_COOL_DOWN_S)

    def out_of_rotation(self) -> set[int]:
        """Instances that failed repeatedly and have not answered a probe since."""
        return {iid for iid, b in self._breakers.items() if b.failures >= FAILURES_TO_OPEN}

    def retain(self, instance_ids: set[int]) -> None:
        """Forget instances that are no longer routed to."""
        for iid in [i for i in self._breakers if i not in instance_ids]:
            del self._breakers[iid]
