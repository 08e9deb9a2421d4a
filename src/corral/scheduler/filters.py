"""Which workers may run an instance at all. Each filter names its reason."""

from __future__ import annotations

from collections.abc import Callable

from corral.scheduler.cluster import Gpu, Node
from corral.scheduler.describe import gib
from corral.scheduler.request import PlacementRequest
from corral.schemas.models import Backend

Filter = Callable[[Node, PlacementRequest], str | None]


def _ready(node: Node, request: PlacementRequest) -> str | None:
    return None if node.ready else f"worker is {node.state.replace('_', ' ')}"


def _labels(node: Node, request: PlacementRequest) -> str | None:
    for key, wanted in sorted(request.worker_selector.items()):
        have = node.labels.get(key)
        if have != wanted:
            found = f"has {key}={have}" if have is not None else f"has no label {key}"
            return f"worker_selector wants {key}={wanted}, this worker {found}"
    return None


def _platform(node: Node, request: PlacementRequest) -> str | None:
    if request.backend is Backend.VLLM and node.os != "linux":
        return f"vLLM runs only on Linux, this worker runs {node.os or 'an unknown OS'}"
    return None


def _gpu_selector(node: Node, request: PlacementRequest) -> str | None:
    if request.gpu_selector and not selected_gpus(node, request):
        return "none of its GPUs is in gpu_selector"
    return None


def _disk(node: Node, request: PlacementRequest) -> str | None:
    need = request.disk_bytes
    if need and node.disk_free is not None and node.disk_free < need:
        return f"{gib(node.disk_free)} free on disk, the model files need {gib(need)}"
    return None


FILTERS: tuple[Filter, ...] = (_ready, _labels, _platform, _gpu_selector, _disk)


def filters_for(request: PlacementRequest) -> tuple[Filter, ...]:
    """The filters that can reject anything for this request (the others are
    skipped: on a big cluster every call per worker counts)."""
    active: dict[Filter, bool] = {
        _ready: True,
        _labels: bool(request.worker_selector),
        _platform: request.backend is Backend.VLLM,
        _gpu_selector: bool(request.gpu_selector),
        _disk: bool(request.disk_bytes),
    }
    return tuple(f for f in FILTERS if active[f])


def rejection(
    node: Node, request: PlacementRequest, filters: tuple[Filter, ...] = FILTERS
) -> str | None:
    """Why this worker cannot run the instance, or None if it may."""
    for check in filters:
        reason = check(node, request)
        if reason is not None:
            return reason
    return None


def selected_gpus(node: Node, request: PlacementRequest) -> list[Gpu]:
    """The worker's GPUs the instance may use, in index order (callers must not mutate)."""
    if not request.gpu_selector:
        return node.gpus
    wanted = {
        int(index)
        for worker, _, index in (s.rpartition(":") for s in request.gpu_selector)
        if worker == node.name
    }
    return sorted((g for g in node.gpus if g.index in wanted), key=lambda g: g.index)
