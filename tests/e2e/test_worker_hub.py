"""A GGUF model from a (FAKE) Hugging Face hub, end to end: the server
estimates it from the file's header over HTTP ranges, the worker downloads
it through huggingface_hub with progress on the instance, llama-server
serves it through corral. The hub is the only fake: the real one cannot be
reached from tests (``tests/fake_hub.py``, real HTTP over loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.backends import install_llama_cpp
from tests.fake_hub import serve_hub
from tests.fixtures.tiny_models import TinyModels
from tests.helpers import client, create_user, deploy, login, run_server, unique
from tests.workers import api_key_of, instances, openai_client, wait_for, wait_running

pytestmark = pytest.mark.timeout(300)


def test_a_hub_model_is_downloaded_with_progress_and_served(
    tmp_path: Path, tiny_models: TinyModels
) -> None:
    install_llama_cpp(tmp_path / "seed")  # built once per machine, cached
    with serve_hub(tmp_path / "hub") as hub:
        hub.add_repo("org/tiny-GGUF", {"tiny-q8_0.gguf": tiny_models.gguf_q8_0.read_bytes()})
        hub.chunk_delay = 0.002  # ~2 s for the file: slow enough to watch it come in
        with (
            run_server(tmp_path, command="start", env={"HF_ENDPOINT": hub.url}) as server,
            client(server.url, login(server.url, "admin", server.admin_password)) as admin,
        ):
            model = deploy(
                admin,
                name=unique("hub"),
                source={"type": "huggingface", "repo_id": "org/tiny-GGUF", "filename": "*.gguf"},
                replicas=2,
            )
            assert model["backend"] == "llama.cpp"

            def downloading() -> dict[str, Any] | None:
                for i in instances(admin, model["id"]):
                    progress = i["download_progress"]
                    if i["state"] == "downloading" and progress is not None and 0 < progress < 1:
                        return i
                return None

            seen = wait_for("download progress on an instance", downloading, 60, every=0.05)
            assert "downloading the model files" in seen["state_message"]
            wait_running(admin, model["id"], count=2)
            # Two instances, one download of the file's body (range reads of
            # its header by the server's estimate aside).
            whole = [r for r in hub.body_gets("org/tiny-GGUF", "tiny-q8_0.gguf") if not r.range]
            assert len(whole) == 1
            cached = list((server.data_dir / "worker" / "models").rglob("tiny-q8_0.gguf"))
            assert cached
            _, user = create_user(admin)
            with openai_client(server, api_key_of(user)) as ai:
                reply = ai.completions.create(model=model["name"], prompt="Hi", max_tokens=2)
                assert reply.usage is not None
            user.close()
            admin.delete(f"/api/v1/models/{model['id']}")
