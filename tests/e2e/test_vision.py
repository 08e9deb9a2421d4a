"""Vision models through corral on both real engines: a tiny random
Idefics3 model (``tests/fixtures/tiny_vlm.py``) as GGUF + projector on
llama-server and as a checkpoint on vLLM, both deployed from one directory
without saying they are vision models; corral finds out (the projector
beside the GGUF, the vision config), launches them with what they need and
routes images to them.

Random weights say nothing sensible, so the proof that an image was encoded
is the prompt's token count: it grows by the image's tokens (38 on
llama.cpp, 19 on vLLM), once per image. An image given by URL is fetched by
the gateway from a real HTTPS server on 127.0.0.2 (let through the fetch
guard for this test) and counts the same; the same URL on 127.0.0.1 is
refused.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.backends import install_llama_cpp, install_vllm
from tests.fixtures.tiny_vlm import (
    LLAMA_IMAGE_TOKENS,
    VLLM_IMAGE_TOKENS,
    TinyVlm,
    cached,
    vllm_python,
)
from tests.helpers import ServerProcess, client, create_user, deploy, login, run_server, unique
from tests.images import GUARDED_HOST, data_uri, image_part, image_server, png
from tests.workers import api_key_of, wait_running

VLLM_START_S = 420
pytestmark = [
    pytest.mark.timeout(VLLM_START_S + 240),
    pytest.mark.skipif(
        platform.machine() not in ("x86_64", "AMD64"),
        reason="vLLM's CPU build is installed for x86-64 only",
    ),
]


@dataclass
class Deployed:
    server: ServerProcess
    key: str
    images: str
    """https://127.0.0.2:PORT, where /cat.png is."""
    port: int
    models: dict[str, dict[str, Any]]
    """By engine: the model as the API shows it once running."""
    instances: dict[str, dict[str, Any]]
    plan: dict[str, Any]
    """The plan of the GGUF form, asked before deploying."""

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.server.url}/v1", api_key=self.key, max_retries=0, timeout=120
        )

    def prompt_tokens(self, engine: str, *images: str) -> int:
        content: list[dict[str, Any]] = [{"type": "text", "text": "Describe this picture."}]
        content += [image_part(url) for url in images]
        with self.sdk() as sdk:
            answer = sdk.chat.completions.create(
                model=self.models[engine]["name"],
                messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
                max_tokens=2,
            )
        assert answer.usage is not None
        return answer.usage.prompt_tokens


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> TinyVlm:
    seed = tmp_path_factory.mktemp("seed")
    install_llama_cpp(seed)
    install_vllm(seed)  # fails under CI, skips elsewhere, when not installed
    python = vllm_python()
    assert python is not None
    return cached(python)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, vlm: TinyVlm) -> Iterator[Deployed]:
    directory = Path(tmp_path_factory.mktemp("vision"))
    with image_server(directory, {"/cat.png": (200, "image/png", png(64, 64))}) as images:
        env = {
            "CORRAL_IMAGE_FETCH_NETWORKS": f"{GUARDED_HOST}/32",
            "SSL_CERT_FILE": str(images.ca_file),
        }
        with (
            run_server(
                directory, command="start", extra_args=["--worker-name", "main"], env=env
            ) as server,
            client(server.url, login(server.url, "admin", server.admin_password)) as admin,
        ):
            gguf = {"source": {"type": "local", "path": str(vlm.gguf)}}
            r = admin.post("/api/v1/models:plan", json={"name": "plan", **gguf})
            assert r.status_code == 200, r.text
            plan = r.json()
            llama = deploy(admin, name=unique("vlm-gguf"), **gguf)
            hf = deploy(
                admin,
                name=unique("vlm-hf"),
                source={"type": "local", "path": str(vlm.hf_dir)},
                env={"VLLM_CPU_KVCACHE_SPACE": "1"},
            )
            assert (llama["backend"], hf["backend"]) == ("llama.cpp", "vllm")
            instances = {
                "llama.cpp": wait_running(admin, llama["id"])[0],
                "vllm": wait_running(admin, hf["id"], timeout=VLLM_START_S)[0],
            }
            models = {
                engine: admin.get(f"/api/v1/models/{m['id']}").json()
                for engine, m in (("llama.cpp", llama), ("vllm", hf))
            }
            _, user = create_user(admin)
            key = api_key_of(user)
            user.close()
            yield Deployed(server, key, images.url, images.port, models, instances, plan)


def test_both_forms_are_found_to_be_vision_models(deployed: Deployed, vlm: TinyVlm) -> None:
    plan = deployed.plan
    assert plan["categories"] == ["llm", "vision"]
    assert plan["estimate"]["projector"] == str(vlm.mmproj)
    # The projector's weights (0.9 MB) and its encoder's compute buffer.
    assert plan["estimate"]["projector_bytes"] > vlm.mmproj.stat().st_size - 64 * 1024
    assert plan["command"][plan["command"].index("--mmproj") + 1] == str(vlm.mmproj)
    for engine, model in deployed.models.items():
        assert "vision" in model["categories"], engine
    llama = deployed.instances["llama.cpp"]["command"]
    assert llama[llama.index("--mmproj") + 1] == str(vlm.mmproj)
    vllm = deployed.instances["vllm"]["command"]
    assert vllm[vllm.index("--limit-mm-per-prompt") + 1] == '{"image": 4}'
    with deployed.sdk() as sdk:
        listed = {m.id: m for m in sdk.models.list()}
    for model in deployed.models.values():
        assert "vision" in (listed[model["name"]].model_extra or {})["categories"]


@pytest.mark.parametrize(
    ("engine", "per_image"), [("llama.cpp", LLAMA_IMAGE_TOKENS), ("vllm", VLLM_IMAGE_TOKENS)]
)
def test_an_image_adds_its_tokens_to_the_prompt(
    deployed: Deployed, engine: str, per_image: int
) -> None:
    text = deployed.prompt_tokens(engine)
    one = deployed.prompt_tokens(engine, data_uri(png(64, 64)))
    assert one - text == per_image
    # Any size costs the same on this model (images are resized to 64 px).
    two = deployed.prompt_tokens(engine, data_uri(png(200, 120)), data_uri(png(16, 16)))
    assert two - text == 2 * per_image
    fetched = deployed.prompt_tokens(engine, f"{deployed.images}/cat.png")
    assert fetched == one


@pytest.mark.parametrize("engine", ["llama.cpp", "vllm"])
def test_bad_images_are_refused_and_the_engine_keeps_serving(
    deployed: Deployed, engine: str
) -> None:
    name = deployed.models[engine]["name"]
    bad = [
        (data_uri(png()[:50]), "invalid_image"),
        ("data:image/png;base64,%%%", "invalid_image"),
        (data_uri(b"%PDF-1.7", "image/png"), "unsupported_image_type"),
        (f"https://127.0.0.1:{deployed.port}/cat.png", "invalid_image_url"),
    ]
    with deployed.sdk() as sdk:
        for url, code in bad:
            with pytest.raises(openai.BadRequestError) as e:
                sdk.chat.completions.create(
                    model=name,
                    messages=[{"role": "user", "content": [image_part(url)]}],  # type: ignore[misc,list-item]
                    max_tokens=2,
                )
            assert e.value.code == code, e.value
    assert deployed.prompt_tokens(engine, data_uri(png())) > deployed.prompt_tokens(engine)
