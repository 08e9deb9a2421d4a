"""What a model needs, read from its metadata before anything is downloaded.

The scheduler is pure; this is where its input comes from. A GGUF header or
a checkpoint's config and safetensors headers are read from the model's
source (a path the server can read, or Hugging Face over HTTP range
requests), in a thread since the readers block, and cached per source and
parameters: replicas and retries reuse one read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from corral.errors import CorralError, InvalidInputError
from corral.estimate.gguf import GGUFModel, read_gguf_model
from corral.estimate.llama_cpp.memory import CpuFeatures, LlamaCppEstimate, estimate
from corral.estimate.llama_cpp.projector import check_projector
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.safetensors import read_safetensors
from corral.estimate.source import ByteSource, LocalFile
from corral.estimate.vllm import VllmEstimate, estimate_by_tp, max_position
from corral.schemas.models import Backend, ModelCategory
from corral.sources.http import RemoteFileError
from corral.sources.locate import CheckpointSource, GGUFSource, hf_files, hf_glob, hf_url, locate
from corral.sources.projectors import pick_mmproj, projector_beside, user_projector

logger = logging.getLogger(__name__)

MAX_TENSOR_PARALLEL = 8
REMOTE_TIMEOUT_S = 30


@dataclass(frozen=True)
class ModelSpec:
    """The fields of a model that its memory depends on."""

    backend: Backend
    source: dict[str, Any]
    backend_parameters: tuple[str, ...] = ()
    categories: frozenset[ModelCategory] = frozenset()

    @property
    def pooling(self) -> bool:
        return bool(self.categories & {ModelCategory.EMBEDDING, ModelCategory.RERANKER})

    def key(self) -> str:
        return json.dumps(
            [self.backend, self.source, self.backend_parameters, self.pooling], sort_keys=True
        )


@dataclass(frozen=True)
class Footprint:
    spec: ModelSpec
    estimate: LlamaCppEstimate | dict[int, VllmEstimate]
    download_bytes: int | None
    """What a worker downloads (None for a local path)."""
    context_length: int | None
    """The model's own (training) context, for the launch command."""
    vision: bool = False
    """A GGUF model with a projector, or a checkpoint with a vision part."""
    projector: str | None = None
    """The projector as the server found it: a path for a local model, else
    the file's name in the repo."""


class Estimator:
    """Footprints by model spec, least recently used evicted."""

    def __init__(self, cache_size: int = 256, retry_after: float = 30.0) -> None:
        self._cache: OrderedDict[str, Footprint] = OrderedDict()
        self._cache_size = cache_size
        self._failures: dict[str, tuple[float, CorralError]] = {}
        self._retry_after = retry_after
        self._cpu = CpuFeatures.of_this_machine()

    async def footprint(self, spec: ModelSpec) -> Footprint:
        """The model's footprint; raises ``CorralError`` when its metadata cannot be read.

        A failure is remembered for ``retry_after`` seconds, so that a hub that
        is down is not asked again on every placement pass.
        """
        key = spec.key()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        failed = self._failures.get(key)
        if failed is not None and time.monotonic() - failed[0] < self._retry_after:
            raise failed[1]
        try:
            result = await asyncio.to_thread(self._read, spec)
        except CorralError as e:
            self._failures[key] = (time.monotonic(), e)
            raise
        except httpx.HTTPError as e:
            error = RemoteFileError(f"cannot reach the model's source: {e}")
            self._failures[key] = (time.monotonic(), error)
            raise error from e
        self._failures.pop(key, None)
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _read(self, spec: ModelSpec) -> Footprint:
        with httpx.Client(timeout=REMOTE_TIMEOUT_S, follow_redirects=False) as client:
            located, download, listing = _locate(spec.source, client)
            if isinstance(located, GGUFSource):
                if spec.backend is not Backend.LLAMA_CPP:
                    raise InvalidInputError("a GGUF model runs on llama.cpp, not vLLM")
                model = read_gguf_model(located.parts)
                projector = find_projector(spec, listing, client)
                return self._gguf(spec, model, download, projector)
            assert isinstance(located, CheckpointSource)
            if spec.backend is not Backend.VLLM:
                raise InvalidInputError(
                    "llama.cpp needs a .gguf file; name one in the source's path or filename"
                )
            tensors = [t for shard in located.shards for t in read_safetensors(shard)]
            needs = estimate_by_tp(
                located.config,
                tensors,
                parameters=spec.backend_parameters,
                max_tp=MAX_TENSOR_PARALLEL,
            )
            if not needs:
                raise InvalidInputError("no tensor-parallel size divides the attention heads")
            first = next(iter(needs.values()))
            return Footprint(
                spec,
                needs,
                first.weight_bytes if download else None,
                max_position(located.config),
                vision=first.config.vision,
            )

    def _gguf(
        self, spec: ModelSpec, model: GGUFModel, download: bool, projector: Projector | None
    ) -> Footprint:
        context = model.arch_value("context_length")
        training = context if isinstance(context, int) else None
        settings = settings_for(training, pooling=spec.pooling, parameters=spec.backend_parameters)
        files = model.tensor_bytes
        if projector is not None and projector.model is not None:
            files += projector.model.tensor_bytes
        return Footprint(
            spec,
            estimate(
                model,
                settings,
                cpu=self._cpu,
                projector=projector.model if projector is not None else None,
            ),
            files if download else None,
            training,
            vision=projector is not None,
            projector=projector.name if projector is not None else None,
        )


@dataclass(frozen=True)
class Projector:
    name: str
    model: GGUFModel | None
    """None when the user's own ``--mmproj`` path is not readable here."""


@dataclass(frozen=True)
class RepoFiles:
    names: list[str]
    model: str
    """The model file the source's name or glob resolved to."""


def find_projector(
    spec: ModelSpec, listing: RepoFiles | None, client: httpx.Client
) -> Projector | None:
    """The projector the worker will load with a GGUF model, read here: the
    user's ``--mmproj`` or ``source.mmproj``, else one beside the model by
    the shared rule (``corral.sources.projectors``)."""
    user = user_projector(spec.backend_parameters)
    if user is False:
        return None
    if isinstance(user, str):
        path = Path(user)
        model = read_gguf_model([LocalFile(path)]) if path.is_file() else None
        if model is not None:
            check_projector(model, user)
        return Projector(user, model)
    source = spec.source
    chosen: str | None = source.get("mmproj")
    if source.get("type") == "local":
        model_path = Path(source["path"])
        if chosen is None:
            beside = projector_beside(model_path)
            if beside is None:
                return None
            chosen = str(beside)
        if not Path(chosen).is_file():
            raise InvalidInputError(f"the projector {chosen} does not exist on the server")
        sources: list[ByteSource] = [LocalFile(Path(chosen))]
    elif source.get("type") == "huggingface" and listing is not None:
        repo, revision = source["repo_id"], source.get("revision") or "main"
        found = pick_mmproj(listing.names, listing.model, chosen)
        if found is None:
            if chosen is not None:
                raise InvalidInputError(f"no file in {repo}@{revision} matches mmproj {chosen!r}")
            return None
        chosen = found
        sources = [hf_url(repo, found, client, revision=revision)]
    else:
        return None
    projector = read_gguf_model(sources)
    check_projector(projector, chosen)
    return Projector(chosen, projector)


def _locate(
    source: dict[str, Any], client: httpx.Client
) -> tuple[GGUFSource | CheckpointSource, bool, RepoFiles | None]:
    """The model's byte sources, whether a worker downloads it, and for a
    Hugging Face GGUF the repo's files (where its projector is looked for)."""
    kind = source.get("type")
    if kind == "local":
        path = Path(source["path"])
        if not path.exists():
            raise InvalidInputError(
                f"{path} does not exist on the server, so its memory cannot be estimated "
                "(the server reads local models' metadata itself)"
            )
        return locate(str(path), client), False, None
    if kind == "huggingface":
        repo, revision = source["repo_id"], source.get("revision") or "main"
        filename = source.get("filename")
        listing = None
        if filename:
            names = hf_files(repo, client, revision=revision)
            if any(c in filename for c in "*?["):
                filename = hf_glob(repo, filename, client, revision=revision, names=names)
            listing = RepoFiles(names, filename)
        target = f"{repo}:{filename}" if filename else repo
        return locate(target, client, revision=revision), True, listing
    raise InvalidInputError(f"estimating {kind} models is not supported yet")
