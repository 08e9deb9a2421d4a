"""What a launch reads from the model files themselves."""

from __future__ import annotations

import json
from pathlib import Path

from corral.estimate.gguf import read_gguf_model
from corral.estimate.source import LocalFile


def context_length(model: Path) -> int | None:
    """The model's training context, from its GGUF header or config.json.

    A broken GGUF raises ``InvalidModelFile`` with the reason, before any
    engine starts.
    """
    if model.suffix.lower() == ".gguf":
        value = read_gguf_model([LocalFile(model)]).arch_value("context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    config = model / "config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_position_embeddings")
        return int(value) if isinstance(value, int) else None
    return None
