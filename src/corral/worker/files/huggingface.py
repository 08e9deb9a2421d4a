"""Model files from the Hugging Face Hub, or a mirror of it, into the worker's
cache in huggingface_hub's own layout (``<cache>/huggingface/models--org--name``).

The steps: list the repo at the revision with sizes (one API call, which also
resolves the revision to a commit), select the files (``selection``), then under
the repo's lock (``locks``) check the disk and download the missing files one
by one with ``hf_hub_download`` pinned to that commit, so every file comes from
the same snapshot. Progress is read from the cache (``progress``).

``huggingface_hub`` reads ``HF_ENDPOINT`` once, when it is imported; the
endpoint is therefore always passed explicitly. The token, when not given, is
huggingface_hub's own choice (``HF_TOKEN``, then the token file).

A cancelled fetch stops between files; the file being downloaded then finishes
in its thread, since huggingface_hub cannot be interrupted (its blob lock keeps
the next fetch from downloading it again).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name

from corral.schemas.models import Backend, HuggingFaceSource
from corral.worker.files.locks import repo_lock
from corral.worker.files.progress import (
    CachedFile,
    Progress,
    missing_bytes,
    present_bytes,
    reporting,
)
from corral.worker.files.result import ModelFiles, ModelFilesError
from corral.worker.files.selection import RepoEntry, Selection, select
from corral.worker.files.space import DiskFree, check_free_space

logger = logging.getLogger(__name__)

LIBRARY_NAME = "corral"


@dataclass(frozen=True)
class _Repo:
    """Where one fetch reads from and writes to."""

    repo_id: str
    revision: str
    endpoint: str
    token: str | None
    cache: Path
    """``<cache_dir>/huggingface``, resolved as huggingface_hub resolves it."""

    @property
    def where(self) -> str:
        return f"Hugging Face repo {self.repo_id} at revision {self.revision}"


@dataclass(frozen=True)
class _Listing:
    commit: str
    entries: tuple[RepoEntry, ...]


async def fetch_huggingface(
    source: HuggingFaceSource,
    backend: Backend,
    cache_dir: Path,
    on_progress: Progress,
    *,
    hf_token: str | None,
    hf_endpoint: str | None,
    disk_free: DiskFree,
    projector: bool = True,
) -> ModelFiles:
    repo = _Repo(
        repo_id=source.repo_id,
        revision=source.revision,
        endpoint=(hf_endpoint or constants.ENDPOINT).rstrip("/"),
        token=hf_token,
        cache=(cache_dir / "huggingface").resolve(),
    )
    listing = await asyncio.to_thread(_list_repo, repo)
    selection = select(
        listing.entries,
        backend,
        source.filename,
        repo.where,
        mmproj=source.mmproj,
        projector=projector,
    )
    files = _cached_files(repo, listing, selection)
    total = sum(f.size for f in files)
    lock = await asyncio.to_thread(
        repo_lock, cache_dir, "huggingface", repo.repo_id, listing.commit
    )

    def measure() -> float:
        return present_bytes(files) / total if total else 0.0

    async with reporting(measure, on_progress), lock:
        missing = await asyncio.to_thread(missing_bytes, files)
        check_free_space(cache_dir, missing, disk_free)
        if missing:
            logger.info(
                "downloading %d bytes of %s@%s (%d files)",
                missing,
                repo.repo_id,
                listing.commit,
                len(files),
            )
        paths = {}
        for name in selection.files:
            paths[name] = await asyncio.to_thread(_download, repo, name, listing.commit)
    on_progress(1.0)
    return _result(selection, paths)


def _cached_files(repo: _Repo, listing: _Listing, selection: Selection) -> list[CachedFile]:
    entries = {e.name: e for e in listing.entries}
    storage = repo.cache / repo_folder_name(repo_id=repo.repo_id, repo_type="model")
    return [
        CachedFile(
            pointer=storage / "snapshots" / listing.commit / name,
            blob=storage / "blobs" / blob if (blob := entries[name].blob) else None,
            size=entries[name].size,
        )
        for name in selection.files
    ]


def _result(selection: Selection, paths: dict[str, Path]) -> ModelFiles:
    if selection.main is None:
        # config.json is at the top of every checkpoint selection (see selection).
        return ModelFiles(path=paths["config.json"].parent)
    return ModelFiles(
        path=paths[selection.main],
        mmproj=paths[selection.mmproj] if selection.mmproj else None,
    )


def _list_repo(repo: _Repo) -> _Listing:
    api = HfApi(endpoint=repo.endpoint, token=repo.token, library_name=LIBRARY_NAME)
    try:
        info = api.model_info(repo.repo_id, revision=repo.revision, files_metadata=True)
    except (HfHubHTTPError, httpx2.HTTPError) as e:
        raise _hub_error(e, repo) from e
    entries = tuple(
        RepoEntry(
            name=s.rfilename,
            size=s.lfs.size if s.lfs else (s.size or 0),
            blob=s.lfs.sha256 if s.lfs else s.blob_id,
        )
        for s in info.siblings or []
    )
    # A mirror that does not resolve revisions to commits still serves by name.
    return _Listing(commit=info.sha or repo.revision, entries=entries)


def _download(repo: _Repo, name: str, commit: str) -> Path:
    try:
        return Path(
            hf_hub_download(
                repo.repo_id,
                name,
                revision=commit,
                cache_dir=repo.cache,
                token=repo.token,
                endpoint=repo.endpoint,
                library_name=LIBRARY_NAME,
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, httpx2.HTTPError) as e:
        raise _hub_error(e, repo) from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ModelFilesError(
                f"The disk holding {repo.cache} filled up while downloading {name} "
                f"from {repo.where}."
            ) from e
        raise ModelFilesError(f"Downloading {name} from {repo.where} failed: {e}") from e


def _hub_error(error: Exception, repo: _Repo) -> ModelFilesError:
    """One sentence for what went wrong talking to the hub."""
    status = error.response.status_code if isinstance(error, HfHubHTTPError) else None
    if isinstance(error, GatedRepoError):
        if status == 401:
            return ModelFilesError(
                f"{repo.where} is gated and {repo.endpoint} wants a token: set HF_TOKEN "
                "for this worker to a token of an account that accepted the repo's terms."
            )
        return ModelFilesError(
            f"{repo.where} is gated and the token this worker sent has no access to it: "
            "accept the repo's terms on the Hub with the token's account, or set HF_TOKEN "
            "to another account's token."
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelFilesError(
            f"{repo.where} was not found at {repo.endpoint} (HTTP {status}); check the repo "
            "id, and if it is private, set HF_TOKEN for this worker to a token that can read it."
        )
    if isinstance(error, RevisionNotFoundError):
        return ModelFilesError(
            f"Hugging Face repo {repo.repo_id} has no revision {repo.revision!r} "
            f"at {repo.endpoint}."
        )
    if status in (401, 403):
        return ModelFilesError(
            f"{repo.endpoint} refused access to {repo.where} (HTTP {status}); check the "
            "token this worker uses (HF_TOKEN)."
        )
    if isinstance(error, HfHubHTTPError):
        detail = f": {error.server_message.strip()}" if error.server_message else ""
        return ModelFilesError(
            f"{repo.endpoint} answered HTTP {status} for {repo.where}{detail.rstrip('.')}."
        )
    cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) else error
    return ModelFilesError(
        f"Could not reach the Hugging Face endpoint {repo.endpoint} for {repo.where}: "
        f"{cause or error}."
    )
