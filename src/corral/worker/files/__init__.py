"""The files an instance runs from: checked when local, downloaded into the
worker's model cache otherwise.

The supervisor calls :func:`fetch_model_files` and gets a :class:`ModelFiles`,
or a :class:`ModelFilesError` whose message is the instance's state message.

Modules: ``selection`` (which files a backend needs; its docstring states the
GGUF, projector and checkpoint rules), ``local``, ``huggingface``,
``modelscope``, ``progress`` (measured from the cache), ``locks`` (one fetch
per repo and revision across processes), ``space`` (the disk check).

Cache layout under ``cache_dir``: ``huggingface/`` (huggingface_hub's cache
layout, shareable with ``HF_HUB_CACHE``), ``modelscope/``, ``locks/``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.schemas.models import Backend, HuggingFaceSource, LocalSource, ModelScopeSource
from corral.worker.files.huggingface import fetch_huggingface
from corral.worker.files.local import check_local
from corral.worker.files.modelscope import fetch_modelscope
from corral.worker.files.progress import Progress
from corral.worker.files.result import ModelFiles, ModelFilesError
from corral.worker.files.space import DiskFree, disk_free

__all__ = ["ModelFiles", "ModelFilesError", "fetch_model_files"]


async def fetch_model_files(
    source: HuggingFaceSource | ModelScopeSource | LocalSource,
    backend: Backend,
    cache_dir: Path,
    on_progress: Progress,
    *,
    hf_token: str | None = None,
    hf_endpoint: str | None = None,
    disk_free: DiskFree = disk_free,
    projector: bool = True,
) -> ModelFiles:
    """The model's files, downloading what the cache lacks.

    ``on_progress`` gets the fraction (0..1) of the model's bytes in the cache,
    at most about twice a second while downloading (or waiting for another
    fetch of the same repo), and 1.0 exactly once, when every file is in place;
    a model already cached reports just 1.0.

    ``hf_token`` / ``hf_endpoint``: ``None`` means huggingface_hub's defaults
    (``HF_TOKEN`` or its token file; ``HF_ENDPOINT`` as it was when
    huggingface_hub was imported, else https://huggingface.co).
    ``disk_free`` gives the free bytes of a directory's file system.
    ``projector``: look for a GGUF model's multimodal projector (False when
    the user's backend parameters say ``--no-mmproj`` or name their own).
    """
    if isinstance(source, LocalSource):
        files = await asyncio.to_thread(check_local, source, backend, projector=projector)
        on_progress(1.0)
        return files
    if isinstance(source, ModelScopeSource):
        return await fetch_modelscope(source, backend, cache_dir, on_progress, projector=projector)
    return await fetch_huggingface(
        source,
        backend,
        cache_dir,
        on_progress,
        hf_token=hf_token,
        hf_endpoint=hf_endpoint,
        disk_free=disk_free,
        projector=projector,
    )
