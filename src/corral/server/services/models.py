"""Models: the specs users deploy. Creating or scaling one reconciles its
instances in the same transaction."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import ConflictError, InvalidInputError
from corral.schemas.models import (
    VLLM_DEFAULT_WORKER_SELECTOR,
    Backend,
    ModelCreate,
    ModelRead,
    ModelUpdate,
    resolve_backend,
)
from corral.server.db.engine import Database
from corral.server.db.tables import Model
from corral.server.services.instances import reconcile_instances, running_counts
from corral.server.services.rows import load

logger = logging.getLogger(__name__)

# Fields of ModelUpdate for which an explicit null means "back to the default".
_NULLABLE_UPDATES = {"backend_version", "worker_selector"}


def _default_worker_selector(backend: Backend) -> dict[str, str]:
    return dict(VLLM_DEFAULT_WORKER_SELECTOR) if backend is Backend.VLLM else {}


async def create_model(db: Database, body: ModelCreate) -> ModelRead:
    backend = resolve_backend(body.source, body.backend)
    selector = body.worker_selector
    if selector is None:
        selector = _default_worker_selector(backend)
    try:
        async with db.write() as s:
            model = Model(
                name=body.name,
                source=body.source.model_dump(),
                backend=backend,
                backend_version=body.backend_version,
                backend_parameters=body.backend_parameters,
                env=body.env,
                replicas=body.replicas,
                placement_strategy=body.placement_strategy,
                worker_selector=selector,
                gpu_selector=body.gpu_selector,
                cpu_offloading=body.cpu_offloading,
                distributed_inference=body.distributed_inference,
                restart_on_error=body.restart_on_error,
                categories=list(body.categories),
            )
            s.add(model)
            await s.flush()
            await reconcile_instances(s, model)
            result = await _to_read(s, model)
    except IntegrityError as e:
        raise ConflictError(f"a model named {body.name!r} already exists") from e
    logger.info("created model %s (id %d) on backend %s", model.name, model.id, backend)
    return result


async def list_models(db: Database, *, name: str | None = None) -> list[ModelRead]:
    query = select(Model).order_by(Model.name)
    if name is not None:
        query = query.where(Model.name == name)
    async with db.read() as s:
        models = list((await s.execute(query)).scalars())
        ready = await running_counts(s)
    return [_read(m, ready.get(m.id, 0)) for m in models]


async def get_model(db: Database, model_id: int) -> ModelRead:
    async with db.read() as s:
        return await _to_read(s, await load(s, Model, model_id, "model"))


async def update_model(db: Database, model_id: int, body: ModelUpdate) -> ModelRead:
    changes: dict[str, Any] = {}
    for field in body.model_fields_set:
        value = getattr(body, field)
        if value is None and field not in _NULLABLE_UPDATES:
            raise InvalidInputError(f"{field} cannot be null", code="validation_error")
        changes[field] = value
    async with db.write() as s:
        model = await load(s, Model, model_id, "model", for_update=True)
        if "worker_selector" in changes and changes["worker_selector"] is None:
            changes["worker_selector"] = _default_worker_selector(Backend(model.backend))
        for field, value in changes.items():
            setattr(model, field, list(value) if field == "categories" else value)
        await s.flush()
        await reconcile_instances(s, model)
        result = await _to_read(s, model)
    logger.info("updated model %s (id %d): %s", model.name, model_id, ", ".join(sorted(changes)))
    return result


async def delete_model(db: Database, model_id: int) -> None:
    """Delete a model; its instances go with it (foreign key cascade)."""
    async with db.write() as s:
        model = await load(s, Model, model_id, "model", for_update=True)
        await s.delete(model)
    logger.info("deleted model %s (id %d)", model.name, model_id)


async def _to_read(s: AsyncSession, model: Model) -> ModelRead:
    ready = await running_counts(s, model.id)
    return _read(model, ready.get(model.id, 0))


def _read(model: Model, ready_replicas: int) -> ModelRead:
    values = {c.key: getattr(model, c.key) for c in Model.__table__.columns}
    return ModelRead.model_validate({**values, "ready_replicas": ready_replicas})
