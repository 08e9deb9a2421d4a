"""Model files that are already on this machine: checked, never copied.

A local GGUF gets no projector: a folder of GGUF files may hold several
models' projectors, and guessing wrong would break a text model. Pass
``--mmproj`` in the backend parameters instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.estimate.gguf import split_part_names
from corral.schemas.models import Backend, LocalSource
from corral.worker.files.result import ModelFiles, ModelFilesError


def check_local(source: LocalSource, backend: Backend) -> ModelFiles:
    """The model at ``source.path`` if ``backend`` can load it from there.
    Blocking (file system calls): run it in a thread."""
    path = Path(source.path)
    if not path.exists():
        raise ModelFilesError(f"{path} does not exist on this worker.")
    if path.is_dir():
        return _check_directory(path, backend)
    _check_readable(path)
    parts = split_part_names(path.name)
    if parts is None:
        if backend is Backend.LLAMA_CPP and path.suffix.lower() != ".gguf":
            raise ModelFilesError(f"{path} is not a .gguf file, which llama.cpp needs.")
        if backend is Backend.VLLM and path.suffix.lower() != ".gguf":
            raise ModelFilesError(
                f"{path} is a file, but vLLM needs a model directory with config.json "
                "or a .gguf file."
            )
        return ModelFiles(path=path)
    for name in parts:
        part = path.parent / name
        if not part.is_file():
            raise ModelFilesError(
                f"{part} does not exist on this worker: {path.name} is part of a "
                f"{len(parts)}-part split model and every part is needed."
            )
        _check_readable(part)
    return ModelFiles(path=path.parent / parts[0])


def _check_directory(path: Path, backend: Backend) -> ModelFiles:
    if backend is Backend.LLAMA_CPP:
        raise ModelFilesError(
            f"{path} is a directory, but llama.cpp needs a .gguf file "
            "(the first part, for a split model)."
        )
    _check_readable(path, directory=True)
    config = path / "config.json"
    if not config.is_file():
        raise ModelFilesError(f"{path} has no config.json, so vLLM cannot load it.")
    # Every top-level file, not just config.json: an unreadable weight shard would
    # otherwise only show as a vLLM crash minutes into loading.
    for entry in sorted(path.iterdir()):
        if entry.is_file():
            _check_readable(entry)
    return ModelFiles(path=path)


def _check_readable(path: Path, *, directory: bool = False) -> None:
    if not os.access(path, os.R_OK | (os.X_OK if directory else 0)):
        raise ModelFilesError(
            f"{path} exists, but this worker's process may not read it; "
            "check its owner and permissions."
        )
