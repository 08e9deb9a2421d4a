"""``/metrics``: Prometheus text format, for admins (scrape with an admin's API key).

Gauges are filled from the database at scrape time, so every server replica
reports the same cluster-wide numbers.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from corral.schemas.instances import InstanceState
from corral.schemas.workers import WorkerState
from corral.server.api.deps import DbDep, PrincipalDep
from corral.server.services.cluster import count_cluster

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(db: DbDep, principal: PrincipalDep) -> Response:
    principal.require_admin()
    counts = await count_cluster(db)
    registry = CollectorRegistry()
    workers = Gauge("corral_workers", "Workers by state.", ["state"], registry=registry)
    for worker_state in WorkerState:
        workers.labels(worker_state).set(counts.workers_by_state.get(worker_state, 0))
    instances = Gauge("corral_instances", "Model instances by state.", ["state"], registry=registry)
    for instance_state in InstanceState:
        instances.labels(instance_state).set(counts.instances_by_state.get(instance_state, 0))
    Gauge("corral_models", "Deployed models.", registry=registry).set(counts.models)
    Gauge("corral_users", "Users.", registry=registry).set(counts.users)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
