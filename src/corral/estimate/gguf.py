"""Reading GGUF headers: metadata and tensor infos, never the weights.

Works on any ``ByteSource`` (a local file, or HTTP range requests), fetching
a few KiB at first and growing the reads as the header goes on. Files whose
tensor data lies past their end (header-only fixtures) read fine.

Every claim the header makes (a count, a length, a type) is checked before
it is acted on, against the file size when known and against fixed ceilings
otherwise, so a malformed or hostile file costs bounded time and memory and
ends in one ``InvalidModelFile`` saying what is wrong and at which byte.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from math import prod

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from corral.errors import InvalidModelFile
from corral.estimate.source import ByteSource

MAGIC = b"GGUF"
MAX_HEADER_BYTES = 256 * 1024 * 1024
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 16
MAX_DIMS = 4
MAX_ARRAY_LENGTH = 1 << 32
KEEP_NUMBERS = 1 << 16
"""Numeric arrays up to this length are kept (per-layer hyperparameters);
longer ones, and string arrays longer than ``KEEP_STRINGS`` (vocabularies),
are checked and summarised as ``ArrayInfo``."""
KEEP_STRINGS = 1024
FIRST_READ = 16 * 1024
MAX_READ = 4 * 1024 * 1024
DEFAULT_ALIGNMENT = 32


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALARS: dict[ValueType, str] = {
    ValueType.UINT8: "B", ValueType.INT8: "b", ValueType.UINT16: "H", ValueType.INT16: "h",
    ValueType.UINT32: "I", ValueType.INT32: "i", ValueType.FLOAT32: "f", ValueType.BOOL: "B",
    ValueType.UINT64: "Q", ValueType.INT64: "q", ValueType.FLOAT64: "d",
}  # fmt: skip


@dataclass(frozen=True)
class ArrayInfo:
    """A long array, checked but not kept: its item type and length."""

    item_type: ValueType
    length: int


Value = int | float | bool | str | list["Value"] | ArrayInfo


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    """ggml order: ``shape[0]`` is the row length."""
    type: GGMLQuantizationType
    offset: int
    """Relative to the start of the file's tensor data."""

    @property
    def n_elements(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        block, type_size = GGML_QUANT_SIZES[self.type]
        return self.n_elements // block * type_size


@dataclass(frozen=True)
class GGUFFile:
    """One GGUF file's header."""

    name: str
    version: int
    metadata: dict[str, Value]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    file_size: int | None

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise InvalidModelFile(f"{self.name}: general.architecture is missing")
        return arch

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


@dataclass(frozen=True)
class GGUFModel:
    """A model as llama.cpp loads it: one file, or every part of a split one."""

    parts: tuple[GGUFFile, ...]
    metadata: dict[str, Value] = field(init=False)
    tensors: tuple[TensorInfo, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", self.parts[0].metadata)
        object.__setattr__(self, "tensors", tuple(t for p in self.parts for t in p.tensors))

    @property
    def architecture(self) -> str:
        return self.parts[0].architecture

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def arch_value(self, suffix: str, default: Value | None = None) -> Value | None:
        """``<architecture>.<suffix>``, e.g. ``block_count``."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)


class _Cursor:
    """Sequential reads over a ByteSource, fetching in growing chunks."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.size = source.size()
        self.pos = 0
        self._buf = bytearray()
        self._buf_start = 0
        self._chunk = FIRST_READ

    def fail(self, message: str, at: int | None = None) -> InvalidModelFile:
        return InvalidModelFile(
            f"{self.source.name} at byte {self.pos if at is None else at}: {message}"
        )

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > MAX_HEADER_BYTES:
            raise self.fail(
                f"header would exceed {MAX_HEADER_BYTES >> 20} MiB; not a GGUF corral will read"
            )
        if self.size is not None and end > self.size:
            raise self.fail(f"truncated: {n} more bytes needed, the file ends at {self.size}")
        self._fill(end)
        start = self.pos - self._buf_start
        self.pos = end
        return bytes(self._buf[start : start + n])

    def _fill(self, end: int) -> None:
        """Make bytes up to ``end`` available in the buffer (bounds already checked)."""
        while self._buf_start + len(self._buf) < end:
            fetched_to = self._buf_start + len(self._buf)
            data = self.source.read(fetched_to, max(self._chunk, end - fetched_to))
            if not data:
                raise self.fail(f"truncated: the file ends at {fetched_to}")
            if self.pos > self._buf_start:
                del self._buf[: self.pos - self._buf_start]
                self._buf_start = self.pos
            self._buf += data
            self._chunk = min(self._chunk * 2, MAX_READ)
            if self.size is None:  # a remote source learns the size from its first reply
                self.size = self.source.size()

    def skip_strings(self, count: int, what: str) -> None:
        """Walk ``count`` length-prefixed strings without decoding them.

        Vocabularies hold 32k-260k strings; doing this through ``take`` would
        cost a call and a copy per string.
        """
        size = self.size
        for _ in range(count):
            if self.pos + 8 > MAX_HEADER_BYTES or (size is not None and self.pos + 8 > size):
                self.take(8)  # raises with the right message
            if self._buf_start + len(self._buf) < self.pos + 8:
                self._fill(self.pos + 8)
            (length,) = struct.unpack_from("<Q", self._buf, self.pos - self._buf_start)
            end = self.pos + 8 + length
            if end > MAX_HEADER_BYTES or (size is not None and end > size):
                self.pos += 8
                raise self.fail(f"{what}: string of {length} bytes runs past the end", self.pos - 8)
            if self._buf_start + len(self._buf) < end:
                self._fill(end)
            self.pos = end

    def unpack(self, fmt: str) -> int | float:
        size = struct.calcsize("<" + fmt)
        value: int | float = struct.unpack("<" + fmt, self.take(size))[0]
        return value

    def u32(self) -> int:
        return int(self.unpack("I"))

    def u64(self) -> int:
        return int(self.unpack("Q"))

    def count(self, what: str, value: int, ceiling: int, min_item_bytes: int) -> int:
        """Check a count the header claims against a ceiling and the bytes left."""
        left = self.remaining()
        if value > ceiling or (left is not None and value * min_item_bytes > left):
            bound = f"at most {ceiling}" if left is None else f"{left} bytes left"
            raise self.fail(f"{what} {value} is impossible ({bound})", self.pos - 8)
        return value

    def string(self, what: str) -> str:
        length = self.count(f"{what} length", self.u64(), MAX_HEADER_BYTES, 1)
        raw = self.take(length)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not UTF-8", self.pos - length) from e


def _value_type(cursor: _Cursor, raw: int, what: str) -> ValueType:
    try:
        return ValueType(raw)
    except ValueError:
        raise cursor.fail(f"{what} has unknown value type {raw}", cursor.pos - 4) from None


def _value(cursor: _Cursor, vtype: ValueType, key: str, depth: int = 0) -> Value:
    if vtype in _SCALARS:
        value = cursor.unpack(_SCALARS[vtype])
        if vtype is ValueType.BOOL:
            if value not in (0, 1):
                raise cursor.fail(f"{key}: bool value {value}", cursor.pos - 1)
            return bool(value)
        return value
    if vtype is ValueType.STRING:
        return cursor.string(key)
    if depth > 0:
        raise cursor.fail(f"{key}: arrays nested deeper than one level")
    item_type = _value_type(cursor, cursor.u32(), key)
    min_size = struct.calcsize("<" + _SCALARS[item_type]) if item_type in _SCALARS else 8
    length = cursor.count(f"{key}: array length", cursor.u64(), MAX_ARRAY_LENGTH, min_size)
    if item_type in _SCALARS:
        fmt = _SCALARS[item_type]
        data = cursor.take(length * min_size)
        if length > KEEP_NUMBERS:
            return ArrayInfo(item_type, length)
        items: list[Value] = list(struct.unpack(f"<{length}{fmt}", data))
        if item_type is ValueType.BOOL:
            if any(v not in (0, 1) for v in items):
                raise cursor.fail(f"{key}: bool array holds a value other than 0 and 1")
            items = [bool(v) for v in items]
        return items
    if item_type is ValueType.STRING and length > KEEP_STRINGS:
        cursor.skip_strings(length, key)
        return ArrayInfo(item_type, length)
    kept = [_value(cursor, item_type, key, depth + 1) for _ in range(length)]
    return kept if item_type is ValueType.STRING else ArrayInfo(item_type, length)


def _tensor(cursor: _Cursor, index: int) -> TensorInfo:
    name = cursor.string(f"tensor {index} name")
    n_dims = cursor.u32()
    if not 1 <= n_dims <= MAX_DIMS:
        raise cursor.fail(
            f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)", cursor.pos - 4
        )
    shape = tuple(cursor.u64() for _ in range(n_dims))
    if prod(shape) >= 1 << 62:
        raise cursor.fail(f"tensor {name!r} has an impossible shape {list(shape)}")
    raw_type = cursor.u32()
    try:
        ttype = GGMLQuantizationType(raw_type)
        block, _ = GGML_QUANT_SIZES[ttype]
    except (ValueError, KeyError):
        raise cursor.fail(f"tensor {name!r} has unknown type {raw_type}", cursor.pos - 4) from None
    if shape[0] % block:
        raise cursor.fail(
            f"tensor {name!r}: row of {shape[0]} is not a multiple of {ttype.name}'s "
            f"block of {block}"
        )
    return TensorInfo(name, shape, ttype, cursor.u64())


def read_gguf(source: ByteSource) -> GGUFFile:
    """Parse one GGUF file's header; ``InvalidModelFile`` if it is malformed."""
    cursor = _Cursor(source)
    magic = cursor.take(4)
    if magic != MAGIC:
        raise cursor.fail(f"not a GGUF file (magic {magic!r})", 0)
    version = cursor.u32()
    if version not in (2, 3):
        if version & 0xFFFF == 0 and (version >> 24) in (2, 3):
            raise cursor.fail("big-endian GGUF files are not supported", 4)
        raise cursor.fail(f"unsupported GGUF version {version} (2 and 3 are read)", 4)
    n_tensors = cursor.count("tensor count", cursor.u64(), MAX_TENSORS, 24)
    n_kv = cursor.count("metadata count", cursor.u64(), MAX_KV, 12)

    metadata: dict[str, Value] = {}
    for i in range(n_kv):
        key = cursor.string(f"metadata key {i}")
        if key in metadata:
            raise cursor.fail(f"metadata key {key!r} appears twice")
        metadata[key] = _value(cursor, _value_type(cursor, cursor.u32(), key), key)

    tensors = []
    seen: set[str] = set()
    for i in range(n_tensors):
        tensor = _tensor(cursor, i)
        if tensor.name in seen:
            raise cursor.fail(f"tensor {tensor.name!r} appears twice")
        seen.add(tensor.name)
        tensors.append(tensor)

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise cursor.fail(f"general.alignment {alignment!r} is not a power of two")
    for t in tensors:
        if t.offset % alignment:
            raise cursor.fail(
                f"tensor {t.name!r} data offset {t.offset} is not aligned to {alignment}"
            )
    data_offset = -(-cursor.pos // alignment) * alignment
    return GGUFFile(
        source.name, version, metadata, tuple(tensors), alignment, data_offset, cursor.size
    )


_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_part_names(file_name: str) -> list[str] | None:
    """Every part's file name when ``file_name`` is a part of a split model."""
    match = _SPLIT.match(file_name)
    if match is None:
        return None
    count = int(match["count"])
    return [f"{match['stem']}-{n:05d}-of-{count:05d}.gguf" for n in range(1, count + 1)]


def read_gguf_model(sources: Sequence[ByteSource]) -> GGUFModel:
    """A model from its file (or every part of a split model, in order)."""
    parts = tuple(read_gguf(s) for s in sources)
    if len(parts) > 1:
        count = parts[0].metadata.get("split.count")
        if count != len(parts):
            raise InvalidModelFile(
                f"{parts[0].name}: split.count is {count!r}, but {len(parts)} parts were given"
            )
        for n, part in enumerate(parts):
            if part.metadata.get("split.no") != n:
                raise InvalidModelFile(
                    f"{part.name}: expected split.no {n}, found {part.metadata.get('split.no')!r}"
                )
        expected = parts[0].metadata.get("split.tensors.count")
        found = sum(len(p.tensors) for p in parts)
        if expected != found:
            raise InvalidModelFile(
                f"{parts[0].name}: split.tensors.count is {expected!r}, the "
                f"parts hold {found} tensors"
            )
    return GGUFModel(parts)
