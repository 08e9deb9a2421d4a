"""vLLM placements: one GPU, else tensor parallelism over the smallest set of
GPUs of one worker whose count the attention heads allow; on a worker with
no GPU at all, its CPU (vLLM's CPU build) when cpu_offloading allows.

vLLM pre-allocates ``gpu_memory_utilization`` of every GPU it uses, so a GPU
qualifies only when that much of it is free, and that is what is claimed.
Several workers (Ray) are not supported yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.estimate.vllm import VllmEstimate
from corral.scheduler import describe
from corral.scheduler.cluster import Gpu, Node, NodeClaim
from corral.scheduler.describe import gib
from corral.scheduler.filters import selected_gpus
from corral.scheduler.placement import Placement, PlacementKind
from corral.scheduler.request import PlacementRequest
from corral.scheduler.scoring import score, score_one_gpu
from corral.schemas.models import PlacementStrategy

HOST_RAM = 2 * 1024**3
"""RAM a vLLM process on GPUs holds besides the GPU memory (Python, CUDA host
buffers); claimed so that RAM is not promised twice."""
DETAILED_REASONS = 20


@dataclass(frozen=True)
class _Candidate:
    node: Node
    gpus: tuple[Gpu, ...]
    need: VllmEstimate
    ram: int


def _claim(e: VllmEstimate, g: Gpu) -> int:
    return int(e.gpu_memory_utilization * g.total)


def _qualifies(e: VllmEstimate, g: Gpu) -> bool:
    return e.fits(g.total, g.free)


def _cpu_need(e: VllmEstimate) -> int:
    return e.per_gpu_need + HOST_RAM


def place(request: PlacementRequest, nodes: Sequence[Node]) -> tuple[Placement | None, list[str]]:
    needs = request.vllm
    usable = {n.id: selected_gpus(n, request) for n in nodes}
    best: list[_Candidate] = []
    for tp in sorted(needs):
        e = needs[tp]
        for node in nodes:
            if node.ram_free < HOST_RAM:
                continue
            if request.gpu_selector:
                gpus = usable[node.id]
                if len(gpus) == tp and all(_qualifies(e, g) for g in gpus):
                    best.append(_Candidate(node, tuple(gpus), e, HOST_RAM))
                continue
            fitting = [g for g in usable[node.id] if _qualifies(e, g)]
            if len(fitting) >= tp:
                best.append(_Candidate(node, _choose(request.strategy, fitting, tp), e, HOST_RAM))
        if best:
            break
    if not best and request.cpu_offloading and not request.gpu_selector and 1 in needs:
        e = needs[1]
        best = [
            _Candidate(n, (), e, _cpu_need(e))
            for n in nodes
            if not n.gpus and n.ram_free >= _cpu_need(e)
        ]
    if not best:
        return None, _reasons(request, nodes, usable)
    chosen = min(best, key=lambda c: _score(request, c))
    return _placement(chosen), []


def _choose(strategy: PlacementStrategy, gpus: list[Gpu], tp: int) -> tuple[Gpu, ...]:
    """``tp`` GPUs: the emptiest for spread, the fullest that qualify for binpack."""
    sign = 1 if strategy is PlacementStrategy.BINPACK else -1
    chosen = sorted(gpus, key=lambda g: (sign * g.free, g.index))[:tp]
    return tuple(sorted(chosen, key=lambda g: g.index))


def _score(request: PlacementRequest, c: _Candidate) -> tuple[object, ...]:
    if len(c.gpus) == 1:
        g = c.gpus[0]
        return score_one_gpu(request.strategy, c.node, g, _claim(c.need, g), request.model_id)
    used = [(g, _claim(c.need, g)) for g in c.gpus]
    return score(request.strategy, c.node, used, request.model_id, c.ram)


def _placement(c: _Candidate) -> Placement:
    e = c.need
    tp = len(c.gpus) or 1
    if not c.gpus:
        kind = PlacementKind.CPU
        summary = f"on the CPU of {c.node.name} ({gib(c.ram)} of RAM)"
    else:
        kind = PlacementKind.ONE_GPU if tp == 1 else PlacementKind.TENSOR_PARALLEL
        gpus = ", ".join(str(g.index) for g in c.gpus)
        summary = (
            f"{c.node.name} GPU {gpus}: tensor parallel {tp}, {gib(e.per_gpu_need)} needed "
            f"per GPU, {e.gpu_memory_utilization:.0%} of each claimed"
        )
    claim = NodeClaim(c.node.id, ram=c.ram, gpus={g.index: _claim(e, g) for g in c.gpus})
    return Placement(
        kind=kind,
        worker_id=c.node.id,
        worker_name=c.node.name,
        gpus=tuple(g.index for g in c.gpus),
        claims=(claim,),
        tensor_parallel_size=tp,
        summary=summary,
    )


def _reasons(
    request: PlacementRequest, nodes: Sequence[Node], usable: dict[int, list[Gpu]]
) -> list[str]:
    needs = request.vllm
    one = needs[min(needs)]
    ordered = sorted(nodes, key=lambda n: (-sum(g.free for g in usable[n.id]), n.name))
    reasons = []
    for node in ordered[:DETAILED_REASONS]:
        gpus = usable[node.id]
        if node.ram_free < HOST_RAM:
            line = f"{gib(node.ram_free)} of RAM free, a vLLM process needs {gib(HOST_RAM)}"
        elif not node.gpus:
            line = (
                f"no GPU; on the CPU vLLM needs {gib(_cpu_need(one))} of RAM, "
                f"{gib(node.ram_free)} free"
                if request.cpu_offloading
                else "no GPU, and cpu_offloading is off"
            )
        else:
            parts = []
            for tp in sorted(needs):
                e = needs[tp]
                fitting = sum(1 for g in gpus if _qualifies(e, g))
                parts.append(f"tp {tp}: {gib(e.per_gpu_need)} per GPU, {fitting} qualify")
            if request.gpu_selector and len(gpus) not in needs:
                parts.append(
                    f"the {len(gpus)} selected GPUs are not a tensor-parallel size "
                    "the model's attention heads allow"
                )
            line = (
                f"{describe.gpus(gpus)}; a GPU qualifies when "
                f"{one.gpu_memory_utilization:.0%} of it is free and holds the share: "
                + "; ".join(parts)
            )
        reasons.append(f"{node.name}: {line}")
    if len(ordered) > DETAILED_REASONS:
        reasons.append(f"{len(ordered) - DETAILED_REASONS} more workers with less free GPU memory")
    return reasons
