"""The worker's own HTTP API, for the server: instance and rpc-server logs,
and health.

Reading an instance's log takes that instance's API key, an rpc-server's its
secret: only the server and this worker know them.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from pathlib import Path

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
        rpc = "rpc_server_id" in request.path_params
        try:
            subject = int(request.path_params["rpc_server_id" if rpc else "instance_id"])
            tail = int(request.query_params.get("tail", "200"))
        except ValueError:
            return _error(400, "bad_request", "the id and tail must be integers")
        tail = max(0, min(tail, MAX_TAIL))
        found: tuple[str, Path] | None = None
        if rpc:
            helper = supervisor.rpc_servers.get(subject)
            if helper is not None:
                found = helper.assignment.secret, helper.log.path
        else:
            runner = supervisor.instances.get(subject)
            if runner is not None:
                found = runner.assignment.api_key, runner.log.path
        what = f"{'rpc-server' if rpc else 'instance'} {subject}"
        if found is None:
            return _error(404, "not_found", f"{what} is not on this worker")
        key, path = found
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            return _error(401, "unauthenticated", f"the log of {what} needs its key")
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
            Route("/rpc-servers/{rpc_server_id}/logs", logs),
        ]
    )
