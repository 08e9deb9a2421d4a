"""What the server tells a worker to run, and what the worker reports back.

The worker watches ``GET /api/v1/workers/{id}/assignments`` (a long poll that
answers when the set changes, keyed by an ETag) and reports each instance's
progress with ``POST /api/v1/workers/{id}/instances/{instance_id}/status``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from corral.schemas.common import InputModel, OutputModel
from corral.schemas.instances import InstanceState, LayerShare, RpcServerState
from corral.schemas.models import (
    Backend,
    HuggingFaceSource,
    LocalSource,
    ModelCategory,
    ModelScopeSource,
)


class HelperEndpoint(OutputModel):
    """One rpc-server a distributed instance's primary connects to."""

    rpc_server_id: int
    worker_name: str
    device: int
    address: str
    port: int | None
    state: RpcServerState
    state_message: str | None


class Assignment(OutputModel):
    """One instance a worker must run, with everything its launch needs."""

    instance_id: int
    instance_name: str
    model_id: int
    model_name: str
    source: HuggingFaceSource | ModelScopeSource | LocalSource = Field(discriminator="type")
    backend: Backend
    backend_version: str | None
    backend_parameters: list[str]
    env: dict[str, str]
    categories: list[ModelCategory]
    restart_on_error: bool
    placement: dict[str, Any]
    """``corral.scheduler.Placement.to_json()``: GPUs, layers, split, tp, helpers."""
    api_key: str
    """The key the backend must demand; the gateway presents it."""
    state: InstanceState
    restart_count: int
    generation: int = 0
    """Bumped by a restart request: a new value means stop the engine and start again."""
    helpers: list[HelperEndpoint] = Field(default_factory=list)
    """Distributed llama.cpp: the helpers' rpc-servers in ``--rpc`` order; the
    primary launches once every one is ready."""


class RpcServerAssignment(OutputModel):
    """An rpc-server this worker runs as a helper of another worker's instance."""

    rpc_server_id: int
    instance_id: int
    instance_name: str
    model_name: str
    primary_worker: str
    device: int
    """This worker's GPU to serve."""
    memory: int
    """Bytes the placement claims on it."""
    backend_version: str | None
    """The primary's pinned llama.cpp version: RPC needs both sides to agree."""
    secret: str
    """Opens this rpc-server's log on this worker (the server presents it)."""
    state: RpcServerState
    generation: int = 0
    """The instance's generation: a restart request restarts its helpers too."""


class Assignments(OutputModel):
    etag: str
    """Changes whenever anything the worker acts on changes."""
    items: list[Assignment]
    rpc_servers: list[RpcServerAssignment] = Field(default_factory=list)


class InstanceStatusReport(InputModel):
    """A worker's news about one of its instances."""

    state: Literal[
        InstanceState.DOWNLOADING,
        InstanceState.STARTING,
        InstanceState.RUNNING,
        InstanceState.ERROR,
    ]
    state_message: Annotated[str, Field(max_length=16384)] | None = None
    download_progress: Annotated[float, Field(ge=0, le=1)] | None = None
    pid: Annotated[int, Field(ge=1)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    restart_count: Annotated[int, Field(ge=0)] | None = None
    layers: Annotated[list[LayerShare], Field(max_length=1024)] | None = None
    """Where the engine put the layers (llama.cpp), sent once it is running."""
    generation: Annotated[int, Field(ge=0)] | None = None
    """The assignment's generation the report is about; a report from before
    a restart request is dropped."""


class RpcServerStatusReport(InputModel):
    """A helper worker's news about one of its rpc-servers."""

    state: Literal[RpcServerState.STARTING, RpcServerState.READY, RpcServerState.ERROR]
    state_message: Annotated[str, Field(max_length=16384)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    pid: Annotated[int, Field(ge=1)] | None = None
