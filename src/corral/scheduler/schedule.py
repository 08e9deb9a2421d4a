"""The scheduler's entry point: filter, then let the backend's placer choose."""

from __future__ import annotations

from corral.scheduler import llama_cpp, vllm
from corral.scheduler.cluster import ClusterSnapshot
from corral.scheduler.describe import gib
from corral.scheduler.filters import filters_for, rejection
from corral.scheduler.placement import Placement, Unplaceable
from corral.scheduler.request import PlacementRequest
from corral.schemas.models import Backend


def schedule(request: PlacementRequest, cluster: ClusterSnapshot) -> Placement | Unplaceable:
    """Where one instance should run, or why it cannot run anywhere now."""
    rejected: list[str] = []
    eligible = []
    filters = filters_for(request)
    for node in cluster.nodes:
        reason = rejection(node, request, filters)
        if reason is None:
            eligible.append(node)
        else:
            rejected.append(f"{node.name}: {reason}")
    if not cluster.nodes:
        return Unplaceable((), "no worker has registered yet")
    placer = llama_cpp.place if request.backend is Backend.LLAMA_CPP else vllm.place
    placement, reasons = placer(request, eligible) if eligible else (None, [])
    if placement is not None:
        return placement
    return Unplaceable(tuple(reasons + rejected), _summary(request, len(eligible)))


def _summary(request: PlacementRequest, eligible: int) -> str:
    if request.backend is Backend.LLAMA_CPP:
        e = request.llama_cpp
        need = e.device_usage(e.layers, ["gpu0"])[0].total
        what = f"{gib(need)} for all {e.layers} layers on one GPU"
    else:
        needs = request.vllm
        what = f"{gib(needs[min(needs)].per_gpu_need)} per GPU at tensor parallel {min(needs)}"
    if not eligible:
        return f"no worker passes the filters (needs {what})"
    return f"no worker can hold it now (needs {what}); per worker:"
