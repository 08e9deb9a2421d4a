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
from corral.estimate.llama_cpp.settings import settings_for
from corral.estimate.safetensors import read_safetensors
from corral.estimate.vllm import VllmEstimate, estimate_by_tp, max_position
from corral.schemas.models import Backend, ModelCategory
from corral.sources.http import RemoteFileError
from corral.sources.locate import CheckpointSource, GGUFSource, hf_glob, locate

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
            located, download = _locate(spec.source, client)
            if isinstance(located, GGUFSource):
                if spec.backend is not Backend.LLAMA_CPP:
                    raise InvalidInputError("a GGUF model runs on llama.cpp, not vLLM")
                model = read_gguf_model(located.parts)
                return self._gguf(spec, model, download)
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
            weights = next(iter(needs.values())).weight_bytes
            return Footprint(
                spec,
                needs,
                weights if download else None,
                max_position(located.config),
            )

    def _gguf(self, spec: ModelSpec, model: GGUFModel, download: bool) -> Footprint:
        context = model.arch_value("context_length")
        training = context if isinstance(context, int) else None
        settings = settings_for(training, pooling=spec.pooling, parameters=spec.backend_parameters)
        return Footprint(
            spec,
            estimate(model, settings, cpu=self._cpu),
            model.tensor_bytes if download else None,
            training,
        )


def _locate(
    source: dict[str, Any], client: httpx.Client
) -> tuple[GGUFSource | CheckpointSource, bool]:
    kind = source.get("type")
    if kind == "local":
        path = Path(source["path"])
        if not path.exists():
            raise InvalidInputError(
                f"{path} does not exist on the server, so its memory cannot be estimated "
                "(the server reads local models' metadata itself)"
            )
        return locate(str(path), client), False
    if kind == "huggingface":
        repo, revision = source["repo_id"], source.get("revision") or "main"
        filename = source.get("filename")
        if filename and any(c in filename for c in "*?["):
            filename = hf_glob(repo, filename, client, revision=revision)
        target = f"{repo}:{filename}" if filename else repo
        return locate(target, client, revision=revision), True
    raise InvalidInputError(f"estimating {kind} models is not supported yet")
