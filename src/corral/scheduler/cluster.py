"""The cluster as the scheduler sees it: workers, their GPUs and RAM, and
what instances have already claimed.

Free memory is computed from claims, never from what a worker last reported
in use: total - system-reserved - claims. A snapshot is mutable only through
``apply``, which the controller calls after each placement so the next
decision in the same pass sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from corral.schemas.workers import SystemReserved, WorkerState, WorkerStatus


@dataclass
class Gpu:
    index: int
    name: str
    vendor: str
    total: int
    reserved: int = 0
    claimed: int = 0
    instances: int = 0
    simulated: bool = False

    @property
    def free(self) -> int:
        return max(self.total - self.reserved - self.claimed, 0)


@dataclass
class Node:
    """One worker."""

    id: int
    name: str
    ready: bool
    labels: Mapping[str, str]
    gpus: list[Gpu] = field(default_factory=list)
    ram_total: int = 0
    ram_reserved: int = 0
    ram_claimed: int = 0
    disk_free: int | None = None
    """Bytes free where model files go; None when the worker has not said."""
    state: str = "ready"
    instances: int = 0
    model_instances: dict[int, int] = field(default_factory=dict)
    """Instances per model id on this worker (spread keeps replicas apart)."""

    @property
    def ram_free(self) -> int:
        return max(self.ram_total - self.ram_reserved - self.ram_claimed, 0)

    @property
    def os(self) -> str:
        return self.labels.get("os", "")

    def gpu(self, index: int) -> Gpu | None:
        return next((g for g in self.gpus if g.index == index), None)


@dataclass(frozen=True)
class NodeClaim:
    """What one instance holds on one worker."""

    worker_id: int
    ram: int = 0
    gpus: Mapping[int, int] = field(default_factory=dict)
    """GPU index → bytes."""

    def to_json(self) -> dict[str, object]:
        return {
            "worker_id": self.worker_id,
            "ram": self.ram,
            "gpus": {str(i): b for i, b in sorted(self.gpus.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> NodeClaim:
        gpus = data.get("gpus") or {}
        assert isinstance(gpus, Mapping)
        ram = data.get("ram") or 0
        worker_id = data["worker_id"]
        assert isinstance(ram, int) and isinstance(worker_id, int)
        return cls(worker_id, ram, {int(k): int(v) for k, v in gpus.items()})


@dataclass
class ClusterSnapshot:
    nodes: list[Node]
    _by_id: dict[int, Node] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.nodes.sort(key=lambda n: (n.name, n.id))
        for n in self.nodes:
            n.gpus.sort(key=lambda g: g.index)
        self._by_id = {n.id: n for n in self.nodes}

    def node(self, worker_id: int) -> Node | None:
        return self._by_id.get(worker_id)

    def apply(self, claims: Iterable[NodeClaim], model_id: int | None, sign: int = 1) -> None:
        """Add (sign 1) or remove (sign -1) one instance's claims.

        The first claim is the instance's own worker; the others are helpers.
        Claims on workers or GPUs the snapshot does not know are ignored: they
        hold nothing a placement could use.
        """
        for i, claim in enumerate(claims):
            node = self._by_id.get(claim.worker_id)
            if node is None:
                continue
            node.ram_claimed += sign * claim.ram
            if i == 0:
                node.instances += sign
                if model_id is not None:
                    node.model_instances[model_id] = node.model_instances.get(model_id, 0) + sign
            for index, nbytes in claim.gpus.items():
                gpu = node.gpu(index)
                if gpu is not None:
                    gpu.claimed += sign * nbytes
                    gpu.instances += sign


def node_from_worker(
    worker_id: int,
    name: str,
    state: str,
    labels: Mapping[str, str],
    status: WorkerStatus | None,
    reserved: SystemReserved,
) -> Node:
    """A worker as it registered and last reported, before any claim."""
    node = Node(
        id=worker_id,
        name=name,
        ready=state == WorkerState.READY and status is not None,
        labels=dict(labels),
        state=state,
    )
    if status is None:
        return node
    node.ram_total = status.memory.total
    node.ram_reserved = reserved.ram
    node.gpus = [
        Gpu(
            index=d.index,
            name=d.name,
            vendor=d.vendor,
            total=d.memory_total,
            reserved=reserved.vram,
            simulated=d.simulated,
        )
        for d in status.devices
    ]
    if status.disks:
        node.disk_free = max(status.disks[0].total - status.disks[0].used, 0)
    return node
