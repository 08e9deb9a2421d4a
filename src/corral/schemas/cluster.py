"""The cluster's memory at a glance: per worker and device, who holds what."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from corral.schemas.common import OutputModel
from corral.schemas.instances import InstanceState
from corral.schemas.workers import CpuStatus, WorkerState


class MemoryClaim(OutputModel):
    """Memory one instance holds on one device (or in a worker's RAM)."""

    instance_id: int
    instance_name: str
    model_name: str
    state: InstanceState
    bytes: int
    share: str = Field(
        description="What of the model this device holds, in words: `layers 0-11`, "
        "`tensor-parallel rank 1 of 2`, `24 of 24 layers`, `rpc helper`."
    )


class DeviceMemoryView(OutputModel):
    index: int
    name: str
    vendor: str
    simulated: bool
    total: int = Field(description="bytes, also for every field below")
    used: int = Field(description="as the worker last reported (all processes)")
    reserved: int = Field(description="kept for the system (the worker's setting)")
    claimed: int = Field(description="held by instances, the sum of `claims`")
    free: int = Field(description="what placement can still give: total - reserved - claimed")
    claims: list[MemoryClaim]


class RamView(OutputModel):
    total: int
    used: int
    reserved: int
    claimed: int
    free: int
    claims: list[MemoryClaim]


class WorkerMemoryView(OutputModel):
    id: int
    name: str
    address: str
    state: WorkerState
    state_message: str | None
    labels: dict[str, str]
    heartbeat_at: datetime | None
    cpu: CpuStatus | None
    ram: RamView | None = Field(description="null until the worker's first status report")
    gpus: list[DeviceMemoryView]


class ClusterMemory(OutputModel):
    workers: list[WorkerMemoryView]
