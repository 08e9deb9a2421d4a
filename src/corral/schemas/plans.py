"""A placement plan: what deploying a model spec would do, without doing it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from corral.schemas.common import OutputModel
from corral.schemas.models import Backend, ModelCategory


class DeviceNeed(OutputModel):
    """Memory the placement takes on one device (``gpu`` null: the worker's RAM)."""

    worker_id: int
    worker_name: str
    gpu: int | None
    weights: int = Field(description="bytes, also for every field below")
    kv_cache: int
    compute: int
    other: int = Field(description="runtime context, output buffers, projector")
    total: int


class PlanRead(OutputModel):
    backend: Backend
    categories: list[ModelCategory] = Field(
        description="The model's categories once deployed: those given, and `vision` when "
        "its metadata shows a vision model (a projector, a vision config)."
    )
    fits: bool
    message: str = Field(description="The placement in one line, or why nothing fits.")
    estimate: dict[str, Any] = Field(description="What the model needs, from its metadata.")
    placement: dict[str, Any] | None
    devices: list[DeviceNeed] = Field(description="Per device and RAM, what the placement takes.")
    reasons: list[str] = Field(description="Per worker, why it was rejected (when nothing fits).")
    command: list[str] | None
