"""Distributed placements whose primary GPUs are simulated.

A simulated GPU (declared in a devices file) does not exist for the engine.
When a distributed placement puts layers on the primary's simulated GPUs,
the launch keeps those layers on the primary's CPU instead: only the helpers'
devices are offloaded to, each with its share of the split. The primary thus
still computes its part, and every process holds what the placement gave
it. (Which layers sit where differs from a real GPU: llama.cpp offloads the
last layers, so the CPU holds the first ones.)
"""

from __future__ import annotations

from dataclasses import replace

from corral.backends.base import Placement
from corral.estimate.llama_cpp.memory import layer_ranges


def local_share_on_cpu(placement: Placement, total_layers: int) -> Placement:
    """``placement`` with its local GPUs' layers on the CPU (RPC devices come
    first in llama.cpp's order, so they keep the first entries of the split)."""
    remote = len(placement.rpc_endpoints)
    split = placement.tensor_split
    if not remote or len(split) <= remote:
        return replace(placement, gpu_indices=())
    offloaded = placement.gpu_layers if placement.gpu_layers is not None else total_layers
    ranges = layer_ranges(total_layers - 1, offloaded, split)
    on_remote = sum(end - first for first, end in ranges[:remote])
    return replace(
        placement,
        gpu_indices=(),
        gpu_layers=on_remote,
        tensor_split=split[:remote] if remote > 1 else (),
    )
