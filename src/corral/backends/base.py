"""The interface every backend implements, and the values it works with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from corral.schemas.models import Backend, ModelCategory


@dataclass(frozen=True)
class Placement:
    """What the scheduler decided, as much as a launch needs to know.

    Device indices are the worker's own (as its device detection numbers
    them); the launch makes exactly those visible to the engine.
    """

    gpu_indices: tuple[int, ...] = ()
    gpu_vendor: str | None = None
    gpu_layers: int | None = None
    """llama.cpp: layers offloaded to GPUs/RPC devices; None means all of them
    when there are devices, none otherwise."""
    tensor_split: tuple[float, ...] = ()
    """llama.cpp: share of layers per device, local GPUs then RPC devices."""
    main_gpu: int | None = None
    rpc_endpoints: tuple[str, ...] = ()
    """llama.cpp: ``host:port`` of helper workers' rpc-servers."""
    tensor_parallel_size: int | None = None
    """vLLM: GPUs one instance spans."""


@dataclass(frozen=True)
class LaunchRequest:
    """Everything about one instance that its command line depends on."""

    model_name: str
    model_path: Path
    host: str
    port: int
    api_key: str
    categories: frozenset[ModelCategory] = frozenset({ModelCategory.LLM})
    context_length: int | None = None
    """The model's maximum (training) context, when the metadata says."""
    mmproj_path: Path | None = None
    placement: Placement = field(default_factory=Placement)
    backend_parameters: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Installation:
    """One installed version of a backend."""

    backend: Backend
    version: str
    flavour: str
    path: Path
    executable: Path
    reported_version: str
    flags: frozenset[str] = frozenset()
    """Command-line flags this build accepts (read from its ``--help``)."""
    launcher: tuple[str, ...] = ()
    """How to start it when that is more than ``executable`` (vLLM's entry point)."""


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    env: dict[str, str]
    """Variables to set on top of the worker's environment."""


@dataclass(frozen=True)
class Buffer:
    """One allocation an engine reported: where, what for, how big."""

    device: str
    kind: str
    """``model``, ``kv``, ``compute``, ``output``, ``repack``, ``weights``."""
    bytes: int


@dataclass(frozen=True)
class MemoryReport:
    """What an engine said about its memory and context while starting."""

    buffers: tuple[Buffer, ...] = ()
    context_length: int | None = None
    training_context_length: int | None = None
    kv_cache_tokens: int | None = None

    def total(self, device: str | None = None, kind: str | None = None) -> int:
        return sum(
            b.bytes
            for b in self.buffers
            if (device is None or b.device == device) and (kind is None or b.kind == kind)
        )

    def by_device(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for b in self.buffers:
            totals[b.device] = totals.get(b.device, 0) + b.bytes
        return totals


@dataclass(frozen=True)
class ReadinessProbe:
    """An HTTP GET that must succeed before an instance takes traffic."""

    path: str
    expect_model: str | None = None
    """When set, the JSON body must list this model id under ``data``."""


class BackendDriver(Protocol):
    backend: Backend

    def installed(self, data_dir: Path) -> list[Installation]: ...

    def command(self, installation: Installation, request: LaunchRequest) -> LaunchCommand: ...

    def readiness(self, request: LaunchRequest) -> list[ReadinessProbe]: ...

    def parse_memory(self, log: str) -> MemoryReport: ...
