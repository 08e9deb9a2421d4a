"""Building blocks shared by the wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")


class InputModel(BaseModel):
    """A request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class OutputModel(BaseModel):
    """A response body, built from ORM rows or dicts."""

    model_config = ConfigDict(from_attributes=True)


class ItemList(OutputModel, Generic[T]):
    items: list[T]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    """Every management API error: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


# A name usable in a label, a host name, a worker name: 1-63 characters,
# alphanumeric at both ends, '.', '_' and '-' inside (the Kubernetes rule,
# which users already know).
_DNS_LIKE = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"

WorkerName = Annotated[str, StringConstraints(pattern=rf"^{_DNS_LIKE}$")]
LabelKey = Annotated[
    str, StringConstraints(pattern=rf"^({_DNS_LIKE}/)?{_DNS_LIKE}$", max_length=253)
]
LabelValue = Annotated[str, StringConstraints(pattern=rf"^({_DNS_LIKE})?$")]
GpuId = Annotated[
    str,
    StringConstraints(pattern=rf"^{_DNS_LIKE}:(0|[1-9][0-9]{{0,3}})$"),
    Field(description="`worker-name:index` of one GPU"),
]

Timestamp = datetime
