"""``/v1/*``: the OpenAI-compatible endpoints, for users' API keys.

Inference requests are read once as bytes; only ``model`` and ``stream`` are
looked at (``protocol.read_head``) and the same bytes go to the instance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from corral.errors import AuthenticationError, NotFoundError
from corral.schemas.auth import UserRead
from corral.server.db.engine import Database
from corral.server.gateway.errors import (
    GatewayError,
    forbidden,
    internal_error,
    model_not_found,
    model_not_running,
    unauthenticated,
)
from corral.server.gateway.protocol import ModelCard, ModelList, read_head
from corral.server.gateway.relay import relay
from corral.server.services import auth, routing

logger = logging.getLogger(__name__)


class GatewayRoute(APIRoute):
    """A route that answers every error in OpenAI's shape, also those raised
    by its dependencies, so the app's management-API handlers never see them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except GatewayError as e:
                return e.response()
            except Exception:
                logger.exception("unhandled error on %s %s", request.method, request.url.path)
                return internal_error().response()

        return handle


router = APIRouter(prefix="/v1", tags=["openai"], route_class=GatewayRoute)

_bearer = HTTPBearer(auto_error=False, description="A user's API key (or session token).")


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def authenticate_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> UserRead:
    """The user whose API key (or session token) the request carries."""
    if credentials is None:
        raise unauthenticated("Missing API key: send 'Authorization: Bearer <key>'.")
    try:
        principal = await auth.authenticate(_db(request), credentials.credentials)
    except AuthenticationError as e:
        raise unauthenticated(f"Invalid API key: {e.message}.") from e
    if principal.user is None:
        raise forbidden("The gateway takes a user's API key, not a worker's credential.")
    return principal.user


UserDep = Annotated[UserRead, Depends(authenticate_user)]


@router.get("/models")
async def list_models(request: Request, user: UserDep) -> ModelList:
    """The models that have a running instance."""
    served = await routing.served_models(_db(request))
    return ModelList(data=[ModelCard.of(m) for m in served])


@router.get("/models/{model:path}")
async def get_model(model: str, request: Request, user: UserDep) -> ModelCard:
    for served in await routing.served_models(_db(request)):
        if served.name == model:
            return ModelCard.of(served)
    raise model_not_found(model)


@router.post("/chat/completions")
async def chat_completions(request: Request, user: UserDep) -> Response:
    return await _infer(request, "/v1/chat/completions")


@router.post("/completions")
async def completions(request: Request, user: UserDep) -> Response:
    return await _infer(request, "/v1/completions")


@router.post("/embeddings")
async def embeddings(request: Request, user: UserDep) -> Response:
    return await _infer(request, "/v1/embeddings")


async def _infer(request: Request, path: str) -> Response:
    body = await request.body()
    head = read_head(body)
    try:
        upstreams = await routing.upstreams(_db(request), head.model)
    except NotFoundError as e:
        raise model_not_found(head.model) from e
    if not upstreams:
        raise model_not_running(head.model)
    state = request.app.state
    return await relay(
        state.http,
        state.balancer.order(head.model, upstreams),
        path,
        body,
        model=head.model,
        stream=head.stream,
    )
