"""A small HTTP/1.1 load generator for the benches: N clients on one asyncio
loop (uvloop when importable), each with one keep-alive connection, sending
the same prepared request back to back and recording what came back.

Why not httpx or aiohttp: a general client spends more CPU per request than
the servers under test (the fake engine answers in tens of microseconds), so
it, not them, would set the pace. This one is ``httptools``' parser and a
prepared request; the caller checks it is not the bottleneck from
``Run.client_cpu`` (near one core's worth, it is).

A stream's events are counted by lines starting with ``data: ``; a stream
that does not end with ``data: [DONE]`` is an error (``broken stream``).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httptools
import httpx

try:
    import uvloop
except ImportError:  # the plain event loop works too, a little slower
    uvloop = None  # type: ignore[assignment]

REQUEST_TIMEOUT_S = 60.0
T = TypeVar("T")


def run_in_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a new event loop, uvloop's when installed."""
    if uvloop is not None:
        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


class ConnectionBroken(Exception):
    """The connection closed or failed before the whole answer came."""

    def __init__(self, reason: str, received_any: bool) -> None:
        super().__init__(reason)
        self.received_any = received_any


@dataclass
class Reply:
    status: int = 0
    first_byte: float = 0.0
    """``perf_counter()`` when the first byte of the body arrived."""
    body: bytearray = field(default_factory=bytearray)
    keep_alive: bool = True


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._reply = Reply()
        self._waiter: asyncio.Future[Reply] | None = None
        self._received_any = False
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    async def exchange(self, request: bytes) -> Reply:
        assert self._transport is not None and not self.closed
        self._reply = Reply()
        self._received_any = False
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are only alike

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(f"unparsable answer: {e}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection lost: {exc}" if exc else "connection closed by the server")

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._reply.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self._reply.first_byte:
            self._reply.first_byte = time.perf_counter()
        self._reply.body += body

    def on_message_complete(self) -> None:
        self._reply.keep_alive = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._reply)

    def _fail(self, reason: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionBroken(reason, self._received_any))


@dataclass(frozen=True)
class Target:
    """Where one run's requests go, and the exact bytes of each."""

    host: str
    port: int
    request: bytes
    stream: bool


def http_request(url: str, path: str, key: str, body: bytes) -> tuple[str, int, bytes]:
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


@dataclass
class Run:
    """What one run (one path of one cell, one round) measured."""

    latencies: list[float] = field(default_factory=list)
    """Seconds per successful request (for a stream: until its end)."""
    first_bytes: list[float] = field(default_factory=list)
    events: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    """Requests sent again on a fresh connection after a reused one was found
    closed before any byte came back (an engine's idle close racing them)."""
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0


class LoadClient:
    """One simulated client: a connection, requests back to back."""

    def __init__(self, target: Target, run: Run) -> None:
        self._target = target
        self._run = run
        self._connection: Connection | None = None

    async def request(self, timed: bool) -> None:
        started = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self._send(), REQUEST_TIMEOUT_S)
        except (ConnectionBroken, OSError, TimeoutError) as e:
            if self._connection is not None:
                self._connection.close()
            if timed:
                self._run.errors[_describe(e)] += 1
            return
        ended = time.perf_counter()
        if not reply.keep_alive:
            assert self._connection is not None
            self._connection.close()
        if not timed:
            return
        if reply.status != 200:
            self._run.errors[f"HTTP {reply.status}"] += 1
            return
        if self._target.stream:
            body = bytes(reply.body)
            if not body.rstrip().endswith(b"data: [DONE]"):
                self._run.errors["broken stream"] += 1
                return
            self._run.events += body.count(b"\ndata: ") + body.startswith(b"data: ")
        self._run.latencies.append(ended - started)
        self._run.first_bytes.append(reply.first_byte - started)

    async def _send(self) -> Reply:
        for attempt in (1, 2):
            fresh = self._connection is None or self._connection.closed
            if fresh:
                self._connection = await Connection.open(self._target.host, self._target.port)
            assert self._connection is not None
            try:
                return await self._connection.exchange(self._target.request)
            except ConnectionBroken as e:
                if fresh or e.received_any or attempt == 2:
                    raise
                self._run.retried += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer in {REQUEST_TIMEOUT_S:.0f} s"
    return str(error) if isinstance(error, ConnectionBroken) else type(error).__name__


async def run_load(
    target: Target, clients: int, duration: float, server_cpu: Callable[[], float]
) -> Run:
    """``clients`` clients, each connected and warmed by one untimed request,
    then sending back to back until ``duration`` seconds have passed."""
    run = Run()
    loads = [LoadClient(target, run) for _ in range(clients)]
    await asyncio.gather(*(c.request(timed=False) for c in loads))
    gc.collect()
    gc.disable()  # a collection would land in one path's figures, not the other's
    try:
        cpu, client_cpu, started = server_cpu(), time.process_time(), time.perf_counter()
        deadline = started + duration

        async def loop(load: LoadClient) -> None:
            while time.perf_counter() < deadline:
                await load.request(timed=True)

        await asyncio.gather(*(loop(c) for c in loads))
        run.wall = time.perf_counter() - started
        run.client_cpu = time.process_time() - client_cpu
        run.server_cpu = server_cpu() - cpu
    finally:
        gc.enable()
        for load in loads:
            load.close()
    return run


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
