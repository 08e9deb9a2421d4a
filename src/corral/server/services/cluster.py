"""Counts that describe the cluster at a glance (for metrics and summaries)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Model, User, Worker


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
