"""``/metrics``: Prometheus text format, for admins (scrape with an admin's API key).

Cluster gauges (workers, instances, devices) are read from the database at
scrape time, so every server replica reports the same cluster-wide numbers;
the gateway's figures (requests, latencies, tokens, requests in flight) are
this process's own, as Prometheus expects of one scrape target per process.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.registry import Collector

from corral.schemas.instances import InstanceState
from corral.schemas.workers import WorkerState
from corral.server.api.deps import DbDep, PrincipalDep
from corral.server.services.cluster import count_cluster, device_memory

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(db: DbDep, principal: PrincipalDep, request: Request) -> Response:
    principal.require_admin()
    counts = await count_cluster(db)
    registry = CollectorRegistry(auto_describe=False)
    workers = Gauge("corral_workers", "Workers by state.", ["state"], registry=registry)
    for worker_state in WorkerState:
        workers.labels(worker_state).set(counts.workers_by_state.get(worker_state, 0))
    instances = Gauge("corral_instances", "Model instances by state.", ["state"], registry=registry)
    for instance_state in InstanceState:
        instances.labels(instance_state).set(counts.instances_by_state.get(instance_state, 0))
    Gauge("corral_models", "Deployed models.", registry=registry).set(counts.models)
    Gauge("corral_users", "Users.", registry=registry).set(counts.users)
    labels = ["worker", "device", "name", "simulated"]
    total = Gauge(
        "corral_worker_device_memory_total_bytes",
        "Memory of each accelerator, as its worker last reported it.",
        labels,
        registry=registry,
    )
    used = Gauge(
        "corral_worker_device_memory_used_bytes",
        "Memory in use on each accelerator, as its worker last reported it.",
        labels,
        registry=registry,
    )
    for device in await device_memory(db):
        values = [device.worker, str(device.index), device.name, str(device.simulated).lower()]
        total.labels(*values).set(device.total)
        used.labels(*values).set(device.used)
    gateway: Collector | None = getattr(request.app.state, "gateway_collector", None)
    if gateway is not None:
        registry.register(gateway)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
