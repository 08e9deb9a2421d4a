"""Model specs: validation, backend choice, replicas and their instances."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.helpers import deploy, unique

GGUF = {
    "type": "huggingface",
    "repo_id": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
    "filename": "*q4_k_m.gguf",
}
SAFETENSORS = {"type": "huggingface", "repo_id": "Qwen/Qwen2.5-0.5B-Instruct"}


def _instances(admin: httpx.Client, model_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = admin.get(
        "/api/v1/instances", params={"model_id": model_id}
    ).json()["items"]
    return items


@pytest.mark.parametrize(
    ("source", "backend", "expected"),
    [
        (GGUF, "auto", "llama.cpp"),
        ({"type": "local", "path": "/models/tiny.Q8_0.GGUF"}, "auto", "llama.cpp"),
        (
            {"type": "modelscope", "model_id": "qwen/Qwen2-GGUF", "filename": "q.gguf"},
            "auto",
            "llama.cpp",
        ),
        (SAFETENSORS, "auto", "vllm"),
        ({"type": "local", "path": "/models/llama-3-8b"}, "auto", "vllm"),
        (SAFETENSORS, "llama-box", "llama.cpp"),
        (GGUF, "vllm", "vllm"),
    ],
)
def test_backend_resolution(
    admin: httpx.Client, source: dict[str, str], backend: str, expected: str
) -> None:
    model = deploy(admin, source=source, backend=backend, replicas=0)
    assert model["backend"] == expected
    default_selector = {"os": "linux", "arch": "amd64"} if expected == "vllm" else {}
    assert model["worker_selector"] == default_selector


def test_explicit_worker_selector_wins_even_empty(admin: httpx.Client) -> None:
    assert deploy(admin, source=SAFETENSORS, worker_selector={})["worker_selector"] == {}
    chosen = {"gpu": "h100"}
    assert deploy(admin, source=SAFETENSORS, worker_selector=chosen)["worker_selector"] == chosen


def test_create_get_list_patch_delete(admin: httpx.Client) -> None:
    model = deploy(
        admin,
        source=GGUF,
        backend_version="b4000",
        backend_parameters=["--ctx-size=4096", "--no-mmap"],
        env={"LLAMA_ARG_THREADS": "4"},
        replicas=2,
        placement_strategy="binpack",
        gpu_selector=["node-1:0", "node-1:1"],
        cpu_offloading=False,
        distributed_inference=False,
        restart_on_error=False,
        categories=["llm"],
    )
    assert model["ready_replicas"] == 0
    got = admin.get(f"/api/v1/models/{model['id']}").json()
    assert got == model
    assert admin.get("/api/v1/models", params={"name": model["name"]}).json()["items"] == [model]
    assert len(_instances(admin, model["id"])) == 2

    r = admin.patch(
        f"/api/v1/models/{model['id']}",
        json={
            "replicas": 3,
            "backend_parameters": ["--ctx-size=8192"],
            "worker_selector": {"zone": "b"},
            "backend_version": None,
        },
    )
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["replicas"] == 3
    assert patched["backend_parameters"] == ["--ctx-size=8192"]
    assert patched["worker_selector"] == {"zone": "b"}
    assert patched["backend_version"] is None
    assert patched["env"] == {"LLAMA_ARG_THREADS": "4"}  # untouched
    assert len(_instances(admin, model["id"])) == 3

    assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204
    assert admin.get(f"/api/v1/models/{model['id']}").status_code == 404
    assert _instances(admin, model["id"]) == []


def test_scaling_reconciles_instances(admin: httpx.Client) -> None:
    model = deploy(admin, replicas=1)
    first = _instances(admin, model["id"])
    assert [i["state"] for i in first] == ["pending"]
    assert first[0]["name"].startswith(model["name"])
    for replicas in (4, 2, 0, 1):
        r = admin.patch(f"/api/v1/models/{model['id']}", json={"replicas": replicas})
        assert r.status_code == 200
        assert len(_instances(admin, model["id"])) == replicas
    # Scaling down keeps the oldest instances.
    r = admin.patch(f"/api/v1/models/{model['id']}", json={"replicas": 3})
    kept = _instances(admin, model["id"])
    admin.patch(f"/api/v1/models/{model['id']}", json={"replicas": 1})
    assert [i["id"] for i in _instances(admin, model["id"])] == [kept[0]["id"]]


def test_deleting_an_instance_replaces_it(admin: httpx.Client) -> None:
    model = deploy(admin, replicas=1)
    [old] = _instances(admin, model["id"])
    assert admin.get(f"/api/v1/instances/{old['id']}").json()["model_name"] == model["name"]
    assert admin.delete(f"/api/v1/instances/{old['id']}").status_code == 204
    [new] = _instances(admin, model["id"])
    assert new["id"] != old["id"] and new["state"] == "pending"
    assert admin.get(f"/api/v1/instances/{old['id']}").status_code == 404
    assert admin.delete(f"/api/v1/instances/{old['id']}").status_code == 404


def test_instance_filters(admin: httpx.Client) -> None:
    model = deploy(admin, replicas=2)
    pending = admin.get("/api/v1/instances", params={"model_id": model["id"], "state": "pending"})
    assert len(pending.json()["items"]) == 2
    running = admin.get("/api/v1/instances", params={"model_id": model["id"], "state": "running"})
    assert running.json()["items"] == []
    r = admin.get("/api/v1/instances", params={"state": "sleeping"})
    assert r.status_code == 422
    assert "state" in r.json()["error"]["message"]


def test_duplicate_name_is_409(admin: httpx.Client) -> None:
    model = deploy(admin)
    r = admin.post("/api/v1/models", json={"name": model["name"], "source": GGUF})
    assert r.status_code == 409
    assert model["name"] in r.json()["error"]["message"]


def test_twenty_parallel_creates_of_one_name_make_exactly_one(admin: httpx.Client) -> None:
    name = unique("race")
    body = {"name": name, "source": GGUF, "replicas": 2}

    def create(_: int) -> int:
        with httpx.Client(base_url=admin.base_url, headers=admin.headers, timeout=60) as c:
            return c.post("/api/v1/models", json=body).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(create, range(20)))
    assert sorted(codes) == [201] + [409] * 19
    [model] = admin.get("/api/v1/models", params={"name": name}).json()["items"]
    assert len(_instances(admin, model["id"])) == 2


def test_parallel_scaling_converges(admin: httpx.Client) -> None:
    model = deploy(admin, replicas=1)

    def scale(n: int) -> int:
        with httpx.Client(base_url=admin.base_url, headers=admin.headers, timeout=60) as c:
            return c.patch(f"/api/v1/models/{model['id']}", json={"replicas": n}).status_code

    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(scale, [3] * 10)) == {200}
    assert len(_instances(admin, model["id"])) == 3


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "-leading-dash"}, "name"),
        ({"replicas": -1}, "replicas"),
        ({"replicas": "two"}, "replicas"),
        ({"replicas": 1.5}, "replicas"),
        ({"backend": "tensorrt"}, "backend"),
        ({"placement_strategy": "random"}, "placement_strategy"),
        ({"worker_selector": {"bad key": "x"}}, "worker_selector"),
        ({"worker_selector": {"os": "has space"}}, "worker_selector"),
        ({"worker_selector": ["os=linux"]}, "worker_selector"),
        ({"gpu_selector": ["node-1"]}, "gpu_selector"),
        ({"gpu_selector": ["node-1:-1"]}, "gpu_selector"),
        ({"gpu_selector": ["node-1:0", "node-1:0"]}, "gpu_selector"),
        ({"backend_parameters": "--ctx-size 4096"}, "backend_parameters"),
        ({"backend_parameters": [""]}, "backend_parameters"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"OK": 1}}, "env"),
        ({"cpu_offloading": "maybe"}, "cpu_offloading"),
        ({"categories": ["audio"]}, "categories"),
        ({"surprise": True}, "surprise"),
        ({"source": {"type": "s3", "bucket": "x"}}, "source"),
        ({"source": {"type": "huggingface", "repo_id": "no-slash"}}, "repo_id"),
        ({"source": {"type": "local", "path": "relative/model.gguf"}}, "path"),
        ({"source": {"type": "local"}}, "path"),
        ({"source": None}, "source"),
    ],
)
def test_bad_model_spec_is_422_naming_the_field(
    admin: httpx.Client, override: dict[str, Any], field: str
) -> None:
    body = {"name": unique("bad"), "source": GGUF, **override}
    r = admin.post("/api/v1/models", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert admin.get("/api/v1/models", params={"name": body["name"]}).json()["items"] == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"replicas": None}, "replicas"),
        ({"replicas": -3}, "replicas"),
        ({"name": "renamed"}, "name"),
        ({"source": GGUF}, "source"),
        ({"env": None}, "env"),
        ({"gpu_selector": ["x"]}, "gpu_selector"),
    ],
)
def test_bad_patch_is_422_and_changes_nothing(
    admin: httpx.Client, patch: dict[str, Any], field: str
) -> None:
    model = deploy(admin, replicas=1)
    r = admin.patch(f"/api/v1/models/{model['id']}", json=patch)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]
    assert admin.get(f"/api/v1/models/{model['id']}").json() == model
    assert len(_instances(admin, model["id"])) == 1


def test_unknown_model_is_404(admin: httpx.Client) -> None:
    for method, body in (("GET", None), ("PATCH", {"replicas": 1}), ("DELETE", None)):
        r = admin.request(method, "/api/v1/models/987654", json=body)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "not_found"
    r = admin.get("/api/v1/models/not-a-number")
    assert r.status_code == 422


def test_malformed_json_and_unknown_routes(admin: httpx.Client) -> None:
    r = admin.post(
        "/api/v1/models", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    r = admin.post(
        "/api/v1/models", content=b"[1, 2]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    r = admin.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = admin.put("/api/v1/models")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
