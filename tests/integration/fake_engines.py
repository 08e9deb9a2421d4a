"""A real corral server whose instances are FAKE engines (``tests/responder.py``).

For gateway tests that need an engine doing exactly what the test says: a
worker is registered over the real API and heartbeats, the models are
deployed for real, and when they are placed each instance is reported
``running`` on its responder's port, so the gateway routes to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import (
    Heartbeat,
    ServerProcess,
    client,
    create_user,
    deploy,
    login,
    register_worker,
    run_server,
    unique,
)
from tests.integration.test_gateway import poll, worker_status
from tests.responder import RunningResponder, run_responder


@dataclass
class FakeCluster:
    server: ServerProcess
    key: str
    """A user's API key."""
    names: dict[str, str]
    """Model name by role."""
    engines: dict[str, RunningResponder]

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.server.url}/v1",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )


@contextmanager
def fake_cluster(
    directory: Path,
    tiny_models: TinyModels,
    roles: Mapping[str, tuple[tuple[str, ...], dict[str, Any]]],
    *,
    env: Mapping[str, str] | None = None,
) -> Iterator[FakeCluster]:
    """A server (with ``env``) and one model per role, each served by a
    responder started with the role's options; the role's dict is added to
    the model spec (``{"categories": ["vision"]}``)."""
    with ExitStack() as stack:
        server = stack.enter_context(run_server(directory, env=dict(env or {})))
        admin = stack.enter_context(
            client(server.url, login(server.url, "admin", server.admin_password))
        )
        registered, worker = register_worker(server.url, server.cluster_token)
        stack.enter_context(worker)
        wid = registered["worker_id"]
        assert worker.post(f"/api/v1/workers/{wid}/status", json=worker_status()).is_success
        stack.enter_context(Heartbeat(server.url, wid, registered["credential"], worker_status))
        engines = {
            role: stack.enter_context(run_responder(*opts)) for role, (opts, _) in roles.items()
        }
        names = {}
        for role, (_, extra) in roles.items():
            spec: dict[str, Any] = {"source": {"type": "local", "path": str(tiny_models.gguf_q8_0)}}
            names[role] = deploy(admin, name=unique(role), **spec, **extra)["name"]

        def placed() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = worker.get(f"/api/v1/workers/{wid}/assignments").json()[
                "items"
            ]
            return items if len(items) == len(roles) else None

        for item in poll(f"{len(roles)} instances placed", placed):
            role = next(r for r, n in names.items() if n == item["model_name"])
            port = int(engines[role].url.rsplit(":", 1)[1])
            r = worker.post(
                f"/api/v1/workers/{wid}/instances/{item['instance_id']}/status",
                json={"state": "running", "port": port, "pid": engines[role].process.pid},
            )
            assert r.status_code == 204, r.text
        user = stack.enter_context(create_user(admin)[1])
        r = user.post("/api/v1/api-keys", json={"name": "fake-engines"})
        assert r.status_code == 201, r.text
        yield FakeCluster(server=server, key=r.json()["key"], names=names, engines=engines)
