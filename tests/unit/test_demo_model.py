"""The demo model ``corral start --demo`` deploys: written once per cache, a
GGUF file corral's own reader accepts as the tiny Llama the fixtures use."""

from __future__ import annotations

from pathlib import Path

from corral.backends.llama_cpp.demo_model import DEMO_FILE_NAME, Shape, demo_model
from corral.estimate.gguf import read_gguf_model
from corral.estimate.source import LocalFile


def test_writes_a_llama_gguf_once_per_cache(tmp_path: Path) -> None:
    messages: list[str] = []
    path = demo_model(tmp_path, messages.append)

    assert path.name == DEMO_FILE_NAME
    assert path.is_relative_to(tmp_path / "demo-models")
    assert messages, "writing the model reports progress"
    model = read_gguf_model([LocalFile(path)])
    assert model.architecture == "llama"
    assert model.arch_value("block_count") == Shape().layers == 2
    assert model.arch_value("context_length") == Shape().context
    assert model.metadata["tokenizer.ggml.model"] == "gpt2"
    assert "<|im_start|>" in str(model.metadata["tokenizer.chat_template"])
    assert not [p for p in path.parent.parent.iterdir() if p.name.startswith(".")], (
        "no staging directory is left behind"
    )

    written = path.stat().st_mtime_ns
    again: list[str] = []
    assert demo_model(tmp_path, again.append) == path
    assert path.stat().st_mtime_ns == written
    assert again == [], "a cached model is not written again"
