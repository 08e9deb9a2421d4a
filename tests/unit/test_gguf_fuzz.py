"""Property: whatever bytes a file holds, the reader parses them or raises
``InvalidModelFile``, quickly and in bounded memory. Never anything else."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import InvalidModelFile
from corral.estimate.gguf import read_gguf
from tests.fixtures.gguf_headers import LLAMA_3_1_8B, write_header_only

TIME_BOUND_S = 1.0
MEMORY_BOUND = 64 * 1024 * 1024


class BytesSource:
    name = "mutated.gguf"

    def __init__(self, data: bytes) -> None:
        self.data = data

    def size(self) -> int | None:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    [path] = write_header_only(tmp_path_factory.mktemp("fuzz") / "m.gguf", LLAMA_3_1_8B, "Q4_K_M")
    return Path(path).read_bytes()


def _check(data: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        read_gguf(BytesSource(data))
    except InvalidModelFile:
        pass
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < TIME_BOUND_S
    assert peak < MEMORY_BOUND


mutation = st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
huge = st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**60, 2**63, 2**64 - 1])

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(flips=st.lists(mutation, min_size=1, max_size=8))
def test_flipped_bytes(valid: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(valid)
    for position, value in flips:
        data[position % len(data)] = value
    _check(bytes(data))


@SETTINGS
@given(cut=st.integers(min_value=0))
def test_truncated(valid: bytes, cut: int) -> None:
    _check(valid[: cut % len(valid)])


@SETTINGS
@given(position=st.integers(min_value=0), value=huge)
def test_absurd_integers(valid: bytes, position: int, value: int) -> None:
    data = bytearray(valid)
    at = position % (len(data) - 8)
    data[at : at + 8] = struct.pack("<Q", value)
    _check(bytes(data))


@SETTINGS
@given(position=st.integers(min_value=0), junk=st.binary(min_size=1, max_size=64))
def test_inserted_junk(valid: bytes, position: int, junk: bytes) -> None:
    at = position % len(valid)
    _check(valid[:at] + junk + valid[at:])
