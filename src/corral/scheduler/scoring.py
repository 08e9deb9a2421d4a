"""Choosing among placements that fit.

``spread`` (the default) keeps replicas of a model apart and prefers emptier
workers and GPUs, so one failure takes out less and instances do not compete
for memory bandwidth; ``binpack`` fills the fullest GPUs that still fit, to
keep whole GPUs free for big models. Ties end on the worker's name and the
GPU indices, so the same snapshot always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.scheduler.cluster import Gpu, Node
from corral.schemas.models import PlacementStrategy

ScoreKey = tuple[float | int | str | tuple[int, ...], ...]


def score(
    strategy: PlacementStrategy,
    node: Node,
    used: Sequence[tuple[Gpu, int]],
    model_id: int | None,
    ram: int = 0,
) -> ScoreKey:
    """Sort key, lowest best. ``used``: each GPU with the bytes it would take."""
    if used:
        left = sum((g.free - b) / g.total if g.total else 0.0 for g, b in used) / len(used)
    else:
        left = (node.ram_free - ram) / node.ram_total if node.ram_total else 0.0
    busy = sum(g.instances for g, _ in used)
    return _key(strategy, node, left, busy, tuple(g.index for g, _ in used), model_id)


def score_one_gpu(
    strategy: PlacementStrategy, node: Node, gpu: Gpu, nbytes: int, model_id: int | None
) -> ScoreKey:
    """``score`` for a single GPU, without building lists: the hot path on big clusters."""
    left = (gpu.free - nbytes) / gpu.total if gpu.total else 0.0
    return _key(strategy, node, left, gpu.instances, (gpu.index,), model_id)


def _key(
    strategy: PlacementStrategy,
    node: Node,
    left: float,
    busy: int,
    indices: tuple[int, ...],
    model_id: int | None,
) -> ScoreKey:
    """``left``: the share of the used GPUs (or RAM) still free after placing;
    ``busy``: instances already on those GPUs."""
    if strategy is PlacementStrategy.BINPACK:
        return (round(left, 6), node.name, indices)
    same_model = node.model_instances.get(model_id, 0) if model_id is not None else 0
    return (same_model, node.instances, busy, round(-left, 6), node.name, indices)
