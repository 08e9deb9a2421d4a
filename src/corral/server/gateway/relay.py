"""Sending a request to a model's instance and relaying its answer.

One pooled ``httpx.AsyncClient`` per process (``app.state.http``, opened and
closed by ``open_gateway``) carries every upstream request. Bodies go out as
the client sent them; answers come back as bytes: a plain answer whole, a
stream chunk by chunk as the engine writes it.

A pooled keep-alive connection may have been closed by the engine just before
it is reused (llama-server closes its connection after a streamed answer),
which fails the request before any byte of an answer came back. Nothing was
generated then, so the request is tried once more, on the next instance (or
on a fresh connection to the same one when it is the only one).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from corral.server.gateway.errors import upstream_unavailable
from corral.server.services.routing import Upstream

logger = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None)
"""No read timeout: a long generation may be silent for minutes before its
answer (plain requests) or between chunks (a long prompt being processed)."""

UPSTREAM_LIMITS = httpx.Limits(
    max_connections=None, max_keepalive_connections=256, keepalive_expiry=2.0
)
"""Engines bound concurrency with their own slots, so the pool does not. Idle
connections are dropped after 2 s, before the engines' own idle timeouts
(5 s for llama-server and uvicorn) close them under a request."""

_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""Failures before the answer's status line: the client has had nothing yet, so
another try is invisible to it (at worst an engine that had begun wastes work)."""


class RoundRobin:
    """The order in which a request tries a model's instances.

    Each request of a model starts one instance further along; the one place
    where the gateway chooses, so a smarter policy (least outstanding
    requests) replaces only this class.
    """

    def __init__(self) -> None:
        self._turns: dict[str, Iterator[int]] = {}

    def order(self, model: str, upstreams: Sequence[Upstream]) -> list[Upstream]:
        turn = next(self._turns.setdefault(model, itertools.count()))
        start = turn % len(upstreams)
        return [*upstreams[start:], *upstreams[:start]]


@asynccontextmanager
async def open_gateway(app: FastAPI) -> AsyncIterator[None]:
    """The gateway's process-wide parts, for the app's lifespan: the pooled
    upstream client (``app.state.http``) and the instance chooser
    (``app.state.balancer``). The client is closed when the block ends."""
    async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT, limits=UPSTREAM_LIMITS) as http:
        app.state.http = http
        app.state.balancer = RoundRobin()
        yield


async def relay(
    http: httpx.AsyncClient,
    candidates: Sequence[Upstream],
    path: str,
    body: bytes,
    *,
    model: str,
    stream: bool,
) -> Response:
    """Send ``body`` to ``path`` on the first candidate, and on the next one
    once more if the first failed before answering; relay the answer.

    The engine's answer is relayed whatever its status; a ``GatewayError``
    (502) only when no candidate answered.
    """
    reason = "no instance"
    for upstream in [candidates[0], candidates[1 % len(candidates)]]:
        request = http.build_request(
            "POST",
            upstream.url + path,
            content=body,
            headers=_upstream_headers(upstream),
        )
        try:
            response = await http.send(request, stream=True)
        except _RETRYABLE as e:
            reason = _describe(e)
            logger.warning(
                "model %s, instance %d (%s): no answer, %s",
                model,
                upstream.instance_id,
                upstream.url,
                reason,
            )
            continue
        except httpx.TransportError as e:
            logger.warning(
                "model %s, instance %d (%s): %s",
                model,
                upstream.instance_id,
                upstream.url,
                _describe(e),
            )
            raise upstream_unavailable(model, _describe(e)) from e
        if stream and response.status_code == 200:
            return RelayedStream(response, model=model, instance_id=upstream.instance_id)
        return await _whole(response, model=model, instance_id=upstream.instance_id)
    raise upstream_unavailable(model, reason)


def _upstream_headers(upstream: Upstream) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        # Raw bytes are relayed, so they must be the plain ones.
        "Accept-Encoding": "identity",
    }
    if upstream.api_key:
        headers["Authorization"] = f"Bearer {upstream.api_key}"
    return headers


def _describe(error: httpx.TransportError) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def _whole(response: httpx.Response, *, model: str, instance_id: int) -> Response:
    try:
        content = await response.aread()
    except httpx.TransportError as e:
        logger.warning(
            "model %s, instance %d: answer broken off, %s", model, instance_id, _describe(e)
        )
        raise upstream_unavailable(model, _describe(e)) from e
    finally:
        await response.aclose()
    headers = {}
    if "content-type" in response.headers:
        headers["Content-Type"] = response.headers["content-type"]
    return Response(content, status_code=response.status_code, headers=headers)


class RelayedStream(StreamingResponse):
    """An engine's streamed answer, passed on chunk by chunk as it arrives.

    The upstream response is closed however the relay ends: done, broken off
    by the engine, or cancelled because the client went away, which also
    tells the engine to stop generating.
    """

    def __init__(self, upstream: httpx.Response, *, model: str, instance_id: int) -> None:
        self._upstream = upstream
        self._model = model
        self._instance_id = instance_id
        self._body = self._chunks()
        super().__init__(
            self._body,
            status_code=upstream.status_code,
            headers={
                "Content-Type": upstream.headers.get("content-type", "text/event-stream"),
                "Cache-Control": "no-cache",
                # Proxies in front of corral (nginx) must not buffer either.
                "X-Accel-Buffering": "no",
            },
        )

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._upstream.aiter_raw():
                yield chunk
        except httpx.TransportError as e:
            # Too late for an error response: the client sees the stream cut.
            logger.warning(
                "model %s, instance %d: stream broken off, %s",
                self._model,
                self._instance_id,
                _describe(e),
            )
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()
            await self._upstream.aclose()
