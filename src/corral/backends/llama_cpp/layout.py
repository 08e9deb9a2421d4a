"""Where llama-server put the model's layers, from its load log.

It logs the devices it uses, in its own order, and how many layers it
offloaded (the output layer counted)::

    llama_prepare_model_devices: using device RPC0 (10.0.0.2:40001) (unknown id) - 24105 MiB free
    load_tensors: offloaded 5/9 layers to GPU
    load_tensors: RPC0[10.0.0.2:40001] model buffer size =   103.10 MiB

llama.cpp keeps the first layers on the CPU and shares the offloaded ones
over the devices by the tensor split, the rule ``layer_ranges`` reproduces;
so the devices and the count it reports, with the split it was given, say
which layers sit where. Each span carries the bytes the engine allocated on
that device (weights, KV cache, compute), from ``parse_memory``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from corral.backends.llama_cpp.memory import parse_memory
from corral.estimate.llama_cpp.memory import layer_ranges

_DEVICE = re.compile(r"using device (\S+) \(([^)]*)\)")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


@dataclass(frozen=True)
class Span:
    device: str
    first: int
    end: int
    """Exclusive."""
    memory: int | None


def parse_layers(log: str, tensor_split: Sequence[float] = ()) -> list[Span]:
    """Layer spans per device in layer order, the CPU's first, from the log of
    one start; empty when the log does not say."""
    counts = _OFFLOADED.findall(log)
    if not counts:
        return []
    offloaded, total = (int(x) for x in counts[-1])
    devices: list[str] = []
    for match in _DEVICE.finditer(log):
        name = f"{match[1]}[{match[2]}]" if match[1].startswith("RPC") else match[1]
        if name not in devices:
            devices.append(name)
    memory = parse_memory(log).by_device()
    spans = []
    if offloaded < total or not devices:
        spans.append(Span("CPU", 0, total - offloaded, memory.get("CPU")))
    if devices and offloaded:
        split = tuple(tensor_split[: len(devices)]) or (1.0,) * len(devices)
        split = (*split, *(0.0,) * (len(devices) - len(split)))
        ranges = layer_ranges(total - 1, offloaded, split)
        for name, (first, end) in zip(devices, ranges, strict=True):
            if end > first:
                spans.append(Span(name, first, end, memory.get(name)))
    return spans
