"""Model instances on the wire."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from corral.schemas.common import OutputModel


class InstanceState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    DOWNLOADING = "downloading"
    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"
    UNREACHABLE = "unreachable"


class InstanceRead(OutputModel):
    id: int
    name: str
    model_id: int
    model_name: str
    worker_id: int | None
    worker_name: str | None
    devices: list[int]
    port: int | None
    pid: int | None
    state: InstanceState
    state_message: str | None
    download_progress: float | None
    restart_count: int
    claim: dict[str, Any] | None
    placement: dict[str, Any] | None
    command: list[str] | None
    created_at: datetime
    updated_at: datetime
