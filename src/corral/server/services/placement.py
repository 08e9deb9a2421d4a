"""Placing pending instances: load, decide, apply, with guarded writes.

A pass reads the pending instances and their models, gets each model's
footprint (outside any transaction: it may read remote metadata), then, in
one transaction per batch, takes the placement lock, loads the cluster
snapshot (workers and every stored claim), asks the pure scheduler for each
instance and writes placement and claims with a compare-and-set on the
instance still being pending.

The lock makes placements serial across server processes: on PostgreSQL a
transaction-scoped advisory lock, on SQLite the write transaction itself
(``BEGIN IMMEDIATE``). Since the snapshot is read after the lock is held, a
placement always sees every claim committed before it, so two servers never
book the same memory.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import CorralError, InvalidInputError
from corral.scheduler import (
    ClusterSnapshot,
    NodeClaim,
    Placement,
    PlacementRequest,
    Unplaceable,
    schedule,
)
from corral.scheduler.cluster import node_from_worker
from corral.schemas.instances import InstanceState
from corral.schemas.models import (
    Backend,
    ModelCategory,
    PlacementStrategy,
)
from corral.schemas.workers import SystemReserved, WorkerStatus
from corral.server.db.engine import Database
from corral.server.db.tables import Instance, Model, Worker
from corral.server.services.estimates import Estimator, Footprint, ModelSpec
from corral.server.services.launch import implied_command
from corral.server.services.rpc_servers import add_for
from corral.sources.http import RemoteFileError

logger = logging.getLogger(__name__)

BATCH = 500
BATCH_SECONDS = 0.5
"""A transaction places up to BATCH instances or stops after BATCH_SECONDS,
whichever comes first: keeps the lock short on big backlogs."""
_ADVISORY_KEY = 0x636F7272616C  # "corral"
REASON_REFRESH = timedelta(seconds=10)
"""A pending instance's reasons are rewritten when their summary changes, or
else at most this often."""


@dataclass(frozen=True)
class PassResult:
    placed: int = 0
    waiting: int = 0
    failed: int = 0


def spec_of(model: Model) -> ModelSpec:
    return ModelSpec(
        backend=Backend(model.backend),
        source=dict(model.source),
        backend_parameters=tuple(model.backend_parameters),
        categories=frozenset(ModelCategory(c) for c in model.categories),
    )


def request_for(model: Model | None, footprint: Footprint, **spec: object) -> PlacementRequest:
    """The scheduler's question for one instance of ``model`` (or a spec not yet saved)."""
    fields = (
        {
            "worker_selector": model.worker_selector,
            "gpu_selector": tuple(model.gpu_selector),
            "cpu_offloading": model.cpu_offloading,
            "distributed_inference": model.distributed_inference,
            "strategy": PlacementStrategy(model.placement_strategy),
            "model_id": model.id,
        }
        if model is not None
        else {}
    )
    fields.update(spec)
    return PlacementRequest(
        backend=footprint.spec.backend,
        estimate=footprint.estimate,
        disk_bytes=footprint.download_bytes,
        **fields,  # type: ignore[arg-type]
    )


async def lock_placements(s: AsyncSession) -> None:
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})


async def load_snapshot(s: AsyncSession) -> ClusterSnapshot:
    workers = await s.execute(
        select(
            Worker.id,
            Worker.name,
            Worker.state,
            Worker.labels,
            Worker.status,
            Worker.system_reserved,
        )
    )
    nodes = [
        node_from_worker(
            wid,
            name,
            state,
            labels or {},
            WorkerStatus.model_validate(status) if status else None,
            SystemReserved.model_validate(reserved or {}),
        )
        for wid, name, state, labels, status, reserved in workers
    ]
    snapshot = ClusterSnapshot(nodes)
    claims = await s.execute(
        select(Instance.model_id, Instance.claim).where(Instance.worker_id.is_not(None))
    )
    for model_id, claim in claims:
        if claim:
            snapshot.apply(claims_of(claim), model_id)
    return snapshot


def claims_of(claim: dict[str, object]) -> list[NodeClaim]:
    workers = claim.get("workers") or []
    assert isinstance(workers, list)
    return [NodeClaim.from_json(c) for c in workers]


async def place_pending(db: Database, estimator: Estimator) -> PassResult:
    """One pass over every pending instance."""
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Instance.id, Instance.state_message, Instance.updated_at, Model)
                .join(Model, Model.id == Instance.model_id)
                .where(Instance.state == InstanceState.PENDING)
                .order_by(Instance.id)
            )
        ).all()
    if not rows:
        return PassResult()
    footprints: dict[int, Footprint | CorralError] = {}
    for *_, model in rows:
        if model.id not in footprints:
            footprints[model.id] = await _footprint(estimator, model)
    placed = waiting = failed = 0
    now = datetime.now(UTC)
    todo = [
        (iid, message if now - updated < REASON_REFRESH else None, m)
        for iid, message, updated, m in rows
    ]
    while todo:
        done, p, w, f = await _place_batch(db, todo[:BATCH], footprints)
        todo = todo[done:]
        placed, waiting, failed = placed + p, waiting + w, failed + f
    if placed or failed:
        logger.info("placement pass: %d placed, %d waiting, %d failed", placed, waiting, failed)
    return PassResult(placed, waiting, failed)


async def _footprint(estimator: Estimator, model: Model) -> Footprint | CorralError:
    try:
        return await estimator.footprint(spec_of(model))
    except CorralError as e:
        logger.warning("model %s (id %d): cannot estimate memory: %s", model.name, model.id, e)
        return e
    except Exception as e:  # a reader bug must not stop placing every other model
        logger.exception("model %s (id %d): estimating memory failed", model.name, model.id)
        return CorralError(f"estimating memory failed: {e}")


async def _place_batch(
    db: Database,
    batch: Sequence[tuple[int, str | None, Model]],
    # (id, the reason shown if fresh, model)
    footprints: dict[int, Footprint | CorralError],
) -> tuple[int, int, int, int]:
    """Place what fits in one transaction; returns how many of ``batch`` were
    handled, then the placed, waiting and failed counts."""
    placed = waiting = failed = done = 0
    started = time.perf_counter()
    async with db.write() as s:
        await lock_placements(s)
        snapshot = await load_snapshot(s)
        addresses = {wid: addr for wid, addr in await s.execute(select(Worker.id, Worker.address))}
        unplaceable: dict[int, str] = {}
        for instance_id, shown, model in batch:
            if time.perf_counter() - started > BATCH_SECONDS:
                break
            done += 1
            footprint = footprints[model.id]
            if isinstance(footprint, CorralError):
                # A broken or unreadable model file will not fix itself; a
                # network error might, so that one stays pending.
                transient = isinstance(footprint, RemoteFileError) or not isinstance(
                    footprint, InvalidInputError
                )
                state = InstanceState.PENDING if transient else InstanceState.ERROR
                message = f"cannot estimate the model's memory: {footprint.message}"
                if message != shown or state is not InstanceState.PENDING:
                    await _set_waiting(s, instance_id, message, state)
                failed += not transient
                waiting += transient
                continue
            if footprint.vision and ModelCategory.VISION not in model.categories:
                await _mark_vision(s, model)
            # The same spec on the same snapshot gets the same answer.
            reason = unplaceable.get(model.id)
            result = None if reason else schedule(request_for(model, footprint), snapshot)
            if isinstance(result, Unplaceable):
                reason = unplaceable[model.id] = result.message()
            if reason is not None:
                if not _same_reason(reason, shown):
                    await _set_waiting(s, instance_id, reason)
                waiting += 1
                continue
            assert isinstance(result, Placement)
            if await _assign(s, instance_id, model, footprint, result, addresses):
                snapshot.apply(result.claims, model.id)
                placed += 1
    logger.debug("placed a batch of %d in %.3f s", done, time.perf_counter() - started)
    return done, placed, waiting, failed


async def _mark_vision(s: AsyncSession, model: Model) -> None:
    """Found in its metadata (a projector, a vision config): the model takes
    images, which the gateway checks by this category and /v1/models shows."""
    categories = [*(model.categories or [ModelCategory.LLM]), ModelCategory.VISION]
    await s.execute(update(Model).where(Model.id == model.id).values(categories=categories))
    model.categories = categories
    logger.info("model %s (id %d) is a vision model", model.name, model.id)


def _same_reason(new: str, shown: str | None) -> bool:
    """Whether a fresh reason says what is shown: the same first line. The
    per-worker figures below it move with every placement; rewriting every
    pending instance for them would make each pass write the whole backlog."""
    return shown is not None and new.partition("\n")[0] == shown.partition("\n")[0]


async def _set_waiting(
    s: AsyncSession, instance_id: int, message: str, state: InstanceState = InstanceState.PENDING
) -> None:
    await s.execute(
        update(Instance)
        .where(
            Instance.id == instance_id,
            Instance.state == InstanceState.PENDING,
            # Rewriting an unchanged message on every retry would only churn the database.
            or_(
                Instance.state_message.is_(None),
                Instance.state_message != message,
                literal(state != InstanceState.PENDING),
            ),
        )
        .values(state=state, state_message=message)
    )


async def _assign(
    s: AsyncSession,
    instance_id: int,
    model: Model,
    footprint: Footprint,
    placement: Placement,
    addresses: dict[int, str],
) -> bool:
    command = implied_command(
        backend=Backend(model.backend),
        model_name=model.name,
        source=model.source,
        categories=frozenset(ModelCategory(c) for c in model.categories),
        parameters=list(model.backend_parameters),
        context_length=footprint.context_length,
        placement=placement,
        helper_addresses=addresses,
        projector=footprint.projector,
    )
    result = await s.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.state == InstanceState.PENDING)
        .values(
            state=InstanceState.SCHEDULED,
            state_message=placement.summary,
            worker_id=placement.worker_id,
            devices=list(placement.gpus),
            claim={"workers": [c.to_json() for c in placement.claims]},
            placement=placement.to_json(),
            command=command,
            # A fresh key per placement: a key known to a former worker opens nothing.
            api_key=secrets.token_urlsafe(32),
            download_progress=None,
            layers=None,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False  # deleted or changed since the pass began
    add_for(s, instance_id, placement)
    logger.info(
        "instance %d of model %s (id %d) placed: %s",
        instance_id,
        model.name,
        model.id,
        placement.summary,
    )
    return True
