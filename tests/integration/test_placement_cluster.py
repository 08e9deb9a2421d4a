"""Placement across server processes and over time: two servers racing on
one database never book a GPU twice; a silent worker's instances move."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import client, login, run_server, unique
from tests.integration.test_placement import GIB, join, one_gpu_need, status, wait_for


def _instances(admin: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = admin.get("/api/v1/instances").json()["items"]
    return items


def test_two_servers_placing_200_instances_never_overbook(
    empty_database_url: str, tmp_path: Path, tiny_models: TinyModels
) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    with (
        run_server(tmp_path / "a", empty_database_url) as a,
        run_server(tmp_path / "b", empty_database_url) as b,
    ):
        admins = [client(s.url, login(s.url, "admin", s.admin_password)) for s in (a, b)]
        need = one_gpu_need(admins[0], tiny_models.gguf_q8_0)
        per_gpu = 7
        size = need * per_gpu + need // 2
        pool = unique("race")
        # Both servers' cluster tokens differ (separate data dirs): workers join through A.
        workers = [join(a, pool, [size, size])[0] for _ in range(10)]
        capacity = len(workers) * 2 * per_gpu  # 140 < 200: placements must compete

        def deploy_via(i: int) -> None:
            r = admins[i % 2].post(
                "/api/v1/models",
                json={
                    "name": unique("race-model"),
                    "source": {"type": "local", "path": str(tiny_models.gguf_q8_0)},
                    "worker_selector": {"pool": pool},
                    "replicas": 20,
                    "cpu_offloading": False,
                    "distributed_inference": False,
                },
            )
            assert r.status_code == 201, r.text

        with ThreadPoolExecutor(10) as pool_exec:
            list(pool_exec.map(deploy_via, range(10)))

        deadline = time.monotonic() + 60
        while True:
            items = _instances(admins[0])
            placed = [x for x in items if x["state"] == "scheduled"]
            waiting = [x for x in items if x["state"] == "pending"]
            settled = all("no worker can hold it" in (x["state_message"] or "") for x in waiting)
            if len(items) == 200 and len(placed) == capacity and settled:
                break
            assert time.monotonic() < deadline, (len(placed), len(waiting))
            time.sleep(0.2)

        claimed: dict[tuple[int, str], int] = defaultdict(int)
        for x in placed:
            for c in x["claim"]["workers"]:
                for gpu, nbytes in c["gpus"].items():
                    claimed[(c["worker_id"], gpu)] += nbytes
        assert set(claimed) == {(w, g) for w in workers for g in ("0", "1")}
        assert max(claimed.values()) <= size
        # Which server placed what depends on timing; both must have seen the work.
        assert "placement pass" in a.log() + b.log()


def test_a_silent_workers_instances_are_placed_elsewhere(
    empty_database_url: str, tmp_path: Path, tiny_models: TinyModels
) -> None:
    env = {"CORRAL_HEARTBEAT_TIMEOUT": "1", "CORRAL_RESCHEDULE_GRACE": "1"}
    with run_server(tmp_path, empty_database_url, env=env) as server:
        admin = client(server.url, login(server.url, "admin", server.admin_password))
        pool = unique("pool")
        first, first_client = join(server, pool, [8 * GIB])
        model = admin.post(
            "/api/v1/models",
            json={
                "name": unique("moving"),
                "source": {"type": "local", "path": str(tiny_models.gguf_q8_0)},
                "worker_selector": {"pool": pool},
            },
        ).json()
        [inst] = wait_for(admin, model["id"], lambda xs: xs[0]["state"] == "scheduled")
        assert inst["worker_id"] == first
        second, second_client = join(server, pool, [8 * GIB])

        stop = threading.Event()

        def heartbeat() -> None:  # only the second worker keeps reporting
            while not stop.is_set():
                second_client.post(f"/api/v1/workers/{second}/status", json=status([8 * GIB]))
                stop.wait(0.3)

        beats = threading.Thread(target=heartbeat)
        beats.start()
        try:
            [inst] = wait_for(admin, model["id"], lambda xs: xs[0]["state"] == "unreachable")
            assert "sent no heartbeat" in inst["state_message"]
            assert admin.get(f"/api/v1/workers/{first}").json()["state"] == "not_ready"
            [inst] = wait_for(
                admin,
                model["id"],
                lambda xs: xs[0]["state"] == "scheduled" and xs[0]["worker_id"] == second,
            )
        finally:
            stop.set()
            beats.join()
        # The first worker comes back: ready again, and no longer assigned the instance.
        r = first_client.post(f"/api/v1/workers/{first}/status", json=status([8 * GIB]))
        assert r.json()["state"] == "ready"
        assigned = first_client.get(f"/api/v1/workers/{first}/instances").json()["items"]
        assert assigned == []
