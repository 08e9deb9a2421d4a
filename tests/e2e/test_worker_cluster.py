"""Several workers: replicas spread over them, a lost worker's instances
placed again elsewhere, a server restart that the engines sit out. Real
``corral start`` / ``corral server`` / ``corral worker`` processes with
SIMULATED GPUs (devices files) and real llama-server engines on the CPU."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import install_llama_cpp
from tests.fixtures.tiny_models import TinyModels
from tests.helpers import ServerProcess, client, create_user, deploy, login, run_server, unique
from tests.workers import (
    alive,
    api_key_of,
    devices_file,
    instances,
    openai_client,
    run_worker,
    wait_for,
    wait_running,
)

pytestmark = pytest.mark.timeout(300)

FAST_LIVENESS = {"CORRAL_HEARTBEAT_TIMEOUT": "3", "CORRAL_RESCHEDULE_GRACE": "3"}


@pytest.fixture(autouse=True, scope="module")
def _engines(tmp_path_factory: pytest.TempPathFactory) -> None:
    install_llama_cpp(tmp_path_factory.mktemp("seed"))  # built once per machine, cached


def _admin(server: ServerProcess) -> httpx.Client:
    return client(server.url, login(server.url, "admin", server.admin_password))


def _source(tiny_models: TinyModels) -> dict[str, str]:
    return {"type": "local", "path": str(tiny_models.gguf_f16)}


def _chat(server: ServerProcess, key: str, model: str) -> None:
    with openai_client(server, key) as ai:
        reply = ai.completions.create(model=model, prompt="Hi", max_tokens=2)
        assert reply.usage is not None and reply.usage.completion_tokens > 0


@pytest.fixture
def gpus(tmp_path: Path) -> Path:
    return devices_file(tmp_path / "gpus.yaml", 24)


@pytest.fixture
def main(tmp_path: Path, gpus: Path) -> Iterator[ServerProcess]:
    with run_server(
        tmp_path,
        command="start",
        extra_args=["--worker-name", "main", "--devices-file", str(gpus)],
        env=FAST_LIVENESS,
    ) as server:
        yield server


def test_replicas_spread_and_a_lost_worker_is_replaced(
    main: ServerProcess, gpus: Path, tmp_path: Path, tiny_models: TinyModels
) -> None:
    with _admin(main) as admin:
        _, user = create_user(admin)
        key = api_key_of(user)
        user.close()
        with run_worker(main, tmp_path, "second", devices=gpus) as second:
            workers = wait_for(
                "two ready workers",
                lambda: (
                    [
                        w
                        for w in admin.get("/api/v1/workers").json()["items"]
                        if w["state"] == "ready"
                    ]
                    if len(admin.get("/api/v1/workers").json()["items"]) == 2
                    else None
                ),
                timeout=30,
            )
            assert all(w["status"]["devices"][0]["simulated"] for w in workers)
            model = deploy(admin, name=unique("spread"), source=_source(tiny_models), replicas=2)
            running = wait_running(admin, model["id"], count=2)
            assert sorted(i["worker_name"] for i in running) == ["main", "second"]
            assert all(i["placement"]["kind"] == "one_gpu" for i in running)
            _chat(main, key, model["name"])

            [lost] = [i for i in running if i["worker_name"] == "second"]
            second.process.send_signal(signal.SIGKILL)
            second.process.wait(timeout=10)
            # Its engine does not outlive it.
            wait_for("the killed worker's engine to die", lambda: not alive(lost["pid"]), 10)

            def unreachable() -> bool:
                items = instances(admin, model["id"])
                return any(i["id"] == lost["id"] and i["state"] == "unreachable" for i in items)

            wait_for("the lost instance to be unreachable", unreachable, timeout=20)

            def replaced() -> list[dict[str, Any]] | None:
                items = instances(admin, model["id"])
                ok = [i for i in items if i["state"] == "running" and i["worker_name"] == "main"]
                return ok if len(ok) == 2 else None

            wait_for("both replicas running on main", replaced, timeout=60)
            _chat(main, key, model["name"])
            admin.delete(f"/api/v1/models/{model['id']}")


def test_engines_keep_running_through_a_server_restart(
    tmp_path: Path, gpus: Path, tiny_models: TinyModels
) -> None:
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with run_server(server_dir) as server:
        port, token = int(server.url.rsplit(":", 1)[1]), server.cluster_token
        with run_worker(server, tmp_path, "w1", devices=gpus) as worker:
            with _admin(server) as admin:
                model = deploy(admin, name=unique("restart"), source=_source(tiny_models))
                [before] = wait_running(admin, model["id"])
                _, user = create_user(admin)
                key = api_key_of(user)
                user.close()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=20)
            # The server is gone; the engine is not.
            assert alive(before["pid"])
            with (
                run_server(server_dir, port=port, cluster_token=token) as again,
                _admin(again) as admin,
            ):
                [after] = wait_running(admin, model["id"])
                assert (after["pid"], after["port"]) == (before["pid"], before["port"])
                _chat(again, key, model["name"])
                assert "registering again" not in worker.log()
        # The worker stopped (SIGTERM, exit 0 checked): its engine went with it.
        assert not alive(before["pid"])
    assert os.path.exists(worker.data_dir / "identity.json")
