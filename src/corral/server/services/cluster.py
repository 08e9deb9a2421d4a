"""The cluster at a glance: counts (for metrics), device and claimed memory (the UI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from corral.scheduler.cluster import NodeClaim
from corral.schemas.cluster import (
    ClusterMemory,
    DeviceMemoryView,
    MemoryClaim,
    RamView,
    WorkerMemoryView,
)
from corral.schemas.instances import InstanceState
from corral.schemas.workers import SystemReserved, WorkerState, WorkerStatus
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Model, User, Worker
from corral.server.services.placement import claims_of


@dataclass(frozen=True)
class ClusterCounts:
    workers_by_state: dict[str, int]
    instances_by_state: dict[str, int]
    models: int
    users: int


async def count_cluster(db: Database) -> ClusterCounts:
    async with db.read() as s:
        workers = await s.execute(select(Worker.state, func.count()).group_by(Worker.state))
        instances = await s.execute(select(Instance.state, func.count()).group_by(Instance.state))
        return ClusterCounts(
            workers_by_state={state: n for state, n in workers.all()},
            instances_by_state={state: n for state, n in instances.all()},
            models=(await s.execute(select(func.count()).select_from(Model))).scalar_one(),
            users=(await s.execute(select(func.count()).select_from(User))).scalar_one(),
        )


@dataclass(frozen=True)
class DeviceMemory:
    worker: str
    index: int
    name: str
    total: int
    used: int
    simulated: bool


async def device_memory(db: Database) -> list[DeviceMemory]:
    """Every worker's accelerators as last reported, by worker and index."""
    async with db.read() as s:
        rows = (await s.execute(select(Worker.name, Worker.status).order_by(Worker.name))).all()
    found = []
    for worker, status in rows:
        for device in (status or {}).get("devices", []):
            found.append(
                DeviceMemory(
                    worker=worker,
                    index=int(device.get("index", 0)),
                    name=str(device.get("name", "")),
                    total=int(device.get("memory_total", 0)),
                    used=int(device.get("memory_used", 0)),
                    simulated=bool(device.get("simulated", False)),
                )
            )
    return found


async def cluster_memory(db: Database) -> ClusterMemory:
    """Every worker with its RAM and GPUs, and on each the instances that hold
    memory there (placed ones, helpers' shares included): what the web UI's
    cluster view draws, from the same claims placement computes free memory from."""
    async with db.read() as s:
        workers = list((await s.execute(select(Worker).order_by(Worker.name))).scalars())
        rows = (
            await s.execute(
                select(Instance, Model.name)
                .join(Model, Model.id == Instance.model_id)
                .where(Instance.worker_id.is_not(None), Instance.claim.is_not(None))
                .order_by(Instance.id)
            )
        ).all()
    gpu_claims: dict[tuple[int, int], list[MemoryClaim]] = {}
    ram_claims: dict[int, list[MemoryClaim]] = {}
    for instance, model_name in rows:
        for node in claims_of(instance.claim or {}):
            for index, memory in node.gpus.items():
                gpu_claims.setdefault((node.worker_id, index), []).append(
                    _claim(instance, model_name, node, index, memory)
                )
            if node.ram:
                ram_claims.setdefault(node.worker_id, []).append(
                    _claim(instance, model_name, node, None, node.ram)
                )
    return ClusterMemory(workers=[_worker_view(w, gpu_claims, ram_claims) for w in workers])


def _claim(
    instance: Instance, model_name: str, node: NodeClaim, gpu: int | None, memory: int
) -> MemoryClaim:
    return MemoryClaim(
        instance_id=instance.id,
        instance_name=instance.name,
        model_name=model_name,
        state=InstanceState(instance.state),
        bytes=memory,
        share=share_of(instance.placement or {}, node.worker_id, gpu),
    )


def share_of(placement: Mapping[str, Any], worker_id: int, gpu: int | None) -> str:
    """What part of the model a device holds, in words (see ``MemoryClaim.share``)."""
    for span in placement.get("layers") or []:
        if span.get("worker_id") == worker_id and span.get("gpu") == gpu:
            first, end = int(span["first"]), int(span["end"])
            return f"layers {first}-{end - 1}" if end - first > 1 else f"layer {first}"
    if placement.get("worker_id") != worker_id:
        return "rpc helper"
    gpus = list(placement.get("gpus") or [])
    tp = int(placement.get("tensor_parallel_size") or 1)
    if gpu is not None and tp > 1 and gpu in gpus:
        return f"tensor-parallel rank {gpus.index(gpu)} of {tp}"
    total = placement.get("total_layers")
    if total:
        on_gpu = int(placement.get("gpu_layers") or 0)
        if gpu is None:
            return f"{int(total) - on_gpu} of {total} layers" if on_gpu < int(total) else "buffers"
        return f"{on_gpu} of {total} layers"
    return "whole model" if gpu is not None else "host memory"


def _worker_view(
    worker: Worker,
    gpu_claims: dict[tuple[int, int], list[MemoryClaim]],
    ram_claims: dict[int, list[MemoryClaim]],
) -> WorkerMemoryView:
    status = WorkerStatus.model_validate(worker.status) if worker.status else None
    reserved = SystemReserved.model_validate(worker.system_reserved or {})
    ram = None
    gpus = []
    if status is not None:
        claims = ram_claims.get(worker.id, [])
        claimed = sum(c.bytes for c in claims)
        ram = RamView(
            total=status.memory.total,
            used=status.memory.used,
            reserved=reserved.ram,
            claimed=claimed,
            free=max(status.memory.total - reserved.ram - claimed, 0),
            claims=claims,
        )
        for device in status.devices:
            claims = gpu_claims.get((worker.id, device.index), [])
            claimed = sum(c.bytes for c in claims)
            gpus.append(
                DeviceMemoryView(
                    index=device.index,
                    name=device.name,
                    vendor=device.vendor,
                    simulated=device.simulated,
                    total=device.memory_total,
                    used=device.memory_used,
                    reserved=reserved.vram,
                    claimed=claimed,
                    free=max(device.memory_total - reserved.vram - claimed, 0),
                    claims=claims,
                )
            )
    return WorkerMemoryView(
        id=worker.id,
        name=worker.name,
        address=worker.address,
        state=WorkerState(worker.state),
        state_message=worker.state_message,
        labels=dict(worker.labels or {}),
        heartbeat_at=worker.heartbeat_at,
        cpu=status.cpu if status is not None else None,
        ram=ram,
        gpus=gpus,
    )
