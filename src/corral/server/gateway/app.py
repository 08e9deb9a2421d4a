"""The gateway as an ASGI application in front of the server's FastAPI app.

``/v1/*`` requests never enter FastAPI: its routing, dependency injection
and response classes cost more per request than the gateway's whole budget
(measured by ``bench/gateway.py``). ``with_gateway(app)`` answers them itself
and hands everything else, the lifespan included, to the app. The gateway's
process-wide parts live in ``app.state.gateway`` (``open_gateway``, entered
by the app's lifespan), so the FastAPI side (``/metrics``, ``/api/v1/usage``)
can reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.errors import AuthenticationError, PermissionDeniedError
from corral.server.cookie import CSRF_HEADER, cookie_credential
from corral.server.db.engine import Database
from corral.server.gateway.balancer import Balancer
from corral.server.gateway.callers import Callers
from corral.server.gateway.errors import (
    GatewayError,
    forbidden,
    internal_error,
    method_not_allowed,
    model_not_found,
    model_not_running,
    payload_too_large,
    unauthenticated,
    unknown_url,
)
from corral.server.gateway.images import Images
from corral.server.gateway.metering import Meter
from corral.server.gateway.metrics import GatewayCollector, GatewayMetrics
from corral.server.gateway.protocol import model_of, parse_request, read_head
from corral.server.gateway.relay import Relay, relay
from corral.server.gateway.routes import Routes
from corral.server.gateway.upstream import Pool
from corral.server.services.routing import ModelRoute

logger = logging.getLogger(__name__)

INFERENCE = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/rerank": "rerank",
}
"""The inference endpoints and their names in the metrics. Rerank has one
path on both engines (llama.cpp's ``--reranking`` server and vLLM)."""


class _ClientGone(Exception):
    """The client disconnected while sending its request."""


class Gateway:
    """Everything the gateway keeps per process."""

    def __init__(self, db: Database, *, max_body: int, keepalive_s: float, images: Images) -> None:
        self.max_body = max_body
        self.images = images
        self.callers = Callers(db)
        self.balancer = Balancer()
        self.metrics = GatewayMetrics()
        self.meter = Meter(db)
        self.pool = Pool()
        self.routes = Routes(db, on_refresh=self._routes_read)
        self.relay = Relay(
            self.pool, self.balancer, self.meter, self.metrics, keepalive_s, self.routes.reread
        )
        self.collector = GatewayCollector(self.metrics, self.balancer, self._instance_models)

    def _routes_read(self, table: dict[str, ModelRoute]) -> None:
        self.balancer.retain({u.instance_id for r in table.values() for u in r.upstreams})

    def _instance_models(self) -> dict[int, str]:
        return {u.instance_id: r.name for r in self.routes.table.values() for u in r.upstreams}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.monotonic()
        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = INFERENCE.get(path, "")
        model = ""
        status = 500
        try:
            authorization, length = _headers(scope, method)
            if not endpoint:
                if path == "/v1/models" or path.startswith("/v1/models/"):
                    if method != "GET":
                        raise method_not_allowed(method, path, "GET")
                    await self.callers.resolve(authorization)
                    await _send_json(send, 200, await self._models(path))
                    return
                raise unknown_url(method, path)
            if method != "POST":
                raise method_not_allowed(method, path, "POST")
            caller = await self.callers.resolve(authorization)
            body = await self._body(receive, length)
            request = parse_request(body)
            model = model_of(request)
            route = await self.routes.find(model)
            if route is None:
                raise model_not_found(model)
            if not route.upstreams:
                raise model_not_running(model)
            if endpoint == "chat":
                body = await self.images.prepare(
                    request, body, model=model, vision="vision" in route.categories
                )
            head, body = read_head(body, request)
            status = await relay(
                self.relay,
                receive,
                send,
                route=route,
                path=path,
                head=head,
                body=body,
                caller=caller,
                arrived=arrived,
            )
        except GatewayError as e:
            status = e.status
            await _send_error(send, e)
        except _ClientGone:
            status = 499
        except Exception:
            logger.exception("unhandled error on %s %s", method, path)
            await _send_error(send, internal_error())
        finally:
            if endpoint:
                self.metrics.request_done(
                    model or "-", endpoint, status, time.monotonic() - arrived
                )

    async def _body(self, receive: Receive, length: int | None) -> bytes:
        limit = self.max_body
        if length is not None and length > limit:
            raise payload_too_large(limit)
        parts = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise payload_too_large(limit)
            parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _models(self, path: str) -> dict[str, object]:
        if path == "/v1/models":
            # Not a hot path: read the table now, so a model that started a
            # moment ago is listed.
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self.routes.refresh()
            served = [r for r in self.routes.table.values() if r.upstreams]
            # The table is in name order (``load_routes``).
            return {"object": "list", "data": [_card(r) for r in served]}
        name = path.removeprefix("/v1/models/")
        route = await self.routes.find(name)
        if route is None or not route.upstreams:
            raise model_not_found(name)
        return _card(route)


def _card(route: ModelRoute) -> dict[str, object]:
    return {
        "id": route.name,
        "object": "model",
        "created": route.created,
        "owned_by": "corral",
        "context_length": route.context_length,
        "categories": list(route.categories),
    }


def _headers(scope: Scope, method: str) -> tuple[bytes | None, int | None]:
    """The credential (the ``Authorization`` header, else the web UI's
    session cookie) and the declared body length."""
    authorization = None
    cookie = None
    csrf = False
    length = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"cookie":
            cookie = value
        elif name == CSRF_HEADER_BYTES:
            csrf = bool(value)
        elif name == b"content-length":
            with contextlib.suppress(ValueError):
                length = int(value)
    if authorization is None and cookie is not None:
        authorization = _cookie_credential(cookie.decode("latin-1"), method, csrf)
    return authorization, length


CSRF_HEADER_BYTES = CSRF_HEADER.encode()


def _cookie_credential(cookie: str, method: str, csrf: bool) -> bytes | None:
    """The UI's session as a bearer credential (``corral.server.cookie``'s
    rule, answered in the gateway's error shape)."""
    try:
        token = cookie_credential(cookie, method, csrf)
    except AuthenticationError as e:
        raise unauthenticated(f"{e.message[:1].upper()}{e.message[1:]}.") from e
    except PermissionDeniedError as e:
        raise forbidden(f"{e.message[:1].upper()}{e.message[1:]}.") from e
    return None if token is None else b"Bearer " + token.encode()


async def _send_json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(send: Send, error: GatewayError) -> None:
    body = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def with_gateway(app: FastAPI) -> ASGIApp:
    """The ASGI app to serve: ``/v1/*`` to the gateway, the rest to ``app``."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            path: str = scope["path"]
            gateway: Gateway | None = getattr(app.state, "gateway", None)
            if gateway is not None and (path == "/v1" or path.startswith("/v1/")):
                await gateway.handle(scope, receive, send)
                return
        await app(scope, receive, send)

    return serve


@asynccontextmanager
async def open_gateway(
    app: FastAPI, db: Database, *, max_body: int, keepalive_s: float, images: Images
) -> AsyncIterator[Gateway]:
    """The gateway's parts for the app's lifespan: the routing table read
    once before the first request, then refreshed; usage flushed every second
    and once more at the end; upstream connections closed at the end."""
    gateway = Gateway(db, max_body=max_body, keepalive_s=keepalive_s, images=images)
    with contextlib.suppress(Exception):
        await gateway.routes.refresh()
    tasks = [
        asyncio.create_task(gateway.routes.run(), name="gateway-routes"),
        asyncio.create_task(gateway.meter.run(), name="gateway-meter"),
    ]
    app.state.gateway = gateway
    try:
        yield gateway
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await gateway.meter.flush()
        except Exception as e:  # the database may be what is going away
            logger.warning("usage of the last second not written: %s", e)
        gateway.pool.close()
        if images.fetcher is not None:
            await images.fetcher.aclose()
