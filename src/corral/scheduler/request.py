"""What the scheduler is asked to place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.estimate.llama_cpp.memory import LlamaCppEstimate
from corral.estimate.vllm import VllmEstimate
from corral.schemas.models import Backend, PlacementStrategy

VllmNeeds = Mapping[int, VllmEstimate]
"""vLLM's estimate per tensor-parallel size the model allows (one entry when
the user fixed the size)."""


@dataclass(frozen=True)
class PlacementRequest:
    """One instance of a model, with the estimate behind it."""

    backend: Backend
    estimate: LlamaCppEstimate | VllmNeeds
    model_id: int | None = None
    worker_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_selector: tuple[str, ...] = ()
    """``worker-name:index`` of the only GPUs allowed; empty means any."""
    cpu_offloading: bool = True
    distributed_inference: bool = True
    strategy: PlacementStrategy = PlacementStrategy.SPREAD
    disk_bytes: int | None = None
    """Bytes the worker must download; None when nothing is downloaded or unknown."""
    max_workers: int = 8
    """Distributed llama.cpp: the most workers (primary included) one instance spans."""

    @property
    def llama_cpp(self) -> LlamaCppEstimate:
        assert isinstance(self.estimate, LlamaCppEstimate)
        return self.estimate

    @property
    def vllm(self) -> VllmNeeds:
        assert not isinstance(self.estimate, LlamaCppEstimate)
        return self.estimate
