"""``/api/v1/cluster``: every worker's memory and who holds it (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from corral.schemas.cluster import ClusterMemory
from corral.server.api.deps import DbDep, PrincipalDep
from corral.server.services import cluster

router = APIRouter(prefix="/cluster", tags=["cluster"])


@router.get("")
async def cluster_memory(db: DbDep, principal: PrincipalDep) -> ClusterMemory:
    """Per worker: state, labels, CPU, RAM and each GPU with the memory that
    instances claim on it (their names and shares), the system reserve and
    what is free for placement."""
    principal.require_admin()
    return await cluster.cluster_memory(db)
