"""Workers on the wire: registration, status reports, what the API shows."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from corral.schemas.common import InputModel, LabelKey, LabelValue, OutputModel, WorkerName


class WorkerState(StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"
    UNREACHABLE = "unreachable"


BUILTIN_LABELS = frozenset({"os", "arch", "worker-name"})
"""Labels the worker itself reports; users cannot overwrite them."""

NonNegative = Annotated[int, Field(ge=0)]


class Device(InputModel):
    """One accelerator as a worker reports it."""

    index: NonNegative
    uuid: str | None = None
    vendor: str
    name: str
    memory_total: NonNegative = Field(description="bytes")
    memory_used: NonNegative = Field(description="bytes")
    compute_capability: str | None = None
    simulated: bool = Field(
        default=False, description="Declared in a devices file, not detected hardware."
    )


class CpuStatus(InputModel):
    cores: Annotated[int, Field(ge=1)]
    utilization: Annotated[float, Field(ge=0, le=100)] = 0.0


class MemoryStatus(InputModel):
    total: NonNegative = Field(description="bytes")
    used: NonNegative = Field(description="bytes")


class DiskStatus(InputModel):
    path: str
    total: NonNegative
    used: NonNegative


class WorkerStatus(InputModel):
    cpu: CpuStatus
    memory: MemoryStatus
    disks: list[DiskStatus] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)


class SystemReserved(InputModel):
    ram: NonNegative = Field(default=0, description="bytes kept for the system")
    vram: NonNegative = Field(default=0, description="bytes kept per GPU")


class WorkerRegister(InputModel):
    name: WorkerName
    address: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    port: Annotated[int, Field(ge=1, le=65535)]
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    system_reserved: SystemReserved = SystemReserved()


class WorkerRegistered(OutputModel):
    worker_id: int
    name: str
    credential: str = Field(description="The worker's own credential. Shown only here.")


class WorkerLabelsUpdate(InputModel):
    labels: dict[LabelKey, LabelValue | None] = Field(
        description="Labels to set; a null value removes the label."
    )


class WorkerRead(OutputModel):
    id: int
    name: str
    address: str
    port: int
    labels: dict[str, str]
    state: WorkerState
    state_message: str | None
    heartbeat_at: datetime | None
    system_reserved: SystemReserved
    status: WorkerStatus | None
    created_at: datetime
