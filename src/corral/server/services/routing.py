"""Where the gateway may send a request for a model: its routable instances.

An instance is routable when it is ``running`` and its worker is ``ready``;
a worker that stopped sending heartbeats may be gone, so its instances are
left out even before the liveness controller releases them. The answers are
read fresh from the database on every request, so several server (or
gateway) processes route alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, select

from corral.errors import NotFoundError
from corral.schemas.instances import InstanceState
from corral.schemas.workers import WorkerState
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Model, Worker

MODEL_NOT_FOUND = "model_not_found"


@dataclass(frozen=True)
class Upstream:
    """One backend that serves the model, and the key it demands."""

    instance_id: int
    url: str
    """``http://host:port``, without a trailing slash."""
    api_key: str | None


@dataclass(frozen=True)
class ServedModel:
    name: str
    created: int
    """When the model was deployed, in seconds since the epoch."""


def _instance_serves() -> ColumnElement[bool]:
    return and_(Instance.state == InstanceState.RUNNING, Instance.port.is_not(None))


def _worker_ready() -> ColumnElement[bool]:
    return and_(Worker.id == Instance.worker_id, Worker.state == WorkerState.READY)


def base_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"http://{host}:{port}"


async def upstreams(db: Database, model_name: str) -> list[Upstream]:
    """The routable instances of the model named ``model_name``, by instance id.

    Empty when the model exists but none of its instances is running (yet);
    ``NotFoundError`` (code ``model_not_found``) when no model has that name.
    One query: the model row comes back even when nothing matches the joins.
    """
    # The model left-joined to its routable instances: the model's row alone
    # (instance columns NULL) when it has none, no row when it does not exist.
    query = (
        select(Model.id, Instance.id, Instance.port, Instance.api_key, Worker.address)
        .outerjoin(Instance, and_(Instance.model_id == Model.id, _instance_serves()))
        .outerjoin(Worker, _worker_ready())
        .where(Model.name == model_name)
        .order_by(Instance.id)
    )
    async with db.read() as s:
        rows = (await s.execute(query)).all()
    if not rows:
        raise NotFoundError(f"model {model_name!r} does not exist", code=MODEL_NOT_FOUND)
    return [
        Upstream(instance_id=iid, url=base_url(address, port), api_key=key)
        for _, iid, port, key, address in rows
        if iid is not None and port is not None and address is not None
    ]


async def served_models(db: Database) -> list[ServedModel]:
    """Models with at least one routable instance, by name."""
    query = (
        select(Model.name, Model.created_at)
        .where(
            select(Instance.id)
            .join(Worker, _worker_ready())
            .where(Instance.model_id == Model.id, _instance_serves())
            .exists()
        )
        .order_by(Model.name)
    )
    async with db.read() as s:
        rows = (await s.execute(query)).all()
    return [ServedModel(name=name, created=int(created.timestamp())) for name, created in rows]
