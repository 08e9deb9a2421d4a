"""Model files from ModelScope, through the optional ``modelscope`` package.

The package is imported when a ModelScope source is fetched, not with this
module: it is large and most workers never need it. The files are selected by
the same rules as for Hugging Face (``selection``), from the listing of
``HubApi.get_model_files``, and downloaded by ``snapshot_download`` limited to
exactly those files. Unlike Hugging Face there is no disk check (its cache
layout does not tell what is already there) and progress is reported only as
1.0 at the end.
"""

from __future__ import annotations

import asyncio
import glob
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from corral.schemas.models import Backend, ModelScopeSource
from corral.worker.files.locks import repo_lock
from corral.worker.files.progress import Progress
from corral.worker.files.result import ModelFiles, ModelFilesError
from corral.worker.files.selection import RepoEntry, select

DEFAULT_REVISION = "master"

NOT_INSTALLED = (
    "ModelScope sources need the modelscope package on this worker: pip install modelscope"
)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "modelscope":
            raise ModelFilesError(NOT_INSTALLED) from e
        raise


async def fetch_modelscope(
    source: ModelScopeSource,
    backend: Backend,
    cache_dir: Path,
    on_progress: Progress,
    *,
    projector: bool = True,
) -> ModelFiles:
    _import("modelscope")
    revision = source.revision or DEFAULT_REVISION
    where = f"ModelScope model {source.model_id} at revision {revision}"
    entries = await asyncio.to_thread(_list_model, source.model_id, revision, where)
    selection = select(
        entries, backend, source.filename, where, mmproj=source.mmproj, projector=projector
    )
    lock = await asyncio.to_thread(repo_lock, cache_dir, "modelscope", source.model_id, revision)
    async with lock:
        directory = await asyncio.to_thread(
            _download, source.model_id, revision, cache_dir / "modelscope", selection.files, where
        )
    on_progress(1.0)
    if selection.main is None:
        return ModelFiles(path=directory)
    return ModelFiles(
        path=directory / selection.main,
        mmproj=directory / selection.mmproj if selection.mmproj else None,
    )


# modelscope raises requests' errors, its own and ValueError for the same kinds
# of failure and documents none of them, hence the broad excepts below: each
# becomes a ModelFilesError with modelscope's own words.


def _list_model(model_id: str, revision: str, where: str) -> list[RepoEntry]:
    api = _import("modelscope.hub.api").HubApi()
    try:
        listing: list[dict[str, Any]] = api.get_model_files(
            model_id=model_id, revision=revision, recursive=True
        )
    except Exception as e:
        raise ModelFilesError(f"Listing the files of {where} failed: {e}") from e
    return [
        RepoEntry(name=str(f["Path"]), size=int(f.get("Size") or 0))
        for f in listing
        if f.get("Type") != "tree"
    ]


def _download(
    model_id: str, revision: str, cache_dir: Path, files: tuple[str, ...], where: str
) -> Path:
    modelscope = _import("modelscope")
    try:
        directory = modelscope.snapshot_download(
            model_id,
            revision=revision,
            cache_dir=str(cache_dir),
            # Exact names, escaped: allow_patterns are globs.
            allow_patterns=[glob.escape(name) for name in files],
        )
    except Exception as e:
        raise ModelFilesError(f"Downloading {where} failed: {e}") from e
    return Path(directory)
