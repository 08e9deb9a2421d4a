"""Reading safetensors headers: tensor names, dtypes and shapes, never the data.

A safetensors file starts with its header's length (u64, little-endian) and
the header, a JSON object ``{name: {"dtype", "shape", "data_offsets"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import prod

from corral.errors import InvalidModelFile
from corral.estimate.source import ByteSource

MAX_HEADER = 100 * 1024 * 1024  # the format's own limit
DTYPE_BYTES = {
    "F64": 8.0, "I64": 8.0, "U64": 8.0, "F32": 4.0, "I32": 4.0, "U32": 4.0,
    "F16": 2.0, "BF16": 2.0, "I16": 2.0, "U16": 2.0,
    "F8_E4M3": 1.0, "F8_E5M2": 1.0, "F8_E8M0": 1.0, "I8": 1.0, "U8": 1.0, "BOOL": 1.0,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}  # fmt: skip


@dataclass(frozen=True)
class SafeTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def n_elements(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.n_elements * DTYPE_BYTES[self.dtype])


def read_safetensors(source: ByteSource) -> tuple[SafeTensor, ...]:
    def fail(message: str) -> InvalidModelFile:
        return InvalidModelFile(f"{source.name}: {message}")

    head = source.read(0, 8)
    if len(head) < 8:
        raise fail("truncated before the header length")
    length = int.from_bytes(head, "little")
    size = source.size()
    if length < 2 or length > MAX_HEADER or (size is not None and 8 + length > size):
        raise fail(f"header length {length} is impossible")
    raw = source.read(8, length)
    if len(raw) < length:
        raise fail("truncated header")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise fail(f"tensor {name!r} has no description")
        dtype, shape = info.get("dtype"), info.get("shape")
        if dtype not in DTYPE_BYTES:
            raise fail(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise fail(f"tensor {name!r} has an invalid shape {shape!r}")
        tensors.append(SafeTensor(name, dtype, tuple(shape)))
    return tuple(tensors)
