"""What llama-server says about memory while it loads a model.

With ``-lv 4`` (and in the default verbosity for most lines) it logs each
buffer it allocates, e.g.::

    load_tensors:   CPU_Mapped model buffer size =    51.33 MiB
    load_tensors:   CPU_REPACK model buffer size =    26.00 MiB
    llama_kv_cache:        CPU KV buffer size =     2.00 MiB
    llama_context:  CPU  output buffer size =     0.77 MiB
    sched_reserve:        CPU compute buffer size =     4.51 MiB
    load_tensors: RPC0[127.0.0.1:50052] model buffer size =    26.79 MiB

Host-side buffers of a GPU build (``CUDA_Host``) count as CPU memory.
"""

from __future__ import annotations

import re

from corral.backends.base import Buffer, MemoryReport

_MIB = 1024 * 1024
_BUFFER = re.compile(
    r"(?P<device>[A-Za-z][\w]*(?:\[[^\]]*\])?)\s+(?P<kind>model|KV|compute|output)"
    r" buffer size\s*=\s*(?P<mib>[\d.]+) MiB"
)
_N_CTX = re.compile(r"\bn_ctx\s*=\s*(\d+)")
_N_CTX_TRAIN = re.compile(r"\bn_ctx_train\s*=\s*(\d+)")


def _device_and_kind(device: str, kind: str) -> tuple[str, str]:
    kind = kind.lower()
    if device.endswith("_REPACK"):
        return device.removesuffix("_REPACK"), "repack"
    for suffix in ("_Mapped", "_Host"):
        if device.endswith(suffix):
            base = device.removesuffix(suffix)
            return ("CPU" if suffix == "_Host" else base), kind
    return device, kind


def parse_memory(log: str) -> MemoryReport:
    buffers = []
    for match in _BUFFER.finditer(log):
        device, kind = _device_and_kind(match["device"], match["kind"])
        buffers.append(Buffer(device=device, kind=kind, bytes=round(float(match["mib"]) * _MIB)))
    n_ctx = _N_CTX.findall(log)
    n_ctx_train = _N_CTX_TRAIN.findall(log)
    return MemoryReport(
        buffers=tuple(buffers),
        context_length=int(n_ctx[-1]) if n_ctx else None,
        training_context_length=int(n_ctx_train[-1]) if n_ctx_train else None,
    )
