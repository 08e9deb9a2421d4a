"""Where each instance runs: a pure function of the model, its memory
estimate and a snapshot of the cluster.

``schedule(request, cluster)`` returns a ``Placement`` or ``Unplaceable``
(one reason per worker). No database, no network, no asyncio: the server's
placement controller loads the snapshot, calls ``schedule`` and stores the
result with its claims. The chain, after GPUStack's: filters (``filters``)
→ candidates in a fixed order, first kind that fits wins (``llama_cpp``,
``vllm``) → a score to pick among them (``scoring``).
"""

from corral.scheduler.cluster import ClusterSnapshot, Gpu, Node, NodeClaim
from corral.scheduler.placement import Helper, Placement, PlacementKind, Unplaceable
from corral.scheduler.request import PlacementRequest, VllmNeeds
from corral.scheduler.schedule import schedule

__all__ = [
    "ClusterSnapshot",
    "Gpu",
    "Helper",
    "Node",
    "NodeClaim",
    "Placement",
    "PlacementKind",
    "PlacementRequest",
    "Unplaceable",
    "VllmNeeds",
    "schedule",
]
