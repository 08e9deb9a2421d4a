"""llama.cpp placements, in the order tried (first kind that fits wins):

1. every layer on one GPU;
2. every layer on several GPUs of one worker, fewest GPUs first;
3. every layer over GPUs of several workers (a primary and helpers whose
   GPUs join over RPC), fewest workers first — when distributed_inference;
4. as many layers as fit on one worker's GPUs, the rest on its CPU — when
   cpu_offloading;
5. entirely on the CPU — when cpu_offloading.

Layers are shared over GPUs in proportion to their free memory; the split
is in whole MiB so that the launch command (``--tensor-split``) reproduces
exactly the layer borders priced here. Prices come from the estimate's
prefix sums (``LlamaCppEstimate.device_usage``), so a decision costs
O(GPUs) per candidate rather than a pass over every tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.estimate.llama_cpp.memory import (
    GPU_FOOTPRINT,
    HOST_FOOTPRINT,
    LlamaCppEstimate,
    Usage,
    layer_ranges,
)
from corral.scheduler import describe
from corral.scheduler.cluster import Gpu, Node, NodeClaim
from corral.scheduler.describe import gib
from corral.scheduler.filters import selected_gpus
from corral.scheduler.placement import Helper, LayerSpan, Placement, PlacementKind
from corral.scheduler.request import PlacementRequest
from corral.scheduler.scoring import ScoreKey, score, score_one_gpu
from corral.schemas.models import PlacementStrategy

MIB = 1024**2
PRIMARIES_TRIED = 8
"""Distributed placements: primaries tried per worker count; helpers are the
workers with the most free GPU memory. Bounds the search on big clusters."""
DETAILED_REASONS = 20
"""Workers whose rejection is worked out in full; the rest are counted."""


@dataclass(frozen=True)
class _Fit:
    gpu_layers: int
    split: tuple[float, ...]
    usages: tuple[Usage, ...]
    """Per device, in llama.cpp's order."""
    host: Usage


@dataclass(frozen=True)
class _Search:
    """What every candidate maker looks at."""

    estimate: LlamaCppEstimate
    request: PlacementRequest
    nodes: Sequence[Node]
    usable: dict[int, list[Gpu]]
    """Per worker, the GPUs the request may use."""


@dataclass(frozen=True)
class _Candidate:
    kind: PlacementKind
    node: Node
    gpus: tuple[Gpu, ...]
    fit: _Fit
    helpers: tuple[tuple[Node, tuple[Gpu, ...]], ...] = ()
    rank: int = 0
    """Compared before the score: fewer GPUs or workers, more layers."""
    key: ScoreKey | None = None
    """The score, when the candidate's maker computed it already."""

    def devices(self) -> list[Gpu]:
        """In llama.cpp's order: RPC devices (the helpers') first, then local GPUs."""
        return [g for _, gpus in self.helpers for g in gpus] + list(self.gpus)


def _split(gpus: Sequence[Gpu]) -> tuple[float, ...]:
    return tuple(float(max(g.free // MIB, 1)) for g in gpus)


def _price(
    e: LlamaCppEstimate, gpu_layers: int, gpus: Sequence[Gpu], *, helper_gpus: int = 0
) -> _Fit | None:
    """The fit of ``gpu_layers`` layers over ``gpus`` split by free memory, or
    None. The first ``helper_gpus`` are helpers' (RPC devices)."""
    split = _split(gpus)
    # Real GPU names (never "RPC…"): a helper's GPU holds a runtime context too.
    # A projector goes to the primary's first GPU, or to the first if it has none.
    usages = e.device_usage(
        gpu_layers,
        [f"gpu{i}" for i in range(len(gpus))],
        split,
        projector_at=helper_gpus if helper_gpus < len(gpus) else 0,
    )
    if all(u.total <= g.free for u, g in zip(usages, gpus, strict=True)):
        return _Fit(gpu_layers, split, usages, e.host(gpu_layers))
    return None


def _most_layers(e: LlamaCppEstimate, gpus: Sequence[Gpu]) -> _Fit | None:
    """The most layers these GPUs hold, by binary search over the layer count."""
    best = _price(e, 0, gpus)
    if best is None:
        return None
    lo, hi = 0, e.layers
    while lo < hi:
        mid = (lo + hi + 1) // 2
        fit = _price(e, mid, gpus)
        if fit is None:
            hi = mid - 1
        else:
            lo, best = mid, fit
    return best


def _holds_a_layer(e: LlamaCppEstimate, gpu: Gpu) -> bool:
    return gpu.free >= GPU_FOOTPRINT + e.compute + min(e.layer_weights)


def place(request: PlacementRequest, nodes: Sequence[Node]) -> tuple[Placement | None, list[str]]:
    """The best placement on these (already filtered) workers, or one reason per worker."""
    e = request.llama_cpp
    usable = {n.id: selected_gpus(n, request) for n in nodes}
    search = _Search(e, request, nodes, usable)
    kinds = (
        _pinned if request.gpu_selector else _one_gpu,
        _multi_gpu,
        _distributed if request.distributed_inference else None,
        _partial_offload if request.cpu_offloading else None,
        _cpu_only if request.cpu_offloading else None,
    )
    for kind in kinds:
        if kind is None:
            continue
        candidates = kind(search)
        if candidates:
            best = min(candidates, key=lambda c: (c.rank, c.key or _score(request, c)))
            return _placement(e, best), []
    return None, _reasons(search)


def _score(request: PlacementRequest, c: _Candidate) -> ScoreKey:
    used = [(g, u.total) for g, u in zip(c.devices(), c.fit.usages, strict=True)]
    local = used[len(used) - len(c.gpus) :]
    return score(request.strategy, c.node, local, request.model_id, c.fit.host.total)


def _pinned(q: _Search) -> list[_Candidate]:
    """gpu_selector: exactly the named GPUs of one worker, every layer on them."""
    e, nodes, usable = q.estimate, q.nodes, q.usable
    out = []
    for node in nodes:
        gpus = usable[node.id]
        fit = _price(e, e.layers, gpus)
        if fit is not None and fit.host.total <= node.ram_free:
            kind = PlacementKind.ONE_GPU if len(gpus) == 1 else PlacementKind.MULTI_GPU
            out.append(_Candidate(kind, node, tuple(gpus), fit))
    return out


def _one_gpu(q: _Search) -> list[_Candidate]:
    """Per worker, its best single GPU that holds every layer (the hot path on
    big clusters: a comparison per GPU, a candidate per worker)."""
    e, request, nodes, usable = q.estimate, q.request, q.nodes, q.usable
    usage = e.device_usage(e.layers, ["gpu0"])
    host = e.host(e.layers)
    fit = _Fit(e.layers, (1.0,), usage, host)
    need = usage[0].total
    binpack = request.strategy is PlacementStrategy.BINPACK
    out = []
    for node in nodes:
        if host.total > node.ram_free:
            continue
        best: Gpu | None = None
        for g in usable[node.id]:
            if g.free < need:
                continue
            if best is None or (
                g.free < best.free
                if binpack
                else (g.instances, -g.free) < (best.instances, -best.free)
            ):
                best = g
        if best is not None:
            key = score_one_gpu(request.strategy, node, best, need, request.model_id)
            out.append(_Candidate(PlacementKind.ONE_GPU, node, (best,), fit, key=key))
    return out


def _least_need(e: LlamaCppEstimate, devices: int) -> int:
    """A lower bound of what ``devices`` GPUs together need for every layer:
    weights, KV cache, one compute buffer and a runtime context each."""
    kv = sum(e.layer_kv) if e.settings.kv_offload else 0
    return sum(e.layer_weights) + kv + e.tied_output + e.compute + devices * GPU_FOOTPRINT


def _multi_gpu(q: _Search) -> list[_Candidate]:
    e, request, nodes, usable = q.estimate, q.request, q.nodes, q.usable
    if request.gpu_selector:
        return []  # _pinned already tried the named set
    out: list[_Candidate] = []
    fewest = 1 << 30
    bound = _least_need(e, 0)
    for node in nodes:
        gpus = usable[node.id]
        if len(gpus) < 2 or sum(g.free for g in gpus) < bound + 2 * GPU_FOOTPRINT:
            continue  # cannot hold it on all its GPUs together: skip the pricing
        by_free = sorted(gpus, key=lambda g: (-g.free, g.index))
        total = by_free[0].free
        for k in range(2, min(len(by_free), fewest) + 1):
            total += by_free[k - 1].free
            if total < bound + k * GPU_FOOTPRINT:
                continue
            chosen = sorted(by_free[:k], key=lambda g: g.index)
            fit = _price(e, e.layers, chosen)
            if fit is not None:
                if fit.host.total <= node.ram_free:
                    out.append(
                        _Candidate(PlacementKind.MULTI_GPU, node, tuple(chosen), fit, rank=k)
                    )
                    fewest = k
                break
    return [c for c in out if c.rank == fewest]


def _distributed(q: _Search) -> list[_Candidate]:
    e, request, nodes, usable = q.estimate, q.request, q.nodes, q.usable
    with_gpus = [n for n in nodes if usable[n.id]]
    with_gpus.sort(key=lambda n: (-sum(g.free for g in usable[n.id]), n.name))
    helper_ram = HOST_FOOTPRINT
    for workers in range(2, min(request.max_workers, len(with_gpus)) + 1):
        out = []
        for primary in with_gpus[:PRIMARIES_TRIED]:
            helpers = tuple(
                (n, tuple(usable[n.id]))
                for n in [h for h in with_gpus if h is not primary][: workers - 1]
                if n.ram_free >= helper_ram
            )
            if len(helpers) < workers - 1:
                continue
            local = tuple(usable[primary.id])
            devices = [g for _, gpus in helpers for g in gpus] + list(local)
            fit = _price(e, e.layers, devices, helper_gpus=len(devices) - len(local))
            if fit is not None and fit.host.total <= primary.ram_free:
                out.append(
                    _Candidate(PlacementKind.DISTRIBUTED, primary, local, fit, helpers, workers)
                )
        if out:
            return out
    return []


def _partial_offload(q: _Search) -> list[_Candidate]:
    e, request, nodes, usable = q.estimate, q.request, q.nodes, q.usable
    out = []
    for node in nodes:
        gpus = usable[node.id]
        if not request.gpu_selector:
            gpus = [g for g in gpus if _holds_a_layer(e, g)]
        if not gpus:
            continue
        fit = _most_layers(e, gpus)
        if fit is not None and fit.gpu_layers > 0 and fit.host.total <= node.ram_free:
            out.append(
                _Candidate(
                    PlacementKind.PARTIAL_OFFLOAD, node, tuple(gpus), fit, rank=-fit.gpu_layers
                )
            )
    return out


def _cpu_only(q: _Search) -> list[_Candidate]:
    e, request, nodes = q.estimate, q.request, q.nodes
    if request.gpu_selector:
        return []
    host = e.host(0)
    fit = _Fit(0, (), (), host)
    return [_Candidate(PlacementKind.CPU, n, (), fit) for n in nodes if host.total <= n.ram_free]


def _placement(e: LlamaCppEstimate, c: _Candidate) -> Placement:
    devices = c.devices()
    usages = c.fit.usages
    local = usages[len(usages) - len(c.gpus) :]
    claims = [
        NodeClaim(
            c.node.id,
            ram=c.fit.host.total,
            gpus={g.index: u.total for g, u in zip(c.gpus, local, strict=True)},
        )
    ]
    offset = 0
    for node, gpus in c.helpers:
        part = usages[offset : offset + len(gpus)]
        offset += len(gpus)
        claims.append(
            NodeClaim(
                node.id,
                ram=HOST_FOOTPRINT,
                gpus={g.index: u.total for g, u in zip(gpus, part, strict=True)},
            )
        )
    return Placement(
        kind=c.kind,
        worker_id=c.node.id,
        worker_name=c.node.name,
        gpus=tuple(g.index for g in c.gpus),
        claims=tuple(claims),
        gpu_layers=c.fit.gpu_layers,
        total_layers=e.layers,
        tensor_split=c.fit.split if len(devices) > 1 else (),
        helpers=tuple(Helper(n.id, n.name, tuple(g.index for g in gpus)) for n, gpus in c.helpers),
        layers=_spans(e, c),
        summary=_summary(e, c),
    )


def _spans(e: LlamaCppEstimate, c: _Candidate) -> tuple[LayerSpan, ...]:
    owners = [(n, g) for n, gpus in c.helpers for g in gpus] + [(c.node, g) for g in c.gpus]
    ranges = layer_ranges(e.hparams.n_layer, c.fit.gpu_layers, c.fit.split) if owners else []
    spans = [
        LayerSpan(node.id, node.name, gpu.index, first, end, usage.total)
        for (node, gpu), (first, end), usage in zip(owners, ranges, c.fit.usages, strict=True)
    ]
    on_cpu = e.layers - c.fit.gpu_layers
    if on_cpu > 0:
        spans.append(LayerSpan(c.node.id, c.node.name, None, 0, on_cpu, c.fit.host.total))
    return tuple(spans)


def _summary(e: LlamaCppEstimate, c: _Candidate) -> str:
    n, total = c.fit.gpu_layers, e.layers
    on_gpus = ", ".join(
        f"{g.index} ({gib(u.total)})"
        for g, u in zip(c.gpus, c.fit.usages[len(c.fit.usages) - len(c.gpus) :], strict=True)
    )
    ram = gib(c.fit.host.total)
    name = c.node.name
    if c.kind is PlacementKind.CPU:
        return f"all {total} layers on the CPU of {name} ({ram} of RAM)"
    if c.kind is PlacementKind.PARTIAL_OFFLOAD:
        return (
            f"{n} of {total} layers on {name} GPU {on_gpus}; {total - n} on its CPU ({ram} of RAM)"
        )
    if c.kind is PlacementKind.DISTRIBUTED:
        helpers = "; ".join(
            f"{h.name} GPU {','.join(str(g.index) for g in gs)}" for h, gs in c.helpers
        )
        return f"all {total} layers over {name} GPU {on_gpus} and helpers {helpers}"
    return f"all {total} layers on {name} GPU {on_gpus}"


def _reasons(q: _Search) -> list[str]:
    e, request, nodes, usable = q.estimate, q.request, q.nodes, q.usable
    need = e.device_usage(e.layers, ["gpu0"])[0].total
    ordered = sorted(nodes, key=lambda n: (-sum(g.free for g in usable[n.id]), n.name))
    reasons = []
    for node in ordered[:DETAILED_REASONS]:
        gpus = usable[node.id]
        if not gpus:
            if request.cpu_offloading:
                line = (
                    f"no GPU; the CPU needs {gib(e.host(0).total)} of RAM, "
                    f"{gib(node.ram_free)} free"
                )
            else:
                line = "no GPU, and cpu_offloading is off"
        else:
            fit = _most_layers(e, gpus)
            n = fit.gpu_layers if fit else 0
            line = f"{describe.gpus(gpus)}, {gib(need)} needed for all {e.layers} layers, {n} fit"
            if not request.cpu_offloading:
                line += "; cpu_offloading is off"
            else:
                line += (
                    f"; with {e.layers - n} on the CPU it needs {gib(e.host(n).total)} of RAM, "
                    f"{gib(node.ram_free)} free"
                )
        reasons.append(f"{node.name}: {line}")
    if len(ordered) > DETAILED_REASONS:
        reasons.append(f"{len(ordered) - DETAILED_REASONS} more workers with less free GPU memory")
    return reasons
