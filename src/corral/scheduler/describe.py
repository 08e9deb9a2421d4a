"""How the scheduler words sizes and devices in summaries and reasons."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from corral.scheduler.cluster import Gpu

GIB = 1024**3


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB"


def gpus(devices: Sequence[Gpu]) -> str:
    """``2x24 GiB (30.2 free)``; simulated devices say so."""
    if not devices:
        return "no GPU"
    sizes = Counter(round(g.total / GIB) for g in devices)
    parts = [f"{n}x{size} GiB" if n > 1 else f"{size} GiB" for size, n in sorted(sizes.items())]
    free = sum(g.free for g in devices)
    simulated = " simulated" if any(g.simulated for g in devices) else ""
    return f"{' + '.join(parts)}{simulated} ({free / GIB:.1f} free)"
