"""What the server tells a worker to run, and what the worker reports back.

The worker watches ``GET /api/v1/workers/{id}/assignments`` (a long poll that
answers when the set changes, keyed by an ETag) and reports each instance's
progress with ``POST /api/v1/workers/{id}/instances/{instance_id}/status``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from corral.schemas.common import InputModel, OutputModel
from corral.schemas.instances import InstanceState
from corral.schemas.models import (
    Backend,
    HuggingFaceSource,
    LocalSource,
    ModelCategory,
    ModelScopeSource,
)


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


class Assignments(OutputModel):
    etag: str
    """Changes whenever anything the worker acts on changes."""
    items: list[Assignment]


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
