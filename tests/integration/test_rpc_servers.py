"""rpc-server rows through the API: what a distributed placement assigns to
its helper and its primary, what the helper reports, who may report, and
that deleting the model takes the rows along (SQLite and PostgreSQL).
The workers here are played by the test (register, status, reports)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import ServerProcess, deploy, unique
from tests.integration.test_placement import gguf_spec, join, one_gpu_need, wait_for

MIB = 1024 * 1024


def _assignments(worker: httpx.Client, wid: int) -> dict[str, Any]:
    r = worker.get(f"/api/v1/workers/{wid}/assignments")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_split_model_assigns_rpc_servers_to_its_helper(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    pool = unique("rpc")
    # Each GPU just too small for the whole model: only a split fits.
    size = one_gpu_need(admin, tiny_models.gguf_q8_0) - MIB
    (a, worker_a), (b, worker_b) = join(server, pool, [size]), join(server, pool, [size])
    model = deploy(admin, **gguf_spec(tiny_models.gguf_q8_0, pool, cpu_offloading=False))
    [inst] = wait_for(admin, model["id"], lambda xs: xs[0]["state"] == "scheduled")
    assert inst["placement"]["kind"] == "distributed"
    primary, helper = (a, b) if inst["worker_id"] == a else (b, a)
    workers = {a: worker_a, b: worker_b}
    [rpc] = inst["rpc_servers"]
    assert (rpc["worker_id"], rpc["device"], rpc["position"]) == (helper, 0, 0)
    assert rpc["state"] == "pending" and rpc["port"] is None
    [helper_claim] = [c for c in inst["claim"]["workers"] if c["worker_id"] == helper]
    assert rpc["memory"] == helper_claim["gpus"]["0"] > 0

    # The helper sees an rpc-server to run, not an instance.
    seen = _assignments(workers[helper], helper)
    assert seen["items"] == []
    [task] = seen["rpc_servers"]
    assert task["rpc_server_id"] == rpc["id"] and task["instance_id"] == inst["id"]
    assert task["device"] == 0 and task["memory"] == rpc["memory"] and task["secret"]
    # The primary sees its instance and the helper it waits for.
    [mine] = _assignments(workers[primary], primary)["items"]
    [endpoint] = mine["helpers"]
    assert endpoint["state"] == "pending" and endpoint["address"] == "127.0.0.1"
    before = _assignments(workers[primary], primary)["etag"]

    status_url = f"/api/v1/workers/{helper}/rpc-servers/{rpc['id']}/status"
    r = workers[helper].post(status_url, json={"state": "ready", "port": 40123, "pid": 77})
    assert r.status_code == 204, r.text
    after = _assignments(workers[primary], primary)
    assert after["etag"] != before
    [endpoint] = after["items"][0]["helpers"]
    assert (endpoint["state"], endpoint["port"]) == ("ready", 40123)
    [shown] = admin.get(f"/api/v1/instances/{inst['id']}").json()["rpc_servers"]
    assert (shown["state"], shown["port"], shown["pid"]) == ("ready", 40123, 77)

    # Only the helper may report it, in the states a helper knows.
    r = workers[primary].post(status_url, json={"state": "ready", "port": 1})
    assert r.status_code == 403, r.text
    r = workers[primary].post(
        f"/api/v1/workers/{primary}/rpc-servers/{rpc['id']}/status", json={"state": "ready"}
    )
    assert r.status_code == 409 and "not assigned to worker" in r.text
    r = workers[helper].post(status_url, json={"state": "running"})
    assert r.status_code == 422
    r = workers[helper].post(
        f"/api/v1/workers/{helper}/rpc-servers/999999/status", json={"state": "ready"}
    )
    assert r.status_code == 404

    # The instance's layers as its engine reports them are shown as sent.
    layers = [
        {"device": "CPU", "first": 0, "end": 1},
        {"device": "RPC0[x:1]", "first": 1, "end": 3},
    ]
    r = workers[primary].post(
        f"/api/v1/workers/{primary}/instances/{inst['id']}/status",
        json={"state": "running", "port": 40100, "pid": 88, "layers": layers},
    )
    assert r.status_code == 204, r.text
    shown_layers = admin.get(f"/api/v1/instances/{inst['id']}").json()["layers"]
    assert [(x["device"], x["first"], x["end"]) for x in shown_layers] == [
        ("CPU", 0, 1),
        ("RPC0[x:1]", 1, 3),
    ]

    # Deleting the model deletes the rows: the helper's list empties, its reports are refused.
    assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204
    assert _assignments(workers[helper], helper)["rpc_servers"] == []
    r = workers[helper].post(status_url, json={"state": "ready", "port": 40123})
    assert r.status_code == 404
