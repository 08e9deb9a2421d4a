"""The placement controller against a real server and database: workers
registered and reporting over the API (simulated GPUs), models deployed from
files the server can read, placements and reasons read back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.tiny_models import TinyModels
from tests.helpers import ServerProcess, deploy, register_worker, unique

GIB = 1024**3
MIB = 1024**2


def status(gpus: list[int], ram: int = 64 * GIB) -> dict[str, Any]:
    return {
        "cpu": {"cores": 8},
        "memory": {"total": ram, "used": 0},
        "disks": [{"path": "/", "total": 500 * GIB, "used": 0}],
        "devices": [
            {
                "index": i,
                "vendor": "nvidia",
                "name": "Simulated GPU",
                "memory_total": size,
                "memory_used": 0,
                "simulated": True,
            }
            for i, size in enumerate(gpus)
        ],
    }


def join(
    server: ServerProcess, pool: str, gpus: list[int], **labels: str
) -> tuple[int, httpx.Client]:
    """A worker in its own label pool, so tests sharing a server do not meet."""
    registered, worker = register_worker(
        server.url,
        server.cluster_token,
        labels={"os": "linux", "arch": "amd64", "pool": pool, **labels},
    )
    wid = registered["worker_id"]
    r = worker.post(f"/api/v1/workers/{wid}/status", json=status(gpus))
    assert r.status_code == 200, r.text
    return wid, worker


def wait_for(
    admin: httpx.Client,
    model_id: int,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 20,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items: list[dict[str, Any]] = admin.get(
            "/api/v1/instances", params={"model_id": model_id}
        ).json()["items"]
        if done(items):
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


def gguf_spec(path: Path, pool: str, **extra: Any) -> dict[str, Any]:
    return {
        "source": {"type": "local", "path": str(path)},
        "worker_selector": {"pool": pool},
        **extra,
    }


def one_gpu_need(admin: httpx.Client, path: Path) -> int:
    """What the tiny model takes on one GPU, as the plan endpoint says."""
    r = admin.post(
        "/api/v1/models:plan",
        json={"name": "probe", "source": {"type": "local", "path": str(path)}},
    )
    assert r.status_code == 200, r.text
    need: int = r.json()["estimate"]["all_layers_on_one_gpu"]["total"]
    return need


def test_a_pending_instance_is_placed_on_a_reporting_worker(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    pool = unique("pool")
    model = deploy(admin, **gguf_spec(tiny_models.gguf_q8_0, pool))
    [pending] = wait_for(
        admin, model["id"], lambda xs: "no worker" in (xs[0]["state_message"] or "")
    )
    assert pending["state"] == "pending"
    wid, _ = join(server, pool, [8 * GIB])
    [inst] = wait_for(admin, model["id"], lambda xs: xs[0]["state"] == "scheduled")
    assert inst["worker_id"] == wid and inst["devices"] == [0]
    assert inst["placement"]["kind"] == "one_gpu"
    layers = inst["placement"]["total_layers"]
    assert inst["placement"]["gpu_layers"] == layers
    [claim] = inst["claim"]["workers"]
    assert claim["worker_id"] == wid and 0 < claim["gpus"]["0"] < 8 * GIB
    assert inst["command"][0] == "llama-server"
    assert inst["command"][inst["command"].index("--n-gpu-layers") + 1] == str(layers)
    assert inst["command"][inst["command"].index("--model") + 1] == str(tiny_models.gguf_q8_0)
    assert f"all {layers} layers on" in inst["state_message"]


def test_reasons_name_each_worker(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    pool = unique("pool")
    join(server, pool, [])  # no GPU
    model = deploy(admin, **gguf_spec(tiny_models.gguf_q8_0, pool, cpu_offloading=False))
    [inst] = wait_for(
        admin, model["id"], lambda xs: "cpu_offloading is off" in (xs[0]["state_message"] or "")
    )
    assert inst["state"] == "pending" and inst["claim"] is None
    # Allowing the CPU (a model edit) places it there.
    admin.patch(f"/api/v1/models/{model['id']}", json={"cpu_offloading": True})
    [inst] = wait_for(admin, model["id"], lambda xs: xs[0]["state"] == "scheduled")
    assert inst["placement"]["kind"] == "cpu" and inst["devices"] == []
    assert inst["command"][inst["command"].index("--n-gpu-layers") + 1] == "0"


def test_claims_are_freed_when_an_instance_is_deleted(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    pool = unique("pool")
    need = one_gpu_need(admin, tiny_models.gguf_q8_0)
    join(server, pool, [need + need // 2])  # room for one instance, not two
    model = deploy(
        admin, **gguf_spec(tiny_models.gguf_q8_0, pool, replicas=2, cpu_offloading=False)
    )
    items = wait_for(
        admin,
        model["id"],
        lambda xs: (
            sorted(x["state"] for x in xs) == ["pending", "scheduled"]
            and all(x["state_message"] for x in xs)
            and any("fit" in x["state_message"] for x in xs)
        ),
    )
    placed = next(x for x in items if x["state"] == "scheduled")
    waiting = next(x for x in items if x["state"] == "pending")
    assert admin.delete(f"/api/v1/instances/{placed['id']}").status_code == 204
    items = wait_for(
        admin,
        model["id"],
        lambda xs: any(x["id"] == waiting["id"] and x["state"] == "scheduled" for x in xs),
    )
    assert len(items) == 2  # the replacement waits in turn


def test_plan_answers_without_creating_anything(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels
) -> None:
    pool = unique("pool")
    join(server, pool, [8 * GIB, 8 * GIB])
    before = admin.get("/api/v1/models").json()["items"]
    body = {"name": unique("plan"), **gguf_spec(tiny_models.gguf_q8_0, pool)}
    r = admin.post("/api/v1/models:plan", json=body)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["fits"] and plan["backend"] == "llama.cpp"
    assert plan["placement"]["kind"] == "one_gpu"
    gpu = next(d for d in plan["devices"] if d["gpu"] is not None)
    assert (
        gpu["weights"] > 0
        and gpu["kv_cache"] > 0
        and gpu["total"] >= gpu["weights"] + gpu["kv_cache"]
    )
    assert plan["estimate"]["layers"] == plan["placement"]["total_layers"]
    assert plan["command"][0] == "llama-server"
    assert admin.get("/api/v1/models").json()["items"] == before

    r = admin.post("/api/v1/models:plan", json={**body, "worker_selector": {"pool": "nowhere"}})
    plan = r.json()
    assert r.status_code == 200 and not plan["fits"] and plan["placement"] is None
    assert any("worker_selector wants pool=nowhere" in line for line in plan["reasons"])

    missing = {**body, "source": {"type": "local", "path": "/nonexistent/model.gguf"}}
    r = admin.post("/api/v1/models:plan", json=missing)
    assert r.status_code == 422 and "does not exist on the server" in r.json()["error"]["message"]


def test_a_broken_model_file_errors_with_the_reason(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 64)
    model = deploy(admin, **gguf_spec(broken, unique("pool")))
    [inst] = wait_for(admin, model["id"], lambda xs: xs[0]["state"] == "error")
    assert inst["state_message"].startswith("cannot estimate the model's memory:")


def test_plan_is_admin_only(server: ServerProcess, anonymous: httpx.Client) -> None:
    r = anonymous.post(
        "/api/v1/models:plan", json={"name": "x", "source": {"type": "local", "path": "/x.gguf"}}
    )
    assert r.status_code == 401


@pytest.mark.parametrize("strategy", ["spread", "binpack"])
def test_replicas_follow_the_strategy(
    server: ServerProcess, admin: httpx.Client, tiny_models: TinyModels, strategy: str
) -> None:
    pool = unique("pool")
    a, _ = join(server, pool, [8 * GIB])
    b, _ = join(server, pool, [8 * GIB])
    model = deploy(
        admin, **gguf_spec(tiny_models.gguf_q8_0, pool, replicas=2, placement_strategy=strategy)
    )
    items = wait_for(admin, model["id"], lambda xs: all(x["state"] == "scheduled" for x in xs))
    workers = {x["worker_id"] for x in items}
    assert workers <= {a, b}
    # spread keeps replicas apart; binpack fills the GPU that still has room
    assert len(workers) == (2 if strategy == "spread" else 1)
