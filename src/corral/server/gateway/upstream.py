"""A small HTTP/1.1 client for the gateway's requests to model instances.

Why not httpx or aiohttp: the gateway sends one kind of request (a POST with
a body it already holds) to engines it trusts, and relays bytes back. A
general client spends most of its time on what this needs none of (header
objects, URL parsing, cookie jars, decoding), and that cost lands on every
request: measured against the same backend in ``bench/gateway.py``, httpx
alone took more CPU per request than the gateway's whole budget. This client
is an ``asyncio.Protocol`` around llhttp's parser (``httptools``, which
uvicorn already uses), a pool of keep-alive connections per backend, and a
one-consumer chunk queue with back-pressure.

Failure model, which the relay's retry depends on: an ``UpstreamError`` from
``Pool.exchange``, ``Exchange.send`` or ``Exchange.answer`` means the
connection failed before the answer's status line arrived; the client has
then had nothing, so the request may be tried again elsewhere. One from
``Exchange.next_chunk`` comes after the answer began.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import cast

import httptools

CONNECT_TIMEOUT_S = 5.0
IDLE_EXPIRY_S = 2.0
"""Idle pooled connections are dropped after this long, before the engines'
own idle timeouts (5 s for llama-server and uvicorn) can close one under a
request."""
MAX_IDLE_PER_BACKEND = 256
HIGH_WATER = 256 * 1024
"""Bytes of answer held for a slow client before the engine is paused."""

KEEPALIVE = object()
"""What ``Exchange.next_chunk`` returns when nothing arrived for the idle
interval: the relay then writes an SSE comment so proxies keep the stream."""


class UpstreamError(Exception):
    """A request to an instance failed (see the module's failure model)."""


Backend = tuple[str, int]
"""Host and port of an engine."""


class _Connection(asyncio.Protocol):
    """One TCP connection to a backend; carries one exchange at a time."""

    def __init__(self, pool: Pool, backend: Backend) -> None:
        self._pool = pool
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.exchange: Exchange | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: the connection cannot be trusted.
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            exchange.fail(f"malformed answer: {e}")
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._open.discard(self)
        exchange = self.exchange
        if exchange is not None and not exchange.complete:
            reason = f"connection lost: {exc}" if exc else "connection closed by the instance"
            exchange.fail(reason)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.write_resumed()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.exchange is not None
        self.exchange.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self.exchange is not None
        self.exchange.headers_done(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.exchange is not None
        self.exchange.body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.finished(keep_alive=self._parser.should_keep_alive())

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Exchange:
    """One request and its answer on a connection: the status and headers once
    they arrive, then the body as chunks, to one consumer.

    Call ``close`` when done with it (``release`` happens there): a finished
    answer returns the connection to the pool; an unfinished one aborts it,
    which is how an engine learns that its client went away.
    """

    def __init__(self, connection: _Connection, reused: bool) -> None:
        self._connection = connection
        self._loop = asyncio.get_running_loop()
        self.reused = reused
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self._keep_alive = False
        self._head = False
        self._error: str | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._last_data = time.monotonic()
        self._idle_interval: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_fired = False

    # called by the connection

    def headers_done(self, status: int) -> None:
        self.status = status
        self._head = True
        self._wake()

    def body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._last_data = time.monotonic() if self._idle_interval is not None else 0.0
        if self._buffered > HIGH_WATER and not self._reading_paused:
            transport = self._connection.transport
            if transport is not None:
                transport.pause_reading()
                self._reading_paused = True
        self._wake()

    def finished(self, *, keep_alive: bool) -> None:
        self.complete = True
        self._keep_alive = keep_alive
        self._wake()

    def fail(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def write_paused(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self._loop.create_future()

    def write_resumed(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # called by the relay

    async def send(self, head: bytes, body: bytes) -> None:
        transport = self._connection.transport
        if transport is None or self._connection.closed:
            raise UpstreamError("connection closed by the instance")
        transport.write(head)
        if body:
            transport.write(body)
        if self._drain is not None and not self._drain.done():
            await self._drain
        if self._error is not None and not self._head:
            raise UpstreamError(self._error)

    def keep_alive_every(self, interval: float) -> None:
        """Make the waits below return ``KEEPALIVE`` after ``interval`` seconds
        without a byte: one timer per interval, not one per chunk."""
        self._idle_interval = interval
        self._last_data = time.monotonic()
        self._idle_timer = self._loop.call_later(interval, self._on_idle)

    def _on_idle(self) -> None:
        assert self._idle_interval is not None
        idle_for = time.monotonic() - self._last_data
        if idle_for >= self._idle_interval:
            self._idle_fired = True
            self._last_data = time.monotonic()
            self._wake()
            delay = self._idle_interval
        else:
            delay = self._idle_interval - idle_for
        self._idle_timer = self._loop.call_later(delay, self._on_idle)

    async def answer(self) -> object:
        """Wait for the status line and headers; ``KEEPALIVE`` when the idle
        interval passed first (call again to keep waiting)."""
        while not self._head:
            if self._error is not None:
                raise UpstreamError(self._error)
            if self._idle_fired:
                self._idle_fired = False
                return KEEPALIVE
            await self._wait()
        return None

    async def next_chunk(self) -> bytes | object | None:
        """The next piece of the body; ``None`` at its end; ``KEEPALIVE`` when
        nothing came for the idle interval."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered <= HIGH_WATER // 2:
                    self._reading_paused = False
                    transport = self._connection.transport
                    if transport is not None:
                        transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self._error is not None:
                raise UpstreamError(self._error)
            if self._idle_fired:
                self._idle_fired = False
                return KEEPALIVE
            await self._wait()

    async def read_all(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = await self.next_chunk()
            if chunk is None:
                return b"".join(parts)
            if chunk is not KEEPALIVE:
                assert isinstance(chunk, bytes)
                parts.append(chunk)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def close(self) -> None:
        """Done with the exchange: the connection goes back to the pool when
        the answer was read to its end and may be kept, else it is aborted."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        connection = self._connection
        if connection.exchange is not self:
            return
        connection.exchange = None
        if self.complete and self._keep_alive and self._error is None and not connection.closed:
            connection._pool._release(connection)
        else:
            connection.abort()
            if not self.complete:
                # Whoever still waits on this answer (the relay, when the
                # client went away) must not wait forever.
                self.fail("closed by the gateway")


class Pool:
    """Keep-alive connections per backend, newest first; no cap on open ones
    (engines bound concurrency with their own slots)."""

    def __init__(self) -> None:
        self._idle: dict[Backend, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def exchange(self, backend: Backend, *, fresh: bool = False) -> Exchange:
        """An exchange on an idle pooled connection to ``backend`` (unless
        ``fresh``), or on a new one."""
        if not fresh:
            idle = self._idle.get(backend)
            if idle:
                expired = time.monotonic() - IDLE_EXPIRY_S
                while idle:
                    connection = idle.pop()
                    if connection.closed or connection.idle_since < expired:
                        connection.abort()
                        self._open.discard(connection)
                        continue
                    exchange = Exchange(connection, reused=True)
                    connection.exchange = exchange
                    return exchange
        connection = await self._connect(backend)
        exchange = Exchange(connection, reused=False)
        connection.exchange = exchange
        return exchange

    async def _connect(self, backend: Backend) -> _Connection:
        if self._closed:
            raise UpstreamError("the gateway is stopping")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, backend), *backend
                )
        except TimeoutError as e:
            raise UpstreamError(f"no connection within {CONNECT_TIMEOUT_S:g} s") from e
        except OSError as e:
            raise UpstreamError(f"cannot connect: {e.strerror or e}") from e
        self._open.add(protocol)
        return protocol

    def _release(self, connection: _Connection) -> None:
        if self._closed:
            connection.abort()
            return
        idle = self._idle.setdefault(connection.backend, [])
        if len(idle) >= MAX_IDLE_PER_BACKEND:
            connection.abort()
            self._open.discard(connection)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def close(self) -> None:
        self._closed = True
        for connection in self._open:
            connection.abort()
        self._open.clear()
        self._idle.clear()
