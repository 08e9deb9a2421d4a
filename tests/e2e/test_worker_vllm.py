"""A Hugging Face checkpoint deployed through corral: vLLM is chosen on its
own, the default linux/amd64 selector matches this worker, and vLLM's CPU
build serves it through corral's endpoint."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import install_vllm
from tests.fixtures.tiny_models import TinyModels
from tests.helpers import client, create_user, deploy, login, run_server, unique
from tests.workers import api_key_of, openai_client, wait_running

VLLM_START_S = 420
pytestmark = [
    pytest.mark.timeout(VLLM_START_S + 120),
    pytest.mark.skipif(
        platform.machine() not in ("x86_64", "AMD64"),
        reason="vLLM's CPU build is installed for x86-64 only",
    ),
]


def test_a_hugging_face_checkpoint_runs_on_vllm_through_corral(
    tmp_path: Path, tiny_models: TinyModels
) -> None:
    install_vllm(tmp_path / "seed")  # built once per machine, cached
    with (
        run_server(tmp_path, command="start", extra_args=["--worker-name", "main"]) as server,
        client(server.url, login(server.url, "admin", server.admin_password)) as admin,
    ):
        model = deploy(
            admin,
            name=unique("tiny-hf"),
            source={"type": "local", "path": str(tiny_models.hf_dir)},
            # vLLM's CPU build takes a quarter of RAM for its KV cache unless told.
            env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        )
        assert model["backend"] == "vllm"
        assert model["worker_selector"] == {"os": "linux", "arch": "amd64"}
        [worker] = admin.get("/api/v1/workers").json()["items"]
        assert {worker["labels"]["os"], worker["labels"]["arch"]} == {"linux", "amd64"}
        [instance] = wait_running(admin, model["id"], timeout=VLLM_START_S)
        assert instance["worker_name"] == "main"
        assert "--served-model-name" in instance["command"]
        _, user = create_user(admin)
        key = api_key_of(user)
        user.close()
        with openai_client(server, key) as ai:
            messages: Any = [{"role": "user", "content": "Hello"}]
            answer = ai.chat.completions.create(
                model=model["name"], messages=messages, max_tokens=5
            )
            assert answer.usage is not None
            assert 0 < answer.usage.completion_tokens <= 5
            chunks = list(
                ai.chat.completions.create(
                    model=model["name"], messages=messages, max_tokens=5, stream=True
                )
            )
            assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) >= 1
        assert admin.delete(f"/api/v1/models/{model['id']}").status_code == 204
        r = httpx.get(f"{server.url}/healthz")
        assert r.status_code == 200
