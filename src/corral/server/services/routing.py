"""Where the gateway may send a request for a model: its routable instances.

An instance is routable when it is ``running`` and its worker is ``ready``;
a worker that stopped sending heartbeats may be gone, so its instances are
left out even before the liveness controller releases them. Instances that
are ``starting``, in ``error`` or ``unreachable`` never get traffic.

``load_routes`` reads every model's routes in one query; the gateway keeps
the answer in memory and reads it again every second (``gateway.routes``),
so several server processes route alike within that second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, select

from corral.schemas.instances import InstanceState
from corral.schemas.workers import WorkerState
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Model, Worker

CONTEXT_FLAGS = frozenset({"--ctx-size", "-c", "--max-model-len"})
"""The launch flags that set an instance's context length (llama.cpp, vLLM)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """One backend that serves the model, and the key it demands."""

    instance_id: int
    host: str
    port: int
    api_key: str | None

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A deployed model and where it can be reached now (maybe nowhere)."""

    name: str
    created: int
    """When the model was deployed, in seconds since the epoch."""
    categories: tuple[str, ...]
    context_length: int | None
    """What its running instances were launched with (the smallest, if they
    differ); ``None`` when none runs or the launch left it to the engine."""
    upstreams: tuple[Upstream, ...] = field(default=())


def _instance_serves() -> ColumnElement[bool]:
    return and_(Instance.state == InstanceState.RUNNING, Instance.port.is_not(None))


def _worker_ready() -> ColumnElement[bool]:
    return and_(Worker.id == Instance.worker_id, Worker.state == WorkerState.READY)


def base_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"http://{host}:{port}"


def context_length(command: Sequence[str] | None) -> int | None:
    """The context length a launch command sets; the last mention wins, as
    in the engines' own argument parsers."""
    found: int | None = None
    args = list(command or ())
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name not in CONTEXT_FLAGS:
            continue
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        if value.isdigit():
            found = int(value)
    return found


async def load_routes(db: Database) -> dict[str, ModelRoute]:
    """Every deployed model by name (in name order), with its routable
    instances by id.

    One query: each model left-joined to its routable instances, so a model
    with none comes back as one row with the instance columns empty.
    """
    query = (
        select(
            Model.name,
            Model.created_at,
            Model.categories,
            Instance.id,
            Instance.port,
            Instance.api_key,
            Instance.command,
            Worker.address,
        )
        .outerjoin(Instance, and_(Instance.model_id == Model.id, _instance_serves()))
        .outerjoin(Worker, _worker_ready())
        .order_by(Model.name, Instance.id)
    )
    async with db.read() as s:
        rows = (await s.execute(query)).all()
    found: dict[str, tuple[int, tuple[str, ...], list[Upstream], list[int]]] = {}
    for name, created, categories, iid, port, key, command, address in rows:
        entry = found.setdefault(name, (int(created.timestamp()), tuple(categories or ()), [], []))
        if iid is None or port is None or address is None:
            continue
        entry[2].append(Upstream(instance_id=iid, host=address, port=port, api_key=key))
        context = context_length(command)
        if context is not None:
            entry[3].append(context)
    return {
        name: ModelRoute(
            name=name,
            created=created,
            categories=categories,
            context_length=min(contexts) if contexts else None,
            upstreams=tuple(upstreams),
        )
        for name, (created, categories, upstreams, contexts) in found.items()
    }
