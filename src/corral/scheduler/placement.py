"""What the scheduler answers: a placement with its claims, or the reasons
nothing fits."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corral.scheduler.cluster import NodeClaim


class PlacementKind(StrEnum):
    ONE_GPU = "one_gpu"
    MULTI_GPU = "multi_gpu"
    """llama.cpp: layers split over several GPUs of one worker."""
    DISTRIBUTED = "distributed"
    """llama.cpp: a primary worker plus helper workers' GPUs over RPC."""
    PARTIAL_OFFLOAD = "partial_offload"
    """llama.cpp: some layers on GPUs, the rest on the CPU."""
    CPU = "cpu"
    TENSOR_PARALLEL = "tensor_parallel"
    """vLLM: several GPUs of one worker."""


@dataclass(frozen=True)
class Helper:
    """A helper worker lending GPUs to a distributed llama.cpp instance."""

    worker_id: int
    worker_name: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class LayerSpan:
    """Layers ``[first, end)`` on one device (``gpu`` None: the primary's CPU),
    as the launch command makes llama.cpp put them."""

    worker_id: int
    worker_name: str
    gpu: int | None
    first: int
    end: int
    memory: int
    """Bytes claimed on that device (host memory for the CPU)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "worker_name": self.worker_name,
            "gpu": self.gpu,
            "first": self.first,
            "end": self.end,
            "memory": self.memory,
        }


@dataclass(frozen=True)
class Placement:
    kind: PlacementKind
    worker_id: int
    worker_name: str
    gpus: tuple[int, ...]
    """The primary worker's GPUs, by the worker's own indices."""
    claims: tuple[NodeClaim, ...]
    """The primary worker's claim first, then each helper's."""
    gpu_layers: int | None = None
    """llama.cpp: layers offloaded (of ``total_layers``, the output layer counted)."""
    total_layers: int | None = None
    tensor_split: tuple[float, ...] = ()
    """llama.cpp: share per device in llama.cpp's order (helpers' devices, then local GPUs)."""
    tensor_parallel_size: int | None = None
    helpers: tuple[Helper, ...] = ()
    layers: tuple[LayerSpan, ...] = ()
    """llama.cpp: which layers go where, in llama.cpp's device order, the CPU last."""
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "worker_id": self.worker_id,
            "worker_name": self.worker_name,
            "gpus": list(self.gpus),
            "gpu_layers": self.gpu_layers,
            "total_layers": self.total_layers,
            "tensor_split": list(self.tensor_split),
            "tensor_parallel_size": self.tensor_parallel_size,
            "helpers": [
                {"worker_id": h.worker_id, "worker_name": h.worker_name, "gpus": list(h.gpus)}
                for h in self.helpers
            ],
            "layers": [span.to_json() for span in self.layers],
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Unplaceable:
    """Nothing fits; one line per worker saying why."""

    reasons: tuple[str, ...] = field(default_factory=tuple)
    summary: str = "no worker can run this instance"

    def message(self, limit: int = 12) -> str:
        lines = [self.summary, *self.reasons[:limit]]
        if len(self.reasons) > limit:
            lines.append(f"... and {len(self.reasons) - limit} more workers")
        return "\n".join(lines)
