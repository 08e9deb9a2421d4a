"""Model files that are already on this machine: checked, never copied.

A local GGUF gets the projector the source names (``mmproj``), else one
found in its directory by the rule of :mod:`corral.sources.projectors`
(the server estimates with the same one). A directory holding several
models' projectors should name one, or say ``--no-mmproj``.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.estimate.gguf import split_part_names
from corral.schemas.models import Backend, LocalSource
from corral.sources.projectors import projector_beside
from corral.worker.files.result import ModelFiles, ModelFilesError


def check_local(source: LocalSource, backend: Backend, *, projector: bool = True) -> ModelFiles:
    """The model at ``source.path`` if ``backend`` can load it from there, and
    its projector (unless ``projector`` is False).
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
        return ModelFiles(path=path, mmproj=_projector(source, path) if projector else None)
    for name in parts:
        part = path.parent / name
        if not part.is_file():
            raise ModelFilesError(
                f"{part} does not exist on this worker: {path.name} is part of a "
                f"{len(parts)}-part split model and every part is needed."
            )
        _check_readable(part)
    first = path.parent / parts[0]
    return ModelFiles(path=first, mmproj=_projector(source, first) if projector else None)


def _projector(source: LocalSource, model: Path) -> Path | None:
    if source.mmproj is not None:
        chosen = Path(source.mmproj)
        if not chosen.is_file():
            raise ModelFilesError(f"the projector {chosen} does not exist on this worker.")
    else:
        found = projector_beside(model)
        if found is None:
            return None
        chosen = found
    _check_readable(chosen)
    return chosen


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
