"""Sending a request to one of a model's instances and relaying its answer.

The relay writes the raw ASGI messages itself: a plain answer whole, a
stream chunk by chunk as the engine writes it (whole SSE events, never
re-encoded; only the final usage chunk is read). Per request it costs one
pooled connection, one task watching for the client to go away, and a few
dict updates for the balancer, the meter and the metrics.

Failures:

* a connection that fails before the answer's status line (refused, reset,
  a pooled keep-alive connection the engine had just closed — llama-server
  closes its connection after every stream) is tried again once, on the next
  instance the balancer names (the same one, on a fresh connection, when it
  is the only one). When the routing table, read again, no longer lists the
  failed instance at that address (its engine restarted on another port, or
  it was replaced), the retry goes where the fresh table says instead. The
  client has had nothing but maybe keep-alive comments, so this is
  invisible to it. Both failing → 502 ``upstream_unavailable``;
* a stream the engine breaks off ends with an SSE ``error`` event, which the
  ``openai`` SDKs raise as an ``APIError``;
* a client that goes away aborts the connection to the engine, which then
  stops generating and frees its slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import Receive, Send

from corral.server.gateway.balancer import Balancer
from corral.server.gateway.callers import Caller
from corral.server.gateway.errors import GatewayError, upstream_unavailable
from corral.server.gateway.metering import Meter
from corral.server.gateway.metrics import GatewayMetrics
from corral.server.gateway.protocol import RequestHead, StreamUsage, Usage, usage_in_answer
from corral.server.gateway.upstream import KEEPALIVE, Exchange, Pool, UpstreamError
from corral.server.services.routing import ModelRoute, Upstream

logger = logging.getLogger(__name__)

KEEPALIVE_COMMENT = b": keep-alive\n\n"
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies in front of corral (nginx) must not buffer either.
    (b"x-accel-buffering", b"no"),
]


@dataclass(slots=True)
class Relay:
    """The process-wide parts a relay uses."""

    pool: Pool
    balancer: Balancer
    meter: Meter
    metrics: GatewayMetrics
    keepalive_s: float
    reread: Callable[[str, float], Awaitable[ModelRoute | None]]
    """A model's route read again from the database (``Routes.reread``)."""


@dataclass(slots=True)
class _Flight:
    """One request on its way: what the disconnect watcher must reach."""

    arrived: float
    """When the request arrived (``time.monotonic``)."""
    exchange: Exchange | None = None
    client_gone: bool = False
    done: bool = False
    started: bool = False
    """Response headers went to the client (no error response possible)."""


async def relay(
    parts: Relay,
    receive: Receive,
    send: Send,
    *,
    route: ModelRoute,
    path: str,
    head: RequestHead,
    body: bytes,
    caller: Caller,
    arrived: float,
) -> int:
    """Relay the request to an instance of ``route`` and its answer to the
    client; the status the client got. A ``GatewayError`` when nothing was
    sent to the client yet."""
    flight = _Flight(arrived=arrived)
    watcher = asyncio.ensure_future(_watch(receive, flight))
    try:
        return await _relay(parts, send, flight, route, path, head, body, caller)
    finally:
        flight.done = True
        if flight.exchange is not None:
            flight.exchange.close()
        if not watcher.done():
            # Ends by itself once the answer is complete; not when the
            # relay failed before answering (an error response follows).
            watcher.add_done_callback(_retrieve)


async def _watch(receive: Receive, flight: _Flight) -> None:
    """Wait for the client to go away; abort the engine's answer if it does
    before the relay is done."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not flight.done:
        flight.client_gone = True
        if flight.exchange is not None:
            flight.exchange.close()


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _relay(
    parts: Relay,
    send: Send,
    flight: _Flight,
    route: ModelRoute,
    path: str,
    head: RequestHead,
    body: bytes,
    caller: Caller,
) -> int:
    upstream, second = parts.balancer.choose(route.name, route.upstreams)
    reason = ""
    for attempt in range(2):
        if flight.client_gone:
            return 499
        parts.balancer.started(upstream)
        try:
            exchange = await _answered(parts, send, flight, upstream, path, head, body, attempt)
        except UpstreamError as e:
            parts.balancer.ended(upstream)
            reason = str(e)
            logger.warning(
                "model %s, instance %d (%s): no answer, %s",
                route.name,
                upstream.instance_id,
                upstream.url,
                reason,
            )
            if attempt == 0 and not flight.client_gone:
                parts.metrics.retried(route.name)
                upstream = await _retry_target(parts, route.name, upstream, second)
                continue
            break
        try:
            if head.stream and exchange.status == 200:
                return await _stream(parts, send, flight, route, upstream, head, exchange, caller)
            return await _plain(parts, send, flight, route, upstream, exchange, caller)
        finally:
            parts.balancer.ended(upstream)
    if flight.client_gone:
        return 499
    error = upstream_unavailable(route.name, reason)
    if flight.started:
        await _end_with_error(send, error)
        return error.status
    raise error


async def _retry_target(parts: Relay, model: str, failed: Upstream, planned: Upstream) -> Upstream:
    """Where a retry goes: the balancer's second choice, unless the routing
    table, read again, no longer lists the failed instance at that address;
    then the fresh table's first choice."""
    fresh = await parts.reread(model, time.monotonic())
    if fresh is None or not fresh.upstreams or failed in fresh.upstreams:
        return planned
    return parts.balancer.choose(fresh.name, fresh.upstreams)[0]


async def _answered(
    parts: Relay,
    send: Send,
    flight: _Flight,
    upstream: Upstream,
    path: str,
    head: RequestHead,
    body: bytes,
    attempt: int,
) -> Exchange:
    """Send the request to ``upstream`` and wait for its status line; keep a
    waiting stream's client alive with SSE comments meanwhile."""
    fresh = attempt > 0
    if flight.exchange is not None:
        flight.exchange.close()
    try:
        exchange = await parts.pool.exchange((upstream.host, upstream.port), fresh=fresh)
    except UpstreamError:
        parts.balancer.failed(upstream)
        raise
    flight.exchange = exchange
    if flight.client_gone:
        exchange.close()
        raise UpstreamError("the client went away")
    try:
        if head.stream:
            exchange.keep_alive_every(parts.keepalive_s)
        await exchange.send(_request_head(upstream, path, len(body)), body)
        while await exchange.answer() is KEEPALIVE:
            if not flight.started:
                flight.started = True
                await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": KEEPALIVE_COMMENT, "more_body": True})
    except UpstreamError:
        # A reused keep-alive connection may just have been closed by the
        # engine: not the instance's fault. A fresh one failing is.
        if not exchange.reused and not flight.client_gone:
            parts.balancer.failed(upstream)
        raise
    return exchange


def _request_head(upstream: Upstream, path: str, length: int) -> bytes:
    auth = b"Authorization: Bearer %s\r\n" % upstream.api_key.encode() if upstream.api_key else b""
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%sAccept-Encoding: identity\r\n\r\n"
        % (path.encode(), upstream.host.encode(), upstream.port, length, auth)
    )


async def _plain(
    parts: Relay,
    send: Send,
    flight: _Flight,
    route: ModelRoute,
    upstream: Upstream,
    exchange: Exchange,
    caller: Caller,
) -> int:
    try:
        content = await exchange.read_all()
    except UpstreamError as e:
        if flight.client_gone:
            return 499
        parts.balancer.failed(upstream)
        error = upstream_unavailable(route.name, f"answer broken off: {e}")
        if flight.started:
            await _end_with_error(send, error)
            return error.status
        raise error from e
    status = exchange.status
    if flight.started:
        # Keep-alive comments went out as a 200 stream: the engine's error
        # becomes the stream's only event.
        await send({"type": "http.response.body", "body": _event(content), "more_body": False})
    else:
        content_type = exchange.header(b"content-type") or b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(content)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content, "more_body": False})
    parts.balancer.succeeded(upstream)
    if status == 200:
        _meter(parts, caller, route.name, usage_in_answer(content))
    return status


async def _stream(
    parts: Relay,
    send: Send,
    flight: _Flight,
    route: ModelRoute,
    upstream: Upstream,
    head: RequestHead,
    exchange: Exchange,
    caller: Caller,
) -> int:
    if not flight.started:
        flight.started = True
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    parts.balancer.succeeded(upstream)
    usage = StreamUsage(keep_usage=head.wants_usage)
    first_at = 0.0
    relayed = 0
    status = 200
    try:
        while not flight.client_gone:
            chunk = await exchange.next_chunk()
            if chunk is None:
                break
            if chunk is KEEPALIVE:
                out = KEEPALIVE_COMMENT
            else:
                assert isinstance(chunk, bytes)
                out = usage.feed(chunk)
                if not out:
                    continue
                if not first_at:
                    first_at = time.monotonic()
                relayed += 1
            await send({"type": "http.response.body", "body": out, "more_body": True})
    except UpstreamError as e:
        if not flight.client_gone:
            logger.warning(
                "model %s, instance %d: stream broken off, %s", route.name, upstream.instance_id, e
            )
            parts.balancer.failed(upstream)
            await _end_with_error(send, upstream_unavailable(route.name, f"stream broken off: {e}"))
            status = 502
    finally:
        parts.metrics.stream_events += relayed
    # Metered whenever the engine said what it used, also when the client
    # left right after (SDKs hang up at "[DONE]", before the stream's end).
    if usage.usage is not None:
        _meter(parts, caller, route.name, usage.usage)
    if first_at:
        parts.metrics.first_token_after(route.name, first_at - flight.arrived)
    if flight.client_gone:
        return 499
    if status == 200:
        await send({"type": "http.response.body", "body": usage.rest(), "more_body": False})
    return status


def _meter(parts: Relay, caller: Caller, model: str, usage: Usage | None) -> None:
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    parts.meter.record(caller, model, prompt, completion)
    parts.metrics.count_tokens(model, prompt, completion)


def _event(payload: bytes) -> bytes:
    return b"data: " + payload.strip().replace(b"\n", b"") + b"\n\n"


async def _end_with_error(send: Send, error: GatewayError) -> None:
    """The last event of a stream that cannot go on, in OpenAI's error shape."""
    event = b"data: " + error.body() + b"\n\n"
    await send({"type": "http.response.body", "body": event, "more_body": False})
