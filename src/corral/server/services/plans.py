"""Plans: where a model spec would run now, and the estimate behind it,
without creating anything (``POST /api/v1/models:plan``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from corral.estimate.llama_cpp.memory import LlamaCppEstimate
from corral.scheduler import ClusterSnapshot, Placement, Unplaceable, schedule
from corral.schemas.models import (
    VLLM_DEFAULT_WORKER_SELECTOR,
    Backend,
    ModelCategory,
    ModelCreate,
    resolve_backend,
)
from corral.schemas.plans import DeviceNeed, PlanRead
from corral.server.db.engine import Database
from corral.server.db.tables import Worker
from corral.server.services.estimates import Estimator, Footprint, ModelSpec
from corral.server.services.launch import implied_command
from corral.server.services.placement import load_snapshot, request_for


async def plan_model(db: Database, estimator: Estimator, body: ModelCreate) -> PlanRead:
    """Where a model spec would be placed now, and the estimate behind it.

    Creates nothing and takes no lock: the answer is what the next placement
    would most likely do, not a reservation.
    """
    backend = resolve_backend(body.source, body.backend)
    selector = body.worker_selector
    if selector is None:
        selector = dict(VLLM_DEFAULT_WORKER_SELECTOR) if backend is Backend.VLLM else {}
    categories = frozenset(body.categories)
    spec = ModelSpec(
        backend=backend,
        source=body.source.model_dump(),
        backend_parameters=tuple(body.backend_parameters),
        categories=categories,
    )
    footprint = await estimator.footprint(spec)
    async with db.read() as s:
        snapshot = await load_snapshot(s)
        addresses = {wid: addr for wid, addr in await s.execute(select(Worker.id, Worker.address))}
    request = request_for(
        None,
        footprint,
        worker_selector=selector,
        gpu_selector=tuple(body.gpu_selector),
        cpu_offloading=body.cpu_offloading,
        distributed_inference=body.distributed_inference,
        strategy=body.placement_strategy,
    )
    result = schedule(request, snapshot)
    summary = describe_estimate(footprint)
    shown = list(body.categories)
    if footprint.vision and ModelCategory.VISION not in shown:
        shown = [*(shown or [ModelCategory.LLM]), ModelCategory.VISION]
    if isinstance(result, Unplaceable):
        return PlanRead(
            backend=backend,
            categories=shown,
            fits=False,
            message=result.summary,
            estimate=summary,
            placement=None,
            devices=[],
            reasons=list(result.reasons),
            command=None,
        )
    command = implied_command(
        backend=backend,
        model_name=body.name,
        source=spec.source,
        categories=categories,
        parameters=list(body.backend_parameters),
        context_length=footprint.context_length,
        placement=result,
        helper_addresses=addresses,
        projector=footprint.projector,
    )
    return PlanRead(
        backend=backend,
        categories=shown,
        fits=True,
        message=result.summary,
        estimate=summary,
        placement=result.to_json(),
        devices=device_needs(footprint, result, snapshot),
        reasons=[],
        command=command,
    )


def describe_estimate(footprint: Footprint) -> dict[str, Any]:
    e = footprint.estimate
    if isinstance(e, LlamaCppEstimate):
        one = e.device_usage(e.layers, ["gpu0"])[0]
        s = e.settings
        return {
            "architecture": e.hparams.arch,
            "layers": e.layers,
            "context_size": s.ctx_size,
            "parallel": s.parallel,
            "cache_type": f"{s.cache_type_k}/{s.cache_type_v}",
            "all_layers_on_one_gpu": {
                "weights": one.weights,
                "kv_cache": one.kv,
                "compute": one.compute,
                "total": one.total,
                "ram": e.host(e.layers).total,
            },
            "cpu_only_ram": e.host(0).total,
            "projector": footprint.projector,
            "projector_bytes": e.projector,
            "download_bytes": footprint.download_bytes,
        }
    first = e[min(e)]
    return {
        "architectures": list(first.config.architectures),
        "weights": first.weight_bytes,
        "max_model_len": first.max_model_len,
        "model_max_context": first.config.max_position,
        "kv_bytes_per_token": first.kv_bytes_per_token,
        "gpu_memory_utilization": first.gpu_memory_utilization,
        "per_gpu_need": {str(tp): est.per_gpu_need for tp, est in sorted(e.items())},
        "vision": first.config.vision,
        "vision_weights": first.vision_weight_bytes,
        "encoder_activation": first.encoder_activation,
        "download_bytes": footprint.download_bytes,
    }


def device_needs(
    footprint: Footprint, placement: Placement, snapshot: ClusterSnapshot
) -> list[DeviceNeed]:
    """The placement's memory by device and kind (llama.cpp), or as claimed (vLLM)."""
    names = {n.id: n.name for n in snapshot.nodes}
    e = footprint.estimate
    out = []
    if isinstance(e, LlamaCppEstimate) and placement.gpu_layers is not None:
        order = [(h.worker_id, g) for h in placement.helpers for g in h.gpus]
        order += [(placement.worker_id, g) for g in placement.gpus]
        helper_gpus = len(order) - len(placement.gpus)
        usages = e.device_usage(
            placement.gpu_layers,
            [f"gpu{i}" for i in range(len(order))],
            placement.tensor_split,
            projector_at=helper_gpus if placement.gpus else 0,
        )
        for (wid, gpu), u in zip(order, usages, strict=True):
            out.append(_need(wid, names.get(wid, ""), gpu, u.weights, u.kv, u.compute, u.total))
        host = e.host(placement.gpu_layers)
        out.append(
            _need(
                placement.worker_id,
                placement.worker_name,
                None,
                host.weights + host.repack,
                host.kv,
                host.compute,
                host.total,
            )
        )
        return out
    vllm = None if isinstance(e, LlamaCppEstimate) else e.get(placement.tensor_parallel_size or 1)
    for claim in placement.claims:
        name = names.get(claim.worker_id, "")
        for gpu, nbytes in claim.gpus.items():
            if vllm is None:
                out.append(_need(claim.worker_id, name, gpu, 0, 0, 0, nbytes))
                continue
            # vLLM fills what weights, activations and its runtime leave with KV cache.
            weights, compute = vllm.per_gpu_weights, vllm.per_gpu_activation
            kv = max(nbytes - weights - compute - vllm.per_gpu_overhead, 0)
            out.append(_need(claim.worker_id, name, gpu, weights, kv, compute, nbytes))
        out.append(_need(claim.worker_id, name, None, 0, 0, 0, claim.ram))
    return out


def _need(
    worker_id: int, name: str, gpu: int | None, weights: int, kv: int, compute: int, total: int
) -> DeviceNeed:
    return DeviceNeed(
        worker_id=worker_id,
        worker_name=name,
        gpu=gpu,
        weights=weights,
        kv_cache=kv,
        compute=compute,
        other=max(total - weights - kv - compute, 0),
        total=total,
    )
