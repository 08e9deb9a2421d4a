"""Worker registration, status, labels and removal."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import ServerProcess, register_worker, unique

STATUS = {
    "cpu": {"cores": 16, "utilization": 12.5},
    "memory": {"total": 64 * 2**30, "used": 8 * 2**30},
    "disks": [{"path": "/", "total": 500 * 2**30, "used": 100 * 2**30}],
    "devices": [
        {
            "index": 0,
            "vendor": "nvidia",
            "name": "A100",
            "memory_total": 80 * 2**30,
            "memory_used": 0,
            "compute_capability": "8.0",
            "simulated": True,
        },
    ],
}


def test_register_report_and_read_back(server: ServerProcess, admin: httpx.Client) -> None:
    name = unique("gpu-box")
    registered, worker = register_worker(
        server.url, server.cluster_token, name, labels={"os": "linux", "arch": "amd64", "zone": "a"}
    )
    assert registered["credential"].startswith("corral_worker_")
    shown = admin.get(f"/api/v1/workers/{registered['worker_id']}").json()
    assert shown["state"] == "not_ready" and shown["status"] is None
    assert shown["labels"] == {"os": "linux", "arch": "amd64", "zone": "a", "worker-name": name}
    assert "credential" not in str(shown)

    r = worker.post(f"/api/v1/workers/{registered['worker_id']}/status", json=STATUS)
    assert r.status_code == 200, r.text
    shown = admin.get(f"/api/v1/workers/{registered['worker_id']}").json()
    assert shown["state"] == "ready"
    assert shown["heartbeat_at"] is not None
    assert shown["status"]["devices"][0]["simulated"] is True
    assert name in [w["name"] for w in admin.get("/api/v1/workers").json()["items"]]


def test_registering_again_rotates_the_credential(
    server: ServerProcess, admin: httpx.Client
) -> None:
    name = unique("rejoin")
    first, old = register_worker(server.url, server.cluster_token, name)
    admin.patch(f"/api/v1/workers/{first['worker_id']}", json={"labels": {"rack": "r1"}})
    r = httpx.post(
        f"{server.url}/api/v1/workers/register",
        json={
            "name": name,
            "address": "10.1.1.1",
            "port": 10151,
            "labels": {"os": "linux", "arch": "arm64"},
        },
        headers={"Authorization": f"Bearer {server.cluster_token}"},
    )
    assert r.status_code == 200
    assert r.json()["worker_id"] == first["worker_id"]
    assert old.get(f"/api/v1/workers/{first['worker_id']}/instances").status_code == 401
    shown = admin.get(f"/api/v1/workers/{first['worker_id']}").json()
    assert shown["address"] == "10.1.1.1"
    # The worker's own labels are refreshed; the ones an admin set are kept.
    assert shown["labels"] == {"os": "linux", "arch": "arm64", "rack": "r1", "worker-name": name}


def test_labels_set_and_remove(server: ServerProcess, admin: httpx.Client) -> None:
    registered, _ = register_worker(server.url, server.cluster_token)
    path = f"/api/v1/workers/{registered['worker_id']}"
    r = admin.patch(path, json={"labels": {"gpu-type": "a100", "team": "nlp"}})
    assert r.status_code == 200
    assert r.json()["labels"]["gpu-type"] == "a100"
    r = admin.patch(path, json={"labels": {"team": None}})
    assert "team" not in r.json()["labels"] and r.json()["labels"]["gpu-type"] == "a100"


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ({"os": "windows"}, "os"),
        ({"worker-name": "other"}, "worker-name"),
        ({"bad key!": "x"}, "bad key!"),
        ({"ok": "bad value!"}, "ok"),
        ({"-leading": "x"}, "-leading"),
    ],
)
def test_bad_labels_are_422(
    server: ServerProcess, admin: httpx.Client, labels: dict[str, str], fragment: str
) -> None:
    registered, _ = register_worker(server.url, server.cluster_token)
    r = admin.patch(f"/api/v1/workers/{registered['worker_id']}", json={"labels": labels})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad Name", "address": "a", "port": 1},
        {"name": "ok-name", "address": "", "port": 1},
        {"name": "ok-name", "address": "a", "port": 70000},
        {"name": "ok-name", "address": "a", "port": "x"},
        {"name": "ok-name", "address": "a", "port": 1, "unknown": 1},
    ],
)
def test_bad_registration_is_422(server: ServerProcess, body: dict[str, object]) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/workers/register",
        json=body,
        headers={"Authorization": f"Bearer {server.cluster_token}"},
    )
    assert r.status_code == 422, r.text


def test_bad_status_is_422_and_changes_nothing(server: ServerProcess, admin: httpx.Client) -> None:
    registered, worker = register_worker(server.url, server.cluster_token)
    path = f"/api/v1/workers/{registered['worker_id']}/status"
    assert worker.post(path, json=STATUS).status_code == 200
    bad = {**STATUS, "memory": {"total": -1, "used": 0}}
    assert worker.post(path, json=bad).status_code == 422
    shown = admin.get(f"/api/v1/workers/{registered['worker_id']}").json()
    assert shown["status"]["memory"]["total"] == STATUS["memory"]["total"]


def test_deleting_a_worker_revokes_its_credential(
    server: ServerProcess, admin: httpx.Client
) -> None:
    registered, worker = register_worker(server.url, server.cluster_token)
    assert worker.get(f"/api/v1/workers/{registered['worker_id']}/instances").json()["items"] == []
    assert admin.delete(f"/api/v1/workers/{registered['worker_id']}").status_code == 204
    assert admin.get(f"/api/v1/workers/{registered['worker_id']}").status_code == 404
    assert worker.get(f"/api/v1/workers/{registered['worker_id']}/instances").status_code == 401


def test_unknown_worker_is_404(admin: httpx.Client) -> None:
    for method in ("GET", "DELETE"):
        r = admin.request(method, "/api/v1/workers/999999")
        assert r.status_code == 404
    r = admin.patch("/api/v1/workers/999999", json={"labels": {"a": "b"}})
    assert r.status_code == 404
