"""The model spec's own rules: names, sources, backend choice."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from corral.schemas.models import (
    Backend,
    HuggingFaceSource,
    LocalSource,
    ModelCreate,
    ModelName,
    ModelScopeSource,
    resolve_backend,
)

names = TypeAdapter(ModelName)


@pytest.mark.parametrize(
    "name", ["gpt-4o", "Qwen/Qwen2.5-7B-Instruct", "ft:gpt-4o:org:x", "llama3.1_8b", "a"]
)
def test_openai_style_names_are_accepted(name: str) -> None:
    assert names.validate_python(name) == name


@pytest.mark.parametrize("name", ["", " lead", "has space", "-dash", "tab\tin", "x" * 129, "é"])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        names.validate_python(name)


@pytest.mark.parametrize(
    ("source", "backend"),
    [
        (
            HuggingFaceSource(type="huggingface", repo_id="a/b", filename="*Q4_K_M.gguf"),
            Backend.LLAMA_CPP,
        ),
        (HuggingFaceSource(type="huggingface", repo_id="a/b-GGUF"), Backend.VLLM),
        (
            HuggingFaceSource(type="huggingface", repo_id="a/b", filename="model.safetensors"),
            Backend.VLLM,
        ),
        (ModelScopeSource(type="modelscope", model_id="a/b", filename="x.GGUF"), Backend.LLAMA_CPP),
        (LocalSource(type="local", path="/m/x-00001-of-00002.gguf"), Backend.LLAMA_CPP),
        (LocalSource(type="local", path="/m/llama"), Backend.VLLM),
    ],
)
def test_auto_backend(
    source: HuggingFaceSource | ModelScopeSource | LocalSource, backend: Backend
) -> None:
    assert resolve_backend(source, "auto") is backend


def test_explicit_backend_and_alias_win() -> None:
    gguf = LocalSource(type="local", path="/m/x.gguf")
    assert resolve_backend(gguf, "vllm") is Backend.VLLM
    assert (
        resolve_backend(LocalSource(type="local", path="/m/dir"), "llama-box") is Backend.LLAMA_CPP
    )


def test_defaults_are_what_the_brief_says() -> None:
    spec = ModelCreate.model_validate({"name": "m", "source": {"type": "local", "path": "/m.gguf"}})
    assert spec.replicas == 1
    assert spec.cpu_offloading and spec.distributed_inference and spec.restart_on_error
    assert spec.placement_strategy == "spread"
    assert spec.worker_selector is None  # the server fills the vLLM default in
    assert spec.backend == "auto"
