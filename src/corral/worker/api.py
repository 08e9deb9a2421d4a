"""The worker's own HTTP API, for the server: instance logs, and health.

Reading an instance's log takes that instance's API key, which only the
server and this worker know.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.worker.logs import follow, read_tail
from corral.worker.supervisor import Supervisor

MAX_TAIL = 10_000


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_api(supervisor: Supervisor) -> Starlette:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def logs(request: Request) -> Response:
        try:
            instance_id = int(request.path_params["instance_id"])
            tail = int(request.query_params.get("tail", "200"))
        except ValueError:
            return _error(400, "bad_request", "instance id and tail must be integers")
        tail = max(0, min(tail, MAX_TAIL))
        runner = supervisor.instances.get(instance_id)
        if runner is None:
            return _error(404, "not_found", f"instance {instance_id} is not on this worker")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), runner.assignment.api_key.encode()):
            return _error(401, "unauthenticated", "this log needs the instance's key")
        path = runner.log.path
        head, offset = read_tail(path, tail)
        if request.query_params.get("follow") not in ("1", "true"):
            return Response(head, media_type="text/plain; charset=utf-8")

        async def stream() -> AsyncIterator[bytes]:
            yield head
            async for chunk in follow(path, offset):
                yield chunk

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")

    return Starlette(
        routes=[
            Route("/healthz", health),
            Route("/instances/{instance_id}/logs", logs),
        ]
    )
