"""The GGUF header reader: real files, split models, and every kind of bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.errors import InvalidModelFile
from corral.estimate.gguf import (
    ArrayInfo,
    ValueType,
    read_gguf,
    read_gguf_model,
    split_part_names,
)
from corral.estimate.source import LocalFile
from tests.fixtures.gguf_headers import LLAMA_3_1_8B, QWEN2_5_72B, generate, tensors
from tests.fixtures.tiny_models import TinyModels


@pytest.fixture(scope="module")
def headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return generate(tmp_path_factory.mktemp("headers"))


def test_reads_a_real_model_file(tiny_models: TinyModels) -> None:
    f = read_gguf(LocalFile(tiny_models.gguf_q8_0))
    assert f.version == 3 and f.architecture == "llama"
    assert f.metadata["llama.context_length"] == 2048
    assert f.metadata["llama.attention.head_count_kv"] == 2
    assert f.metadata["tokenizer.ggml.tokens"] == ArrayInfo(ValueType.STRING, 50257)
    assert isinstance(f.metadata["tokenizer.chat_template"], str)
    assert len(f.tensors) == 20
    embd = next(t for t in f.tensors if t.name == "token_embd.weight")
    assert embd.shape == (256, 50257) and embd.type == gguf.GGMLQuantizationType.Q8_0
    # Header + aligned tensor data is the whole file (plus final padding).
    assert f.file_size is not None
    assert f.data_offset + f.tensor_bytes <= f.file_size < f.data_offset + f.tensor_bytes + 32


def test_agrees_with_the_gguf_package(tiny_models: TinyModels) -> None:
    ours = read_gguf(LocalFile(tiny_models.gguf_f16))
    theirs = gguf.GGUFReader(tiny_models.gguf_f16)
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    assert [t.nbytes for t in ours.tensors] == [int(t.n_bytes) for t in theirs.tensors]
    assert ours.data_offset == theirs.data_offset


def test_header_only_files_read_fine(headers: dict[str, list[Path]]) -> None:
    [path] = headers["llama-3.1-8b-q4_k_m"]
    f = read_gguf(LocalFile(path))
    assert f.file_size is not None and f.file_size < 100_000
    assert len(f.tensors) == len(tensors(LLAMA_3_1_8B, "Q4_K_M"))
    assert abs(f.tensor_bytes - 4.92e9) / 4.92e9 < 0.01


def test_split_models_read_every_part(headers: dict[str, list[Path]]) -> None:
    parts = headers["qwen2.5-72b-q4_k_m"]
    assert split_part_names(parts[1].name) == [p.name for p in parts]
    model = read_gguf_model([LocalFile(p) for p in parts])
    assert model.architecture == "qwen2" and model.arch_value("block_count") == 80
    assert len(model.tensors) == len(tensors(QWEN2_5_72B, "Q4_K_M"))
    with pytest.raises(InvalidModelFile, match=r"split\.count is 3, but 2 parts"):
        read_gguf_model([LocalFile(p) for p in parts[:2]])
    with pytest.raises(InvalidModelFile, match=r"expected split\.no 0"):
        read_gguf_model([LocalFile(p) for p in reversed(parts)])
    assert split_part_names("model-Q4_K_M.gguf") is None


# --- bad input ---------------------------------------------------------------


def _header(
    *,
    n_tensors: int = 0,
    kvs: bytes = b"",
    n_kv: int = 0,
    version: int = 3,
    tensors_blob: bytes = b"",
) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kvs + tensors_blob


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def _kv(key: bytes, vtype: int, payload: bytes) -> bytes:
    return _string(key) + struct.pack("<I", vtype) + payload


def _tensor(name: bytes, dims: list[int], ttype: int, offset: int = 0) -> bytes:
    return (
        _string(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ttype, offset)
    )


ARCH = _kv(b"general.architecture", 8, _string(b"llama"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"GGML" + bytes(20), "not a GGUF file"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "unsupported GGUF version 1"),
        (b"GGUF" + struct.pack("<I", 3) + b"\x00\x00", "truncated"),
        (_header(n_tensors=1 << 60), "tensor count 1152921504606846976 is impossible"),
        (_header(n_kv=1 << 60), "metadata count"),
        (
            _header(n_kv=1, kvs=struct.pack("<Q", 1 << 40) + b"key" + bytes(16)),
            "metadata key 0 length 1099511627776 is impossible",
        ),
        (_header(n_kv=1, kvs=_string(b"k") + struct.pack("<I", 99)), "unknown value type 99"),
        (_header(n_kv=1, kvs=_kv(b"k", 7, b"\x02")), "bool value 2"),
        (
            _header(n_kv=1, kvs=_kv(b"k", 8, struct.pack("<Q", 1000) + b"short")),
            "k length 1000 is impossible",
        ),
        (_header(n_kv=1, kvs=_kv(b"k", 8, _string(b"\xff\xfe"))), "not UTF-8"),
        (_header(n_kv=1, kvs=_kv(b"k", 9, struct.pack("<IQ", 4, 1 << 61))), "array length"),
        (
            _header(n_kv=1, kvs=_kv(b"k", 9, struct.pack("<IQ", 8, 5000) + _string(b"x") * 3)),
            "array length 5000 is impossible",
        ),
        (
            _header(
                n_kv=1,
                kvs=_kv(b"vocab", 9, struct.pack("<IQQ", 8, 2000, 1 << 20) + bytes(8 * 2000)),
            ),
            "vocab: string of 1048576 bytes runs past the end",
        ),
        (_header(n_kv=1, kvs=_kv(b"k", 9, struct.pack("<IQ", 77, 1))), "unknown value type 77"),
        (
            _header(n_kv=1, kvs=_kv(b"k", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1))),
            "nested deeper",
        ),
        (_header(n_kv=2, kvs=ARCH + ARCH), "appears twice"),
        (_header(n_tensors=1, n_kv=1, kvs=ARCH, tensors_blob=_tensor(b"t", [], 0)), "0 dimensions"),
        (
            _header(n_tensors=1, n_kv=1, kvs=ARCH, tensors_blob=_tensor(b"t", [1] * 5, 0)),
            "5 dimensions",
        ),
        (
            _header(n_tensors=1, n_kv=1, kvs=ARCH, tensors_blob=_tensor(b"t", [32], 1234)),
            "unknown type 1234",
        ),
        (
            _header(n_tensors=1, n_kv=1, kvs=ARCH, tensors_blob=_tensor(b"t", [33], 8)),
            "not a multiple of Q8_0",
        ),
        (
            _header(
                n_tensors=1, n_kv=1, kvs=ARCH, tensors_blob=_tensor(b"t", [1 << 40, 1 << 40], 0)
            ),
            "impossible shape",
        ),
        (
            _header(n_tensors=1, n_kv=1, kvs=ARCH, tensors_blob=_tensor(b"t", [32], 0, offset=3)),
            "not aligned",
        ),
        (
            _header(
                n_tensors=2,
                n_kv=1,
                kvs=ARCH,
                tensors_blob=_tensor(b"t", [32], 0) + _tensor(b"t", [32], 0, 128),
            ),
            "appears twice",
        ),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(InvalidModelFile, match=message) as caught:
        read_gguf(LocalFile(path))
    assert str(caught.value).startswith("bad.gguf at byte ")


def test_a_minimal_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    path.write_bytes(
        _header(
            n_tensors=1,
            n_kv=2,
            kvs=ARCH
            + _kv(b"n", 9, struct.pack("<IQ", 5, 3) + np.array([1, 2, 3], "<i4").tobytes()),
            tensors_blob=_tensor(b"t", [64, 2], 0),
        )
    )
    f = read_gguf(LocalFile(path))
    assert f.metadata == {"general.architecture": "llama", "n": [1, 2, 3]}
    assert f.tensors[0].nbytes == 64 * 2 * 4
