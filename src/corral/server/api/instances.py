"""``/api/v1/instances``: the running (or waiting) copies of models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from corral.errors import UnavailableError
from corral.schemas.common import ItemList
from corral.schemas.instances import InstanceEventRead, InstanceRead, InstanceState
from corral.server.api.deps import DbDep, PrincipalDep, WakeDep
from corral.server.services import instances, rpc_servers

router = APIRouter(prefix="/instances", tags=["instances"])


@router.get("")
async def list_instances(
    db: DbDep,
    principal: PrincipalDep,
    model_id: int | None = None,
    worker_id: int | None = None,
    state: InstanceState | None = None,
) -> ItemList[InstanceRead]:
    principal.require_admin()
    return ItemList(
        items=await instances.list_instances(
            db, model_id=model_id, worker_id=worker_id, state=state
        )
    )


@router.get("/{instance_id}")
async def get_instance(instance_id: int, db: DbDep, principal: PrincipalDep) -> InstanceRead:
    principal.require_admin()
    return await instances.get_instance(db, instance_id)


@router.get("/{instance_id}/events")
async def instance_events(
    instance_id: int, db: DbDep, principal: PrincipalDep
) -> ItemList[InstanceEventRead]:
    """The instance's state history, oldest first (the newest 100 changes)."""
    principal.require_admin()
    return ItemList(items=await instances.instance_events(db, instance_id))


@router.post("/{instance_id}/restart")
async def restart_instance(
    instance_id: int, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> InstanceRead:
    """Stop the instance's engine and start it again where it is."""
    admin = principal.require_admin()
    instance = await instances.restart_instance(db, instance_id, by=admin.username)
    wake()
    return instance


@router.delete("/{instance_id}", status_code=204)
async def delete_instance(
    instance_id: int, db: DbDep, principal: PrincipalDep, wake: WakeDep
) -> Response:
    """Remove an instance; a fresh one replaces it while the model wants replicas."""
    principal.require_admin()
    await instances.delete_instance(db, instance_id)
    wake()
    return Response(status_code=204)


@router.get(
    "/{instance_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def instance_logs(
    instance_id: int,
    db: DbDep,
    principal: PrincipalDep,
    request: Request,
    tail: Annotated[int, Query(ge=0, le=10_000)] = 200,
    follow: bool = False,
    rpc_server: Annotated[
        int | None, Query(description="Read this helper rpc-server's log instead (its id).")
    ] = None,
) -> StreamingResponse:
    """The engine's log, read from its worker: the last ``tail`` lines, then
    (with ``follow``) what it writes next, until the client hangs up. With
    ``rpc_server``, the log of one of a distributed instance's helpers."""
    principal.require_admin()
    if rpc_server is None:
        url, key = await instances.log_source(db, instance_id)
    else:
        url, key = await rpc_servers.log_source(db, instance_id, rpc_server)
    http: httpx.AsyncClient = request.app.state.http
    upstream = http.build_request(
        "GET",
        url,
        params={"tail": tail, "follow": int(follow)},
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(10, read=None),
    )
    try:
        response = await http.send(upstream, stream=True)
    except httpx.HTTPError as e:
        raise UnavailableError(f"the instance's worker did not answer at {url}: {e!r}") from e
    if response.status_code != 200:
        text = (await response.aread()).decode(errors="replace")[:300]
        await response.aclose()
        raise UnavailableError(f"the instance's worker answered {response.status_code}: {text}")

    stopping: asyncio.Event = request.app.state.stopping

    async def relay() -> AsyncIterator[bytes]:
        # A followed log never ends by itself: end it when the server stops.
        stop = asyncio.ensure_future(stopping.wait())
        chunks = response.aiter_raw()
        try:
            while True:
                chunk = asyncio.ensure_future(anext(chunks))
                await asyncio.wait({chunk, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not chunk.done():
                    chunk.cancel()
                    return
                try:
                    yield chunk.result()
                except StopAsyncIteration:
                    return
        finally:
            stop.cancel()
            await response.aclose()

    return StreamingResponse(relay(), media_type="text/plain; charset=utf-8")
