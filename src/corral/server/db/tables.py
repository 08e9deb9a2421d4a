"""Tables. The database is the single source of truth of the cluster.

Enumerations are stored as short strings, not native enums, so that adding a
state is a code change rather than a migration on every backend.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite keeps no zone, so values are stored as naive UTC and given their
    zone back when read; PostgreSQL stores ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# SQLite reuses the largest rowid after a delete unless told otherwise; a
# reused instance id would let a worker mistake a new instance for an old one.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(Timestamped, Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_change_required: Mapped[bool] = mapped_column(Boolean, default=False)


class Session(Base):
    """A login session (CLI, UI). Only a hash of its secret is stored."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Worker(Timestamped, Base):
    __tablename__ = "workers"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    state_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    system_reserved: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    status: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    credential_id: Mapped[str] = mapped_column(String(32), unique=True)
    credential_hash: Mapped[str] = mapped_column(String(64))


class Model(Timestamped, Base):
    __tablename__ = "models"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSONType)
    backend: Mapped[str] = mapped_column(String(32))
    backend_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    backend_parameters: Mapped[list[str]] = mapped_column(JSONType, default=list)
    env: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    replicas: Mapped[int] = mapped_column(Integer)
    placement_strategy: Mapped[str] = mapped_column(String(16))
    worker_selector: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    gpu_selector: Mapped[list[str]] = mapped_column(JSONType, default=list)
    cpu_offloading: Mapped[bool] = mapped_column(Boolean)
    distributed_inference: Mapped[bool] = mapped_column(Boolean)
    restart_on_error: Mapped[bool] = mapped_column(Boolean)
    categories: Mapped[list[str]] = mapped_column(JSONType, default=list)


class Instance(Timestamped, Base):
    __tablename__ = "instances"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(160), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("workers.id", ondelete="SET NULL"), index=True, nullable=True
    )
    devices: Mapped[list[int]] = mapped_column(JSONType, default=list)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    download_progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    restart_count: Mapped[int] = mapped_column(Integer, default=0)
    claim: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    """``{"workers": [NodeClaim, ...]}``: the memory held on each worker involved
    (helpers' too), what free memory is computed from."""
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    """The scheduler's decision (``corral.scheduler.Placement.to_json``)."""
    command: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    api_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The key this instance's backend demands. Kept in the clear because the
    server presents it (gateway, logs); it opens only this one backend, and a
    fresh one is made each time the instance is placed."""
    layers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    """Where the engine says it put the model's layers (llama.cpp), one entry
    per device: ``{"device", "first", "end", "memory"}``; None until it reports."""
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped by a restart request; the worker replaces the engine when it changes."""


class InstanceEvent(Base):
    """One change of an instance's state, with the message that came with it.
    Written by a database trigger (migration 0006), never by the services."""

    __tablename__ = "instance_events"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class RpcServer(Timestamped, Base):
    """An ``rpc-server`` a helper worker runs for one distributed llama.cpp
    instance: one per helper device, made with the placement and deleted
    with it (or with the instance)."""

    __tablename__ = "rpc_servers"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"), index=True)
    device: Mapped[int] = mapped_column(Integer)
    """The helper's GPU, by the helper's own index."""
    position: Mapped[int] = mapped_column(Integer)
    """Its place in the primary's ``--rpc`` list (llama.cpp's device order)."""
    memory: Mapped[int] = mapped_column(BigInteger)
    """Bytes the placement claims on that GPU for it."""
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    state_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret: Mapped[str] = mapped_column(String(64))
    """Opens this rpc-server's log on the helper; only the server and the helper know it."""


class Usage(Base):
    """Tokens and requests per user, API key, model and UTC day (filled by the
    gateway)."""

    __tablename__ = "usage"
    __table_args__ = (
        UniqueConstraint("user_id", "api_key_id", "model_name", "day"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The key's id, not a foreign key: usage outlives a revoked key. "" for
    # requests made with a session token (NULL would defeat the unique key).
    api_key_id: Mapped[str] = mapped_column(String(32), default="")
    # The name, not a foreign key: usage outlives a deleted model.
    model_name: Mapped[str] = mapped_column(String(128))
    day: Mapped[date] = mapped_column(Date, index=True)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
