"""The worker's side of the wire: register, heartbeat, watch assignments, report.

One pooled ``httpx.AsyncClient`` per worker. Failures are raised as
``ServerUnavailable`` (retry later: network, 5xx) or ``Rejected`` (the server
said no: the caller decides); ``CredentialRejected`` means register again.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from corral.schemas.assignments import Assignments, InstanceStatusReport, RpcServerStatusReport
from corral.schemas.workers import WorkerRegister, WorkerRegistered, WorkerStatus
from corral.worker.identity import Identity

logger = logging.getLogger(__name__)


class ServerUnavailable(Exception):
    """The server could not be reached or failed (5xx): try again later."""


class Rejected(Exception):
    """The server refused the request (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


class CredentialRejected(Rejected):
    """401: the credential is unknown to this server (deleted worker, new database)."""


class ServerClient:
    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._http = httpx.AsyncClient(
            base_url=server_url, timeout=httpx.Timeout(30, connect=5), follow_redirects=False
        )
        self.identity: Identity | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    def _auth(self) -> dict[str, str]:
        assert self.identity is not None, "register first"
        return {"Authorization": f"Bearer {self.identity.credential}"}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                headers=headers,
                params=params,
                timeout=httpx.Timeout(timeout, connect=5) if timeout else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as e:
            raise ServerUnavailable(f"{method} {self.server_url}{path}: {e!r}") from e
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            message = _error_message(response)
            if response.status_code == 401:
                raise CredentialRejected(401, message)
            raise Rejected(response.status_code, message)
        return response

    async def register(self, body: WorkerRegister, token: str) -> WorkerRegistered:
        response = await self._send(
            "POST",
            "/api/v1/workers/register",
            json=body.model_dump(mode="json"),
            headers={"Authorization": f"Bearer {token}"},
        )
        return WorkerRegistered.model_validate(response.json())

    async def report_status(self, status: WorkerStatus) -> None:
        assert self.identity is not None
        await self._send(
            "POST",
            f"/api/v1/workers/{self.identity.worker_id}/status",
            json=status.model_dump(mode="json"),
            headers=self._auth(),
        )

    async def watch(self, etag: str | None, wait: float) -> Assignments | None:
        """The assignments once they differ from ``etag`` (None: unchanged after ``wait``)."""
        assert self.identity is not None
        headers = self._auth()
        if etag:
            headers["If-None-Match"] = f'"{etag}"'
        response = await self._send(
            "GET",
            f"/api/v1/workers/{self.identity.worker_id}/assignments",
            headers=headers,
            params={"wait": wait},
            timeout=wait + 30,
        )
        if response.status_code == 304:
            return None
        return Assignments.model_validate(response.json())

    async def report_instance(self, instance_id: int, report: InstanceStatusReport) -> None:
        assert self.identity is not None
        await self._send(
            "POST",
            f"/api/v1/workers/{self.identity.worker_id}/instances/{instance_id}/status",
            json=report.model_dump(mode="json", exclude_none=False),
            headers=self._auth(),
        )

    async def report_rpc_server(self, rpc_server_id: int, report: RpcServerStatusReport) -> None:
        assert self.identity is not None
        await self._send(
            "POST",
            f"/api/v1/workers/{self.identity.worker_id}/rpc-servers/{rpc_server_id}/status",
            json=report.model_dump(mode="json"),
            headers=self._auth(),
        )


def _error_message(response: httpx.Response) -> str:
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return message
