"""Model instances on the wire."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from corral.schemas.common import InputModel, OutputModel


class InstanceState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    DOWNLOADING = "downloading"
    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"
    UNREACHABLE = "unreachable"


class RpcServerState(StrEnum):
    PENDING = "pending"
    """Placed; its helper worker has not reported it yet."""
    STARTING = "starting"
    READY = "ready"
    """Accepting connections: the primary may use it."""
    ERROR = "error"
    UNREACHABLE = "unreachable"
    """Its worker stopped sending heartbeats."""


class RpcServerRead(OutputModel):
    """One helper device of a distributed llama.cpp instance."""

    id: int
    worker_id: int
    worker_name: str
    device: int
    """The helper's GPU index."""
    position: int
    """Its place in the primary's ``--rpc`` list."""
    memory: int
    """Bytes claimed on that GPU."""
    address: str
    port: int | None
    pid: int | None
    state: RpcServerState
    state_message: str | None


class LayerShare(InputModel):
    """Layers ``[first, end)`` on one device, as the engine reported them
    (layer ``n_layer`` is the output layer). A worker sends it; the API shows it."""

    device: Annotated[str, Field(min_length=1, max_length=200)]
    """The engine's device name: ``CPU``, ``CUDA0``, ``RPC0[10.0.0.2:50100]``…"""
    first: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]
    memory: Annotated[int, Field(ge=0)] | None = None
    """Bytes the engine allocated on that device, when its log says."""


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
    generation: int = Field(
        default=0, description="Bumped by each restart request (`POST .../restart`)."
    )
    claim: dict[str, Any] | None
    placement: dict[str, Any] | None
    command: list[str] | None
    rpc_servers: list[RpcServerRead] = Field(default_factory=list)
    """Distributed llama.cpp: the helpers' rpc-servers, in ``--rpc`` order."""
    layers: list[LayerShare] | None = None
    """Where the engine put the layers, once it reported (llama.cpp)."""
    created_at: datetime
    updated_at: datetime


class InstanceEventRead(OutputModel):
    """One change of an instance's state (the newest 100 are kept)."""

    state: InstanceState
    message: str | None
    at: datetime
