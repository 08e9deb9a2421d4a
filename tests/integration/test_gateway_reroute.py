"""An engine that comes back on another port (a restart in place) is found
by the very next request, not only at the routing table's next tick: the
gateway's retry reads the table again when its instance refused."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import (
    Heartbeat,
    client,
    create_user,
    deploy,
    login,
    register_worker,
    run_server,
    unique,
)
from tests.integration.test_gateway import poll, worker_status
from tests.responder import run_responder


def test_a_request_right_after_an_engine_moved_reaches_it(
    tmp_path: Path, tiny_models: TinyModels
) -> None:
    with (
        run_server(tmp_path) as server,
        client(server.url, login(server.url, "admin", server.admin_password)) as admin,
    ):
        registered, worker = register_worker(server.url, server.cluster_token)
        wid = registered["worker_id"]
        assert worker.post(f"/api/v1/workers/{wid}/status", json=worker_status()).is_success
        source = {"type": "local", "path": str(tiny_models.gguf_q8_0)}
        model = deploy(admin, name=unique("moving"), source=source)
        [assignment] = poll(
            "the instance placed",
            lambda: worker.get(f"/api/v1/workers/{wid}/assignments").json()["items"] or None,
        )
        iid = assignment["instance_id"]
        _, user = create_user(admin)
        body = {"model": model["name"], "messages": [{"role": "user", "content": "hi"}]}
        with (
            Heartbeat(server.url, wid, registered["credential"], worker_status),
            httpx.Client(base_url=f"{server.url}/v1", headers=user.headers, timeout=30) as ai,
        ):
            for _ in range(3):
                with run_responder() as engine:
                    port = int(engine.url.rsplit(":", 1)[1])
                    report = {"state": "running", "port": port, "pid": engine.process.pid}
                    r = worker.post(f"/api/v1/workers/{wid}/instances/{iid}/status", json=report)
                    assert r.status_code == 204, r.text
                    # At once: the table still lists the engine stopped a moment ago.
                    r = ai.post("/chat/completions", json=body)
                    assert r.status_code == 200, r.text
