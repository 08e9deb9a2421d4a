"""What fetching a model's files gives the supervisor, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError


@dataclass(frozen=True)
class ModelFiles:
    path: Path
    """The ``.gguf`` file to run (the first part of a split model) or the
    model directory (a checkpoint for vLLM)."""
    mmproj: Path | None = None
    """The multimodal projector GGUF, for llama.cpp's ``--mmproj``."""


class ModelFilesError(CorralError):
    """The files cannot be had. The message is a full sentence that names the
    path, repo or numbers involved: it becomes the instance's state message."""

    code = "model_files"
